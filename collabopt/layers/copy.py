"""Copying a single layer with its weights."""

from __future__ import annotations

import copy
import inspect

import keras

from collabopt.errors import InvalidArgumentError
from collabopt.layers.composite import is_composite


def copy_layer(layer: keras.layers.Layer, dtype: str | None = None) -> keras.layers.Layer:
    """A new layer of the same class, config, name and weight values.

    ``dtype``: a dtype policy name for the copy (and any layer it wraps)
    instead of the layer's own, e.g. ``"float32"`` for a layer trained under
    ``mixed_float16``, whose variables are float32 already.

    Uses the public serialization hooks: ``get_config``/``from_config`` for
    the structure (without config keys the constructor refuses, see
    :func:`rebuildable_config`), ``get_build_config``/``build_from_config``
    to create the variables, or, for a layer whose sublayers are built by its
    first call (a composite block), a call on fresh symbolic inputs like the
    ones it was first called with; then the variables' values, in order,
    after checking their shapes. A collabopt wrapper is rebuilt around a copy
    of the layer it wraps (``from_config_with_layer``), so a Lambda inside is
    never deserialized.

    Raises:
        InvalidArgumentError: the layer cannot be copied (its config fails or
            does not describe it); the message names it and what to change.
    """
    if isinstance(layer, keras.layers.Wrapper) and hasattr(type(layer), "from_config_with_layer"):
        return _copy_wrapper(layer, dtype)
    # `from_config` of the live class (as keras.models.clone_model does), with
    # the classes of the layer and of any layers it wraps in scope, so custom
    # layers need not be registered to be copied in memory.
    classes, current = {}, layer
    while current is not None:
        classes[type(current).__name__] = type(current)
        current = getattr(current, "layer", None) if isinstance(current, keras.layers.Wrapper) else None
    try:
        config = layer.get_config()
    except Exception as error:  # not implemented (an argument Keras cannot serialize), or a bug in it
        raise _not_copyable(layer, f"get_config() failed ({type(error).__name__}: {error})") from error
    if "name" not in config:  # Keras' automatic config of a layer without get_config leaves the name out
        config = {**config, "name": layer.name}
    if dtype is not None:
        config = _with_dtype(config, dtype)
    with keras.saving.custom_object_scope(classes):
        new = _from_config(type(layer), config, layer)
    if layer.built:
        _build_like(new, layer)
        _copy_values(new, layer)
    return new


def _from_config(cls, config: dict, layer):
    """``cls.from_config`` of ``config`` without the keys its ``__init__`` refuses (see :func:`rebuildable_config`)."""
    try:
        return cls.from_config(copy.deepcopy(config))  # Keras' from_config may pop entries (a Wrapper's "layer")
    except Exception as error:  # any failure of a user layer's from_config
        rebuildable = rebuildable_config(layer, config)
        if rebuildable is config:
            raise _not_copyable(layer, f"from_config failed ({type(error).__name__}: {error})") from error
        try:
            return cls.from_config(rebuildable)
        except Exception as retry_error:
            raise _not_copyable(layer, f"from_config failed ({type(error).__name__}: {error})") from retry_error


def rebuildable_config(layer, config: dict | None = None) -> dict:
    """``layer``'s config (or ``config``) without the keys its class's constructor refuses.

    Some layers' ``get_config`` does not round-trip: KerasHub's ViT patching
    layer returns derived values (``num_patches``) its constructor does not
    take. Those keys describe the layer, they do not configure it; which
    keys a class refuses is found once by trying, and remembered.
    """
    config = layer.get_config() if config is None else config
    cls = type(layer)
    key = (cls, frozenset(config))
    if key not in _REFUSED_KEYS:
        _REFUSED_KEYS[key] = _refused_keys(cls, config)
    refused = _REFUSED_KEYS[key]
    return {k: v for k, v in config.items() if k not in refused} if refused else config


_REFUSED_KEYS: dict = {}


def _refused_keys(cls, config: dict) -> frozenset:
    try:
        cls.from_config(copy.deepcopy(config))
    except (TypeError, ValueError):
        refused = frozenset(k for k in config if k not in _init_arguments(cls))
        if refused:
            try:
                cls.from_config(copy.deepcopy({k: v for k, v in config.items() if k not in refused}))
            except Exception:  # not (only) the refused keys: leave the config as it is
                return frozenset()
        return refused
    except Exception:  # any other failure is the caller's to report
        return frozenset()
    return frozenset()


