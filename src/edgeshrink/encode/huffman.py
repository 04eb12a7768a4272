"""Canonical Huffman coding, length-limited, encoded and decoded with numpy.

A code is fully described by its code lengths (one per symbol of the alphabet); the codes themselves
are assigned canonically (shorter first, then by symbol), so only lengths are stored. Lengths are
limited to `MAX_CODE_LENGTH` bits so that they fit in a nibble and a decoding table stays small.

Decoding has no per-symbol Python loop: a table lookup gives, for every bit position, the symbol and
length of a code starting there; the code starts are then found by pointer doubling over
"next start = position + length" (log2(count) vectorised steps).
"""

from __future__ import annotations

import heapq

import numpy as np

from edgeshrink.encode.bits import pack_codes, unpack_bits, windows
from edgeshrink.errors import FormatError

MAX_CODE_LENGTH = 15


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy of the empirical distribution, times the number of symbols (the ideal size in bits)."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts / total
    return float(-(counts * np.log2(p)).sum())


def _huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Unlimited Huffman code lengths for the symbols with a nonzero count (ties broken by symbol)."""
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    heap = [(int(counts[s]), i, i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    parent: list[int] = [-1] * len(used)
    next_id = len(used)
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        parent.append(-1)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (c1 + c2, next_id, next_id))
        next_id += 1
    depth = [0] * next_id
    for node in range(next_id - 2, -1, -1):  # parents have larger ids than their children
        depth[node] = depth[parent[node]] + 1
    lengths[used] = depth[: len(used)]
    return lengths


def _limit_lengths(lengths: np.ndarray, counts: np.ndarray, max_length: int) -> np.ndarray:
    """Limit code lengths to `max_length` keeping a complete prefix code (JPEG, ITU T.81 Annex K.3),
    then give the shortest lengths to the most frequent symbols."""
    if lengths.max(initial=0) <= max_length:
        return lengths
    hist = np.bincount(lengths[lengths > 0], minlength=lengths.max() + 1).tolist()
    for i in range(len(hist) - 1, max_length, -1):
        while hist[i] > 0:
            j = i - 2
            while hist[j] == 0:
                j -= 1
            hist[i] -= 2
            hist[i - 1] += 1
            hist[j + 1] += 2
            hist[j] -= 1
    new_lengths = np.repeat(np.arange(len(hist)), hist)  # ascending, one per used symbol
    used = np.flatnonzero(counts)
    by_frequency = used[np.lexsort((used, -counts[used]))]
    out = np.zeros_like(lengths)
    out[by_frequency] = new_lengths
    return out


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Length-limited Huffman code lengths for symbol `counts`; 0 for unused symbols.

    A single used symbol gets length 1 (its stream is then empty: the count alone says everything).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() == 0:
        return np.zeros(len(counts), dtype=np.int64)
    if np.count_nonzero(counts) > 2**max_length:
        raise ValueError(f"{np.count_nonzero(counts)} symbols cannot be coded in at most {max_length} bits")
    return _limit_lengths(_huffman_lengths(counts), counts, max_length)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes for given lengths: by (length, symbol), each code = previous + 1, shifted on growth."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    order = order[lengths[order] > 0]
    code = 0
    prev_len = 0
    for k, sym in enumerate(order):  # loop over the alphabet (<= 2^15 entries), not over the data
        length = int(lengths[sym])
        if k:
            code = (code + 1) << (length - prev_len)
        else:
            code = 0
        codes[sym] = code
        prev_len = length
    return codes


def is_single_symbol(lengths: np.ndarray) -> bool:
    return int(np.count_nonzero(lengths)) == 1


def check_lengths(lengths: np.ndarray) -> None:
    """Refuse code lengths that do not form a complete prefix code (a damaged table)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    used = lengths[lengths > 0]
    if used.size == 0:
        return
    if used.max() > MAX_CODE_LENGTH:
        raise FormatError(f"Huffman table has a code of {used.max()} bits (limit {MAX_CODE_LENGTH}): damaged file")
    if used.size == 1:
        return
    kraft = np.sum(np.ldexp(1.0, -used))
    if kraft != 1.0:
        raise FormatError(f"Huffman table is not a complete prefix code (Kraft sum {kraft}): damaged file")


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Huffman-encode `symbols` with the canonical code of `lengths`; returns (bytes, number of bits)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0 or is_single_symbol(lengths):
        return b"", 0
    codes = canonical_codes(lengths)
    return pack_codes(codes[symbols], np.asarray(lengths, dtype=np.int64)[symbols])


def decode(data: bytes, nbits: int, count: int, lengths: np.ndarray) -> np.ndarray:
    """Decode `count` symbols from the first `nbits` bits of `data`; every bit must be consumed."""
    lengths = np.asarray(lengths, dtype=np.int64)
    check_lengths(lengths)
    if count == 0:
        if nbits:
            raise FormatError("empty Huffman stream carries bits: damaged file")
        return np.zeros(0, dtype=np.int64)
    if is_single_symbol(lengths):
        if nbits:
            raise FormatError("single-symbol Huffman stream carries bits: damaged file")
        return np.full(count, int(np.flatnonzero(lengths)[0]), dtype=np.int64)
    if nbits > len(data) * 8:
        raise FormatError(f"Huffman stream declares {nbits} bits but holds {len(data) * 8}: truncated file")
    width = int(lengths.max())
    codes = canonical_codes(lengths)
    used = np.flatnonzero(lengths)
    # Lookup table over all `width`-bit windows: entries starting with code c (length l) -> symbol.
    span = np.left_shift(1, width - lengths[used])
    table_sym = np.repeat(used, span)
    table_len = np.repeat(lengths[used], span)
    first = np.left_shift(codes[used], width - lengths[used])
    index = np.repeat(first, span) + (np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span))
    sym_of = np.zeros(1 << width, dtype=np.int64)
    len_of = np.zeros(1 << width, dtype=np.int64)
    sym_of[index] = table_sym
    len_of[index] = table_len

    win = windows(unpack_bits(data, nbits), width)
    starts_dtype = np.int32 if nbits < 2**31 - 16 else np.int64
    len_of = len_of.astype(starts_dtype)
    jump = np.arange(nbits + 1, dtype=starts_dtype)  # next code start after each bit position
    jump[:-1] += len_of[win]
    np.minimum(jump, nbits, out=jump)
    pos = np.zeros(count, dtype=starts_dtype)
    k = np.arange(count, dtype=np.int64)
    level = 0
    while (1 << level) < count:  # pointer doubling: log2(count) vectorised steps
        sel = ((k >> level) & 1).astype(bool)
        pos[sel] = jump[pos[sel]]
        jump = jump[jump]
        level += 1
    if int(pos[-1]) >= nbits or int(pos[-1]) + int(len_of[win[pos[-1]]]) != nbits:
        raise FormatError("Huffman stream does not decode to the declared number of symbols: damaged file")
    return sym_of[win[pos]]


def pack_lengths(lengths: np.ndarray) -> bytes:
    """Code lengths as nibbles (two per byte), enough for lengths 0..15."""
    lengths = np.asarray(lengths, dtype=np.uint8)
    if len(lengths) % 2:
        lengths = np.append(lengths, np.uint8(0))
    return ((lengths[0::2] << 4) | lengths[1::2]).astype(np.uint8).tobytes()


def unpack_lengths(data: bytes, alphabet_size: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) * 2 < alphabet_size:
        raise FormatError("Huffman length table is truncated: damaged file")
    out = np.empty(len(raw) * 2, dtype=np.int64)
    out[0::2] = raw >> 4
    out[1::2] = raw & 0x0F
    return out[:alphabet_size]
