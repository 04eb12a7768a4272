"""ncnn runtime: load a .param / .bin pair from memory, run float batches one example at a time, time calls.

Computation is float32 (`float32_compute`). ncnn has no batch dimension: a file pnnx wrote for a [1, C, H, W]
model takes a [C, H, W] blob named `in0` and gives `out0`. The support is an optional extra
(`pip install 'edgeshrink[ncnn]'`); `require_ncnn` turns a missing package into a one-line error that says
how to install it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np

from edgeshrink.errors import ExportError, RuntimeLoadError

INSTALL_HINT = "ncnn support is an optional extra: pip install 'edgeshrink[ncnn]' torch==2.13.0 (or make test)"
INPUT, OUTPUT = "in0", "out0"  # the blob names pnnx gives a one-input, one-output model


def require_ncnn(what: str = "ncnn export") -> None:
    """Raise ExportError naming the install command when pnnx or ncnn is missing."""
    missing = [m for m in ("pnnx", "ncnn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"{what} needs {', '.join(missing)}: {INSTALL_HINT}")


def ncnn_version() -> str:
    from importlib.metadata import version

    return version("ncnn")


def float32_compute(opt) -> None:
    """ncnn's defaults store and compute in float16 where the CPU supports it (F16C here, most phones): turn that off so
    a file is verified against PyTorch in float32, with float16 only where the file stores it."""
    opt.use_vulkan_compute = False
    for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed"):
        setattr(opt, flag, False)


class NcnnSession:
    """A loaded ncnn network: float input batch -> float outputs (numpy), CPU only, on `threads` threads."""

    def __init__(self, param: str, weights: bytes, threads: int = 2) -> None:
        require_ncnn("running an ncnn file")
        import ncnn

        self._weights = bytes(weights)  # ncnn reads the weights in place: keep them alive with the net
        net = ncnn.Net()
        float32_compute(net.opt)
        net.opt.num_threads = threads
        net.opt.openmp_blocktime = 0  # no spinning after a run: its threads would steal the next runtime's cores
        if net.load_param_mem(param) != 0:
            raise RuntimeLoadError("ncnn cannot load the .param file: a layer type or parameter it does not know")
        try:
            net.load_model_mem(self._weights)
        except (RuntimeError, ValueError) as exc:
            raise RuntimeLoadError(f"ncnn cannot load the .bin weights: {exc}") from None
        self.net = net
        self._mat = ncnn.Mat

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """One example, without its batch dimension."""
        extractor = self.net.create_extractor()
        # a Mat over numpy's memory, cloned: a first layer that works in place (x - mean, a BinaryOp with a
        # scalar) on the external buffer crashed the process (segmentation fault, ncnn 1.0.20261020)
        extractor.input(INPUT, self._mat(np.ascontiguousarray(x, dtype=np.float32)).clone())
        status, out = extractor.extract(OUTPUT)
        if status != 0:
            raise RuntimeLoadError(f"ncnn failed to run the network (extract returned {status})")
        return np.array(out, dtype=np.float32)

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Float outputs for a batch (one example at a time), stacked on a new batch dimension."""
        if inputs.ndim < 2:
            raise ExportError(f"ncnn files take a batch of examples; got an array of shape {list(inputs.shape)}")
        return np.stack([self.run_one(x) for x in inputs])

    def call(self, example: np.ndarray) -> Callable[[], object]:
        """A zero-argument call that runs the network on the first example, for timing."""
        x = np.ascontiguousarray(example[0], dtype=np.float32)
        return lambda: self.run_one(x)
