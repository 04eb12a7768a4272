"""The `.eshrink` container: a model's tensors stored as small as Deep Compression stores them.

Layout (all integers little-endian; the full specification is docs/container-format.md):

    magic "\\x89ESHRNK\\n" (8) | version u16 | flags u16 | header length u32 |
    header (zlib-compressed UTF-8 JSON) | payload (sections of every tensor, in table order) |
    CRC-32 of everything before it (u32)

Each tensor is stored in whichever of three encodings is smallest for it:
- "raw": its bytes as they are (biases, norms, integer buffers, anything dense and diverse);
- "sparse + codebook": positions as a gap stream, values as indices into a codebook of the distinct
  values (what pruning + weight sharing produce);
- "sparse + values": positions as a gap stream, then the nonzero values themselves (pruning alone).
Values are compared as bit patterns, so every tensor comes back bit-exact (NaN payloads included),
with one deliberate exception: a float -0.0 is stored as +0.0. The two compare equal and compute the
same, and `weight * mask` style pruning produces -0.0 for every negative pruned weight.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from edgeshrink.encode.sparse import MAX_INDEX_BITS, gaps_to_positions, positions_to_gaps
from edgeshrink.encode.streams import CodedStream, Coding, decode_stream, encode_stream, stream_layout, stream_size
from edgeshrink.errors import ArchitectureMismatchError, FormatError

MAGIC = b"\x89ESHRNK\n"
VERSION = 1
_PREAMBLE = struct.Struct("<8sHHI")
_TRAILER = struct.Struct("<I")
MAX_CODEBOOK = 1 << 15  # Huffman lengths are nibbles with a 15-bit limit

# dtype name -> (torch dtype, unsigned numpy type of the same width used to compare bit patterns)
_DTYPES: dict[str, tuple[torch.dtype, type]] = {
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
_FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64"}
IndexBits = int | Literal["auto"]


def dtype_name(dtype: torch.dtype) -> str:
    for name, (td, _) in _DTYPES.items():
        if td == dtype:
            return name
    raise FormatError(f"tensors of dtype {dtype} cannot be stored; convert them to float32 first")


def _bit_patterns(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's elements as unsigned integers of the same width (flattened); float -0.0 becomes +0.0."""
    name = dtype_name(tensor.dtype)
    unsigned = _DTYPES[name][1]
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    bits = flat.view(_SIGNED_VIEW[unsigned]).numpy().view(unsigned)
    if name in _FLOAT_DTYPES:
        negative_zero = unsigned(1) << unsigned(bits.dtype.itemsize * 8 - 1)
        if (bits == negative_zero).any():
            bits = np.where(bits == negative_zero, unsigned(0), bits)
    return bits


def _from_bit_patterns(bits: np.ndarray, dtype: str, shape: list[int]) -> torch.Tensor:
    unsigned = _DTYPES[dtype][1]
    signed_view = _SIGNED_VIEW[unsigned]
    t = torch.from_numpy(np.array(bits, dtype=unsigned, copy=True)).view(signed_view)
    if dtype == "bool":
        return t.to(torch.bool).reshape(shape)
    return t.view(_DTYPES[dtype][0]).reshape(shape).clone()


@dataclass
class TensorStats:
    """What storing one tensor cost, the figures of Deep Compression's per-layer tables."""

    name: str
    shape: list[int]
    dtype: str
    numel: int
    nnz: int
    encoding: str  # raw | sparse-codebook | sparse-values
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

    @property
    def dense_bytes(self) -> int:
        """The same tensor as dense 32-bit values (the baseline of compression ratios)."""
        return self.numel * 4 if self.dtype in _FLOAT_DTYPES else self.nbytes


@dataclass
class _Encoded:
    header: dict
    sections: list[bytes]
    stats: TensorStats

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.sections)


def _encode_raw(name: str, tensor: torch.Tensor, dtype: str, coding: str) -> _Encoded:
    data = _bit_patterns(tensor).tobytes()
    width = torch.empty(0, dtype=_DTYPES[dtype][0]).element_size() * 8
    stats = TensorStats(
        name,
        list(tensor.shape),
        dtype,
        tensor.numel(),
        int(np.count_nonzero(_bit_patterns(tensor))),
        "raw",
        "none",
        value_width=width,
        value_bits=len(data) * 8,
        nbytes=len(data),
    )
    return _Encoded({"n": name, "s": list(tensor.shape), "d": dtype, "e": "raw"}, [data], stats)


