"""edgeshrink: make a trained PyTorch model fit an edge device, and prove what it gained.

    import edgeshrink
    result = edgeshrink.compress(model, recipe="deep-compression", train_loader=..., val_loader=...,
                                 out="runs/mine")
    edgeshrink.unpack(result.path, MyNet())   # the weights of the container, into a fresh model
    edgeshrink.export(result, "model.onnx", example_input=x)  # ONNX, verified in ONNX Runtime
    edgeshrink.export_tflite(result, "model.tflite", example_input=x)  # TFLite, verified in LiteRT

Importing the package loads nothing heavy: each name below is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "compress": "edgeshrink.pipeline",
    "CompressResult": "edgeshrink.pipeline",
    "pack": "edgeshrink.encode.container",
    "unpack": "edgeshrink.encode.container",
    "read_container": "edgeshrink.encode.container",
    "load_recipe": "edgeshrink.recipes",
    "list_recipes": "edgeshrink.recipes",
    "load_task": "edgeshrink.tasks.registry",
    "list_tasks": "edgeshrink.tasks.registry",
    "create_model": "edgeshrink.tasks.zoo",
    "distill_student": "edgeshrink.distillation",
    "list_models": "edgeshrink.tasks.zoo",
    "EdgeshrinkError": "edgeshrink.errors",
    "export": "edgeshrink.exporters.onnx",
    "ExportResult": "edgeshrink.exporters.onnx",
    "export_tflite": "edgeshrink.exporters.tflite",
}

__all__ = [
    "CompressResult",
    "EdgeshrinkError",
    "ExportResult",
    "compress",
    "export",
    "export_tflite",
    "create_model",
    "distill_student",
    "list_models",
    "list_recipes",
    "list_tasks",
    "load_recipe",
    "load_task",
    "pack",
    "read_container",
    "unpack",
]

if TYPE_CHECKING:
    from edgeshrink.distillation import distill_student
    from edgeshrink.encode.container import pack, read_container, unpack
    from edgeshrink.errors import EdgeshrinkError
    from edgeshrink.exporters.onnx import ExportResult, export
    from edgeshrink.exporters.tflite import export_tflite
    from edgeshrink.pipeline import CompressResult, compress
    from edgeshrink.recipes import list_recipes, load_recipe
    from edgeshrink.tasks.registry import list_tasks, load_task
    from edgeshrink.tasks.zoo import create_model, list_models


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeshrink' has no attribute {name!r}")
