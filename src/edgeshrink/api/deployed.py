"""The file a device runs, found in a run folder: `profile` and `advise` on a device judge a run folder (or its
container) by the file exported into it for that device's runtime, when one was exported after the container.

- a microcontroller: `model.tflm.tflite` (`export --format tflm`): its bytes in flash, its measured arena in RAM;
- a phone or a board: the newer of `model.pte` (`export --format pte`, ExecuTorch) and `model.tflite`
  (`export --format tflite`, LiteRT): the file's bytes in flash and, for the weights XNNPACK holds in RAM,
  the LiteRT file's measured graph or, for a .pte, its bytes (estimated; labelled).
Without such a file the container is judged (decoded to dense weights in RAM), and a note says which command
writes the file the device runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgeshrink.exporters.base import summary_path
from edgeshrink.measure.profile import ModelCosts, Source, measure_file

TFLM_FILE = "model.tflm.tflite"  # what `export RUN --format tflm` writes into a run folder
BOARD_FILES = {"model.pte": "ExecuTorch", "model.tflite": "LiteRT"}  # `export RUN --format pte / tflite`


def _exported_after(path: Path, container: Path) -> bool:
    return path.is_file() and (not container.is_file() or path.stat().st_mtime >= container.stat().st_mtime)


def pte_costs(costs: ModelCosts, path: Path) -> ModelCosts:
    """The model's computed costs, with the .pte file's measured bytes and the precision its export recorded."""
    size = path.stat().st_size
    precision = costs.dtype
    summary = summary_path(path)
    if summary.is_file():
        precision = json.loads(summary.read_text()).get("precision", precision)
    weights = dataclasses.replace(
        costs.weights,
        file=size,
        provenance={**costs.weights.provenance, "file": "measured: the .pte file's bytes"},
    )
    source = Source(str(path), "pte", costs.source.arch, precision, size)
    dtype = "int8" if precision == "int8" else costs.dtype
    return dataclasses.replace(costs, source=source, dtype=dtype, weights=weights)


def deployed_costs(costs: ModelCosts, device_kind: str, notes: list[str]) -> ModelCosts:
    """The costs of the file exported into the run folder for this kind of device (module docstring); otherwise
    `costs`, with a note saying how to get that file."""
    if costs.source.kind not in ("run-folder", "container"):
        return costs
    path = Path(costs.source.path)
    folder = path if path.is_dir() else path.parent
    container = folder / "model.eshrink"
    if device_kind == "mcu":
        tflm = folder / TFLM_FILE
        if _exported_after(tflm, container):
            notes.append(f"device fit of {tflm}, the TFLite Micro file exported from this run")
            return measure_file(tflm)
        notes.append(
            f"no TFLite Micro file in {folder}: the fit counts the container in flash and its decoded weights in "
            f"RAM; `edgeshrink export {folder} --format tflm` writes {TFLM_FILE}, the file a microcontroller runs"
        )
        return costs
    exported = [folder / name for name in BOARD_FILES if _exported_after(folder / name, container)]
    if not exported:
        notes.append(
            f"no ExecuTorch or LiteRT file in {folder}: the fit counts the container decoded to dense weights; "
            f"`edgeshrink export {folder} --format pte` (or --format tflite) writes the file this device runs"
        )
        return costs
    newest = max(exported, key=lambda p: p.stat().st_mtime)
    notes.append(f"device fit of {newest}, the {BOARD_FILES[newest.name]} file exported from this run")
    return measure_file(newest) if newest.suffix == ".tflite" else pte_costs(costs, newest)
