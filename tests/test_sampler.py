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
    sampler = PKSampler(LABELS[:-3], identities=4, faces=2)  # 5 usable: the lone fifth joins the batch
    assert len(sampler) == len(list(sampler.batches(0))) == 1
    assert [len({LABELS[i] for i in b}) for b in sampler.batches(0)] == [5]


@pytest.mark.parametrize("n_ids", range(2, 12))
@pytest.mark.parametrize("p", [2, 3, 4])
def test_every_identity_in_every_epoch(n_ids: int, p: int) -> None:
    # Brute force: count each identity's appearances in each epoch, against every remainder of n_ids / P.
    labels = [label for label in range(n_ids) for _ in range(3)] + [99]  # 99: one face, skipped
    sampler = PKSampler(labels, identities=p, faces=2, seed=7)
    for epoch in range(4):
        batches = list(sampler.batches(epoch))
        assert len(batches) == len(sampler)
        counts = {label: 0 for label in range(n_ids)}
        for batch in batches:
            ids = {labels[i] for i in batch}
            assert 2 <= len(ids) <= p + 1
            for label in ids:
                counts[label] += 1
        assert counts == {label: 1 for label in range(n_ids)}, (epoch, counts)
        assert batches == list(PKSampler(labels, identities=p, faces=2, seed=7).batches(epoch))  # deterministic


def test_errors_are_one_line() -> None:
    with pytest.raises(DataError, match="at least 2 identities"):
        PKSampler([0, 0, 0, 1], 2, 2)
    with pytest.raises(DataError, match="batch-faces"):
        PKSampler(LABELS, 2, 1)
    with pytest.raises(DataError, match="batch-identities"):
        PKSampler(LABELS, 1, 2)
