"""Batch sizes that keep the set of tensor shapes small.

oneDNN (PyTorch's CPU convolution library) builds a kernel for every new input shape, which costs as
much as running a small batch (measured: 15-60 ms per new batch size for InceptionResnetV1, ~10 ms
for ONet). Splitting work into full batches plus power-of-two pieces means a whole run, whatever its
photo and face counts, meets only a handful of shapes, and every later call reuses cached kernels.
"""

from __future__ import annotations


def batch_pieces(n: int, largest: int) -> list[int]:
    """Split ``n`` into batches of ``largest`` and then powers of two below it.

    Example: ``batch_pieces(45, 32)`` -> [32, 8, 4, 1]
    """
    if largest < 1:
        raise ValueError(f"largest batch must be positive, got {largest}")
    pieces = [largest] * (n // largest)
    rest = n % largest
    while rest:
        piece = 1 << (rest.bit_length() - 1)
        pieces.append(piece)
        rest -= piece
    return pieces
