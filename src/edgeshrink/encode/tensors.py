"""One tensor of a container: encoded in the smallest of four ways, decoded bit-exactly.

- "raw": the elements' bytes as they are (biases, norms, anything dense and diverse);
- "sparse" + values: positions of the nonzeros as a gap stream, then the nonzero values themselves
  (what pruning alone produces);
- "sparse" + codebook: positions as a gap stream, values as indices into a codebook of the distinct
  nonzero values (pruning + weight sharing, or pruned integer weights);
- "codebook": every element as an index into a codebook of its distinct values, no positions (a dense
  tensor with few distinct values: integer weight codes, whose indices pack to the codes' width or
  Huffman-code below it).
Values are compared as bit patterns, so every tensor comes back bit-exact (NaN payloads included), with
one deliberate exception: a float -0.0 is stored as +0.0. Nothing here knows about models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from edgeshrink.encode.sparse import MAX_INDEX_BITS, gaps_to_positions, positions_to_gaps
from edgeshrink.encode.streams import Coding, decode_stream, encode_stream, stream_layout, stream_size
from edgeshrink.errors import FormatError

MAX_CODEBOOK = 1 << 15  # Huffman lengths are nibbles with a 15-bit limit

# dtype name -> (torch dtype, unsigned numpy type of the same width used to compare bit patterns)
DTYPES: dict[str, tuple[torch.dtype, type]] = {
    "float32": (torch.float32, np.uint32),
    "float16": (torch.float16, np.uint16),
    "bfloat16": (torch.bfloat16, np.uint16),
    "float64": (torch.float64, np.uint64),
    "int64": (torch.int64, np.uint64),
    "int32": (torch.int32, np.uint32),
    "int16": (torch.int16, np.uint16),
    "int8": (torch.int8, np.uint8),
    "uint8": (torch.uint8, np.uint8),
    "bool": (torch.bool, np.uint8),
}
_SIGNED_VIEW = {np.uint64: torch.int64, np.uint32: torch.int32, np.uint16: torch.int16, np.uint8: torch.uint8}
FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64"}
IndexBits = int | Literal["auto"]


def dtype_name(dtype: torch.dtype) -> str:
    for name, (td, _) in DTYPES.items():
        if td == dtype:
            return name
    raise FormatError(f"tensors of dtype {dtype} cannot be stored; convert them to float32 first")


def itemsize(dtype: str) -> int:
    return np.dtype(DTYPES[dtype][1]).itemsize


def bit_patterns(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's elements as unsigned integers of the same width (flattened); float -0.0 becomes +0.0."""
    name = dtype_name(tensor.dtype)
    unsigned = DTYPES[name][1]
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    bits = flat.view(_SIGNED_VIEW[unsigned]).numpy().view(unsigned)
    if name in FLOAT_DTYPES:
        negative_zero = unsigned(1) << unsigned(bits.dtype.itemsize * 8 - 1)
        if (bits == negative_zero).any():
            bits = np.where(bits == negative_zero, unsigned(0), bits)
    return bits


def from_bit_patterns(bits: np.ndarray, dtype: str, shape: list[int]) -> torch.Tensor:
    unsigned = DTYPES[dtype][1]
    t = torch.from_numpy(np.array(bits, dtype=unsigned, copy=True)).view(_SIGNED_VIEW[unsigned])
    if dtype == "bool":
        return t.to(torch.bool).reshape(shape)
    return t.view(DTYPES[dtype][0]).reshape(shape)


@dataclass
class TensorStats:
    """What storing one tensor cost, the figures of Deep Compression's per-layer tables."""

    name: str
    shape: list[int]
    dtype: str
    numel: int
    nnz: int
    encoding: str  # raw | sparse-codebook | sparse-values | codebook
    coding: str
    codebook_size: int = 0
    value_width: int = 0  # fixed bits per stored value (log2 of the codebook, or the dtype's width)
    index_width: int = 0  # bits per relative index before Huffman
    value_bits: int = 0  # payload bits of the value stream (codes or raw values)
    index_bits: int = 0  # payload bits of the gap stream
    fillers: int = 0
    value_entropy_bits: float = 0.0
    index_entropy_bits: float = 0.0
    overhead_bytes: int = 0  # codebook + Huffman tables
    nbytes: int = 0  # everything this tensor occupies in the payload
    represents: str | None = None  # the dtype this tensor stands for (float32 for integer weight codes)

    @property
    def dense_bytes(self) -> int:
        """The tensor as dense 32-bit values (the baseline of compression ratios); integer buffers as they are."""
        floating = self.dtype in FLOAT_DTYPES or self.represents in FLOAT_DTYPES
        return self.numel * 4 if floating else self.numel * itemsize(self.dtype)


@dataclass
class Encoded:
    header: dict
    sections: list[bytes]
    stats: TensorStats

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.sections)


