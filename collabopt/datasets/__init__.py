"""Bundled and local data: digits, Fashion-MNIST, spoken-digit MFCCs, tfds folders, .npz files."""

from collabopt.datasets.bundled import (
    BUNDLED,
    DatasetNotInstalled,
    digits,
    fashion_mnist,
    from_tfds,
    load,
    spoken_digits,
)

__all__ = ["BUNDLED", "DatasetNotInstalled", "digits", "fashion_mnist", "from_tfds", "load", "spoken_digits"]
