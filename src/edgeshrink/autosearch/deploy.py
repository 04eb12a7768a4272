"""What a candidate costs on the target device, measured on the file that device runs.

Each candidate is exported with the exporter for the device's runtime, so every figure belongs to a file that
was verified in that runtime before it was written:
- a microcontroller: `--format tflm` (TFLite Micro, compressed weights): flash = the file's bytes, RAM = the arena
  TFLM needs (measured in the interpreter);
- a phone or board: `--format pte` (ExecuTorch, XNNPACK), else `--format tflite` (LiteRT);
- anything else: `--format onnx` (ONNX Runtime).
Flash and RAM needs beyond the TFLM arena, and the latency on the device, are the device model's estimates
(devices/estimate.py) from the file's own graph, labelled as such. Without the runtime's package installed the
candidate's container is judged instead, and the record says so.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeshrink.artifact import Artifact
from edgeshrink.devices.estimate import deployment, estimate_latency
from edgeshrink.devices.schema import Device
from edgeshrink.io.storage import eval_mode
from edgeshrink.measure.profile import ModelCosts, measure_artifact, measure_file
from edgeshrink.models.layers import Resize

# device kind -> formats to try, in order, and the module each needs
FORMATS = {"mcu": ("tflm",), "phone": ("pte", "tflite"), "sbc": ("pte", "tflite"), "gpu-board": ("pte", "tflite")}
NEEDS = {"tflm": ("tflite_micro", "litert_torch"), "pte": ("executorch",), "tflite": ("litert_torch",), "onnx": ()}
FILE_NAME = {"tflm": "model.tflm.tflite", "pte": "model.pte", "tflite": "model.tflite", "onnx": "model.onnx"}


@dataclass
class Deployable:
    """The file a device runs and what it needs there."""

    file: str
    format: str
    runtime: str
    bytes: int  # measured: the file's bytes (flash)
    ram_bytes: int  # what the runtime needs in RAM while the model runs
    ram_source: str
    latency_ms: float
    latency_source: str
    model: nn.Module = field(repr=False)  # the PyTorch model the file reproduces (verified in the runtime)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def deploy_format(device: Device) -> str | None:
    """The export format for this device whose runtime is installed here (None: judge the container)."""
    for fmt in FORMATS.get(device.kind, ("onnx",)):
        if all(importlib.util.find_spec(module) is not None for module in NEEDS[fmt]):
            return fmt
    return None


def _from_file(path: Path, fmt: str, costs: ModelCosts, device: Device, arena: int | None) -> tuple[int, str]:
    """(RAM bytes, where the figure comes from) for an exported file."""
    if fmt == "tflm" and arena is not None:
        return arena, "measured: the smallest tensor arena TFLite Micro runs the file in"
    d = deployment(costs, device)
    return d.ram_weight_bytes + costs.activations.peak_bytes, f"estimated: {d.note}; peak activations computed"


def deploy(
    artifact: Artifact,
    device: Device,
    folder: Path,
    calibration: list[torch.Tensor],
    verify: list[torch.Tensor],
    threads: int = 1,
) -> Deployable:
    """Export `artifact` for `device` into `folder` (verified in the runtime) and measure what it needs there."""
    fmt = deploy_format(device)
    if fmt is None:
        return _container(artifact, device)
    from edgeshrink.api.export import export

    path = folder / FILE_NAME[fmt]
    options = {"compress": "auto"} if fmt == "tflm" else {}
    artifact, resize, notes = split_input_resize(artifact, verify)
    if resize is not None:
        verify, calibration = [resize(x) for x in verify], [resize(x) for x in calibration]
    result = export(artifact, path, format=fmt, verify_data=verify, calibration=calibration, threads=threads, **options)
    model = result.model if resize is None else nn.Sequential(resize, result.model).eval()
    arena = result.extra.get("arena_bytes")
    if fmt == "pte":
        from edgeshrink.api.deployed import pte_costs

        costs = pte_costs(measure_artifact(artifact), path)
    else:
        costs = measure_file(path, arena_bytes=arena) if fmt == "tflm" else measure_file(path)
    ram, ram_source = _from_file(path, fmt, costs, device, arena)
    latency = estimate_latency(costs, device)
    return Deployable(
        str(path), fmt, result.runtime, result.bytes, ram, ram_source, latency.ms, latency.provenance, model, notes
    )


def split_input_resize(artifact: Artifact, inputs: list[torch.Tensor]) -> tuple[Artifact, Resize | None, list[str]]:
    """A zoo family's input resize (its `resolution` knob) moved out of the file, into the device's input pipeline.

    Inside an int8 file the resize runs on the int8 input, and each runtime rounds its integer bilinear
    resize its own way: TFLite Micro's files of resized candidates differed from the PyTorch int8 model by 2-3
    output steps and were refused. A camera or sensor pipeline resizes before the model anyway, so the file
    takes the resized input and the device does the resize (the same float bilinear op). Split only when the
    model without its resize computes exactly what the whole model computes on `inputs`."""
    resize = getattr(artifact.model, "resize", None)
    if not isinstance(resize, Resize) or resize.size is None or not inputs:
        return artifact, None, []
    inner = copy.deepcopy(artifact.model).eval()
    inner.resize = Resize(None)
    with eval_mode(artifact.model), torch.no_grad():
        if not torch.equal(inner(resize(inputs[0])), artifact.model(inputs[0])):
            return artifact, None, []
    shape = (*inputs[0].shape[1:-2], resize.size, resize.size)
    arch = artifact.arch.model_copy(update={"input_shape": list(shape)}) if artifact.arch.input_shape else artifact.arch
    size = f"{resize.size}x{resize.size}"
    note = f"the input is resized to {size} before the file (bilinear, in the device's input pipeline)"
    split = artifact.replace(model=inner, arch=arch, example_input=torch.zeros(1, *shape))
    return split, copy.deepcopy(resize), [note]


def _container(artifact: Artifact, device: Device) -> Deployable:
    """No runtime for this device installed: the container in flash, decoded to dense weights in RAM."""
    costs = measure_artifact(artifact)
    d = deployment(costs, device)
    latency = estimate_latency(costs, device)
    wanted = ", ".join(FORMATS.get(device.kind, ("onnx",)))
    return Deployable(
        d.file,
        "container",
        d.runtime,
        d.flash_bytes,
        d.ram_weight_bytes + costs.activations.peak_bytes,
        f"estimated: {d.note}",
        latency.ms,
        latency.provenance,
        artifact.model,
        [f"no runtime for {device.name} installed ({wanted}): the container is judged; pip install the extra"],
    )
