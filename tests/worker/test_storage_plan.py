"""The parts an S3 composition is cut into, with S3's limits scaled down to a few bytes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.storage import s3


@given(st.lists(st.integers(0, 40), max_size=12), st.integers(5, 12))
def test_parts_cover_the_sources_in_order_each_within_the_part_sizes(sizes, largest):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(s3, "MIN_PART", 5)
        patch.setattr(s3, "MAX_PART", largest)
        parts, rest = s3.plan_parts([(f"s{n}", size, None) for n, size in enumerate(sizes)])

    assert all(5 <= part.size <= largest for part in parts)
    assert all(len(part.pieces) == 1 for part in parts if part.copy)
    assert sum(piece.length for piece in rest) < 5
    pieces = [piece for part in parts for piece in part.pieces] + rest
    assert all(piece.length > 0 for piece in pieces)
    covered = {f"s{n}": 0 for n in range(len(sizes))}
    for piece in pieces:  # each source's bytes, once and in order
        assert piece.start == covered[piece.url]
        covered[piece.url] += piece.length
    assert list(covered.values()) == sizes
    urls = [piece.url for piece in pieces]
    assert urls == sorted(urls, key=lambda url: int(url[1:]))
