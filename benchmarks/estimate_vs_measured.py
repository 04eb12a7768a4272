"""Estimated vs measured latency of every zoo model on this machine (the issue's 2x check).

    python benchmarks/estimate_vs_measured.py --threads 1 --out estimate_vs_measured.json

Calibrates "this-machine" (ONNX Runtime on the CPU, written to a temporary folder unless
--devices-dir names one that already holds this-machine.toml), then for each registered zoo model
measures ONNX Runtime latency at batch 1 and compares it with the estimate from MACs, bytes moved and
the calibrated figures. Writes JSON and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import edgeshrink
from edgeshrink.devices.calibrate import calibrate, write_device
from edgeshrink.devices.catalogue import get_device
from edgeshrink.environment import environment
from edgeshrink.tasks.zoo import create_model, list_models, model_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--devices-dir", type=Path, default=None, help="reuse a calibrated this-machine.toml")
    parser.add_argument("--out", type=Path, default=Path("estimate_vs_measured.json"))
    args = parser.parse_args()
    folder = args.devices_dir or Path(tempfile.mkdtemp())
    if not (folder / "this-machine.toml").is_file():
        write_device(calibrate(args.threads), folder)
    device = get_device("this-machine", folder)
    rows = []
    for name in list_models():
        p = edgeshrink.profile(
            create_model(name).eval(),
            torch.zeros(1, *model_entry(name).input_shape),
            device="this-machine",
            threads=args.threads,
            devices_dir=folder,
        )
        measured = p.latency["onnxruntime"]
        estimated = p.device.latency.ms
        rows.append(
            {
                "model": name,
                "dense_macs": p.macs.dense,
                "estimated_ms": estimated,
                "measured_median_ms": measured.median_ms,
                "measured_p90_ms": measured.p90_ms,
                "ratio": estimated / measured.median_ms,
                "runtime": f"{measured.runtime} {measured.version}",
                "threads": measured.threads,
                "batch": measured.batch,
            }
        )
    result = {"device": device.model_dump(), "rows": rows, "environment": environment()}
    args.out.write_text(json.dumps(result, indent=2))
    print("| model | dense MACs | estimated ms | measured ms (median, p90) | estimated / measured |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['model']} | {r['dense_macs']:,} | {r['estimated_ms']:.3f} | "
            f"{r['measured_median_ms']:.3f}, {r['measured_p90_ms']:.3f} | {r['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
