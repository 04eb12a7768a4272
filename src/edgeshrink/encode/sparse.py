"""Relative-index (gap) coding of the positions of nonzero weights, as in Deep Compression.

Each nonzero is located by its distance to the previous one, stored in `index_bits` bits. A distance
that does not fit is bridged with filler entries: the largest symbol M = 2^index_bits - 1 means
"advance M positions, no weight here". (Han et al. store a zero-valued filler weight at that spot;
since the filler symbol already says the weight is zero, we store no value for it: the same code,
one value fewer per filler.)

Symbol of an entry = (gap - 1) mod M after floor((gap - 1) / M) fillers, gap = position - previous,
with the position before the first weight taken as -1.
"""

from __future__ import annotations

import numpy as np

from edgeshrink.errors import FormatError

MAX_INDEX_BITS = 15


def filler_symbol(index_bits: int) -> int:
    if not 1 <= index_bits <= MAX_INDEX_BITS:
        raise ValueError(f"index_bits must be in 1..{MAX_INDEX_BITS}, got {index_bits}")
    return (1 << index_bits) - 1


def positions_to_gaps(positions: np.ndarray, index_bits: int) -> np.ndarray:
    """Gap symbols (fillers included) for sorted nonzero `positions`."""
    m = filler_symbol(index_bits)
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        return np.zeros(0, dtype=np.int64)
    gaps = np.diff(positions, prepend=-1) - 1
    fillers, remainder = np.divmod(gaps, m)
    per_entry = fillers + 1
    symbols = np.full(int(per_entry.sum()), m, dtype=np.int64)
    symbols[np.cumsum(per_entry) - 1] = remainder
    return symbols


def gaps_to_positions(symbols: np.ndarray, index_bits: int, numel: int, nnz: int) -> np.ndarray:
    """Positions of the nonzeros, checked against the tensor's size and declared count."""
    m = filler_symbol(index_bits)
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size and (symbols.min() < 0 or symbols.max() > m):
        raise FormatError("gap stream holds a symbol outside its alphabet: damaged file")
    is_entry = symbols != m
    if int(is_entry.sum()) != nnz or (symbols.size and not is_entry[-1]):
        raise FormatError("gap stream does not describe the declared number of nonzeros: damaged file")
    step = np.where(is_entry, symbols + 1, m)
    positions = (np.cumsum(step) - 1)[is_entry]
    if positions.size and positions[-1] >= numel:
        raise FormatError("gap stream points past the end of its tensor: damaged file")
    return positions
