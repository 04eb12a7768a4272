"""Is one model's accuracy really above another's? The images only one of them gets right.

    python benchmarks/paired_errors.py --data-dir ../shared/data --model gru \
        runs/quant-ec/gru/int8-ptq.onnx runs/quant-gap/gru/nncf-onnx.onnx runs/quant-ec/gru/fp32.onnx

Every .onnx file runs in ONNX Runtime on the model's 10,000 test images (`--images test`), or on the
training images its baseline never saw (`--images unseen`: tasks that train on a fixed subset hold out the
rest; the calibration images of `--calibration-seeds` are left out too, so no quantizer saw them either: for
ResNet-8x4 43,523 images, four times the test split). It prints each file's accuracy and, for each pair of
files, the images only the first gets right, only the second, the images whose top-1 differs, and the exact
McNemar p-value (a two-sided binomial test on the images only one gets right): how likely a gap at least
that large is when the two are equally accurate. Two accuracies a few images apart on one split are the
same accuracy unless p is small.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_TASKS, task_data_dir  # noqa: E402

from edgeshrink.errors import ConfigError  # noqa: E402
from edgeshrink.runtimes.onnxruntime import make_session, run_session  # noqa: E402
from edgeshrink.tasks.data import Split  # noqa: E402
from edgeshrink.tasks.registry import Task, load_task  # noqa: E402


def predictions(path: Path, images: np.ndarray, threads: int = 2, batch: int = 500) -> np.ndarray:
    """Top-1 class of every image: `batch` images per run when the file's batch size is free, else one."""
    session = make_session(path, threads)
    step = batch if not isinstance(session.get_inputs()[0].shape[0], int) else 1
    return np.concatenate([run_session(session, images[i : i + step]).argmax(1) for i in range(0, len(images), step)])


def paired(first: np.ndarray, second: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Images only `first` gets right, only `second`, differing top-1, and the exact McNemar p-value."""
    right_a, right_b = first == labels, second == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_first": only_a, "only_second": only_b, "top1_differs": int((first != second).sum()), "p": p}


def unseen_mask(task: Task, train: Split, calibration_images: int, calibration_seeds: list[int]) -> torch.Tensor:
    """Training examples outside the task's fixed training subset (Task.train_loader's) and outside every
    calibration sample (the quantization benchmark's `train.subset(calibration_images, seed)`)."""
    if task.train_subset is None:
        raise ConfigError(f"{task.name} trains on every training image: no unseen images; use --images test")
    seen = torch.zeros(len(train.labels), dtype=torch.bool)
    for n, seed in [(task.train_subset, 0)] + [(calibration_images, s) for s in calibration_seeds]:
        seen[train.subset_indices(n, seed)] = True
    return ~seen


def images_and_labels(task: Task, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    data = task.data(task_data_dir(args.data_dir, task))
    split: Split = data.test
    if args.images == "unseen":
        keep = unseen_mask(task, data.train, args.calibration_images, args.calibration_seeds)
        split = Split(data.train.inputs[keep], data.train.labels[keep])
    return split.inputs.numpy().astype(np.float32), split.labels.numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--model", required=True, choices=sorted(MODEL_TASKS), help="whose images")
    parser.add_argument("--images", choices=["test", "unseen"], default="test", help="which images (see above)")
    parser.add_argument("--calibration-images", type=int, default=2048, help="unseen: size of each calibration sample")
    parser.add_argument(
        "--calibration-seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2, 3, 4],
        help="unseen: the calibration samples to leave out (the quantization benchmark's seeds)",
    )  # fmt: skip
    parser.add_argument("files", nargs="+", type=Path, help="two or more .onnx files of that model")
    args = parser.parse_args(argv)
    if len(args.files) < 2:
        parser.error("give at least two .onnx files to compare")
    task = load_task(MODEL_TASKS[args.model])
    try:
        images, labels = images_and_labels(task, args)
    except ConfigError as error:
        parser.error(str(error))
    top1 = {f: predictions(f, images) for f in args.files}
    for f in args.files:
        print(f"{f}: {100 * float((top1[f] == labels).mean()):.3f}% on {len(labels)} {args.images} images")
    for a, b in itertools.combinations(args.files, 2):
        r = paired(top1[a], top1[b], labels)
        print(
            f"{a} vs {b}: only the first right on {r['only_first']}, only the second on {r['only_second']}, "
            f"top-1 differs on {r['top1_differs']}, exact McNemar p = {r['p']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
