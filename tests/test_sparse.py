import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeshrink.encode.sparse import filler_symbol, gaps_to_positions, positions_to_gaps
from edgeshrink.errors import FormatError


@settings(max_examples=80, deadline=None)
@given(st.sets(st.integers(0, 5000), max_size=200), st.integers(1, 15))
def test_positions_round_trip(positions, index_bits):
    positions = np.array(sorted(positions), dtype=np.int64)
    symbols = positions_to_gaps(positions, index_bits)
    assert symbols.max(initial=0) <= filler_symbol(index_bits)
    back = gaps_to_positions(symbols, index_bits, 5001, len(positions))
    assert np.array_equal(back, positions)


def test_long_gap_uses_fillers():
    symbols = positions_to_gaps(np.array([100]), 3)  # M = 7: 100 = 14 * 7 + 2
    assert list(symbols) == [7] * 14 + [2]
    assert list(gaps_to_positions(symbols, 3, 101, 1)) == [100]


def test_inconsistent_stream_is_refused():
    with pytest.raises(FormatError):
        gaps_to_positions(np.array([3, 7]), 3, 100, 2)  # ends with a filler
    with pytest.raises(FormatError):
        gaps_to_positions(np.array([5, 5]), 3, 8, 2)  # points past the end
