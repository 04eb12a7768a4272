"""The container reader against crafted files: headers that claim huge shapes, counts, widths or offsets,
with a valid checksum. Every outcome is a decoded file or an EdgeshrinkError, and the reader never
allocates more than its stated limit allows (numpy allocations traced with tracemalloc)."""

import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeshrink.encode.container import read_container, state_to_bytes
from edgeshrink.errors import EdgeshrinkError

LIMIT = 1 << 20  # decoded bytes the reader may produce in these tests
# Working memory the reader may use on top (docs/container-format.md): 40 bytes per decoded byte
# (positions and symbols as int64 for 1-byte tensors) and 40 bytes per payload bit (Huffman decoding).
WORK_PER_DECODED_BYTE, WORK_PER_PAYLOAD_BIT, SLACK = 40, 40, 4 << 20

HUGE = [0, 1, 2, 3, 7, 8, 15, 16, 31, 64, 255, 256, 2**15, 2**15 + 1, 2**20, 2**31, 2**40, 2**62, -1]


def _valid_files() -> list[bytes]:
    g = torch.Generator().manual_seed(0)
    sparse = torch.randn(40, 30, generator=g)
    sparse[torch.rand(40, 30, generator=g) < 0.9] = 0
    shared = torch.linspace(-1, 1, 8)[torch.randint(0, 8, (50, 20), generator=g)]
    shared[torch.rand(50, 20, generator=g) < 0.7] = 0
    codes = torch.randint(-7, 8, (30, 30), generator=g, dtype=torch.int8)
    state = {
        "dense": torch.randn(5, 7, generator=g),
        "sparse": sparse,
        "shared": shared,
        "codes": codes,
        "flag": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "count": torch.tensor(7, dtype=torch.int64),
        "zeros": torch.zeros(6, 6),  # an empty gap stream: the cheapest way to claim a huge tensor
        "ones": torch.ones(4, 9),  # single-symbol streams (Huffman) and zero-width codes (fixed)
    }
    return [state_to_bytes(state, coding=c).data for c in ("huffman", "fixed")]


FILES = _valid_files()


def _split(data: bytes) -> tuple[bytes, dict, bytes]:
    magic, version, flags, n = struct.unpack_from("<8sHHI", data)
    header = json.loads(zlib.decompress(data[16 : 16 + n]))
    return data[:12], header, data[16 + n : -4]


def _join(preamble: bytes, header: object, payload: bytes, header_len_delta: int = 0) -> bytes:
    blob = zlib.compress(json.dumps(header).encode())
    body = preamble + struct.pack("<I", max(0, len(blob) + header_len_delta)) + blob + payload
    return body + struct.pack("<I", zlib.crc32(body))


FIELDS = ["s", "nnz", "ib", "e", "d", "n", "g.n", "g.t", "g.b", "g.w", "g.c", "v.n", "v.k", "v.t", "v.b", "v.w", "v.c"]


@st.composite
def mutations(draw):
    data = draw(st.sampled_from(FILES))
    preamble, header, payload = _split(data)
    for _ in range(draw(st.integers(1, 3))):
        tensor = draw(st.sampled_from(header["tensors"]))
        key = draw(st.sampled_from(["s", "s", "s", *FIELDS]))
        shape = tensor.get("s")
        real_shape = isinstance(shape, list) and all(type(d) is int for d in shape)
        if key == "s" and real_shape and draw(st.booleans()):  # grow the real shape: streams stay plausible
            factor = draw(st.sampled_from([2, 2**10, 2**20, 2**31, 2**40]))
            tensor["s"] = [*shape[:-1], (shape or [1])[-1] * factor]
            continue
        value = draw(
            st.one_of(
                st.sampled_from(HUGE),
                st.lists(st.sampled_from(HUGE), max_size=4),
                st.sampled_from(["raw", "sparse", "codebook", "h", "f", "float32", "int8", "bool", None]),
            )
        )
        if "." in key:
            outer, inner = key.split(".")
            if isinstance(tensor.get(outer), dict):
                tensor[outer][inner] = value
        else:
            tensor[key] = value
    cut = draw(st.sampled_from([0, 0, 0, 1, 7, -1, -5]))
    if cut > 0:
        payload = payload + bytes(draw(st.binary(min_size=cut, max_size=cut)))
    elif cut < 0:
        payload = payload[:cut]
    if draw(st.booleans()) and payload:
        i = draw(st.integers(0, len(payload) - 1))
        payload = payload[:i] + bytes([payload[i] ^ draw(st.integers(1, 255))]) + payload[i + 1 :]
    return _join(preamble, header, payload, draw(st.sampled_from([0, 0, 0, 1, -1, 10**6])))


def _read_traced(data: bytes) -> tuple[str, int]:
    tracemalloc.start()
    try:
        read_container(data, max_bytes=LIMIT)
        outcome = "decoded"
    except EdgeshrinkError:
        outcome = "refused"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return outcome, peak


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_crafted_headers_are_decoded_or_refused_within_the_memory_bound(data):
    outcome, peak = _read_traced(data)  # anything but an EdgeshrinkError fails the test here
    bound = WORK_PER_DECODED_BYTE * LIMIT + WORK_PER_PAYLOAD_BIT * 8 * len(data) + SLACK
    assert peak <= bound, (outcome, peak, bound)


def test_a_header_that_claims_more_than_the_limit_is_refused_before_decoding():
    preamble, header, payload = _split(state_to_bytes({"w": torch.zeros(10)}).data)
    header["tensors"][0]["s"] = [2**20, 2**20]  # an all-zero sparse tensor of 2^40 elements: 8 bytes of payload
    data = _join(preamble, header, payload)
    outcome, peak = _read_traced(data)
    assert outcome == "refused" and peak < SLACK
    try:
        read_container(data, max_bytes=LIMIT)
    except EdgeshrinkError as exc:
        assert "reader's limit" in str(exc) and "\n" not in str(exc)


def test_a_dimension_too_large_for_a_shape_is_refused_even_beside_a_zero():
    preamble, header, payload = _split(state_to_bytes({"w": torch.zeros(0)}).data)
    header["tensors"][0]["s"] = [2**70, 0]  # 0 elements, yet no tensor can have this shape (found by the fuzzer)
    with pytest.raises(EdgeshrinkError) as err:
        read_container(_join(preamble, header, payload), max_bytes=LIMIT)
    assert "\n" not in str(err.value)


def test_genuine_files_decode_identically_after_the_round_trip():
    for data in FILES:
        preamble, header, payload = _split(data)
        state = read_container(_join(preamble, header, payload)).state
        assert set(state) == {t["n"] for t in header["tensors"]}
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert np.isfinite(read_container(FILES[0]).state["dense"].numpy()).all()
