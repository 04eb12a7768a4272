"""Is one model's test accuracy really above another's? The images only one of them gets right.

    python benchmarks/paired_errors.py --data-dir ../shared/data --model gru \
        runs/quant-ec/gru/int8-ptq.onnx runs/quant-gap/gru/nncf-onnx.onnx runs/quant-ec/gru/fp32.onnx

Every .onnx file runs in ONNX Runtime on the model's 10,000 test images; for each pair of files it prints
the images only the first gets right, only the second, the images whose top-1 differs, and the exact
McNemar p-value (a two-sided binomial test on the images only one gets right): how likely a gap at least
that large is when the two are equally accurate. Two accuracies a few images apart on one test split are
the same accuracy unless p is small.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_TASKS, task_data_dir  # noqa: E402

from edgeshrink.runtimes.onnxruntime import make_session, run_session  # noqa: E402
from edgeshrink.tasks.registry import load_task  # noqa: E402


def predictions(path: Path, images: np.ndarray, threads: int = 2) -> np.ndarray:
    """Top-1 class of every image, one image per run (any exported batch size accepts it)."""
    session = make_session(path, threads)
    return np.array([int(run_session(session, images[i : i + 1]).argmax()) for i in range(len(images))])


def paired(first: np.ndarray, second: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Images only `first` gets right, only `second`, differing top-1, and the exact McNemar p-value."""
    right_a, right_b = first == labels, second == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_first": only_a, "only_second": only_b, "top1_differs": int((first != second).sum()), "p": p}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--model", required=True, choices=sorted(MODEL_TASKS), help="whose test images")
    parser.add_argument("files", nargs="+", type=Path, help="two or more .onnx files of that model")
    args = parser.parse_args(argv)
    if len(args.files) < 2:
        parser.error("give at least two .onnx files to compare")
    task = load_task(MODEL_TASKS[args.model])
    test = task.data(task_data_dir(args.data_dir, task)).test
    images, labels = test.inputs.numpy().astype(np.float32), test.labels.numpy()
    top1 = {f: predictions(f, images) for f in args.files}
    for f in args.files:
        print(f"{f}: {100 * float((top1[f] == labels).mean()):.2f}% on {len(labels)} test images")
    for a, b in itertools.combinations(args.files, 2):
        r = paired(top1[a], top1[b], labels)
        print(
            f"{a} vs {b}: only the first right on {r['only_first']}, only the second on {r['only_second']}, "
            f"top-1 differs on {r['top1_differs']}, exact McNemar p = {r['p']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
