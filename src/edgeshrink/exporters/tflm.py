"""`--format tflm`: a full-int8 .tflite for TensorFlow Lite Micro whose weight tensors are compressed with
TFLM's own DECODE operator (LUT, prune or Huffman per tensor, whichever is smallest; exporters/
tflm_compress.py), run in the real TFLM interpreter before it is written.

Two checks: the compressed file must compute exactly what the uncompressed int8 file computes in TFLM
(decoding is lossless: identical int8 outputs on the calibration inputs), and the usual parity with the
int8 PyTorch model it came from (top-1 agreement, output difference in quantization steps). The export
measures the arena the interpreter allocates (activations plus the decoded weights of the op that runs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeshrink.errors import ExportError, RuntimeLoadError
from edgeshrink.exporters.base import Built, Exporter, Runner, register_exporter
from edgeshrink.exporters.onnx_build import output_step
from edgeshrink.exporters.tflite import tflite_bytes
from edgeshrink.exporters.tflm_compress import TensorChoice, compress_tflite
from edgeshrink.exporters.tflm_prepare import drop_dead_inputs, drop_dead_outputs, restore_codebooks
from edgeshrink.quant.half import is_half
from edgeshrink.quant.prepare import is_quantized
from edgeshrink.runtimes.litert import require_litert
from edgeshrink.runtimes.tflm import TFLMSession, measure_arena, minimal_arena, require_tflm

METHODS = ("auto", "none", "lut", "prune", "huffman")
LOSSLESS_EXAMPLES = 64  # calibration inputs run through both the plain and the compressed file


def _methods(option: str) -> tuple[str, ...]:
    return {"auto": ("lut", "prune", "huffman"), "none": ()}.get(option, (option,))


def _check_lossless(plain: TFLMSession, compressed: TFLMSession, inputs: list[torch.Tensor]) -> int:
    """Number of examples on which both files gave identical int8 outputs; ExportError on the first that differ."""
    examples = [x[i : i + 1].numpy() for x in inputs for i in range(x.shape[0])][:LOSSLESS_EXAMPLES]
    for n, x in enumerate(examples):
        q = plain.quantize(x)
        if not np.array_equal(plain.run_raw(q), compressed.run_raw(q)):
            raise ExportError(
                f"TFLite Micro decoded the compressed weights to different values (example {n}): nothing written; "
                "export with --compress none and report this model"
            )
    return len(examples)


@dataclass
class TFLMBytes:
    """A TFLM file before it is written: its bytes, the int8 file before DECODE compression, the int8
    PyTorch model both reproduce, the choice per tensor, notes, how many examples proved it lossless, and
    the file loaded in TFLM."""

    data: bytes
    plain: bytes
    reference: nn.Module
    choices: list[TensorChoice]
    notes: list[str]
    checked: int
    session: TFLMSession


def tflm_bytes(
    model: nn.Module,
    example: torch.Tensor,
    calibration: list[torch.Tensor] | None,
    methods: tuple[str, ...] = ("lut", "prune", "huffman"),
) -> TFLMBytes:
    """Full int8 (a float model: inputs no weight reads are gathered away, then post-training quantization
    on `calibration`), then DECODE compression, checked lossless in TFLM."""
    if is_half(model):
        raise ExportError(
            "TFLite Micro runs integer models: this one computes in float16; export the model from before the "
            "half stage with --format tflm, or use --format tflite --quantize float16 for LiteRT"
        )
    narrowed = []
    if not is_quantized(model):
        model = copy.deepcopy(model)
        narrowed = restore_codebooks(model) + drop_dead_outputs(model) + drop_dead_inputs(model)
    plain, reference, notes = tflite_bytes(model, example, "int8", calibration)
    try:
        plain_session = TFLMSession(plain)
    except RuntimeLoadError as exc:
        raise ExportError(
            f"TFLite Micro cannot run this model ({str(exc).removeprefix('TFLite Micro cannot load the model: ')}); "
            "nothing written: export it with --format tflite (LiteRT) or --format onnx instead"
        ) from None
    data, choices = compress_tflite(plain, methods)
    if data == plain:
        return TFLMBytes(data, plain, reference, choices, narrowed + notes, 0, plain_session)
    session = TFLMSession(data)
    checked = _check_lossless(plain_session, session, calibration or [example])
    return TFLMBytes(data, plain, reference, choices, narrowed + notes, checked, session)


@register_exporter
class TFLMExporter(Exporter):
    name = "tflm"
    suffix = ".tflite"
    runtime = "TensorFlow Lite Micro"
    description = (
        "a full-int8 .tflite for TensorFlow Lite Micro, weights compressed with TFLM's DECODE operator "
        "(LUT / prune / Huffman per tensor), verified and its arena measured in the TFLM interpreter"
    )
    options = {"compress": METHODS}

    def require(self) -> None:
        require_litert(f"--format {self.name}")
        require_tflm(f"--format {self.name}")

    def build(
        self, model: nn.Module, example: torch.Tensor, options: dict[str, Any], calibration: list[torch.Tensor] | None
    ) -> Built:
        t = tflm_bytes(model, example, calibration, _methods(options["compress"]))
        reported = measure_arena(t.data)
        arena = minimal_arena(t.data, reported)
        compressed = [c for c in t.choices if c.method != "plain"]
        decode_max = max((c.decoded_bytes for c in compressed), default=0)
        notes = t.notes + [
            f"{len(compressed)} of {len(t.choices)} int8 weight tensors compressed for TFLM's DECODE operator: "
            f"{len(t.plain):,} B int8 .tflite -> {len(t.data):,} B"
            + (f"; decoded outputs identical to the uncompressed file's on {t.checked} examples" if t.checked else ""),
            f"tensor arena {arena:,} B: the smallest in which TFLM loads and runs the file (bisected; its allocator "
            f"reports {reported:,} B); it holds the decoded weights of the op that runs, the largest {decode_max:,} B",
        ]
        return Built(
            t.data,
            t.reference,
            "int8",
            activation_type="int8",
            notes=notes,
            step=output_step(t.reference),
            min_agreement=99.0,
            max_steps=1.0,
            layers=[c.to_dict() for c in t.choices],
            io=t.session.io(),
            extra={
                "uncompressed_int8_bytes": len(t.plain),
                "arena_bytes": arena,
                "arena_reported_bytes": reported,
                "decode_bytes_max": decode_max,
            },
        )

    def runner(self, data: bytes, threads: int) -> Runner:
        return TFLMSession(data).run