def _base_stats(name: str, tensor: torch.Tensor, dtype: str, nnz: int, encoding: str, coding: str) -> dict:
    return dict(
        name=name,
        shape=list(tensor.shape),
        dtype=dtype,
        numel=tensor.numel(),
        nnz=nnz,
        encoding=encoding,
        coding=coding,
    )


def _encode_raw(name: str, tensor: torch.Tensor, dtype: str, bits: np.ndarray) -> Encoded:
    data = bits.tobytes()
    stats = TensorStats(
        **_base_stats(name, tensor, dtype, int(np.count_nonzero(bits)), "raw", "none"),
        value_width=itemsize(dtype) * 8,
        value_bits=len(data) * 8,
        nbytes=len(data),
    )
    return Encoded({"n": name, "s": list(tensor.shape), "d": dtype, "e": "raw"}, [data], stats)


def _sorted_codebook(values: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ordered by value, each value's index into them)."""
    codebook, symbols = np.unique(values, return_inverse=True)
    as_number = from_bit_patterns(codebook, dtype, [len(codebook)]).double().numpy()
    order = np.argsort(as_number, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return codebook[order], rank[symbols.reshape(-1)]


def _codebook_stream(values: np.ndarray, dtype: str, coding: Coding) -> tuple[dict, list[bytes], dict] | None:
    """Codebook sections for `values`, or None when they have too many distinct values."""
    if values.size == 0 or len(np.unique(values)) > MAX_CODEBOOK:
        return None
    codebook, symbols = _sorted_codebook(values, dtype)
    width = max(0, math.ceil(math.log2(len(codebook))))
    stream = encode_stream(symbols, coding, width)
    cb_bytes = codebook.tobytes()
    header = {**stream.header(), "k": len(codebook)}
    stats = dict(
        codebook_size=len(codebook),
        value_width=width,
        value_bits=stream.nbits,
        value_entropy_bits=stream.entropy_bits,
        overhead_bytes=len(cb_bytes) + len(stream.table),
    )
    return header, [cb_bytes, stream.table, stream.payload], stats


def _choose_index_width(positions: np.ndarray, coding: Coding, index_bits: IndexBits) -> int:
    if index_bits != "auto":
        return int(index_bits)
    sizes = {w: stream_size(positions_to_gaps(positions, w), coding, w) for w in range(1, MAX_INDEX_BITS + 1)}
    return min(sizes, key=lambda w: (sizes[w], w))


def _encode_sparse(
    name: str, tensor: torch.Tensor, dtype: str, bits: np.ndarray, coding: Coding, index_bits: IndexBits
) -> list[Encoded]:
    """Both sparse encodings (the codebook one only where the distinct values are few enough)."""
    positions = np.flatnonzero(bits)
    values = bits[positions]
    width = _choose_index_width(positions, coding, index_bits)
    gaps = encode_stream(positions_to_gaps(positions, width), coding, width)
    base = {"n": name, "s": list(tensor.shape), "d": dtype, "e": "sparse", "nnz": int(len(positions)), "ib": width}
    common = dict(
        **_base_stats(name, tensor, dtype, int(len(positions)), "sparse-values", coding),
        index_width=width,
        index_bits=gaps.nbits,
        fillers=int(gaps.count - len(positions)),
        index_entropy_bits=gaps.entropy_bits,
    )
    raw_values = values.tobytes()
    out = [
        Encoded(
            {**base, "g": gaps.header(), "v": {"c": "raw"}},
            [gaps.table, gaps.payload, raw_values],
            TensorStats(
                **common,
                value_width=itemsize(dtype) * 8,
                value_bits=len(raw_values) * 8,
                overhead_bytes=len(gaps.table),
                nbytes=gaps.nbytes + len(raw_values),
            ),
        )
    ]
    coded = _codebook_stream(values, dtype, coding)
    if coded is not None:
        header, sections, stats = coded
        stats["overhead_bytes"] += len(gaps.table)
        total = gaps.nbytes + sum(len(s) for s in sections)
        out.append(
            Encoded(
                {**base, "g": gaps.header(), "v": header},
                [gaps.table, gaps.payload, *sections],
                TensorStats(**{**common, "encoding": "sparse-codebook"}, **stats, nbytes=total),
            )
        )
    return out


def _encode_codebook(name: str, tensor: torch.Tensor, dtype: str, bits: np.ndarray, coding: Coding) -> list[Encoded]:
    coded = _codebook_stream(bits, dtype, coding)
    if coded is None:
        return []
    header, sections, stats = coded
    nnz = int(np.count_nonzero(bits))
    return [
        Encoded(
            {"n": name, "s": list(tensor.shape), "d": dtype, "e": "codebook", "v": header},
            sections,
            TensorStats(
                **_base_stats(name, tensor, dtype, nnz, "codebook", coding),
                **stats,
                nbytes=sum(len(s) for s in sections),
            ),
        )
    ]


def encode_tensor(
    name: str,
    tensor: torch.Tensor,
    coding: Coding = "huffman",
    index_bits: IndexBits = "auto",
    represents: str | None = None,
) -> Encoded:
    """The smallest encoding of one tensor (ties go to the simplest)."""
    dtype = dtype_name(tensor.dtype)
    bits = bit_patterns(tensor)
    candidates = [_encode_raw(name, tensor, dtype, bits)]
    if tensor.numel() > 0 and dtype != "bool":
        candidates += _encode_sparse(name, tensor, dtype, bits, coding, index_bits)
        candidates += _encode_codebook(name, tensor, dtype, bits, coding)
    best = min(candidates, key=lambda c: c.nbytes)
    best.stats.represents = represents
    return best


# ---------------------------------------------------------------- reading


class StreamHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    c: Literal["h", "f", "raw"]
    n: int = Field(0, ge=0)
    t: int = Field(0, ge=0, le=MAX_CODEBOOK)
    b: int = Field(0, ge=0)
    w: int = Field(0, ge=0, le=64)
    k: int = Field(0, ge=0, le=MAX_CODEBOOK)


MAX_DIMENSION = 1 << 40  # one dimension of a stored shape; beyond it, a shape with a 0 still overflows reshape


class TensorHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: str
    s: list[Annotated[int, Field(ge=0, le=MAX_DIMENSION)]] = Field(max_length=16)
    d: Literal[tuple(DTYPES)]  # type: ignore[valid-type]
    e: Literal["raw", "sparse", "codebook"]
    nnz: int = Field(0, ge=0)
    ib: int = Field(0, ge=0, le=MAX_INDEX_BITS)
    g: StreamHeader | None = None
    v: StreamHeader | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.s)

    @property
    def decoded_bytes(self) -> int:
        return self.numel * itemsize(self.d)


def _bad(t: TensorHeader, what: str) -> FormatError:
    return FormatError(f"tensor {t.n!r}: {what}: damaged file")


def _coded_lengths(t: TensorHeader, v: StreamHeader, count: int) -> list[int]:
    """Codebook + table + payload lengths of a value stream of `count` symbols."""
    if v.c == "raw" or v.k == 0 or v.n != count:
        raise _bad(t, "codebook stream is inconsistent with its element count")
    if v.c == "f" and v.w < max(0, math.ceil(math.log2(v.k))):
        raise _bad(t, "fixed-width codes too narrow for the codebook")
    return [v.k * itemsize(t.d), *stream_layout(v.model_dump())]


def section_lengths(t: TensorHeader) -> list[int]:
    """The byte length of each section the header declares, after checking it is self-consistent."""
    if any(d < 0 for d in t.s):
        raise _bad(t, "negative dimension")
    numel = t.numel
    if t.e == "raw":
        return [numel * itemsize(t.d)]
    if t.e == "codebook":
        if t.v is None:
            raise _bad(t, "codebook entry without a value stream")
        return _coded_lengths(t, t.v, numel)
    if t.g is None or t.v is None or not 1 <= t.ib <= MAX_INDEX_BITS or t.nnz > numel or t.g.c == "raw":
        raise _bad(t, "sparse entry is incomplete or inconsistent")
    if t.g.n > numel + t.nnz or t.g.n < t.nnz:
        raise _bad(t, "gap-stream count does not fit the tensor's size")
    lengths = list(stream_layout(t.g.model_dump()))
    if t.v.c == "raw":
        return lengths + [t.nnz * itemsize(t.d)]
    return lengths + _coded_lengths(t, t.v, t.nnz)


def _values(t: TensorHeader, v: StreamHeader, sections: list[bytes]) -> np.ndarray:
    unsigned = DTYPES[t.d][1]
    if v.c == "raw":
        return np.frombuffer(sections[0], dtype=unsigned)
    codebook = np.frombuffer(sections[0], dtype=unsigned)
    symbols = decode_stream(v.model_dump(), sections[1], sections[2], len(codebook))
    return codebook[symbols]


def decode_tensor(t: TensorHeader, sections: list[bytes]) -> torch.Tensor:
    """The tensor a checked header and its sections describe."""
    unsigned = DTYPES[t.d][1]
    if t.e == "raw":
        return from_bit_patterns(np.frombuffer(sections[0], dtype=unsigned), t.d, t.s)
    if t.e == "codebook":
        return from_bit_patterns(_values(t, t.v, sections), t.d, t.s)  # type: ignore[arg-type]
    gaps = decode_stream(t.g.model_dump(), sections[0], sections[1], 1 << t.ib)  # type: ignore[union-attr]
    positions = gaps_to_positions(gaps, t.ib, t.numel, t.nnz)
    values = _values(t, t.v, sections[2:])  # type: ignore[arg-type]
    bits = np.zeros(t.numel, dtype=unsigned)
    bits[positions] = values
    return from_bit_patterns(bits, t.d, t.s)
