"""The exporter registry and its one contract: build the file, load and run it in the target runtime on
the given inputs, compare with the model it came from, and write it only when the check passes.

An exporter (`@register_exporter`) says how to build its bytes from an export copy of the model
(`build`), how to run them (`runner`), and how to write them (`write`, one file or several). The
CLI's `--format` choices and the contract tests come from `list_exporters()`. Exporters never change
the modules of the model they are given: they work on copies (quant/export_copy.py).
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgeshrink.errors import ExportError, RuntimeLoadError
from edgeshrink.files import atomic_write


@dataclass
class Built:
    """An exporter's bytes, before verification, and the PyTorch model they must reproduce."""

    data: bytes
    reference: nn.Module
    precision: str
    activation_type: str | None = None
    layers: list[dict] = field(default_factory=list)
    kernel_choice: dict | None = None
    io: dict | None = None
    notes: list[str] = field(default_factory=list)
    step: float | None = None  # the output's quantization step (parity in steps)
    rtol: float = 1e-3  # float files: max |diff| tolerance relative to the output's range
    min_agreement: float = 99.5
    max_steps: float | None = None  # integer files that must also stay within this many output steps
    extra: dict = field(default_factory=dict)  # format-specific measurements, copied to ExportResult.extra
    state: dict = field(default_factory=dict)  # what the exporter's own check and write need; not reported


@dataclass
class ExportResult:
    """The written file(s), what they hold, and how closely they match the PyTorch model."""

    path: Path
    bytes: int
    precision: str  # "fp32" | "fp16" | "int8" | "w4a8" ...
    format: str = ""
    runtime: str = ""
    activation_type: str | None = None
    parity: dict | None = None
    layers: list[dict] = field(default_factory=list)
    kernel_choice: dict | None = None
    io: dict | None = None  # input/output shapes, types and integer (scale, zero point) where the file has them
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    # the PyTorch model the file reproduces (the fake-quantized one for integer files): what parity compared
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "model"}
        out["path"] = str(self.path)
        return out


Runner = Callable[[np.ndarray], np.ndarray]


class Exporter(ABC):
    """A target format. Subclasses set the class attributes and implement build and runner."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    runtime: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[dict[str, tuple[str, ...] | None]] = {}  # option -> allowed values (None: any), default first

    def require(self) -> None:  # noqa: B027 - optional: formats with no optional dependency keep it
        """ExportError naming the install command when the format's packages are missing."""

    def resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        """Options with defaults filled in; unknown options and values are refused."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise ExportError(f"--format {self.name} takes no option {unknown[0]!r} (its options: {allowed})")
        out = {}
        for key, allowed in self.options.items():
            value = options.get(key)
            if value is None:
                value = allowed[0] if allowed else None
            elif allowed is not None and value not in allowed:
                raise ExportError(f"{key} must be one of {', '.join(allowed)} for --format {self.name}, got {value!r}")
            out[key] = value
        return out

    @abstractmethod
    def build(
        self, model: nn.Module, example: torch.Tensor, options: dict[str, Any], calibration: list[torch.Tensor] | None
    ) -> Built:
        """The file's bytes, from `model` (a private copy in eval mode the exporter may change)."""

    @abstractmethod
    def runner(self, data: bytes, threads: int) -> Runner:
        """Load `data` in the target runtime: float input batch -> float outputs."""

    def check(self, built: Built, batches: list[torch.Tensor], threads: int) -> dict:
        """Run the built file(s) in the runtime on `batches` and compare with the model they reproduce; raises
        ExportError (nothing gets written) when they differ. Returns the parity record."""
        from edgeshrink.exporters.verify import parity, require_agreement, require_steps

        try:
            runner = self.session_runner(built, threads)
        except RuntimeLoadError as exc:
            raise ExportError(f"the exported file does not load, nothing written: {exc}") from None
        result = parity(built.reference, runner, batches, built.step, built.rtol)
        result["reference"] = "the fake-quantized PyTorch model" if built.step else "the PyTorch model"
        require_agreement(result, built.min_agreement, self.runtime)
        if built.max_steps is not None:
            require_steps(result, built.max_steps, self.runtime)
        return result

    def session_runner(self, built: Built, threads: int) -> Runner:
        """The built file(s) loaded in the runtime; formats of several files override this."""
        return self.runner(built.data, threads)

    def write(self, built: Built, path: Path, result: ExportResult, options: dict[str, Any]) -> list[Path]:
        """Write the verified file(s); returns their paths."""
        return [atomic_write(path, built.data)]


_EXPORTERS: dict[str, Exporter] = {}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: add an exporter to the registry under `cls.name`."""
    if cls.name in _EXPORTERS:
        raise ValueError(f"exporter {cls.name!r} registered twice")
    _EXPORTERS[cls.name] = cls()
    return cls


def _load_builtin_exporters() -> None:
    from edgeshrink.exporters import c_array, coreml, ncnn, onnx, pte, tflite, tflm  # noqa: F401


def list_exporters() -> list[str]:
    _load_builtin_exporters()
    return list(_EXPORTERS)


def get_exporter(name: str) -> Exporter:
    _load_builtin_exporters()
    if name not in _EXPORTERS:
        raise ExportError(f"unknown export format {name!r}; supported: {', '.join(_EXPORTERS)}")
    return _EXPORTERS[name]


def format_for(path: str | Path) -> str:
    """The format a file name implies (.onnx -> onnx, .tflite -> tflite)."""
    _load_builtin_exporters()
    suffix = Path(path).suffix.lower()
    for exporter in _EXPORTERS.values():
        if exporter.suffix == suffix:
            return exporter.name
    raise ExportError(f"cannot tell the export format from {Path(path).name!r}: pass format= ({', '.join(_EXPORTERS)})")


def summary_path(path: Path) -> Path:
    """Where an export records what it wrote and verified: NAME.SUFFIX.export.json beside the file."""
    return path.with_name(path.name + ".export.json")


def as_input(x: torch.Tensor) -> torch.Tensor:
    """What a file is fed: float inputs as float32 (the files' input type, also for float16 models);
    integer inputs (token ids, class indices) keep their integer type."""
    return x.float() if x.is_floating_point() else x


def export_model(
    model: nn.Module,
    path: str | Path,
    example_input: torch.Tensor,
    *,
    format: str,
    verify_batches: Iterable[torch.Tensor] = (),
    calibration: list[torch.Tensor] | None = None,
    verify: bool = True,
    threads: int = 2,
    options: dict[str, Any] | None = None,
) -> ExportResult:
    """Build, verify in the runtime, then write (nothing is written when the check fails)."""
    exporter = get_exporter(format)
    exporter.require()
    resolved = {**exporter.resolve(dict(options or {})), "threads": threads}
    built = exporter.build(copy.deepcopy(model).eval(), as_input(example_input), resolved, calibration)
    result = ExportResult(
        Path(path), len(built.data), built.precision, exporter.name, exporter.runtime, built.activation_type
    )
    result.layers, result.kernel_choice, result.io, result.notes = (
        built.layers,
        built.kernel_choice,
        built.io,
        built.notes,
    )
    result.extra.update(built.extra)
    result.model = built.reference
    if verify:
        batches = [as_input(x) for x in verify_batches] or [as_input(example_input)]
        result.parity = exporter.check(built, batches, threads)
        result.bytes, result.io = len(built.data), built.io  # a check may replace the file by a closer one
    result.files = [str(p) for p in exporter.write(built, Path(path), result, resolved)]
    atomic_write(summary_path(result.path), json.dumps(result.to_dict(), indent=2, default=str).encode())
    return result
