"""edgeshrink: make a trained PyTorch model fit an edge device, and prove what it gained.

    import edgeshrink
    result = edgeshrink.compress(model, recipe="deep-compression", train_loader=..., val_loader=...,
                                 out="runs/mine")
    art = edgeshrink.load(result.path, MyNet())       # the compressed model, rebuilt from the file
    edgeshrink.profile(art, device="cortex-m7")       # MACs, bytes, memory, latency; fit on the device
    edgeshrink.export(art, "model.onnx")              # verified in ONNX Runtime (also .tflite, format="c")

Importing the package loads nothing heavy: each name below is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_API = {
    "compress": "edgeshrink.pipeline",
    "CompressResult": "edgeshrink.pipeline",
    "load": "edgeshrink.io",
    "unpack": "edgeshrink.io",
    "save_checkpoint": "edgeshrink.io",
    "EncodeConfig": "edgeshrink.io",
    "save": "edgeshrink.api.save",
    "Artifact": "edgeshrink.artifact",
    "Quantization": "edgeshrink.artifact",
    "Arch": "edgeshrink.architecture",
    "profile": "edgeshrink.api.profile",
    "Profile": "edgeshrink.api.profile",
    "advise": "edgeshrink.api.advise",
    "bench": "edgeshrink.benchmark.run",
    "search": "edgeshrink.autosearch.run",
    "SearchResult": "edgeshrink.autosearch.run",
    "BenchResult": "edgeshrink.benchmark.run",
    "Advice": "edgeshrink.devices.advise",
    "export": "edgeshrink.api.export",
    "export_tflite": "edgeshrink.api.export",
    "ExportResult": "edgeshrink.exporters.base",
    "list_exporters": "edgeshrink.exporters.base",
    "read_container": "edgeshrink.encode.container",
    "Recipe": "edgeshrink.recipes",
    "load_recipe": "edgeshrink.recipes",
    "list_recipes": "edgeshrink.recipes",
    "list_stages": "edgeshrink.stages.base",
    "load_task": "edgeshrink.tasks.registry",
    "list_tasks": "edgeshrink.tasks.registry",
    "create_model": "edgeshrink.tasks.zoo",
    "list_models": "edgeshrink.tasks.zoo",
    "distill_student": "edgeshrink.distillation",
    "EdgeshrinkError": "edgeshrink.errors",
}

__all__ = [
    "Advice",
    "Arch",
    "Artifact",
    "BenchResult",
    "CompressResult",
    "EdgeshrinkError",
    "EncodeConfig",
    "ExportResult",
    "Profile",
    "Quantization",
    "Recipe",
    "SearchResult",
    "advise",
    "bench",
    "compress",
    "create_model",
    "distill_student",
    "export",
    "export_tflite",
    "list_exporters",
    "list_models",
    "list_recipes",
    "list_stages",
    "list_tasks",
    "load",
    "load_recipe",
    "load_task",
    "profile",
    "read_container",
    "save",
    "save_checkpoint",
    "search",
    "unpack",
]

if TYPE_CHECKING:
    from edgeshrink.api.advise import advise
    from edgeshrink.api.export import export, export_tflite
    from edgeshrink.api.profile import Profile, profile
    from edgeshrink.api.save import save
    from edgeshrink.architecture import Arch
    from edgeshrink.artifact import Artifact, Quantization
    from edgeshrink.autosearch.run import SearchResult, search
    from edgeshrink.benchmark.run import BenchResult, bench
    from edgeshrink.devices.advise import Advice
    from edgeshrink.distillation import distill_student
    from edgeshrink.encode.container import read_container
    from edgeshrink.errors import EdgeshrinkError
    from edgeshrink.exporters.base import ExportResult, list_exporters
    from edgeshrink.io import EncodeConfig, load, save_checkpoint, unpack
    from edgeshrink.pipeline import CompressResult, compress
    from edgeshrink.recipes import Recipe, list_recipes, load_recipe
    from edgeshrink.stages.base import list_stages
    from edgeshrink.tasks.registry import list_tasks, load_task
    from edgeshrink.tasks.zoo import create_model, list_models


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeshrink' has no attribute {name!r}")
