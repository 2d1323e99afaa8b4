import pytest

from collabopt.sparsity import ConstantSparsity, PolynomialDecay

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend


def _at(schedule, step):
    should, sparsity = schedule(step)
    return bool(should), round(float(sparsity), 6)


def test_constant_sparsity_follows_begin_end_frequency():
    s = ConstantSparsity(0.5, begin_step=10, end_step=30, frequency=10)
    assert [_at(s, t)[0] for t in (0, 9, 10, 11, 20, 30, 31, 40)] == [False, False, True, False, True, True, False, False]
    assert _at(s, 20)[1] == 0.5


def test_polynomial_decay_values_step_by_step():
    s = PolynomialDecay(0.1, 0.9, begin_step=0, end_step=100, power=3, frequency=25)
    for step in range(0, 130, 5):
        p = min(step / 100, 1.0)
        expected = 0.9 + (0.1 - 0.9) * (1 - p) ** 3
        should, got = _at(s, step)
        assert got == pytest.approx(expected, abs=1e-6)
        assert should == (step % 25 == 0 and step <= 100)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: ConstantSparsity(1.0, 0), "target_sparsity must be in \\[0, 1\\)"),
        (lambda: ConstantSparsity(-0.1, 0), "target_sparsity must be in \\[0, 1\\)"),
        (lambda: ConstantSparsity(0.5, 10, end_step=5), "end_step must be -1.*>= begin_step=10"),
        (lambda: ConstantSparsity(0.5, 0, frequency=0), "frequency must be an integer >= 1"),
        (lambda: ConstantSparsity(0.5, -1), "begin_step must be an integer >= 0"),
        (lambda: PolynomialDecay(0.0, 1.5, 0, 10), "final_sparsity must be in \\[0, 1\\)"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, -1), "end_step must be given"),
    ],
)
def test_bad_schedules(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_schedules_serialize():
    import keras

    s = PolynomialDecay(0.0, 0.8, 5, 50, power=2, frequency=5)
    r = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert r.get_config() == s.get_config()
