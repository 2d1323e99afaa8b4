"""convert(..., sparse=True): pruned weights in the converter's sparse format, same outputs, smaller file."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
import collabopt.tflite as ct
from collabopt.tflite import flatbuffer
from tests.conftest import rand

L = keras.layers


def _builtin_outputs(tfl, x):
    """Raw outputs of ``tfl`` on ``x`` in LiteRT's builtin kernels (no XNNPack), sample by sample."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=tfl.content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    results = []
    for sample in x:
        value = sample[None]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            value = np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], value)
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(results)


@pytest.fixture(scope="module")
def pruned_dense_model():
    """An 80%-sparse Dense-heavy model, pruned and QAT-trained (PQAT)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), L.Dense(128, activation="relu", name="d1"), L.Dense(10, name="d2")])
    pruned = co.prune_low_magnitude(model, pruning_schedule=co.ConstantSparsity(0.8, 0))
    pruned.compile("adam", "mse")
    x, y = rand(64, 64), rand(64, 10, seed=1)
    pruned.fit(x, y, epochs=1, verbose=0)
    qat = co.quantize_model(pruned)
    qat.compile("adam", "mse")
    qat.fit(x, y, epochs=1, verbose=0)
    return co.strip_pruning(pruned), qat, x


def test_dense_conversion_stores_no_sparse_tensor():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    assert not any(t.sparse for t in flatbuffer.parse(ct.convert(model, "float32").content).tensors)


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_sparse_file_is_smaller_and_computes_the_same(pruned_dense_model, mode):
    float_model, qat, x = pruned_dense_model
    model = float_model if mode == "float32" else qat
    dense, sparse = ct.convert(model, mode), ct.convert(model, mode, sparse=True)
    assert sparse.size_report().raw_bytes < 0.7 * dense.size_report().raw_bytes
    # Bit-identical in LiteRT's builtin kernels; through TFLiteModel the dense
    # int8 file runs on XNNPack, whose rounding may differ by one output step.
    np.testing.assert_array_equal(_builtin_outputs(sparse, x), _builtin_outputs(dense, x))
    step = dense.output_details[0]["quantization"][0] or 1e-6
    assert np.max(np.abs(sparse.predict(x) - dense.predict(x))) <= step + 1e-6
    stored = [t for t in flatbuffer.parse(sparse.content).tensors if t.sparse]
    assert stored, "no weight was stored in the sparse format"
    # The densified values are the dense file's weights, zeros included.
    dense_weights = {t.shape: t.data for t in flatbuffer.parse(dense.content).tensors if t.data is not None and t.data.ndim == 2}
    for t in stored:
        np.testing.assert_array_equal(t.data, dense_weights[t.shape])
        assert t.nbytes < t.data.nbytes
    # inspect() reads the zeros back from the sparse format.
    (big,) = [s for s in sparse.inspect().weights() if s.shape == (128, 64)]
    assert big.zeros_fraction >= 0.8 - 1e-6


def test_densify_block_sparse_layout():
    """A 2x2-block CSR encoding of a 4x4 matrix (traversal order 0, 1, then the block dims 2, 3)."""
    from ai_edge_litert import schema_py_generated as schema

    def dim(fmt, size=0, segments=None, indices=None):
        meta = schema.DimensionMetadataT()
        meta.format, meta.denseSize = fmt, size
        if segments is not None:
            meta.arraySegments, meta.arrayIndices = schema.Int32VectorT(), schema.Int32VectorT()
            meta.arraySegments.values, meta.arrayIndices.values = segments, indices
        return meta

    params = schema.SparsityParametersT()
    params.traversalOrder, params.blockMap = [0, 1, 2, 3], [0, 1]
    dense, csr = schema.DimensionType.DENSE, schema.DimensionType.SPARSE_CSR
    # Block rows 0 and 1; row 0 holds block column 1, row 1 holds block column 0.
    params.dimMetadata = [dim(dense, 2), dim(csr, 0, [0, 1, 2], [1, 0]), dim(dense, 2), dim(dense, 2)]
    values = np.arange(1, 9, dtype=np.float32)
    expected = np.zeros((4, 4), np.float32)
    expected[0:2, 2:4] = values[:4].reshape(2, 2)
    expected[2:4, 0:2] = values[4:].reshape(2, 2)
    np.testing.assert_array_equal(flatbuffer.densify(values, (4, 4), params), expected)
