"""Vectorised bit packing: write variable-length codes MSB-first, read fixed-width fields back.

No Python loop runs per symbol: codes are expanded to a bit array with `np.repeat` and packed with
`np.packbits`. These are the primitives both Huffman and fixed-width coding use.
"""

from __future__ import annotations

import numpy as np


def pack_codes(codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Concatenate `codes[i]` written in `lengths[i]` bits (MSB first); returns (bytes, number of bits)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return b"", 0
    codes = np.asarray(codes, dtype=np.uint64)
    starts = np.cumsum(lengths) - lengths
    rep_codes = np.repeat(codes, lengths)
    rep_lengths = np.repeat(lengths, lengths)
    offset_in_code = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    shift = (rep_lengths - 1 - offset_in_code).astype(np.uint64)
    bits = ((rep_codes >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes(), total


def unpack_bits(data: bytes, nbits: int) -> np.ndarray:
    """The first `nbits` bits of `data` as a uint8 array of 0/1."""
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=nbits)


def pack_fixed(values: np.ndarray, width: int) -> tuple[bytes, int]:
    """Every value written in `width` bits."""
    values = np.asarray(values, dtype=np.uint64)
    return pack_codes(values, np.full(values.shape, width, dtype=np.int64))


def unpack_fixed(data: bytes, count: int, width: int) -> np.ndarray:
    """Read `count` unsigned values of `width` bits each (MSB first)."""
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    bits = unpack_bits(data, count * width).reshape(count, width).astype(np.int64)
    weights = np.left_shift(1, np.arange(width - 1, -1, -1, dtype=np.int64))
    return bits @ weights


def windows(bits: np.ndarray, width: int) -> np.ndarray:
    """For every bit position p, the integer formed by bits[p : p + width] (zero-padded at the end)."""
    padded = np.concatenate([bits.astype(np.uint8), np.zeros(width, dtype=np.uint8)])
    n = len(bits)
    out = np.zeros(n, dtype=np.int32)  # windows of at most 15 bits: 4 bytes per payload bit
    for j in range(width):  # loop over bit offsets within a window (<= 15), not over symbols
        out <<= 1
        out |= padded[j : j + n]
    return out
