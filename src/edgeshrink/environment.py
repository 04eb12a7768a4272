"""Where a figure comes from: software versions and the machine, attached to every report."""

from __future__ import annotations

import datetime as dt
import os
import platform
from functools import cache
from importlib import metadata


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Versions, machine and threads: enough to tell whether two figures are comparable."""
    import torch

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "edgeshrink": version("edgeshrink"),
        "torch": torch.__version__,
        "numpy": version("numpy"),
        "onnxruntime": version("onnxruntime"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
