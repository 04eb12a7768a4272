"""`edgeshrink devices calibrate`: measure this machine's figures and write them as a device file.

The machine is measured as it runs models when deployed: ONNX Runtime on the CPU, at a fixed thread
count, on one-node ONNX graphs built here:
- fp32 MAC rate: median achieved MAC/s over small convolutions and a matrix product, the layer sizes of
  edge models (large-GEMM peaks overstate what small layers reach);
- int8 MAC rate: an ONNX Runtime MatMulInteger (u8 x s8);
- memory bandwidth: median achieved bytes/s of memory-bound operations (Relu, MaxPool, a batch-1
  Gemm), counting the bytes each reads and writes;
- operation overhead: the time per node of a chain of tiny Relu nodes (dispatch cost).
RAM is MemTotal, flash the disk holding the config folder, SRAM the largest CPU cache.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from edgeshrink.devices.catalogue import THIS_MACHINE, user_devices_dir
from edgeshrink.devices.schema import Device
from edgeshrink.runtimes.onnxruntime import make_session
from edgeshrink.runtimes.timing import time_calls

# (in channels, out channels, kernel, input size): layer sizes of edge models
CONV_SHAPES = [(1, 16, 5, 28), (16, 32, 3, 14), (32, 64, 3, 8)]
GEMM = 128
CHAIN = 64  # ReLU nodes in the overhead model


def _median_s(fn, budget_s: float) -> float:
    return statistics.median(time_calls(fn, budget_s=budget_s))


class _Ort:
    """Builds one-graph ONNX models and times them in ONNX Runtime at a fixed thread count."""

    def __init__(self, threads: int, budget_s: float) -> None:
        self.threads, self.budget_s = threads, budget_s
        self.rng = np.random.default_rng(0)

    def time(self, nodes, inputs: dict[str, np.ndarray], output: str, weights: dict[str, np.ndarray]) -> float:
        import onnx
        from onnx import helper, numpy_helper

        def info(name, arr):
            return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape)

        graph = helper.make_graph(
            nodes,
            "calibration",
            [info(k, v) for k, v in inputs.items()],
            [helper.make_empty_tensor_value_info(output)],
            [numpy_helper.from_array(v, k) for k, v in weights.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            onnx.save(model, str(path))
            session = make_session(path, self.threads)
        return _median_s(lambda: session.run(None, inputs), self.budget_s)

    def randn(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape).astype(np.float32)


def fp32_mac_rate(ort: _Ort) -> float:
    """Median achieved MAC/s of small convolutions and a matrix product."""
    from onnx import helper

    rates = []
    for cin, cout, k, size in CONV_SHAPES:
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[k // 2] * 4)
        s = ort.time([node], {"x": ort.randn(1, cin, size, size)}, "y", {"w": ort.randn(cout, cin, k, k)})
        rates.append(cout * size * size * cin * k * k / s)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    rates.append(GEMM**3 / ort.time([node], {"x": ort.randn(GEMM, GEMM)}, "y", {"w": ort.randn(GEMM, GEMM)}))
    return float(statistics.median(rates))


def memory_bandwidth(ort: _Ort) -> float:
    """Median achieved bytes/s (read + written) of memory-bound operations."""
    from onnx import helper

    x = ort.randn(1, 32, 32, 32)  # 128 KB
    relu = ort.time([helper.make_node("Relu", ["x"], ["y"])], {"x": x}, "y", {})
    pool = ort.time([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], {"x": x}, "y", {})
    gemv = ort.time(
        [helper.make_node("Gemm", ["v", "w"], ["y"], transB=1)],
        {"v": ort.randn(1, 1024)},
        "y",
        {"w": ort.randn(1024, 1024)},
    )
    return float(statistics.median([2 * x.nbytes / relu, x.nbytes * 5 / 4 / pool, (1024 * 1024 + 2048) * 4 / gemv]))


def op_overhead(ort: _Ort) -> float:
    """Per-operation cost: (a chain of CHAIN tiny ReLUs - one tiny ReLU) / (CHAIN - 1)."""
    from onnx import helper

    def chain(n: int) -> float:
        nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
        return ort.time(nodes, {"t0": ort.randn(1, 1)}, f"t{n}", {})

    return max((chain(CHAIN) - chain(1)) / (CHAIN - 1), 0.0)


def int8_mac_rate(ort: _Ort) -> float:
    from onnx import helper

    n = 256
    node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
    a = ort.rng.integers(0, 255, (n, n), dtype=np.uint8)
    w = ort.rng.integers(-127, 127, (n, n), dtype=np.int8)
    return n**3 / ort.time([node], {"a": a}, "y", {"w": w})


def _largest_cache() -> int:
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        mult = {"K": 1024, "M": 1024**2}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * mult)
    return max(sizes, default=1024 * 1024)


def _ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def calibrate(threads: int = 1, budget_s: float = 0.3) -> Device:
    """Measure this machine running ONNX Runtime on its CPU, at `threads` threads."""
    import onnxruntime

    from edgeshrink.environment import cpu_model

    ort = _Ort(threads, budget_s)
    fp32, int8, bandwidth, overhead = fp32_mac_rate(ort), int8_mac_rate(ort), memory_bandwidth(ort), op_overhead(ort)
    config = user_devices_dir()
    disk = shutil.disk_usage(config if config.exists() else Path.home())
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    where = (
        f"measured by `edgeshrink devices calibrate` on {cpu_model()}, {threads} thread(s), "
        f"onnxruntime {onnxruntime.__version__}, {when}"
    )
    return Device(
        name=THIS_MACHINE,
        description=f"this machine ({cpu_model()}), calibrated {when[:10]} with {threads} thread(s)",
        kind="host",
        flash_bytes=disk.total,
        ram_bytes=_ram(),
        sram_bytes=_largest_cache(),
        fp32_macs_per_s=fp32,
        int8_macs_per_s=int8,
        memory_bandwidth_bytes_per_s=bandwidth,
        op_overhead_s=overhead,
        threads=threads,
        measured=True,
        sources={
            "flash_bytes": "measured: size of the disk holding the user config folder",
            "ram_bytes": "measured: MemTotal of /proc/meminfo",
            "sram_bytes": "measured: largest CPU cache in /sys/devices/system/cpu/cpu0/cache",
            "fp32_macs_per_s": f"{where}: median MAC/s of Conv {CONV_SHAPES} and a {GEMM}^3 MatMul",
            "int8_macs_per_s": f"{where}: MatMulInteger 256^3 (u8 x s8)",
            "memory_bandwidth_bytes_per_s": f"{where}: median bytes/s of Relu, MaxPool and a 1024x1024 batch-1 Gemm",
            "op_overhead_s": f"{where}: time per node of a chain of {CHAIN} Relu nodes on one element",
        },
    )


def device_toml(device: Device) -> str:
    """The device as a TOML file (strings and numbers only, so JSON quoting is valid TOML)."""
    data = device.model_dump(exclude_none=True)
    sources = data.pop("sources")
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items()]
    lines += ["", "[sources]"] + [f"{k} = {json.dumps(v)}" for k, v in sources.items()]
    return "\n".join(lines) + "\n"


def write_device(device: Device, folder: str | Path | None = None) -> Path:
    from edgeshrink.files import atomic_write

    path = Path(folder or user_devices_dir()) / f"{device.name}.toml"
    atomic_write(path, device_toml(device).encode())
    return path
