"""Bundled and local data: digits, Fashion-MNIST, spoken-digit MFCCs, tfds folders, .npz files."""

from collabopt.datasets.bundled import (
    BUNDLED,
    DatasetNotInstalled,
    default_tfds_dir,
    digits,
    fashion_mnist,
    from_tfds,
    load,
    load_npz,
    parse_tfds_spec,
    spoken_digits,
)

__all__ = [
    "BUNDLED",
    "DatasetNotInstalled",
    "default_tfds_dir",
    "digits",
    "fashion_mnist",
    "from_tfds",
    "load",
    "load_npz",
    "parse_tfds_spec",
    "spoken_digits",
]
