"""A coded stream of small integer symbols: Huffman (canonical, lengths stored) or fixed-width.

Both the gap stream and the codebook-index stream of a sparse tensor are `CodedStream`s. The size of a
stream can be computed without packing it (`stream_size`), which is how the index width is chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeshrink.encode import huffman
from edgeshrink.encode.bits import pack_fixed, unpack_fixed
from edgeshrink.errors import FormatError

Coding = Literal["huffman", "fixed"]


@dataclass(frozen=True)
class CodedStream:
    coding: Coding
    count: int  # number of symbols
    table_len: int  # Huffman: number of code lengths stored (max symbol + 1); fixed: 0
    width: int  # fixed: bits per symbol; Huffman: 0
    nbits: int  # payload bits
    table: bytes
    payload: bytes
    entropy_bits: float  # count x empirical entropy: the ideal payload size

    @property
    def nbytes(self) -> int:
        return len(self.table) + len(self.payload)

    def header(self) -> dict:
        if self.coding == "huffman":
            return {"c": "h", "n": self.count, "t": self.table_len, "b": self.nbits}
        return {"c": "f", "n": self.count, "w": self.width}


def encode_stream(symbols: np.ndarray, coding: Coding, width: int) -> CodedStream:
    """Code `symbols` (each < 2^width) with Huffman or in `width` fixed bits."""
    symbols = np.asarray(symbols, dtype=np.int64)
    counts = np.bincount(symbols) if symbols.size else np.zeros(0, dtype=np.int64)
    entropy = huffman.entropy_bits(counts)
    if coding == "fixed":
        payload, nbits = pack_fixed(symbols, width)
        return CodedStream("fixed", len(symbols), 0, width, nbits, b"", payload, entropy)
    lengths = huffman.code_lengths(counts)
    payload, nbits = huffman.encode(symbols, lengths)
    table = huffman.pack_lengths(lengths)
    return CodedStream("huffman", len(symbols), len(lengths), 0, nbits, table, payload, entropy)


def stream_size(symbols: np.ndarray, coding: Coding, width: int) -> int:
    """Bytes `encode_stream` would produce, computed from symbol counts only."""
    if coding == "fixed":
        return math.ceil(len(symbols) * width / 8)
    if len(symbols) == 0:
        return 0
    counts = np.bincount(symbols)
    lengths = huffman.code_lengths(counts)
    bits = 0 if huffman.is_single_symbol(lengths) else int((counts * lengths).sum())
    return math.ceil(bits / 8) + math.ceil(len(lengths) / 2)


def stream_layout(header: dict) -> tuple[int, int]:
    """(table bytes, payload bytes) that a stream header declares."""
    if header["c"] == "h":
        return math.ceil(header["t"] / 2), math.ceil(header["b"] / 8)
    return 0, math.ceil(header["n"] * header["w"] / 8)


def decode_stream(header: dict, table: bytes, payload: bytes, alphabet: int) -> np.ndarray:
    """Symbols of a stream; every symbol must be < `alphabet`."""
    count = header["n"]
    if header["c"] == "h":
        if header["t"] > alphabet:
            raise FormatError(f"Huffman table lists {header['t']} symbols, the alphabet has {alphabet}: damaged file")
        lengths = huffman.unpack_lengths(table, header["t"])
        if count and not lengths.any():
            raise FormatError("Huffman stream has symbols but an empty code table: damaged file")
        return huffman.decode(payload, header["b"], count, lengths)
    symbols = unpack_fixed(payload, count, header["w"])
    if symbols.size and symbols.max() >= alphabet:
        raise FormatError("fixed-width stream holds a symbol outside its alphabet: damaged file")
    return symbols
