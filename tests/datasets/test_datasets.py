import numpy as np
import pytest

from collabopt import datasets
from collabopt.datasets import bundled


def test_digits_shapes_and_determinism():
    (x, y), (xt, yt) = datasets.digits()
    assert x.shape == (1438, 8, 8, 1) and xt.shape == (359, 8, 8, 1)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) == set(range(10))
    (x2, _), _ = datasets.digits()
    np.testing.assert_array_equal(x, x2)


def test_fashion_mnist_subset():
    try:
        (x, y), (xt, yt) = datasets.fashion_mnist(n_train=100, n_test=50)
    except datasets.DatasetNotInstalled as error:
        pytest.skip(str(error))
    assert x.shape == (100, 28, 28, 1) and xt.shape == (50, 28, 28, 1)
    assert x.dtype == np.float32 and x.max() <= 1.0 and y.dtype == np.int64


def test_fashion_mnist_missing_gives_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "FASHION_MNIST_DIRS", (tmp_path,))
    with pytest.raises(datasets.DatasetNotInstalled, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist()


def test_spoken_digits():
    try:
        (x, y), (xt, yt) = datasets.spoken_digits(frames=32)
    except datasets.DatasetNotInstalled as error:
        pytest.skip(str(error))
    assert x.shape == (2400, 32, 13, 1) and xt.shape == (600, 32, 13, 1)
    assert np.bincount(yt).tolist() == [60] * 10


def test_load_npz_and_bad_names(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 3)), y_train=np.zeros(4), x_test=np.zeros((2, 3)), y_test=np.zeros(2))
    (x, _), (xt, _) = datasets.load(str(path))
    assert x.shape == (4, 3) and xt.dtype == np.float32
    with pytest.raises(ValueError, match="unknown data set 'nope'; accepted: digits"):
        datasets.load("nope")
    np.savez(tmp_path / "bad.npz", x_train=np.zeros(2))
    with pytest.raises(ValueError, match="missing arrays"):
        datasets.load(str(tmp_path / "bad.npz"))


def test_from_tfds_without_prepared_data(tmp_path):
    with pytest.raises(datasets.DatasetNotInstalled, match="not prepared under"):
        datasets.from_tfds("mnist", data_dir=tmp_path)
