"""The technique registry: registered once, in chain order, configs as plain data."""

import json

import keras
import pytest

import collabopt.keras as co
from collabopt.errors import InvalidArgumentError
from collabopt.preserve import CLUSTERS, SPARSITY
from collabopt.technique import (
    Technique,
    chain_techniques,
    get_technique,
    register_technique,
    technique_names,
    technique_of,
    technique_registered,
)

#: Runs unchanged on JAX and PyTorch too (CI: KERAS_BACKEND=jax / torch; see README).
pytestmark = pytest.mark.every_backend


def test_built_in_techniques_are_registered_in_chain_order():
    names = technique_names()
    assert names.index("prune") < names.index("cluster") < names.index("quantize")
    prune, cluster, quantize = (get_technique(n) for n in ("prune", "cluster", "quantize"))
    assert (prune.handler, cluster.handler, quantize.handler) == (
        co.PruneLowMagnitude,
        co.ClusterWeights,
        co.QuantizeWrapper,
    )
    assert prune.records == (SPARSITY,) and cluster.records == (CLUSTERS,) and cluster.keeps == (SPARSITY,)
    assert co.PruningConfig.technique == "prune" and co.QuantizationConfig.technique == "quantize"
    with pytest.raises(InvalidArgumentError, match=r"unknown technique 'sharpen'; registered: .*prune"):
        get_technique("sharpen")


def test_a_name_is_registered_once():
    prune = get_technique("prune")
    assert register_technique(prune) is prune  # the same registration again is harmless
    other = Technique(**{**prune.__dict__, "function": "other_prune"})
    with pytest.raises(InvalidArgumentError, match="technique 'prune' is already registered"):
        register_technique(other)
    with pytest.raises(InvalidArgumentError, match="handler must be an OptimizationWrapper subclass"):
        Technique(**{**prune.__dict__, "handler": keras.layers.Dense})


def test_technique_registered_restores_the_registry_and_the_config_name():
    prune = get_technique("prune")
    renamed = Technique(**{**prune.__dict__, "name": "prune_again"})
    with technique_registered(renamed):
        assert get_technique("prune_again") is renamed and co.PruningConfig.technique == "prune_again"
    assert "prune_again" not in technique_names() and co.PruningConfig.technique == "prune"
    with technique_registered(prune):  # already registered as it is: nothing to undo
        pass
    assert get_technique("prune") is prune
    other = Technique(**{**prune.__dict__, "function": "other_prune"})
    with pytest.raises(InvalidArgumentError, match="technique 'prune' is already registered"):
        with technique_registered(other):
            pass
    assert get_technique("prune") is prune and co.PruningConfig.technique == "prune"


def test_chain_techniques_reads_wrappers_and_markers():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    pcqat = co.quantize_model(co.cluster_weights(co.prune_low_magnitude(model), number_of_clusters=3))
    assert [t.name for _, t in chain_techniques(pcqat.layers[0])] == ["quantize", "cluster", "prune"]
    annotated = co.quantize_annotate_model(model)
    assert technique_of(annotated.layers[0]).name == "quantize"
    assert chain_techniques(model.layers[0]) == []


@pytest.mark.parametrize(
    "config",
    [
        co.PruningConfig(
            co.PolynomialDecay(0.0, 0.5, 0, 10), block_size=(1, 1), pruning_policy=co.PruneForLatencyOnXNNPack()
        ),
        co.ClusteringConfig(number_of_clusters=4, preserve_sparsity=True, cluster_per_channel=True),
        co.QuantizationConfig(co.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True), strict=True),
    ],
)
def test_configs_are_plain_serialisable_data(config):
    data = json.loads(json.dumps(config.get_config()))
    again = type(config).from_config(data)
    assert again.get_config() == config.get_config()
    assert type(again) is type(config)


def test_configs_from_settings_name_bad_settings():
    config = co.PruningConfig.from_settings({"sparsity": 0.8}, steps=20)
    assert isinstance(config.pruning_schedule, co.PolynomialDecay)
    assert config.pruning_schedule.final_sparsity == 0.8
    with pytest.raises(
        InvalidArgumentError, match=r"cluster: unknown settings \['clusters'\]; accepted: number_of_clusters"
    ):
        co.ClusteringConfig.from_settings({"clusters": 4})
    with pytest.raises(InvalidArgumentError, match=r"cluster: missing settings \['number_of_clusters'\]"):
        co.ClusteringConfig.from_settings({})
