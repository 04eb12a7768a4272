"""ExecuTorch runtime: load a .pte program (XNNPACK delegate), run float batches, time calls.

The ExecuTorch support is an optional extra (`pip install 'edgeshrink[executorch]'`, about 1.6 GB);
`require_executorch` turns a missing package into a one-line error that says how to install it.
The files are written at batch 1 (what a device runs), so a batch is run one example at a time.
XNNPACK's thread pool is one per process: `ExecuTorchSession(threads=N)` resets it to N threads.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np
import torch

from edgeshrink.errors import ExportError, RuntimeLoadError
from edgeshrink.runtimes.litert import quiet

INSTALL_HINT = (
    "ExecuTorch support is an optional extra: pip install 'edgeshrink[executorch]' torch==2.13.0 "
    "(or make test, which installs it)"
)


def require_executorch(what: str = "ExecuTorch export") -> None:
    """Raise ExportError naming the install command when executorch (or torchao, which it needs) is missing."""
    missing = [m for m in ("executorch", "torchao") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"{what} needs {', '.join(missing)}: {INSTALL_HINT}")


def executorch_version() -> str:
    from importlib.metadata import version

    return version("executorch")


def _set_threads(threads: int) -> None:
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


class ExecuTorchSession:
    """A loaded .pte program's `forward`: float input batch -> float outputs (numpy)."""

    def __init__(self, data: bytes, threads: int = 2) -> None:
        require_executorch("running a .pte file")
        with quiet():
            from executorch.runtime import Runtime

            _set_threads(threads)
            try:
                program = Runtime.get().load_program(bytes(data))
                method = program.load_method("forward")
            except (RuntimeError, ValueError) as exc:
                reason = " ".join(str(exc).split())[:200]
                raise RuntimeLoadError(f"ExecuTorch cannot load the program: {reason}") from None
        if method is None:
            raise RuntimeLoadError("ExecuTorch cannot load the program: it has no forward method")
        self._data, self._method = data, method  # the program reads its bytes in place: keep them
        self.input_shape = tuple(int(v) for v in method.metadata.input_tensor_meta(0).sizes())

    def run_one(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self._method.execute([x])[0]
        except RuntimeError as exc:
            raise RuntimeLoadError(
                f"ExecuTorch failed to run the program: {' '.join(str(exc).split())[:200]}"
            ) from None

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Float outputs for a batch, one example at a time (the file's batch is 1)."""
        batch = self.input_shape[0]
        x = torch.from_numpy(np.ascontiguousarray(inputs))
        if x.shape[1:] != torch.Size(self.input_shape[1:]):
            raise ExportError(f"the .pte file takes inputs of shape {list(self.input_shape)}; got {list(x.shape)}")
        chunks = [self.run_one(x[i : i + batch]).numpy().astype(np.float32) for i in range(0, x.shape[0], batch)]
        return np.concatenate(chunks)

    def call(self, example: np.ndarray) -> Callable[[], object]:
        """A zero-argument call that runs the program on `example`, for timing."""
        x = torch.from_numpy(np.ascontiguousarray(example[: self.input_shape[0]]))
        return lambda: self._method.execute([x])
