"""Every public name is documented, and the API reference lists it."""

import pathlib

import pytest

import collabopt.keras
import collabopt.tflite
import collabopt.tree

API = (pathlib.Path(__file__).parent.parent / "docs" / "api.md").read_text()
NAMES = [(m, n) for m in (collabopt.keras, collabopt.tflite, collabopt.tree) for n in m.__all__]


@pytest.mark.parametrize("module,name", NAMES, ids=[f"{m.__name__}.{n}" for m, n in NAMES])
def test_documented(module, name):
    obj = getattr(module, name)
    if callable(obj):
        assert (obj.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"
    assert f"### `{name}" in API, f"{name} missing from docs/api.md (run python docs/make_api.py)"


def test_tfmot_names_are_there():
    for name in (
        "prune_low_magnitude", "strip_pruning", "UpdatePruningStep", "PruningSummaries", "ConstantSparsity",
        "PolynomialDecay", "cluster_weights", "strip_clustering", "CentroidInitialization", "quantize_model",
        "quantize_annotate_layer", "quantize_annotate_model", "quantize_apply", "quantize_scope",
        "Default8BitPrunePreserveQuantizeScheme", "Default8BitClusterPreserveQuantizeScheme", "strip_clustering_cqat",
    ):
        assert hasattr(collabopt.keras, name), name
