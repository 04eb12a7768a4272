"""`profile`: what a model is and costs — counts, MACs, weight bytes, peak activations, measured latency
on this machine, and (for a named device) estimated fit, latency and energy."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from edgeshrink.measure.artifacts import Artifact, from_module, open_artifact
from edgeshrink.measure.graph import OpGraph, from_torch
from edgeshrink.measure.macs import mac_summary
from edgeshrink.measure.memory import peak_activation_memory
from edgeshrink.measure.sizes import weight_sizes


def _graph(art: Artifact) -> OpGraph:
    if art.model is not None:
        return from_torch(art.model, art.example)
    if art.tflite_path is not None:
        from edgeshrink.measure.tflite_graph import from_tflite

        return from_tflite(art.tflite_path)
    from edgeshrink.measure.onnx_graph import from_onnx

    return from_onnx(art.onnx_path)  # type: ignore[arg-type]


def _op_rows(graph: OpGraph) -> list[dict]:
    rows = []
    for op in graph.ops:
        touched = {graph.root(t) for t in op.inputs + op.outputs}
        rows.append(
            {
                "name": op.name,
                "layer": op.layer,
                "op": op.target,
                "macs": op.macs,
                "nonzero_macs": graph.nonzero_macs(op),
                "activation_bytes": sum(graph.sizes[t] for t in touched),
                "weight_bytes": graph.weight_bytes(op),
            }
        )
    return rows


def _container_bytes(art: Artifact) -> int | None:
    if art.kind in ("container", "run-folder"):
        return art.file_bytes
    if art.model is None:
        return None
    from edgeshrink.encode.container import state_to_bytes
    from edgeshrink.weights import effective_state_dict

    return state_to_bytes(effective_state_dict(art.model), arch=art.arch).nbytes


def measure_latency(art: Artifact, threads: int = 1, onnx: bool = True) -> dict:
    """Measured on this machine: PyTorch eager (torch models) and ONNX Runtime (exported when needed), or
    LiteRT for a .tflite file."""
    from edgeshrink.measure.latency import measure_onnx, measure_tflite, measure_torch

    out = {}
    if art.tflite_path is not None:
        out["litert"] = measure_tflite(art.tflite_path, threads).to_dict()
        return out
    if art.model is not None:
        out["pytorch"] = measure_torch(art.model, art.example, threads).to_dict()
    if not onnx:
        return out
    if art.onnx_path is not None:
        out["onnxruntime"] = measure_onnx(art.onnx_path, art.example.numpy(), threads).to_dict()
        return out
    from edgeshrink.measure.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(art.model, art.example, Path(tmp) / "model.onnx")  # type: ignore[arg-type]
        out["onnxruntime"] = measure_onnx(path, art.example.numpy(), threads).to_dict()
    return out


def profile(
    artifact: str | Path | nn.Module,
    *,
    device: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    model_name: str | None = None,
    latency: bool = True,
    onnx: bool = True,
    threads: int = 1,
    devices_dir: str | Path | Sequence[str | Path] | None = None,
) -> dict:
    """Profile a checkpoint, run folder, container, ONNX or TFLite file or an `nn.Module` (give `input_shape`,
    one example without the batch dimension). Every figure says whether it is measured or estimated."""
    from edgeshrink.report.provenance import environment

    if isinstance(artifact, nn.Module):
        if input_shape is None:
            from edgeshrink.errors import ConfigError

            raise ConfigError("profiling a module needs input_shape= (one example, without the batch dimension)")
        art = from_module(artifact, tuple(input_shape))
    else:
        art = open_artifact(artifact, model_name)
    dev = None
    if device is not None:  # fail on an unknown device before measuring anything
        from edgeshrink.devices.catalogue import get_device

        dev = get_device(device, devices_dir)
    graph = _graph(art)
    int8 = any(w.dtype in (np.int8, np.uint8) for w in graph.weights.values())
    result = {
        "artifact": {"path": str(art.path), "kind": art.kind, "arch": art.arch},
        "input_shape": list(art.example.shape),
        "dtype": "int8" if int8 else "fp32",
        "skips_zeros": art.skips_zeros,
        "macs": mac_summary(graph),
        "weights": weight_sizes(graph.weights, _container_bytes(art), art.file_bytes, graph.parameters),
        "activations": peak_activation_memory(graph),
        "ops": _op_rows(graph),
        "environment": environment(),
    }
    result["activations"]["batch"] = int(art.example.shape[0])
    if latency:
        result["latency"] = measure_latency(art, threads, onnx)
    if dev is not None:
        from edgeshrink.devices.estimate import estimate_on_device

        result["device"] = estimate_on_device(result, dev)
    return result
