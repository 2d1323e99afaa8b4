"""The channels constraint kind: project, derive, detect, check in a file."""

import dataclasses

import numpy as np
import pytest

from collabopt.layers import WeightSpec
from collabopt.preserve import CHANNELS, get_kind, known_kinds

CONV = WeightSpec("kernel", (-1,), -2)


def _kernel(pruned=(1, 3)):
    w = np.random.default_rng(0).standard_normal((3, 3, 2, 5)).astype("float32")
    w[..., list(pruned)] = 0
    return w


def test_registered_and_projects_whole_channels():
    assert get_kind("channels") is CHANNELS and "channels" in known_kinds()
    mask = np.array([1, 0, 1, 1, 0], np.float32)
    w = np.ones((3, 3, 2, 5), np.float32)
    out = np.asarray(CHANNELS.project({"mask": mask}, w, CONV))
    assert np.all(out[..., [1, 4]] == 0) and np.all(out[..., [0, 2, 3]] == 1)
    depthwise = WeightSpec("kernel", (-2, -1), None)
    out = np.asarray(CHANNELS.project({"mask": mask}, np.ones((3, 3, 5, 1), np.float32), depthwise))
    assert np.all(out[:, :, [1, 4]] == 0)


def test_derive_and_detect():
    state, warning = CHANNELS.derive(_kernel(), CONV, {})
    assert state["mask"].tolist() == [1, 0, 1, 0, 1] and warning is None
    _, warning = CHANNELS.derive(_kernel(pruned=()), CONV, {})
    assert "keeps every channel" in warning
    assert CHANNELS.detect(_kernel(), CONV) == {}
    assert CHANNELS.detect(_kernel(pruned=()), CONV) is None
    scattered = _kernel()
    scattered[scattered < 0] = 0  # magnitude-style zeros everywhere: left to the sparsity kind
    assert CHANNELS.detect(scattered, CONV) is None


@dataclasses.dataclass
class _Tensor:
    shape: tuple
    data: np.ndarray | None
    zero_points: tuple = ()
    scales: tuple = ()
    quantized_dimension: int = 0
    zeros_fraction: float | None = None


def test_check_against_file_tensors():
    mask = {"mask": np.array([1, 0, 1, 0, 1], np.float32)}
    ohwi = np.moveaxis(_kernel(), -1, 0)  # TFLite conv layout
    assert CHANNELS.check(mask, _Tensor(ohwi.shape, ohwi)) == (True, 3)
    leaked = ohwi.copy()
    leaked[1, 0, 0, 0] = 3
    assert CHANNELS.check(mask, _Tensor(leaked.shape, leaked)) == (False, 4)
    # int8 with per-channel zero points: a stored value equal to the zero point is zero.
    q = np.where(ohwi == 0, 0, 5).astype(np.int8)
    assert CHANNELS.check(mask, _Tensor(q.shape, q, (0,) * 5, (0.1,) * 5, 0))[0]
    # Physically removed: the file has the kept channel count only.
    small = ohwi[[0, 2, 4]]
    assert CHANNELS.check(mask, _Tensor(small.shape, small)) == (True, 3)
    # Statistics only: the zero fraction must cover the pruned channels.
    assert CHANNELS.check(mask, _Tensor(ohwi.shape, None, zeros_fraction=0.4))[0]
    assert not CHANNELS.check(mask, _Tensor(ohwi.shape, None, zeros_fraction=0.1))[0]
    assert "channels" in CHANNELS.describe()


@pytest.mark.parametrize("shape", [(5,), (3, 3, 2, 1)])
def test_detect_ignores_tiny_weights(shape):
    assert CHANNELS.detect(np.zeros(shape, np.float32), CONV) is None
