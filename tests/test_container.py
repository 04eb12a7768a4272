import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeshrink.encode.container import MAGIC, read_container, state_to_bytes
from edgeshrink.errors import FormatError


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.contiguous().view(width), b.contiguous().view(width))


@st.composite
def sparse_tensors(draw):
    numel = draw(st.integers(0, 3000))
    density = draw(st.sampled_from([0.0, 0.001, 0.05, 0.3, 1.0]))
    distinct = draw(st.sampled_from([1, 3, 32, 10**6]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(numel).astype(np.float32)
    if distinct < 10**6:
        values = rng.standard_normal(distinct).astype(np.float32)[rng.integers(0, distinct, numel)]
    values[rng.random(numel) >= density] = 0.0
    shape = draw(st.sampled_from([(numel,), (1, numel), (numel, 1)]))
    return torch.from_numpy(values).reshape(shape)


@settings(max_examples=120, deadline=None)
@given(sparse_tensors(), st.sampled_from(["huffman", "fixed"]), st.sampled_from(["auto", 1, 3, 8, 15]))
def test_round_trip_is_bit_exact(tensor, coding, index_bits):
    data = state_to_bytes({"w": tensor}, coding=coding, index_bits=index_bits).data
    assert same_bits(read_container(data).state["w"], tensor)


def test_edge_tensors_round_trip():
    long_run = torch.zeros(200_000)
    long_run[[0, 99_999, 199_999]] = torch.tensor([1.5, -2.0, 3.25])  # gaps need many fillers
    nan_payload = torch.tensor([0x7FC00001, 0x7F800001], dtype=torch.int32).view(torch.float32)
    state = {
        "all_zero": torch.zeros(5, 7),
        "one_value": torch.full((100,), 0.125),
        "one_element": torch.tensor([3.0]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "long_run": long_run,
        "nan_payloads": nan_payload,
        "half": torch.randn(64).half(),
        "bf16": torch.randn(64).bfloat16(),
        "double": torch.randn(9).double(),
        "int_buffer": torch.tensor(12345, dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "int8": torch.randint(-128, 127, (50,), dtype=torch.int8),
    }
    for coding in ("huffman", "fixed"):
        decoded = read_container(state_to_bytes(state, coding=coding, index_bits=4).data).state
        for name, tensor in state.items():
            assert same_bits(decoded[name], tensor), name


def test_negative_zero_is_stored_as_zero():
    t = torch.tensor([-0.0, 1.0, -0.0, 0.0])
    result = state_to_bytes({"t": t})
    decoded = read_container(result.data).state["t"]
    assert torch.equal(decoded, t)
    assert not torch.signbit(decoded[0])
    assert result.tensors[0].nnz == 1


def test_sparse_shared_tensor_is_smaller_than_dense():
    rng = np.random.default_rng(0)
    w = rng.choice(np.linspace(-1, 1, 32, dtype=np.float32), size=(300, 100))
    w[rng.random(w.shape) < 0.9] = 0
    result = state_to_bytes({"w": torch.from_numpy(w)})
    stats = result.tensors[0]
    assert stats.encoding == "sparse-codebook" and stats.codebook_size <= 32
    assert result.nbytes < w.size * 4 / 10


def test_truncated_or_corrupted_container_is_refused():
    data = state_to_bytes({"w": torch.randn(6, 4), "b": torch.zeros(4)}).data
    for damaged in (data[:-1], data[: len(data) // 2], data[:10]):
        with pytest.raises(FormatError):
            read_container(damaged)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    with pytest.raises(FormatError, match="checksum"):
        read_container(bytes(flipped))
    with pytest.raises(FormatError, match="not an .eshrink"):
        read_container(b"PK\x03\x04" + data[4:])
    assert data.startswith(MAGIC)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8])
def test_integer_codes_are_packed_and_huffman_coded_below_their_width(dtype):
    """Integer weight codes (int8, 4-bit): a codebook of their distinct values, indices at the codes' own
    width with fixed coding, and below it with Huffman coding (the codes are far from uniform)."""
    torch.manual_seed(0)
    w = torch.randn(64, 300)
    for qmax in (127, 7):
        codes = torch.clamp(torch.round(w / (w.abs().amax(1, keepdim=True) / qmax)), -qmax, qmax).to(dtype)
        if dtype == torch.uint8:
            codes = (codes.to(torch.int16) + qmax).to(torch.uint8)
        fixed = state_to_bytes({"w": codes}, coding="fixed")
        huff = state_to_bytes({"w": codes}, coding="huffman")
        for packed in (fixed, huff):
            assert same_bits(read_container(packed.data).state["w"], codes)
        bits = int(np.ceil(np.log2(len(torch.unique(codes)))))
        assert fixed.tensors[0].nbytes <= codes.numel() * bits / 8 + len(torch.unique(codes)) * codes.element_size()
        assert huff.tensors[0].nbytes < fixed.tensors[0].nbytes
        entropy = huff.tensors[0].value_entropy_bits / 8
        assert huff.tensors[0].value_bits / 8 <= entropy * 1.02 + 1  # Huffman lands within 2% of the entropy


def test_pruned_integer_codes_are_stored_sparse():
    torch.manual_seed(0)
    codes = torch.randint(-127, 128, (200, 100), dtype=torch.int8)
    codes[torch.rand(200, 100) < 0.95] = 0
    packed = state_to_bytes({"w": codes})
    assert packed.tensors[0].encoding.startswith("sparse")
    assert packed.nbytes < codes.numel() / 5
    assert torch.equal(read_container(packed.data).state["w"], codes)
