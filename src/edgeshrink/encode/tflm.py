"""Encoders for TensorFlow Lite Micro's `DECODE` operator: a weight tensor stored as (encoded data,
ancillary data), decoded into the arena before the op that uses it.

Every ancillary tensor starts with TFLM's 16-byte Decode Common Metadata (DCM): byte 0 the decode type,
byte 1 the DCM version (1), bytes 4-15 the type's own fields. The formats follow the decoders in
tflite-micro's `kernels/decode_state_prune.cc` and `kernels/decode_state_huffman.cc` (the Python
compressors shipped in the `tflite-micro` wheel for these two types are stubs; the LUT type is written
by the wheel's own `lut` module, see exporters/tflm_compress.py):

- prune (type 2): the encoded data is one bit per element in the tensor's flat order, most significant
  bit first, 1 where the element differs from its channel's zero point; the ancillary data holds the
  DCM (byte 4: prune version 1) and then the kept elements in flat order.
- Huffman (type 1): the encoded data is the canonical Huffman codes of the elements, concatenated most
  significant bit first and read by the decoder as big-endian 32-bit words; the ancillary data holds the
  DCM (byte 4: Huffman version 1; byte 5: log2(initial table size) - 1 in bits 7-4, bit 0 set for 32-bit
  table elements) and then the decode tables. A table of 2^w elements is indexed by the next w bits;
  an element either holds a symbol (bit 15, or 31, set; bits 14-11, or 30-27: how many of the w bits the
  code used, the rest are put back; low bits: the value) or points to a sub-table (the count field holds
  its width - 1, the low bits its offset from this element). Table widths are chosen to minimise the
  tables' size (a small dynamic programme over the code tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from edgeshrink.encode.bits import pack_codes, windows
from edgeshrink.encode.huffman import canonical_codes, code_lengths

DCM_BYTES = 16
TYPE_HUFFMAN, TYPE_PRUNE = 1, 2
MAX_TABLE_BITS = 15  # the count field is 4 bits: a table level reads at most 15 bits
MAX_CODE_BITS = 15


def dcm(decode_type: int, user: bytes) -> bytes:
    """The 16-byte Decode Common Metadata: type, version 1, two reserved bytes, 12 bytes of the type's own."""
    return bytes([decode_type, 1, 0, 0]) + user.ljust(12, b"\0")


@dataclass(frozen=True)
class Encoded:
    """A tensor as TFLM's DECODE operator reads it."""

    method: str
    data: bytes  # the encoded tensor's buffer
    ancillary: bytes  # DCM + the type's tables

    @property
    def bytes(self) -> int:
        return len(self.data) + len(self.ancillary)


def prune_encode(values: np.ndarray, zero_points: np.ndarray | int = 0, axis: int = 0) -> Encoded:
    """Mask + kept values of an integer tensor; `zero_points` per channel along `axis` (0 or the last)."""
    values = np.asarray(values)
    zp = np.asarray(zero_points, dtype=values.dtype)
    if zp.size > 1:
        shape = [1] * values.ndim
        shape[axis] = zp.size
        zp = zp.reshape(shape)
    keep = values != zp
    mask = np.packbits(keep.reshape(-1), bitorder="big").tobytes()
    kept = values.reshape(-1)[keep.reshape(-1)]
    return Encoded("prune", mask, dcm(TYPE_PRUNE, bytes([1])) + kept.tobytes())


def _codes(lengths: np.ndarray) -> list[tuple[int, int, int]]:
    """(code, length, symbol index) of every used symbol; a single symbol gets the one-bit code 0."""
    used = np.flatnonzero(lengths)
    codes = canonical_codes(lengths)
    return [(int(codes[s]), int(lengths[s]), int(s)) for s in used]


