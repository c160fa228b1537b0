"""Triplet training: P x K sampling, online miners, the triplet loss and the trainer."""
