"""The P x K batch sampler: P identities per batch, K faces of each, reproducible from a seed.

FaceNet needs several faces of each identity in every batch so that anchor–positive pairs exist
(the paper: ~40 faces per identity, ~1800 per batch); the miners then look for negatives among
the other identities of the same batch::

    sampler = PKSampler(labels, identities=8, faces=4, seed=0)
    for epoch in range(3):
        for batch in sampler.batches(epoch):   # lists of indices into ``labels``
            ...
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from facecluster.errors import DataError


class PKSampler:
    """Yield batches of ``identities`` x up to ``faces`` indices; every identity once per epoch.

    Identities with fewer than 2 faces cannot form a positive pair and are left out (listed in
    ``skipped``). An identity with fewer than ``faces`` faces contributes all of them (no
    duplicates: a duplicated face would be a zero-distance positive). The order depends only on
    ``seed`` and the epoch, so a resumed run sees the same batches. The last batch of an epoch may
    hold fewer identities, but never fewer than 2 (it needs negatives): a single leftover identity
    joins the batch before it (P + 1 identities) rather than being dropped.

    Example: ``next(PKSampler([0, 0, 1, 1, 2, 2], 2, 2, seed=1).batches(0))`` -> 4 indices.
    """

    def __init__(self, labels: Sequence[int], identities: int, faces: int, seed: int = 0) -> None:
        if identities < 2:
            raise DataError(f"--batch-identities must be at least 2 (got {identities}): negatives come from other identities")
        if faces < 2:
            raise DataError(f"--batch-faces must be at least 2 (got {faces}): positives need two faces of one identity")
        by_label: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            by_label[int(label)].append(index)
        self.members = {label: idx for label, idx in sorted(by_label.items()) if len(idx) >= 2}
        self.skipped = sorted(label for label, idx in by_label.items() if len(idx) < 2)
        if len(self.members) < 2:
            raise DataError(
                f"need at least 2 identities with 2 or more faces each, found {len(self.members)}: add more people or faces"
            )
        self.identities = identities
        self.faces = faces
        self.seed = seed

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(len(self.members), self.identities)
        return full + (1 if rest >= 2 else 0)

    def batches(self, epoch: int = 0) -> Iterator[list[int]]:
        """The batches of one epoch, each a list of dataset indices grouped by identity."""
        rng = random.Random(f"{self.seed}:{epoch}")  # string seeds hash stably across processes
        order = list(self.members)
        rng.shuffle(order)
        groups = [order[start : start + self.identities] for start in range(0, len(order), self.identities)]
        if len(groups[-1]) < 2:
            # A lone identity has no negatives of its own: it joins the previous batch, so every
            # identity is still seen once per epoch (there are always >= 2 identities, so one exists).
            groups[-2].extend(groups.pop())
        for chosen in groups:
            batch: list[int] = []
            for label in chosen:
                pool = self.members[label]
                batch.extend(rng.sample(pool, min(self.faces, len(pool))))
            yield batch

    @property
    def n_faces(self) -> int:
        """Faces that can be sampled (those of identities with 2 or more faces)."""
        return sum(len(idx) for idx in self.members.values())