class _TableBuilder:
    """Multi-level decode tables for a prefix code, table widths chosen to minimise the element count."""

    def __init__(self, codes: list[tuple[int, int, int]]) -> None:
        self.codes = codes

    def _below(self, prefix: int, depth: int) -> list[tuple[int, int, int]]:
        return [c for c in self.codes if c[1] > depth and (c[0] >> (c[1] - depth)) == prefix]

    def _children(self, prefix: int, depth: int, width: int) -> list[int]:
        """Prefixes `width` bits below (prefix, depth) that are strict prefixes of longer codes."""
        deep = depth + width
        return sorted({c[0] >> (c[1] - deep) for c in self._below(prefix, depth) if c[1] > deep})

    @cache  # noqa: B019 - one builder per tensor, dropped with it
    def best(self, prefix: int, depth: int) -> tuple[int, int]:
        """(element count, width) of the cheapest tables for the subtree at (prefix, depth)."""
        height = max(c[1] for c in self._below(prefix, depth)) - depth
        options = []
        for width in range(1, min(MAX_TABLE_BITS, height) + 1):
            below = sum(self.best(child, depth + width)[0] for child in self._children(prefix, depth, width))
            options.append((2**width + below, width))
        return min(options)

    def layout(self) -> tuple[list[tuple[bool, int, int]], int]:
        """(elements as (is_symbol, count, value or offset), root width), tables in breadth-first order."""
        root_width = self.best(0, 0)[1]
        elements: list[tuple[bool, int, int]] = []
        queue = [(0, 0, root_width, None)]  # prefix, depth, width, parent element to patch
        while queue:
            prefix, depth, width, parent = queue.pop(0)
            start = len(elements)
            if parent is not None:
                is_symbol, count, _ = elements[parent]
                elements[parent] = (is_symbol, count, start - parent)
            for index in range(2**width):
                full = (prefix << width) | index
                elements.append(self._element(full, depth, width, queue, start + index))
        return elements, root_width

    def _element(self, full: int, depth: int, width: int, queue: list, position: int) -> tuple[bool, int, int]:
        deep = depth + width
        for code, length, symbol in self.codes:
            if depth < length <= deep and (full >> (deep - length)) == code:
                return True, length - depth, symbol
        longer = [c for c in self.codes if c[1] > deep and (c[0] >> (c[1] - deep)) == full]
        if not longer:  # unused bit pattern (only in a one-symbol code): never read
            return True, width, self.codes[0][2]
        sub_width = self.best(full, deep)[1]
        queue.append((full, deep, sub_width, position))
        return False, sub_width - 1, 0


def _pack_tables(elements: list[tuple[bool, int, int]], values: np.ndarray, wide: bool) -> bytes:
    found, shift, low = (1 << 31, 27, (1 << 27) - 1) if wide else (1 << 15, 11, (1 << 11) - 1)
    out = np.zeros(len(elements), dtype=np.uint32 if wide else np.uint16)
    value_mask = 0xFFFF if wide else 0xFF
    for i, (is_symbol, count, value) in enumerate(elements):
        field = (int(values[value]) & value_mask) if is_symbol else value
        if field > low:
            raise ValueError("Huffman sub-table offset does not fit its element")
        out[i] = (found if is_symbol else 0) | (count << shift) | field
    return out.astype("<u4" if wide else "<u2").tobytes()


def huffman_encode(values: np.ndarray) -> Encoded:
    """Huffman encoding of an int8 (16-bit tables) or int16 (32-bit tables) tensor, one code per tensor."""
    flat = np.asarray(values).reshape(-1)
    if flat.dtype not in (np.int8, np.int16):
        raise ValueError(f"TFLM's Huffman decoder takes int8 or int16 tensors, not {flat.dtype}")
    alphabet, symbols = np.unique(flat, return_inverse=True)
    lengths = code_lengths(np.bincount(symbols, minlength=len(alphabet)), MAX_CODE_BITS)
    codes = _codes(lengths)
    if len(codes) == 1:
        codes = [(0, 1, codes[0][2])]
        lengths = np.ones(1, dtype=np.int64)
    elements, root_width = _TableBuilder(codes).layout()
    wide = flat.dtype == np.int16 or len(elements) > (1 << 11)
    tables = _pack_tables(elements, alphabet, wide)
    code_of = np.zeros(len(alphabet), dtype=np.int64)
    for code, _, symbol in codes:
        code_of[symbol] = code
    stream, _ = pack_codes(code_of[symbols], np.asarray(lengths, dtype=np.int64)[symbols])
    stream += b"\0" * ((-len(stream)) % 4 + 4)  # whole 32-bit words, plus one the decoder may prefetch
    header = bytes([1, ((root_width - 1) << 4) | int(wide)])
    return Encoded("huffman", stream, dcm(TYPE_HUFFMAN, header) + tables)


