"""Wall time of int8 PTQ with each weight rounding: what GPTQ, and GPTQ with float targets, cost.

    python benchmarks/rounding_time.py --data-dir ../shared/data --models lenet5,resnet8x4

`post_training_quantize` (MSE calibration, 16 batches of 128 calibration images, bias correction) on each
model's cached baseline, once per rounding, in one process. Run it alone: it is a measurement.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_TASKS, baseline, task_data_dir  # noqa: E402

from edgeshrink.quant.ptq import PTQSettings, post_training_quantize  # noqa: E402
from edgeshrink.tasks.registry import load_task  # noqa: E402
from edgeshrink.train import Progress  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--models", default="lenet5,resnet8x4")
    parser.add_argument("--roundings", default="nearest,gptq,gptq-float")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/baselines"))
    parser.add_argument("--seed", type=int, default=0, help="baseline seed and calibration sample")
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        task = load_task(MODEL_TASKS[name])
        data = task.data(task_data_dir(args.data_dir, task))
        model = baseline(task.name, data, args.cache_dir, args.seed, Progress(False))[0].eval()
        sample = data.train.subset(2048, seed=args.seed)
        batches = [(sample.inputs[i : i + 128], None) for i in range(0, 2048, 128)]
        for rounding in args.roundings.split(","):
            started = time.perf_counter()
            post_training_quantize(model, batches, 8, PTQSettings(calibration="mse", rounding=rounding))
            print(f"{name} {rounding}: {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
