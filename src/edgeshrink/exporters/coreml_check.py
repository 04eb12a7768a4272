"""The structural check of a Core ML package: Core ML runs only on Apple platforms, so on Linux the package's
numerics cannot be run. What can be checked is that the package stores what the model computes with: each
weight tensor, decoded from the package's own representation (palette + indices, sparse mask + values, or
plain), equals the model's weight exactly; each palette holds exactly the layer's distinct values (its
codebook); each sparse mask is the layer's nonzero pattern. The decoding is coremltools' reference
implementation of the MIL constexpr ops, read from the package as written (not the in-memory program).
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np

from edgeshrink.errors import ExportError
from edgeshrink.runtimes.litert import quiet

WEIGHT_OPS = ("conv", "linear", "conv_transpose")


@dataclass
class StoredWeight:
    """One weight tensor as the package stores it."""

    consumer: str  # the MIL op that reads it (conv / linear)
    representation: str  # plain | palette | sparse | palette+sparse
    dense: np.ndarray
    palette: np.ndarray | None = None  # the palette values (all tables, flattened)
    mask: np.ndarray | None = None


def _representation(producer) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """(name, palette values, mask) of the op chain that produces a weight."""
    kind = producer.op_type
    if kind == "constexpr_sparse_to_dense":
        inner = producer.nonzero_data.op
        mask = producer.mask.val
        if inner.op_type == "constexpr_lut_to_sparse":
            return "palette+sparse", np.asarray(inner.lut.val).ravel(), np.asarray(inner.indices_mask.val)
        return "sparse", None, np.asarray(mask)
    if kind == "constexpr_lut_to_dense":
        return "palette", np.asarray(producer.lut.val).ravel(), None
    return "plain", None, None


def read_package(package: Path) -> list[StoredWeight]:
    """Every conv / linear weight of the saved package, decoded, in graph order."""
    with quiet():  # coremltools reports each Apple-only library it cannot load
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load

        model = ct.models.MLModel(str(package), skip_model_load=True)
        spec = model.get_spec()
        version = spec.specificationVersion
        program = load(model_spec=spec, specification_version=version, file_weights_dir=model.weights_dir)
    stored = []
    for op in program.functions["main"].operations:
        if op.op_type not in WEIGHT_OPS:
            continue
        weight = op.inputs["weight"]
        producer = weight.op
        if weight.val is not None:
            dense = np.asarray(weight.val)
        elif producer.op_type.startswith("constexpr"):
            dense = np.asarray(producer.materialized_val_inference())
        else:
            raise ExportError(f"Core ML package: the weight of {op.name} is computed at run time, not stored")
        kind, palette, mask = _representation(producer)
        stored.append(StoredWeight(op.name, kind, dense, palette, mask))
    return stored


def unpack(data: bytes, folder: Path) -> Path:
    """The zipped package bytes extracted into `folder`; returns the .mlpackage path."""
    with zipfile.ZipFile(BytesIO(data)) as archive:
        archive.extractall(folder)
    packages = [p for p in folder.iterdir() if p.suffix == ".mlpackage"]
    if len(packages) != 1:
        raise ExportError("Core ML export: the built archive does not hold one .mlpackage")
    return packages[0]


def check_package(data: bytes, expected: dict[str, tuple[list[str], str, np.ndarray]]) -> dict:
    """ExportError unless the package stores, for each layer, `expected[layer]` = (the MIL ops reading it: two or
    more for a layer applied twice, the planned representation, the weight as the package's precision holds it);
    returns what was checked."""
    with tempfile.TemporaryDirectory() as tmp:
        stored = {w.consumer: w for w in read_package(unpack(data, Path(tmp)))}
    readers = sum(len(ops) for ops, _, _ in expected.values())
    if len(stored) != readers:
        raise ExportError(
            f"Core ML package holds {len(stored)} conv / linear weights, the model {readers}: nothing written"
        )
    layers = []
    for layer, (ops, planned, weight) in expected.items():
        for op in ops:
            _require(op in stored, layer, f"no op {op} reads it in the package")
            _check_weight(layer, stored[op], planned, weight)
        layers.append({"layer": layer, "op": ops[0], "stored_as": stored[ops[0]].representation})
    return {"layers": layers, "weights_checked": len(layers)}


def _check_weight(layer: str, got: StoredWeight, planned: str, weight: np.ndarray) -> None:
    _require(got.dense.shape == weight.shape, layer, f"shape {list(got.dense.shape)} != {list(weight.shape)}")
    _require(np.array_equal(got.dense.astype(np.float32), weight.astype(np.float32)), layer, "decodes differently")
    _require(got.representation == planned, layer, f"stored as {got.representation}, planned {planned}")
    if got.palette is not None:
        distinct = np.unique(weight[weight != 0] if got.mask is not None else weight)
        in_palette = np.isin(distinct.astype(np.float32), got.palette.astype(np.float32))
        _require(bool(in_palette.all()), layer, "palette misses some of the layer's values")
    if got.mask is not None:
        _require(np.array_equal(got.mask != 0, weight != 0), layer, "sparse mask differs from its nonzeros")


def _require(ok: bool, layer: str, what: str) -> None:
    if not ok:
        raise ExportError(f"Core ML package check failed for {layer}: {what}; nothing written")