def _choose_index_width(positions: np.ndarray, coding: Coding, index_bits: IndexBits) -> int:
    if index_bits != "auto":
        return int(index_bits)
    sizes = {w: stream_size(positions_to_gaps(positions, w), coding, w) for w in range(1, MAX_INDEX_BITS + 1)}
    return min(sizes, key=lambda w: (sizes[w], w))


def _encode_sparse(
    name: str, tensor: torch.Tensor, dtype: str, coding: Coding, index_bits: IndexBits
) -> list[_Encoded]:
    """Both sparse encodings of a float tensor (codebook only where the distinct values are few enough)."""
    bits = _bit_patterns(tensor)
    itemsize = bits.dtype.itemsize
    positions = np.flatnonzero(bits)
    values = bits[positions]
    width = _choose_index_width(positions, coding, index_bits)
    gaps = encode_stream(positions_to_gaps(positions, width), coding, width)
    base = {"n": name, "s": list(tensor.shape), "d": dtype, "e": "sparse", "nnz": int(len(positions)), "ib": width}
    stats = dict(
        name=name,
        shape=list(tensor.shape),
        dtype=dtype,
        numel=tensor.numel(),
        nnz=int(len(positions)),
        coding=coding,
        index_width=width,
        index_bits=gaps.nbits,
        fillers=int(gaps.count - len(positions)),
        index_entropy_bits=gaps.entropy_bits,
    )
    out = []
    raw_values = values.tobytes()
    out.append(
        _Encoded(
            {**base, "g": gaps.header(), "v": {"c": "raw"}},
            [gaps.table, gaps.payload, raw_values],
            TensorStats(
                encoding="sparse-values",
                value_width=itemsize * 8,
                value_bits=len(raw_values) * 8,
                overhead_bytes=len(gaps.table),
                nbytes=gaps.nbytes + len(raw_values),
                **stats,
            ),
        )
    )
    codebook, symbols = np.unique(values, return_inverse=True)
    if 0 < len(codebook) <= MAX_CODEBOOK:
        # Order the codebook by value (readable); symbols follow the same order.
        as_float = _from_bit_patterns(codebook, dtype, [len(codebook)]).double().numpy()
        order = np.argsort(as_float, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codebook, symbols = codebook[order], rank[symbols]
        value_width = max(0, math.ceil(math.log2(len(codebook))))
        vals: CodedStream = encode_stream(symbols, coding, value_width)
        cb_bytes = codebook.tobytes()
        out.append(
            _Encoded(
                {**base, "g": gaps.header(), "v": {**vals.header(), "k": len(codebook)}},
                [gaps.table, gaps.payload, cb_bytes, vals.table, vals.payload],
                TensorStats(
                    encoding="sparse-codebook",
                    codebook_size=len(codebook),
                    value_width=value_width,
                    value_bits=vals.nbits,
                    value_entropy_bits=vals.entropy_bits,
                    overhead_bytes=len(gaps.table) + len(cb_bytes) + len(vals.table),
                    nbytes=gaps.nbytes + len(cb_bytes) + vals.nbytes,
                    **stats,
                ),
            )
        )
    return out


def encode_tensor(
    name: str, tensor: torch.Tensor, coding: Coding = "huffman", index_bits: IndexBits = "auto"
) -> _Encoded:
    """The smallest encoding of one tensor."""
    dtype = dtype_name(tensor.dtype)
    candidates = [_encode_raw(name, tensor, dtype, coding)]
    if dtype in _FLOAT_DTYPES and tensor.numel() > 0:
        candidates += _encode_sparse(name, tensor, dtype, coding, index_bits)
    return min(candidates, key=lambda c: c.nbytes)


@dataclass
class PackResult:
    """A written (or serialised) container and what each tensor cost."""

    nbytes: int
    header_bytes: int
    tensors: list[TensorStats]
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)

    @property
    def dense_bytes(self) -> int:
        return sum(t.dense_bytes for t in self.tensors)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.nbytes


