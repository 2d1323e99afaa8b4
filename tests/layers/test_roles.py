"""The layer roles table: built-in facts, custom registration, and every consumer reading it."""

import keras
import numpy as np
import pytest

import collabopt.keras as co
from collabopt import layers as co_layers
from collabopt.errors import InvalidArgumentError
from collabopt.layers import ELEMENTWISE, FLATTENS, KEEPS, PRODUCES, RESHAPES, LayerRoles, channel_behaviour, layer_roles
from collabopt.quantization import Default8BitQuantizeScheme, QuantizeConfig, QuantizeWrapper
from collabopt.transform import analyze_channels

L = keras.layers


def test_built_in_roles():
    assert layer_roles(L.MaxPooling2D()).same_scale and layer_roles(L.MaxPooling2D()).passthrough
    assert layer_roles(L.AveragePooling2D).same_scale  # TFLite's int8 AVERAGE_POOL_2D keeps its input's scale
    assert not layer_roles(L.GlobalAveragePooling2D).same_scale  # a MEAN op: its own scale
    assert layer_roles(L.BatchNormalization()).passthrough and channel_behaviour(L.BatchNormalization()) == KEEPS
    assert layer_roles(L.SeparableConv2D(4, 3)).output_weight == "pointwise_kernel"
    assert layer_roles(L.Conv2DTranspose(4, 3)).output_weight == "kernel"
    assert layer_roles(L.Embedding(4, 2)).output_weight is None  # no BN folds into an embedding
    assert channel_behaviour(L.Dense(3)) == PRODUCES
    # Behaviours that depend on the configuration.
    assert channel_behaviour(L.Reshape((12,))) == FLATTENS and channel_behaviour(L.Reshape((3, 4))) == RESHAPES
    assert channel_behaviour(L.Activation("relu")) == ELEMENTWISE
    assert channel_behaviour(L.Activation("softmax")) is None
    assert channel_behaviour(L.GroupNormalization(groups=1)) is None
    # The compatibility name is derived from the table.
    assert all(layer_roles(cls).passthrough for cls in co_layers.PASSTHROUGH_LAYERS)
    assert L.Conv2D not in co_layers.PASSTHROUGH_LAYERS and L.Add in co_layers.PASSTHROUGH_LAYERS


def test_roles_are_inherited_and_replaced_per_class():
    class MyConv(L.Conv2D):
        pass

    class Mine(keras.layers.Layer):
        def call(self, x):
            return x

    assert layer_roles(MyConv).channels == PRODUCES
    assert layer_roles(Mine) == LayerRoles()
    co.register_layer_roles(Mine, LayerRoles(same_scale=True))
    assert layer_roles(Mine()).same_scale
    co.register_layer(Mine, roles=LayerRoles(channels=KEEPS))
    assert layer_roles(Mine) == LayerRoles(channels=KEEPS)


def test_bad_registrations_are_named():
    with pytest.raises(InvalidArgumentError, match="Layer subclass"):
        co.register_layer_roles(int, LayerRoles())
    with pytest.raises(InvalidArgumentError, match="roles must be a LayerRoles"):
        co.register_layer_roles(L.Dense, {"same_scale": True})
    with pytest.raises(InvalidArgumentError, match="channels='keep'"):
        LayerRoles(channels="keep")
    with pytest.raises(InvalidArgumentError, match=r"register_layer\(Dense\): give its weights"):
        co.register_layer(L.Dense)


class _Halve(keras.layers.Layer):
    """Weightless, per element, maps 0 to 0."""

    def call(self, x):
        return x * 0.5


class _HalveUnknown(_Halve):
    pass


def test_same_scale_role_drops_the_output_quantizer():
    class Swap(keras.layers.Layer):
        def call(self, x):
            return keras.ops.concatenate([x[..., 2:], x[..., :2]], axis=-1)

    scheme = Default8BitQuantizeScheme()
    assert len(scheme.config_for(Swap()).output_quantizers(Swap())) == 1
    co.register_layer(Swap, roles=LayerRoles(passthrough=True, same_scale=True))
    assert scheme.config_for(Swap()).output_quantizers(Swap()) == []


def test_channel_role_lets_filter_pruning_walk_through_a_custom_layer():
    co.register_layer_roles(_Halve, LayerRoles(channels=KEEPS))

    def model(middle):
        x = keras.Input((6, 6, 2))
        y = middle(name="middle")(keras.layers.Conv2D(4, 3, name="a")(x))
        y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 1, name="b")(y))
        return keras.Model(x, keras.layers.Dense(2, name="out")(y))

    known = analyze_channels(model(_Halve))
    assert [g.prunable for g in known.groups.values() if ("a", 0) in g.members] == [True]
    co.register_layer_roles(_HalveUnknown, LayerRoles())  # its own (empty) roles, not its parent's
    unknown = analyze_channels(model(_HalveUnknown))
    (group,) = [g for g in unknown.groups.values() if ("a", 0) in g.members]
    assert "layer 'middle' (_HalveUnknown), which filter pruning does not handle" in group.frozen
    small = co.strip_pruning(co.prune_filters(model(_Halve), pruning_ratio=0.5))
    assert small.get_layer("a").filters == 2 and small.get_layer("b").kernel.shape[-2] == 2


def test_batchnorm_folds_only_into_a_layer_with_an_output_weight():
    layer = L.EinsumDense("ab,bc->ac", output_shape=3)
    layer.build((None, 4))
    bn = L.BatchNormalization()
    with pytest.raises(InvalidArgumentError, match=r"LayerRoles\(output_weight=\.\.\.\)"):
        QuantizeWrapper(layer, QuantizeConfig(), folded_batchnorm=bn)
    dense = L.Dense(3)
    dense.build((None, 4))
    folded = QuantizeWrapper(dense, QuantizeConfig(), folded_batchnorm=bn)
    folded.build((None, 4))
    assert folded(np.ones((1, 4), "float32")).shape == (1, 3)
