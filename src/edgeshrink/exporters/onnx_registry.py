"""The PyTorch exporter's table of ATen -> ONNX translations, built once per process instead of once per export.

`torch.onnx.export` (dynamo) builds its `ONNXRegistry` from torchlib on every call: the onnxscript
translations of 505 ATen operators at opset 18, each with its signature inferred when it is registered. Built
once, exports take 0.73-0.90x the time and write the same bytes (`python benchmarks/onnx_export_time.py`,
docs/benchmarks.md). Inside `torchlib_registry_once()` the classmethod returns a copy of a table built once
per opset: a new dict with new lists, so what an export adds to its copy (edgeshrink's
QuantizeLinear/DequantizeLinear translations, in front of the list) never reaches the next export. The entries
themselves are not copied: they are frozen once built (the signature is inferred in `__post_init__`, nothing
assigns to them later).

When the private classmethod is not where torch 2.13 keeps it, the exporter runs as it is, only slower.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_BUILT: dict[tuple[type, int], Any] = {}
_LOCK = threading.RLock()  # one export at a time patches the class; a nested block re-enters


def _registration_class() -> type | None:
    """torch's ONNXRegistry, when it has the `from_torchlib` classmethod this module wraps."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return None
    cls = getattr(_registration, "ONNXRegistry", None)
    if cls is None or not isinstance(cls.__dict__.get("from_torchlib"), classmethod):
        return None
    return cls


def _copy_registry(registry: Any) -> Any:
    """A registry with the same entries in new lists (registering into the copy leaves the original as is)."""
    copy = type(registry)()
    copy._opset_version = registry._opset_version
    copy.functions = {target: list(entries) for target, entries in registry.functions.items()}
    return copy


@contextlib.contextmanager
def torchlib_registry_once() -> Iterator[None]:
    """Within the block, ONNXRegistry.from_torchlib returns a copy of a table built once per opset."""
    cls = _registration_class()
    if cls is None:
        yield
        return
    build = cls.__dict__["from_torchlib"]

    def from_torchlib(klass: type, opset_version: int = cls().opset_version) -> Any:
        key = (klass, int(opset_version))
        if key not in _BUILT:
            _BUILT[key] = build.__func__(klass, opset_version=opset_version)
        return _copy_registry(_BUILT[key])

    with _LOCK:
        cls.from_torchlib = classmethod(from_torchlib)
        try:
            yield
        finally:
            cls.from_torchlib = build
