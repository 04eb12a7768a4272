"""Compress the weight tensors of a full-int8 .tflite file with TensorFlow Lite Micro's `DECODE` operator,
choosing per tensor the smallest of: LUT (weight sharing: indices of 1-7 bits into a value table per
channel), prune (a 1-bit mask and the nonzero values), Huffman, or plain int8 where none is smaller.

The graph surgery (a DECODE op before each consumer, an ancillary tensor per compressed tensor, the
flatbuffer's 16-byte alignment) and the LUT encoder are the `tflite-micro` wheel's own modules
(`model_editor`, `decode_insert`, `lut`); the prune and Huffman encoders are ours (encode/tflm.py),
because the wheel's are stubs. The wheel is pinned to one build: these modules are its internals.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from edgeshrink.encode.tflm import Encoded, huffman_encode, prune_encode
from edgeshrink.errors import ExportError

# A compressed tensor adds a DECODE operator, an ancillary tensor and two buffers to the flatbuffer
# (names, shapes, offsets, 16-byte alignment): about this many bytes, measured on LeNet files. A method
# must save more than this to be chosen.
DECODE_OVERHEAD_BYTES = 96
# A decoded tensor costs its full size in the arena while the op that reads it runs (and decode time on
# every invoke): compress only what shrinks by at least this fraction (an int8 LeNet-5's fc1 would save 9%
# of its flash for 400 kB of RAM).
MIN_SAVING_FRACTION = 0.2
MIN_ELEMENTS = 64  # smaller constants (shapes, tiny biases) are left as they are


@dataclass
class TensorChoice:
    """What was done to one weight tensor, and its bytes before and after."""

    tensor: str  # the converter's tensor name
    layer: str  # the layer it names (fc1), read from that name
    shape: list[int]
    method: str  # "lut-4bit" | "prune" | "huffman" | "plain"
    plain_bytes: int
    bytes: int
    decoded_bytes: int  # what DECODE writes into the arena before the op that reads it
    candidates: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def layer_label(name: str) -> str:
    """'torch.nn.modules.linear.Linear_fc1;1' -> 'fc1': the attribute after the last module class."""
    found = re.findall(r"\.[A-Z][A-Za-z0-9]*_([A-Za-z0-9_.]+?);", name + ";")
    return found[-1] if found else name


def _modules():
    import importlib

    from tflite_micro.tensorflow.lite.micro.compression import (
        compressor,
        constant_inputs,
        decode_insert,
        lut,
        model_editor,
        spec,
    )

    # the package's __init__ binds `compress` to the function; the alignment helper lives in the module
    compress = importlib.import_module("tflite_micro.tensorflow.lite.micro.compression.compress")
    return compress, compressor, constant_inputs, decode_insert, lut, model_editor, spec


def _channel_axis(tensor) -> tuple[int | None, np.ndarray]:
    """(per-channel axis or None, zero points) from a tensor's quantization."""
    q = tensor.quantization
    if q is None:
        return None, np.zeros(1, dtype=np.int64)
    zps = np.atleast_1d(np.asarray(q.zero_points, dtype=np.int64))
    scales = np.atleast_1d(np.asarray(q.scales))
    if scales.size > 1:
        return int(q.axis or 0), zps
    return None, zps[:1]


def _lut(tensor, axis: int | None) -> Encoded | None:
    _, compressor, _, _, lut, _, spec = _modules()
    values = tensor.array
    slices = [values] if axis is None else np.moveaxis(values, axis, 0)
    bits = max(1, (max(len(np.unique(v)) for v in slices) - 1).bit_length())  # the index width LUT needs
    if bits > lut.LutAncillaryData.MAX_BITWIDTH:
        return None
    mode = spec.PerTensor() if axis is None else spec.PerChannel(axis=axis)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            result = lut.LutCompressor().compress(tensor, spec.LookUpTableCompression(index_bitwidth=bits, mode=mode))
    except compressor.CompressionError:
        return None
    return Encoded(
        f"lut-{bits}bit" + ("" if axis is not None else "-per-tensor"), result.encoded_data, result.ancillary_data
    )


