"""The `.eshrink` container: a state dict's tensors stored as small as Deep Compression stores them.

Layout (all integers little-endian; the full specification is docs/container-format.md):

    magic "\\x89ESHRNK\\n" (8) | version u16 | flags u16 | header length u32 |
    header (zlib-compressed UTF-8 JSON) | payload (sections of every tensor, in table order) |
    CRC-32 of everything before it (u32)

Each tensor is stored in the smallest of its encodings (`encode/tensors.py`). This module knows bytes,
tensors and the header's free-form `arch` and `meta` entries only: what a model is and how to rebuild
it is `edgeshrink.io`'s business.

Reading is bounded: every length the header implies is checked against the payload before anything is
decoded, and the decoded tensors may total at most `max_bytes` (default `MAX_DECODED_BYTES`), so a
crafted header cannot make the reader allocate more than that (plus working memory proportional to
the decoded bytes and the payload, see docs/container-format.md).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeshrink.encode.streams import Coding
from edgeshrink.encode.tensors import (
    IndexBits,
    TensorHeader,
    TensorStats,
    decode_tensor,
    encode_tensor,
    section_lengths,
)
from edgeshrink.errors import FormatError

MAGIC = b"\x89ESHRNK\n"
VERSION = 2  # 2: integer tensors may be sparse or codebook-coded, and the dense "codebook" encoding
READABLE_VERSIONS = (1, 2)
MAX_DECODED_BYTES = 1 << 30  # 1 GiB of decoded tensors per file unless the caller allows more
MAX_HEADER_BYTES = 64 << 20  # the decompressed JSON header
_PREAMBLE = struct.Struct("<8sHHI")
_TRAILER = struct.Struct("<I")


@dataclass
class PackResult:
    """A serialised container: its bytes and what each tensor cost."""

    nbytes: int
    header_bytes: int
    tensors: list[TensorStats]
    data: bytes = field(default=b"", repr=False)
    path: Path | None = None

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
    represents: Mapping[str, str] | None = None,
) -> PackResult:
    """Serialise tensors into container bytes (in memory). `represents` names tensors that stand for
    another dtype (integer codes of float32 weights), so that ratios compare with dense fp32."""
    if coding not in ("huffman", "fixed"):
        raise ValueError(f"coding must be 'huffman' or 'fixed', got {coding!r}")
    encoded = []
    for name, tensor in state.items():
        ib = index_bits(name) if callable(index_bits) else index_bits
        encoded.append(encode_tensor(name, tensor, coding, ib, (represents or {}).get(name)))
    header = {"tensors": [e.header for e in encoded], "arch": arch, "meta": meta or {}}
    header_bytes = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    body = b"".join(
        [_PREAMBLE.pack(MAGIC, VERSION, 0, len(header_bytes)), header_bytes] + [s for e in encoded for s in e.sections]
    )
    data = body + _TRAILER.pack(zlib.crc32(body))
    return PackResult(len(data), len(header_bytes), [e.stats for e in encoded], data=data)


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tensors: list[TensorHeader]
    arch: dict | None = None
    meta: dict = {}


@dataclass
class Container:
    """A decoded container: its tensors and what its header says about them."""

    state: dict[str, torch.Tensor]
    arch: dict | None
    meta: dict
    nbytes: int
    version: int = VERSION
    entries: list[TensorHeader] = field(default_factory=list)  # how each tensor is stored


def is_container(data_or_path: bytes | str | Path) -> bool:
    """True when the bytes (or the file) start with the container's magic."""
    if isinstance(data_or_path, bytes):
        return data_or_path[: len(MAGIC)] == MAGIC
    with open(data_or_path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _inflate_header(blob: bytes, source: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(blob, MAX_HEADER_BYTES)
    except zlib.error as exc:
        raise FormatError(f"{source}: the header is not valid ({exc})") from None
    if inflater.unconsumed_tail:
        raise FormatError(f"{source}: the header inflates to more than {MAX_HEADER_BYTES:,} bytes; damaged file")
    return text


def _parse_header(data: bytes, source: str) -> tuple[_Header, int, int]:
    if len(data) < _PREAMBLE.size + _TRAILER.size:
        raise FormatError(f"{source} is too short to be an .eshrink container ({len(data)} bytes)")
    magic, version, _flags, header_len = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"{source} is not an .eshrink container (bad magic bytes)")
    if version not in READABLE_VERSIONS:
        raise FormatError(
            f"{source} is container version {version}; this edgeshrink reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: upgrade edgeshrink"
        )
    (crc,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if zlib.crc32(data[: -_TRAILER.size]) != crc:
        raise FormatError(f"{source} is damaged or truncated (checksum mismatch); write it again")
    start = _PREAMBLE.size
    if start + header_len > len(data) - _TRAILER.size:
        raise FormatError(f"{source}: header length {header_len} runs past the end of the file")
    try:
        header = _Header.model_validate_json(_inflate_header(data[start : start + header_len], source))
    except (ValidationError, UnicodeDecodeError) as exc:
        raise FormatError(f"{source}: the header is not valid ({str(exc).splitlines()[0][:200]})") from None
    return header, start + header_len, version


def _layout(header: _Header, offset: int, end: int, source: str, max_bytes: int) -> list[list[tuple[int, int]]]:
    """(start, stop) of every section of every tensor, after checking that they exactly fill the payload
    and that the decoded tensors stay within `max_bytes`."""
    decoded, spans = 0, []
    names: set[str] = set()
    for t in header.tensors:
        if t.n in names:
            raise FormatError(f"{source}: tensor {t.n!r} is stored twice; damaged file")
        names.add(t.n)
        lengths = section_lengths(t)
        decoded += t.decoded_bytes
        if decoded > max_bytes:
            raise FormatError(
                f"{source}: the tensors decode to more than {max_bytes:,} bytes (the reader's limit); "
                "if the file is genuine, read it with a larger max_bytes"
            )
        if offset + sum(lengths) > end:
            raise FormatError(f"{source}: tensor {t.n!r} runs past the end of the file (truncated?)")
        sections = []
        for n in lengths:
            sections.append((offset, offset + n))
            offset += n
        spans.append(sections)
    if offset != end:
        raise FormatError(f"{source}: {end - offset} unexplained bytes after the last tensor")
    return spans


def read_container(source: str | Path | bytes, *, max_bytes: int = MAX_DECODED_BYTES) -> Container:
    """Decode a container (a path or its bytes), checking every length before reading anything."""
    if isinstance(source, bytes):
        data, name = source, "container"
    else:
        path = Path(source)
        if not path.is_file():
            raise FormatError(f"{path} does not exist or is not a file")
        data, name = path.read_bytes(), str(path)
    header, offset, version = _parse_header(data, name)
    spans = _layout(header, offset, len(data) - _TRAILER.size, name, max_bytes)
    state: dict[str, torch.Tensor] = {}
    for t, sections in zip(header.tensors, spans, strict=True):
        try:
            state[t.n] = decode_tensor(t, [data[a:b] for a, b in sections])
        except FormatError as exc:
            raise FormatError(f"{name}: tensor {t.n!r}: {exc}") from None
    return Container(state, header.arch, header.meta, len(data), version, list(header.tensors))
