import numpy as np
import pytest

from collabopt import datasets
from collabopt.datasets import bundled
from collabopt.errors import InvalidArgumentError, InvalidFileError


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


def test_npz_whose_x_and_y_lengths_differ_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 3)), y_train=np.zeros(4), x_test=np.zeros((2, 3)), y_test=np.zeros(3))
    with pytest.raises(InvalidFileError, match="x_test holds 2 samples but y_test holds 3 labels"):
        datasets.load(str(path))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(InvalidFileError, match="junk.npz is not a readable .npz archive"):
        datasets.load(str(tmp_path / "junk.npz"))


def test_from_tfds_without_prepared_data_names_the_folder(tmp_path):
    with pytest.raises(datasets.DatasetNotInstalled, match=f"'mnist' \\(split 'train'\\) is not prepared in {tmp_path}"):
        datasets.from_tfds("mnist", data_dir=tmp_path)


def test_from_tfds_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert datasets.default_tfds_dir() == tmp_path
    with pytest.raises(datasets.DatasetNotInstalled, match=f"not prepared in {tmp_path}"):
        datasets.load("tfds:mnist")


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("tfds:mnist", ("mnist", ("train", "test"))),
        ("tfds:mnist:validation", ("mnist", ("train", "validation"))),
        ("tfds:mnist/3.0.1:train[:80%],train[80%:]", ("mnist/3.0.1", ("train[:80%]", "train[80%:]"))),
    ],
)
def test_parse_tfds_spec(spec, expected):
    assert datasets.parse_tfds_spec(spec) == expected


@pytest.mark.parametrize("spec", ["tfds:", "tfds:mnist:a,b,c", "tfds:mnist:,test"])
def test_parse_tfds_spec_refuses_bad_specs(spec):
    with pytest.raises(InvalidArgumentError, match="tfds:NAME|SPLITS must be"):
        datasets.parse_tfds_spec(spec)


def _prepare_tiny_tfds(data_dir):
    """Builds a 3-class 8x8 image data set with tensorflow-datasets' own builder machinery (offline)."""
    import tensorflow_datasets as tfds

    class TinyCollaboptDigits(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        url_infos = {}  # nothing to download (tfds would look for a checksums file beside this module)

        def _info(self):
            features = tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=3)}
            )
            return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(48, 0), "test": self._generate_examples(12, 1)}

        def _generate_examples(self, n, seed):
            rng = np.random.default_rng(seed)
            for i in range(n):
                yield i, {"image": rng.integers(0, 255, (8, 8, 1), dtype=np.uint8), "label": i % 3}

    TinyCollaboptDigits(data_dir=str(data_dir)).download_and_prepare()
    return "tiny_collabopt_digits"


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfds")
    return folder, _prepare_tiny_tfds(folder)


@pytest.mark.slow
def test_tfds_spec_reads_a_prepared_data_set_offline(tiny_tfds):
    folder, name = tiny_tfds
    (x, y), (xt, yt) = datasets.load(f"tfds:{name}", tfds_dir=folder)
    assert x.shape == (48, 8, 8, 1) and xt.shape == (12, 8, 8, 1)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0 and y.dtype == np.int64
    assert sorted(np.unique(y).tolist()) == [0, 1, 2]
    (x2, _), (xt2, _) = datasets.load(f"tfds:{name}:train[:50%],test", tfds_dir=folder)
    assert len(x2) == 24 and len(xt2) == 12
    with pytest.raises(datasets.DatasetNotInstalled, match=f"split 'nope'.*not prepared in {folder}"):
        datasets.load(f"tfds:{name}:nope", tfds_dir=folder)


@pytest.mark.slow
def test_cli_verbs_read_tfds_data(tiny_tfds, tmp_path, capsys):
    from collabopt.cli import main

    folder, name = tiny_tfds
    model = tmp_path / "m.keras"
    assert main(["train", "--data", f"tfds:{name}", "--tfds-dir", str(folder), "--epochs", "1", "--out", str(model)]) == 0
    assert f"on tfds:{name}" in capsys.readouterr().out
    out = tmp_path / "m.tflite"
    assert main(["export", str(model), "--mode", "int8", "--data", f"tfds:{name}:test", "--tfds-dir", str(folder), "--out", str(out)]) == 0
    assert f"top-1 on tfds:{name}:test test" in capsys.readouterr().out