def candidates(tensor) -> list[Encoded]:
    """Every TFLM encoding of one int8 weight tensor that applies to it."""
    axis, zero_points = _channel_axis(tensor)
    values = tensor.array
    out = [prune_encode(values, zero_points if axis is not None else int(zero_points[0]), axis or 0)]
    if values.dtype in (np.int8, np.int16):
        out.append(huffman_encode(values))
    # One value table per quantization channel, or one for a per-tensor quantized tensor. (A single table
    # for a per-channel quantized tensor decodes wrongly in this TFLM build: measured, not offered.)
    if axis is None or axis in (0, values.ndim - 1):
        enc = _lut(tensor, axis)
        if enc is not None:
            out.append(enc)
    return out


def _weight_tensors(subgraph, constant_inputs) -> list[tuple[int, object]]:
    """(index, tensor) of the int8 constants an operator reads that may become DECODE outputs."""
    out = []
    for index, tensor in enumerate(subgraph.tensors):
        if tensor.buffer is None or not tensor.buffer.data or tensor.array is None:
            continue
        if tensor.array.dtype != np.int8 or tensor.array.size < MIN_ELEMENTS:
            continue
        if not subgraph.consumers_of(tensor) or constant_inputs.find_uses(subgraph, tensor):
            continue
        out.append((index, tensor))
    return out


def _collapse_uniform_scales(subgraph, model_editor) -> int:
    """Per-channel quantization whose scales and zero points are all equal (a tensor quantized on one
    grid; the converter writes one entry per channel anyway) becomes per-tensor: 12 bytes a channel saved,
    in the weight, its bias and the decoded copy. Returns the number of tensors rewritten."""
    count = 0
    for tensor in subgraph.tensors:
        q = tensor.quantization
        if q is None:
            continue
        scales = np.atleast_1d(np.asarray(q.scales, dtype=np.float64))
        zps = np.atleast_1d(np.asarray(q.zero_points, dtype=np.int64))
        if scales.size > 1 and np.all(scales == scales[0]) and np.all(zps == zps[0]):
            tensor.quantization = model_editor.Quantization(scales=[float(scales[0])], zero_points=[int(zps[0])])
            tensor._fb.quantization = None  # rebuilt from the wrapper's per-tensor entry at compile time
            count += 1
    return count


def compress_tflite(
    data: bytes, methods: tuple[str, ...] = ("lut", "prune", "huffman"), force: bool = False
) -> tuple[bytes, list]:
    """(compressed .tflite bytes, a TensorChoice per int8 weight tensor). `methods` limits the choice;
    `force` takes the best of them even where plain int8 is smaller (tests of the decoders)."""
    compress, compressor, constant_inputs, decode_insert, _, model_editor, _ = _modules()
    model = model_editor.read(bytes(data))
    results, choices = {}, []
    collapsed = sum(_collapse_uniform_scales(subgraph, model_editor) for subgraph in model.subgraphs)
    for sg_index, subgraph in enumerate(model.subgraphs):
        for index, tensor in _weight_tensors(subgraph, constant_inputs):
            plain = len(tensor.buffer.data)
            options = [e for e in candidates(tensor) if e.method.split("-")[0] in methods]
            best = min(options, key=lambda e: e.bytes, default=None)
            saving = 0 if best is None else plain - best.bytes - DECODE_OVERHEAD_BYTES
            chosen = best is not None and (force or saving >= MIN_SAVING_FRACTION * plain)
            if chosen:
                results[(sg_index, index)] = compressor.CompressionResult(best.data, best.ancillary)
            name = tensor.name or f"tensor {index}"
            choices.append(
                TensorChoice(
                    name,
                    layer_label(name),
                    [int(d) for d in tensor.shape],
                    best.method if chosen else "plain",
                    plain,
                    best.bytes if chosen else plain,
                    plain if chosen else 0,
                    {e.method: e.bytes for e in options},
                )
            )
    if not results and not collapsed:
        return bytes(data), choices
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.name = ""  # TFLM addresses tensors by index; the converter's names cost ~60 B each
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoded = [model.subgraphs[sg].tensors[i] for sg, i in results]
            decode_insert.insert_decode_operators(model, results)
            for tensor in encoded:  # raw bytes now; the wheel clears the wrapper's quantization but the
                tensor._fb.quantization = None  # flatbuffer keeps the per-channel scales (12 B a channel)
            out = compress._apply_flatbuffer_alignment(model.build())
    except Exception as exc:  # the wheel's own errors name the tensor; keep one line
        raise ExportError(f"TFLite Micro compression failed: {str(exc).splitlines()[0][:200]}") from None
    return bytes(out), choices