def huffman_decode(enc: Encoded, count: int, dtype=np.int8) -> np.ndarray:
    """TFLM's Huffman decoder read step by step (tests compare it with the interpreter's own; the
    profiler uses it to count a compressed file's weights)."""
    wide = bool(enc.ancillary[5] & 1)
    first = ((enc.ancillary[5] & 0xF0) >> 4) + 1
    table = np.frombuffer(enc.ancillary[DCM_BYTES:], dtype="<u4" if wide else "<u2").astype(np.int64)
    found, shift, low = (1 << 31, 27, (1 << 27) - 1) if wide else (1 << 15, 11, (1 << 11) - 1)
    bits = np.unpackbits(np.frombuffer(enc.data, dtype=np.uint8))
    widths = {first} | {int((v >> shift) & 0xF) + 1 for v in table if not v & found}
    win = {w: windows(bits, w).tolist() for w in widths}
    table_list, pos = table.tolist(), 0
    out = np.zeros(count, dtype=np.int64)
    for k in range(count):
        width, offset = first, win[first][pos]
        value = table_list[offset]
        pos += width
        while not value & found:
            width = ((value >> shift) & 0xF) + 1
            offset += (value & low) + win[width][pos]
            pos += width
            value = table_list[offset]
        out[k] = value & (0xFFFF if wide else 0xFF)
        pos -= width - ((value >> shift) & 0xF)
    bits_of_value = 16 if wide else 8
    out = np.where(out >= 1 << (bits_of_value - 1), out - (1 << bits_of_value), out)
    return out.astype(dtype)


def prune_decode(data: bytes, ancillary: bytes, shape: tuple, dtype, zero_points: np.ndarray, axis: int) -> np.ndarray:
    """The tensor a prune encoding holds (zero points per channel along `axis`, 0 or the last)."""
    count = int(np.prod(shape))
    keep = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count).astype(bool)
    zp = np.asarray(zero_points, dtype=np.int64).reshape(-1)
    full = np.broadcast_to(_along(zp, shape, axis), shape).reshape(-1).astype(dtype) if zp.size > 1 else None
    out = full.copy() if full is not None else np.full(count, zp[0] if zp.size else 0, dtype=dtype)
    out[keep] = np.frombuffer(ancillary[DCM_BYTES:], dtype=dtype)[: int(keep.sum())]
    return out.reshape(shape)


def lut_decode(data: bytes, ancillary: bytes, shape: tuple, dtype) -> np.ndarray:
    """The tensor a LUT encoding holds: byte 5 of the DCM gives the channel axis (bits 7-4, 15: one table)
    and the index width (bits 2-0), byte 6 the stride of the value tables."""
    axis, bits, stride = ancillary[5] >> 4, ancillary[5] & 0x7, ancillary[6]
    count = int(np.prod(shape))
    flat_bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits).reshape(count, bits)
    index = (flat_bits.astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(axis=1)
    tables = np.frombuffer(ancillary[DCM_BYTES:], dtype=dtype)
    if axis == 0xF:
        return tables[index].reshape(shape)
    channels = shape[axis]
    channel = np.broadcast_to(_along(np.arange(channels), shape, axis), shape).reshape(-1)
    return tables.reshape(channels, stride)[channel, index].reshape(shape)


def _along(values: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    view = [1] * len(shape)
    view[axis] = len(values)
    return values.reshape(view)