def _init_arguments(cls) -> set[str]:
    """The keyword arguments ``cls(...)`` accepts: its and its bases' named ``__init__`` parameters."""
    names = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names.update(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return names | {"input_shape", "input_dim"}


def _build_like(new, layer) -> None:
    """Creates ``new``'s variables as ``layer`` has them.

    ``build_from_config`` where the layer has a ``build`` method; a layer
    without one (a composite layer whose sublayers are created in
    ``__init__`` and built by its first call) is called on fresh symbolic
    inputs of the shapes and dtypes it was first called with.
    """
    if new.built and len(new.weights) == len(layer.weights):
        return
    builds_itself = type(layer).build is not keras.layers.Layer.build
    build_config = layer.get_build_config()
    if builds_itself and build_config and not new.built:
        new.build_from_config(build_config)
    if len(new.weights) != len(layer.weights):
        _build_by_call(new, layer, build_config)
    new.built = True


def _build_by_call(new, layer, build_config) -> None:
    args, kwargs = _first_call_arguments(layer, build_config)
    build_by_call(new, serialize_call(args, kwargs), error_layer=layer)


def call_signature(layer) -> dict | None:
    """The inputs a built composite layer was first called with, as JSON data (shapes, dtypes, plain values).

    For any composite: a ``build`` method of a user's (or KerasHub's) may
    create its own variables and leave the sublayers to the first call.

    Saved beside a wrapper of the layer, so that loading can build the
    re-created layer (:func:`build_by_call`) before the wrapper reads its weights.
    """
    if not (layer.built and is_composite(layer)):
        return None
    args, kwargs = _first_call_arguments(layer, layer.get_build_config())
    return serialize_call(args, kwargs)


def serialize_call(args, kwargs) -> dict:
    def encode(value):
        if isinstance(value, keras.KerasTensor):  # the tensor a KerasTensor stands for: its shape and dtype
            return {"keras_tensor": {"shape": list(value.shape), "dtype": str(value.dtype)}}
        return value

    return {"args": keras.tree.map_structure(encode, list(args)), "kwargs": keras.tree.map_structure(encode, dict(kwargs))}


def build_by_call(layer, signature: dict, error_layer=None) -> None:
    """Builds ``layer`` by calling it on fresh symbolic inputs described by ``signature`` (:func:`call_signature`)."""

    def decode(value):
        if isinstance(value, dict) and set(value) == {"keras_tensor"}:
            spec = value["keras_tensor"]
            return keras.KerasTensor(tuple(spec["shape"]), spec["dtype"])
        return value

    def is_leaf(value):
        return isinstance(value, dict) and set(value) == {"keras_tensor"}

    args = [_map(decode, a, is_leaf) for a in signature["args"]]
    kwargs = {k: _map(decode, v, is_leaf) for k, v in signature["kwargs"].items()}
    try:
        layer(*args, **kwargs)
    except Exception as error:
        raise _not_copyable(
            error_layer or layer, f"calling a fresh copy on its input shapes failed ({type(error).__name__}: {error})"
        ) from error
    layer.built = True


def _map(fn, value, is_leaf):
    if is_leaf(value):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map(fn, v, is_leaf) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map(fn, v, is_leaf) for v in value)
    return fn(value)


def fresh_call_arguments(layer):
    """Fresh symbolic ``(args, kwargs)`` like those ``layer`` was first called with (for tracing it again)."""
    args, kwargs = _first_call_arguments(layer, layer.get_build_config())
    return keras.tree.map_structure(
        lambda t: keras.KerasTensor(t.shape, t.dtype, sparse=t.sparse) if isinstance(t, keras.KerasTensor) else t,
        (tuple(args), dict(kwargs)),
    )


