"""facecluster: organise a photo library by person (FaceNet embeddings + clustering)."""

__version__ = "0.1.0"
