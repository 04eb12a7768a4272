import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeshrink.encode import huffman
from edgeshrink.errors import FormatError


def optimal_cost(counts):
    """Oracle: the cost of an optimal prefix code is the sum of the weights of all merges."""
    heap = [c for c in counts if c > 0]
    if len(heap) <= 1:
        return 0
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=300), st.integers(1, 64))
def test_round_trip_and_optimal(symbols, alphabet):
    symbols = np.array(symbols) % alphabet
    counts = np.bincount(symbols, minlength=alphabet)
    lengths = huffman.code_lengths(counts)
    data, nbits = huffman.encode(symbols, lengths)
    assert np.array_equal(huffman.decode(data, nbits, len(symbols), lengths), symbols)
    if np.count_nonzero(counts) > 1 and lengths.max() < huffman.MAX_CODE_LENGTH:
        assert nbits == optimal_cost(counts)  # no length limit hit: exactly optimal


def test_length_limit_keeps_a_complete_prefix_code():
    counts = np.array([2**i for i in range(30)], dtype=np.int64)  # Fibonacci-like skew: depth 29 unlimited
    lengths = huffman.code_lengths(counts)
    assert lengths.max() == huffman.MAX_CODE_LENGTH
    assert np.sum(np.ldexp(1.0, -lengths)) == 1.0
    symbols = np.repeat(np.arange(30), np.minimum(counts, 50))
    data, nbits = huffman.encode(symbols, lengths)
    assert np.array_equal(huffman.decode(data, nbits, len(symbols), lengths), symbols)


def test_one_symbol_stream_is_empty_and_decodes():
    lengths = huffman.code_lengths(np.array([0, 0, 7]))
    data, nbits = huffman.encode(np.full(7, 2), lengths)
    assert (data, nbits) == (b"", 0)
    assert list(huffman.decode(data, nbits, 7, lengths)) == [2] * 7


def test_empty_stream():
    lengths = huffman.code_lengths(np.zeros(4, dtype=np.int64))
    assert not lengths.any()
    assert huffman.encode(np.zeros(0, dtype=np.int64), lengths) == (b"", 0)
    assert huffman.decode(b"", 0, 0, lengths).size == 0


def test_within_one_bit_of_entropy():
    rng = np.random.default_rng(1)
    symbols = rng.geometric(0.2, 20000) % 32
    counts = np.bincount(symbols)
    _, nbits = huffman.encode(symbols, huffman.code_lengths(counts))
    h = huffman.entropy_bits(counts)
    assert h <= nbits < h + len(symbols)


def test_damaged_stream_is_refused():
    symbols = np.array([0, 1, 2, 3, 1, 1, 0, 2] * 10)
    lengths = huffman.code_lengths(np.bincount(symbols))
    data, nbits = huffman.encode(symbols, lengths)
    with pytest.raises(FormatError):
        huffman.decode(data, nbits - 1, len(symbols), lengths)
    with pytest.raises(FormatError):
        huffman.decode(data[:2], nbits, len(symbols), lengths)
    bad = lengths.copy()
    bad[0] += 1  # no longer a complete code
    with pytest.raises(FormatError):
        huffman.decode(data, nbits, len(symbols), bad)


def test_lengths_table_round_trip():
    lengths = np.array([0, 15, 3, 1, 7])
    assert np.array_equal(huffman.unpack_lengths(huffman.pack_lengths(lengths), 5), lengths)