def _first_call_arguments(layer, build_config):
    """The (symbolic) arguments ``layer`` was first called with in a model, else tensors of its build shape."""
    # Keras records each call's arguments on the layer's inbound nodes and has
    # no public accessor for them (``layer.input`` flattens away keyword
    # arguments such as an attention mask).
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if nodes and hasattr(nodes[0], "arguments"):
        return tuple(nodes[0].arguments.args), dict(nodes[0].arguments.kwargs)
    if build_config and "input_shape" in build_config:
        shape = build_config["input_shape"]
        return (keras.tree.map_shape_structure(lambda s: keras.KerasTensor(s, layer.compute_dtype), shape),), {}
    if build_config and "shapes_dict" in build_config:
        kwargs = {
            key.removesuffix("_shape"): keras.tree.map_shape_structure(lambda s: keras.KerasTensor(s, layer.compute_dtype), shape)
            for key, shape in build_config["shapes_dict"].items()
            if shape is not None  # an optional input the layer was built without
        }
        return (), kwargs
    raise _not_copyable(layer, "it records neither the inputs it was called on nor its build shape")


def _copy_values(new, layer) -> None:
    source = layer.weights
    target = new.weights
    mismatch = len(source) != len(target) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(source, target))
    if mismatch:
        raise _not_copyable(
            layer,
            f"the copy built {len(target)} variable(s) {[tuple(v.shape) for v in target][:6]} where the layer has "
            f"{len(source)} {[tuple(v.shape) for v in source][:6]}",
        )
    for a, b in zip(target, source):
        a.assign(keras.ops.copy(b.value))  # a buffer of its own (JAX's fit donates the buffers it trains)


def _not_copyable(layer, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"layer '{layer.name}' ({type(layer).__name__}) could not be copied: {why}. collabopt copies a layer from "
        "its get_config() and builds it like the original (build_from_config, or a call on inputs of the recorded "
        "shapes); make get_config() return the arguments of __init__, or give the layer a build(input_shape) "
        "method that creates all its variables (calling build on each sublayer)."
    )


def _with_dtype(config: dict, dtype: str) -> dict:
    """``config`` (and the configs of layers nested in it, e.g. a Keras Wrapper's) with dtype policy ``dtype``."""
    config = dict(config)
    if "dtype" in config:
        config["dtype"] = dtype
    nested = config.get("layer")
    if isinstance(nested, dict) and isinstance(nested.get("config"), dict):
        config["layer"] = {**nested, "config": _with_dtype(nested["config"], dtype)}
    return config


def copy_layer_or_share(layer: keras.layers.Layer, dtype: str | None = None) -> keras.layers.Layer:
    """A copy of ``layer``, or ``layer`` itself when it holds no weights and cannot be rebuilt from its config.

    A ``Lambda`` (or a custom weightless layer whose config holds Python code)
    is not rebuilt from its config, since Keras refuses to deserialize code in
    safe mode, and a layer without weights has no state to copy: the new model
    shares it, and the original is left unchanged.
    """
    if not layer.weights and (isinstance(layer, keras.layers.Lambda) or not _rebuildable(layer)):
        return layer
    return copy_layer(layer, dtype)


def _rebuildable(layer) -> bool:
    try:
        copy_layer(layer)
    except Exception:  # any failure of a user layer's from_config: share it instead
        return False
    return True


def held_classes_in_scope(wrapper):
    """A custom-object scope with the classes of the configurable objects ``wrapper`` holds.

    A wrapper rebuilt in memory from its own config (a copy, or the same
    state around a new inner layer) deserializes the objects it holds, e.g.
    a user's QuantizeConfig subclass; their live classes are in scope, so
    they need not be registered (only loading a file needs that).
    """
    held = {
        type(v).__name__: type(v)
        for v in vars(wrapper).values()
        if hasattr(v, "get_config") and not isinstance(v, (keras.layers.Layer, keras.Variable))
    }
    return keras.saving.custom_object_scope(held)


def _copy_wrapper(wrapper, dtype=None):
    config = wrapper.get_config()
    config.pop("layer")
    if dtype is not None:
        config["dtype"] = dtype
    with held_classes_in_scope(wrapper):
        new = type(wrapper).from_config_with_layer(config, copy_layer_or_share(wrapper.layer, dtype))
    if wrapper.built:
        build_config = wrapper.get_build_config()
        if build_config and not new.built:
            new.build_from_config(build_config)
        new.set_weights(wrapper.get_weights())
    return new
