"""`edgeshrink.profile`: what a model costs (measured here) and, for a device, what it would cost there."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeshrink.api.deployed import TFLM_FILE, deployed_costs  # noqa: F401  (TFLM_FILE: the CLI's default name)
from edgeshrink.api.inputs import is_exported_file, naming_exported_files, to_artifact
from edgeshrink.artifact import Artifact
from edgeshrink.devices.estimate import DeviceEstimate
from edgeshrink.errors import EdgeshrinkError
from edgeshrink.measure.profile import ModelCosts, measure_artifact, measure_file
from edgeshrink.runtimes.timing import Timing

DevicesDir = str | Path | Sequence[str | Path] | None


@dataclass
class Profile(ModelCosts):
    """A model's measured costs, plus the estimate for `device` when one was named."""

    device: DeviceEstimate | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def costs(self) -> ModelCosts:
        return ModelCosts(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelCosts)})


def _latency_of_artifact(art: Artifact, threads: int, onnx: bool, notes: list[str]) -> dict[str, Timing]:
    from edgeshrink.measure.latency import measure_onnx, measure_torch

    example = art.example()
    out = {"pytorch": measure_torch(art.model, example, threads)}
    if onnx:
        from edgeshrink.exporters.onnx_build import to_onnx

        try:
            graph, _ = to_onnx(art.model, example, "uint8")
        except EdgeshrinkError as exc:
            notes.append(f"no ONNX Runtime latency: the model does not export to ONNX ({exc})")
            return out
        out["onnxruntime"] = measure_onnx(graph.SerializeToString(), example.numpy(), threads)
    return out


def _latency_of_file(path: Path, costs: ModelCosts, threads: int) -> dict[str, Timing]:
    from edgeshrink.devices.estimate import decodes_weights
    from edgeshrink.measure.latency import measure_onnx, measure_tflite, measure_tflm

    if decodes_weights(costs):  # weights for TFLM's DECODE operator: LiteRT cannot run the file
        return {"tflm": measure_tflm(path)}
    if costs.source.kind == "tflite":
        return {"litert": measure_tflite(path, threads)}
    from edgeshrink.measure.onnx_graph import input_shape, load_onnx

    return {"onnxruntime": measure_onnx(path, torch.zeros(input_shape(load_onnx(path))).numpy(), threads)}


def profile(
    model_or_artifact_or_path: Any,
    example_input: torch.Tensor | None = None,
    device: str | None = None,
    *,
    model: nn.Module | None = None,
    model_name: str | None = None,
    latency: bool = True,
    onnx: bool = True,
    threads: int = 1,
    devices_dir: DevicesDir = None,
) -> Profile:
    """Profile a module, an Artifact, a compress() result, a run folder, a container, a checkpoint, or an
    exported .onnx / .tflite file. Every figure says whether it is measured or estimated.

    `example_input` (one batch) is needed for a module whose input shape nothing records; `model` is a
    fresh instance for files of your own class. With `device`, adds the fit, latency and energy estimate
    for the file that device's runtime would load."""
    dev = None
    if device is not None:  # fail on an unknown device before measuring anything
        from edgeshrink.devices.catalogue import get_device

        dev = get_device(device, devices_dir)
    notes: list[str] = []
    if is_exported_file(model_or_artifact_or_path):
        path = Path(model_or_artifact_or_path)
        costs = measure_file(path)
        timings = _latency_of_file(path, costs, threads) if latency else {}
    else:
        with naming_exported_files():
            art = to_artifact(model_or_artifact_or_path, example_input, model, model_name)
        costs = measure_artifact(art)
        timings = _latency_of_artifact(art, threads, onnx, notes) if latency else {}
    fields = {f.name: getattr(costs, f.name) for f in dataclasses.fields(ModelCosts)}
    result = Profile(**{**fields, "latency": timings}, notes=notes)
    if dev is not None:
        from edgeshrink.devices.estimate import estimate_on_device

        result.device = estimate_on_device(deployed_costs(result.costs, dev.kind, notes), dev)
    return result
