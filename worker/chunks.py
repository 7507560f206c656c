"""Items cut into runs of about equal work: the cluster jobs' chunks and the groups the
in-process pool hands out."""

from __future__ import annotations


def chunks_by_work(work: list[int], budget: int, most: int) -> list[range]:
    """Consecutive items in chunks of about `budget` work (pixels, bytes) and at most `most`
    items, so that a chunk's time and memory do not depend on its images' sizes: a chunk closes
    once its work reaches the budget (an item over the budget makes a chunk of its own)."""
    chunks, start, total = [], 0, 0
    for index, amount in enumerate(work):
        if index > start and (total + amount > budget or index - start == most):
            chunks.append(range(start, index))
            start, total = index, 0
        total += amount
    if start < len(work):
        chunks.append(range(start, len(work)))
    return chunks
