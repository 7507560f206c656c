"""Chunks sized by work: every item in exactly one chunk, in order; no chunk over the budget
unless it is a single item; none over the item cap; a chunk closes only when the next item
would not fit."""

from __future__ import annotations

import random

import pytest

from worker.chunks import chunks_by_work

PHOTO, STREET, THUMB = 4000 * 3000, 2048 * 1024, 64 * 32
BUDGET = 24 * STREET


@pytest.mark.parametrize("work, most, sizes", [
    ([STREET] * 50, 1000, [24, 24, 2]),  # street scenes: 24 a chunk, as before
    ([PHOTO] * 10, 1000, [4, 4, 2]),  # phone photos: 4 a chunk (48 Mpx)
    ([THUMB] * 2500, 1000, [1000, 1000, 500]),  # thumbnails: the item cap
    ([10 * BUDGET, STREET, 10 * BUDGET], 1000, [1, 1, 1]),  # over the budget: alone
    ([], 1000, []),
])
def test_chunks_hold_about_a_budget_of_work(work, most, sizes):
    assert [len(c) for c in chunks_by_work(work, BUDGET, most)] == sizes


def test_random_work_is_chunked_in_order_within_the_budget_and_each_chunk_is_full():
    rng = random.Random(5)
    for _ in range(200):
        work = [rng.choice([THUMB, STREET, PHOTO, 30 * STREET]) for _ in range(rng.randrange(60))]
        most = rng.randrange(1, 40)
        chunks = chunks_by_work(work, BUDGET, most)
        assert [i for c in chunks for i in c] == list(range(len(work)))
        for chunk, after in zip(chunks, chunks[1:] + [None]):
            load = sum(work[i] for i in chunk)
            assert len(chunk) <= most and (load <= BUDGET or len(chunk) == 1)
            if after is not None:  # closed only because the next item did not fit
                assert len(chunk) == most or load + work[after.start] > BUDGET