def state_to_bytes(
    state: Mapping[str, torch.Tensor],
    *,
    coding: Coding = "huffman",
    index_bits: IndexBits | Callable[[str], IndexBits] = "auto",
    arch: dict | None = None,
    meta: dict | None = None,
) -> PackResult:
    """Serialise tensors into container bytes (in memory)."""
    if coding not in ("huffman", "fixed"):
        raise ValueError(f"coding must be 'huffman' or 'fixed', got {coding!r}")
    encoded = []
    for name, tensor in state.items():
        ib = index_bits(name) if callable(index_bits) else index_bits
        encoded.append(encode_tensor(name, tensor, coding, ib))
    header = {"tensors": [e.header for e in encoded], "arch": arch, "meta": meta or {}}
    header_bytes = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    body = b"".join(
        [_PREAMBLE.pack(MAGIC, VERSION, 0, len(header_bytes)), header_bytes] + [s for e in encoded for s in e.sections]
    )
    data = body + _TRAILER.pack(zlib.crc32(body))
    return PackResult(len(data), len(header_bytes), [e.stats for e in encoded], data=data)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name, then rename: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a model computes with: parametrizations (masks, codebooks) applied and removed."""
    from edgeshrink.weights import effective_state_dict

    return effective_state_dict(model)


def pack(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    coding: Coding = "huffman",
    index_bits: IndexBits | Callable[[str], IndexBits] = "auto",
    arch: dict | None = None,
    meta: dict | None = None,
) -> PackResult:
    """Write a model's tensors (or a state dict) to an `.eshrink` container."""
    state = plain_state_dict(model_or_state) if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    result = state_to_bytes(state, coding=coding, index_bits=index_bits, arch=arch, meta=meta)
    result.path = Path(path)
    atomic_write(result.path, result.data)  # type: ignore[arg-type]
    return result


# ---------------------------------------------------------------- reading


class _StreamHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    c: Literal["h", "f", "raw"]
    n: int = Field(0, ge=0)
    t: int = Field(0, ge=0, le=MAX_CODEBOOK)
    b: int = Field(0, ge=0)
    w: int = Field(0, ge=0, le=64)
    k: int = Field(0, ge=0, le=MAX_CODEBOOK)


class _TensorHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: str
    s: list[int]
    d: Literal[tuple(_DTYPES)]  # type: ignore[valid-type]
    e: Literal["raw", "sparse"]
    nnz: int = Field(0, ge=0)
    ib: int = Field(0, ge=0, le=MAX_INDEX_BITS)
    g: _StreamHeader | None = None
    v: _StreamHeader | None = None


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tensors: list[_TensorHeader]
    arch: dict | None = None
    meta: dict = {}


@dataclass
class Container:
    """A decoded container: its tensors and what its header says about the model."""

    state: dict[str, torch.Tensor]
    arch: dict | None
    meta: dict
    nbytes: int


