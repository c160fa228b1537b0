"""batch_pieces: full batches, then powers of two, summing to n."""

from __future__ import annotations

import pytest

from facecluster.batching import batch_pieces


def test_batch_pieces_examples() -> None:
    assert batch_pieces(45, 32) == [32, 8, 4, 1]
    assert batch_pieces(0, 32) == []
    assert batch_pieces(64, 32) == [32, 32]
    assert batch_pieces(50, 48) == [48, 2]  # a batch size need not be a power of two


@pytest.mark.parametrize("largest", [1, 2, 7, 16, 32, 48])
def test_batch_pieces_cover_n_with_few_shapes(largest: int) -> None:
    shapes: set[int] = set()
    for n in range(0, 300):
        pieces = batch_pieces(n, largest)
        assert sum(pieces) == n and all(0 < p <= largest for p in pieces)
        assert pieces == sorted(pieces, reverse=True)
        # Below the full batches, each power of two at most once: the binary expansion of n % largest.
        rest = [p for p in pieces if p != largest] if n % largest else []
        assert sum(rest) == n % largest and len(set(rest)) == len(rest)
        assert all(p & (p - 1) == 0 for p in rest)
        shapes.update(pieces)
    assert len(shapes) <= largest.bit_length() + 1  # a handful of shapes for every n


def test_batch_pieces_rejects_empty_batches() -> None:
    with pytest.raises(ValueError):
        batch_pieces(3, 0)
