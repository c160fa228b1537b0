"""The P x K batch sampler."""

from __future__ import annotations

import pytest

from facecluster.errors import DataError
from facecluster.training.sampler import PKSampler

LABELS = [0] * 5 + [1] * 4 + [2] * 2 + [3] * 1 + [4] * 6 + [5] * 3 + [6] * 3


def test_each_identity_once_per_epoch_with_k_faces() -> None:
    sampler = PKSampler(LABELS, identities=2, faces=3, seed=0)
    assert sampler.skipped == [3]
    batches = list(sampler.batches(0))
    assert len(batches) == len(sampler) == 3  # 6 usable identities / 2
    seen = []
    for batch in batches:
        assert len(set(batch)) == len(batch)  # no duplicated face
        ids = [LABELS[i] for i in batch]
        assert len(set(ids)) == 2
        for label in set(ids):
            assert ids.count(label) == min(3, LABELS.count(label))
        seen.extend(set(ids))
    assert sorted(seen) == [0, 1, 2, 4, 5, 6]


def test_seeded_and_epochs_differ() -> None:
    a = list(PKSampler(LABELS, 3, 2, seed=4).batches(0))
    assert a == list(PKSampler(LABELS, 3, 2, seed=4).batches(0))
    assert a != list(PKSampler(LABELS, 3, 2, seed=4).batches(1))
    assert a != list(PKSampler(LABELS, 3, 2, seed=5).batches(0))


def test_last_batch_never_has_a_single_identity() -> None:
    sampler = PKSampler(LABELS, identities=4, faces=2)  # 6 identities: one batch of 4, one of 2
    assert [len({LABELS[i] for i in b}) for b in sampler.batches(0)] == [4, 2]
    sampler = PKSampler(LABELS[:-3] + [7, 7], identities=4, faces=2)  # 6 -> 4 + 2 still
    assert len(sampler) == 2
    sampler = PKSampler(LABELS[:-3], identities=4, faces=2)  # 5 usable: 4 + a lone one dropped
    assert len(sampler) == len(list(sampler.batches(0))) == 1


def test_errors_are_one_line() -> None:
    with pytest.raises(DataError, match="at least 2 identities"):
        PKSampler([0, 0, 0, 1], 2, 2)
    with pytest.raises(DataError, match="batch-faces"):
        PKSampler(LABELS, 2, 1)
    with pytest.raises(DataError, match="batch-identities"):
        PKSampler(LABELS, 1, 2)