def _parse_header(data: bytes, source: str) -> tuple[_Header, int]:
    if len(data) < _PREAMBLE.size + _TRAILER.size:
        raise FormatError(f"{source} is too short to be an .eshrink container ({len(data)} bytes)")
    magic, version, _flags, header_len = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"{source} is not an .eshrink container (bad magic bytes)")
    if version != VERSION:
        raise FormatError(f"{source} is container version {version}; this edgeshrink reads version {VERSION}")
    (crc,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if zlib.crc32(data[: -_TRAILER.size]) != crc:
        raise FormatError(f"{source} is damaged or truncated (checksum mismatch); write it again")
    start = _PREAMBLE.size
    if start + header_len > len(data) - _TRAILER.size:
        raise FormatError(f"{source}: header length {header_len} runs past the end of the file")
    try:
        header = _Header.model_validate_json(zlib.decompress(data[start : start + header_len]))
    except (zlib.error, ValidationError, UnicodeDecodeError) as exc:
        raise FormatError(f"{source}: the header is not valid ({str(exc).splitlines()[0]})") from None
    return header, start + header_len


def _section_lengths(t: _TensorHeader) -> list[int]:
    numel = math.prod(t.s)
    itemsize = torch.empty(0, dtype=_DTYPES[t.d][0]).element_size()
    if t.e == "raw":
        return [numel * itemsize]
    if t.g is None or t.v is None or t.d not in _FLOAT_DTYPES or not 1 <= t.ib <= MAX_INDEX_BITS or t.nnz > numel:
        raise FormatError(f"tensor {t.n!r}: sparse entry is incomplete or inconsistent")
    if t.g.n > 2 * numel + 1 or t.v.n > numel:
        raise FormatError(f"tensor {t.n!r}: stream counts exceed the tensor's size")
    lengths = list(stream_layout(t.g.model_dump()))
    if t.v.c == "raw":
        return lengths + [t.nnz * itemsize]
    if t.v.k == 0 or t.v.n != t.nnz:
        raise FormatError(f"tensor {t.n!r}: codebook stream is inconsistent with its nonzero count")
    return lengths + [t.v.k * itemsize, *stream_layout(t.v.model_dump())]


def _decode_tensor(t: _TensorHeader, sections: list[bytes]) -> torch.Tensor:
    if t.e == "raw":
        unsigned = _DTYPES[t.d][1]
        return _from_bit_patterns(np.frombuffer(sections[0], dtype=unsigned), t.d, t.s)
    numel = math.prod(t.s)
    unsigned = _DTYPES[t.d][1]
    gap_alphabet = 1 << t.ib
    gaps = decode_stream(t.g.model_dump(), sections[0], sections[1], gap_alphabet)  # type: ignore[union-attr]
    positions = gaps_to_positions(gaps, t.ib, numel, t.nnz)
    if t.v.c == "raw":  # type: ignore[union-attr]
        values = np.frombuffer(sections[2], dtype=unsigned)
    else:
        codebook = np.frombuffer(sections[2], dtype=unsigned)
        symbols = decode_stream(t.v.model_dump(), sections[3], sections[4], len(codebook))  # type: ignore[union-attr]
        values = codebook[symbols]
    bits = np.zeros(numel, dtype=unsigned)
    bits[positions] = values
    return _from_bit_patterns(bits, t.d, t.s)


def read_container(source: str | Path | bytes) -> Container:
    """Decode a container (a path or its bytes), checking every length before reading."""
    if isinstance(source, bytes):
        data, name = source, "container"
    else:
        path = Path(source)
        if not path.is_file():
            raise FormatError(f"{path} does not exist or is not a file")
        data, name = path.read_bytes(), str(path)
    header, offset = _parse_header(data, name)
    end = len(data) - _TRAILER.size
    state: dict[str, torch.Tensor] = {}
    for t in header.tensors:
        if any(d < 0 for d in t.s):
            raise FormatError(f"{name}: tensor {t.n!r} has a negative dimension")
        lengths = _section_lengths(t)
        if offset + sum(lengths) > end:
            raise FormatError(f"{name}: tensor {t.n!r} runs past the end of the file (truncated?)")
        sections = []
        for n in lengths:
            sections.append(data[offset : offset + n])
            offset += n
        state[t.n] = _decode_tensor(t, sections)
    if offset != end:
        raise FormatError(f"{name}: {end - offset} unexplained bytes after the last tensor")
    return Container(state, header.arch, header.meta, len(data))


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "container") -> nn.Module:
    """Load tensors into a plain model, naming every missing, unexpected or misshapen tensor on failure."""
    from edgeshrink.weights import has_parametrizations

    if has_parametrizations(model):
        raise ArchitectureMismatchError(
            "unpack needs a fresh model without masks or codebooks attached; pass a new instance of the architecture"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ArchitectureMismatchError(
            f"{source} does not fit this model ({'; '.join(problems)}); unpack into the architecture it was packed from"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model


def unpack(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The model stored in a container: its weights loaded into `model`, a fresh instance of the
    architecture it was compressed from (default: the zoo model its header names). Channel edits the
    header records are replayed first, so a channel-pruned model needs no hand-built class; a
    quantized or float16 container gives back the quantized / float16 model it was written from."""
    from edgeshrink.architecture import build_from_arch
    from edgeshrink.restore import restore_model

    container = read_container(path)
    fresh = build_from_arch(container.arch, model, container.state)
    return restore_model(fresh, container.state, container.meta, str(path))
