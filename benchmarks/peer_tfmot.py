"""The TFMOT peer, run in its own process (importing TFMOT switches TensorFlow to legacy Keras).

    TF_USE_LEGACY_KERAS=1 python benchmarks/peer_tfmot.py step_time --technique prune --steps 60
Prints one JSON line. Builds the same reference CNN as collabopt.reference_models
in tf_keras.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

from collabopt.reference_models import reference_cnn  # noqa: E402  (built with keras_module=tf_keras below)


def wrap(model, technique):
    if technique == "none":
        return model, []
    if technique == "prune":
        schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=100)
        return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule), [
            tfmot.sparsity.keras.UpdatePruningStep()
        ]
    if technique == "cluster":
        return tfmot.clustering.keras.cluster_weights(
            model, number_of_clusters=16, cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
        ), []
    if technique == "quantize":
        return tfmot.quantization.keras.quantize_model(model), []
    if technique == "pcqat":
        # The guide's chain: prune, strip, sparsity-preserving cluster, strip, cluster-preserving QAT.
        sp, cl, qz = tfmot.sparsity.keras, tfmot.clustering.keras, tfmot.quantization.keras
        pruned = sp.strip_pruning(sp.prune_low_magnitude(model, pruning_schedule=sp.ConstantSparsity(0.5, 0)))
        clustered = cl.strip_clustering(
            cl.cluster_weights(pruned, number_of_clusters=16, cluster_centroids_init=cl.CentroidInitialization.LINEAR, preserve_sparsity=True)
        )
        return qz.quantize_apply(qz.quantize_annotate_model(clustered), _pcqat_scheme()), []
    raise ValueError(technique)


def _pcqat_scheme():
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as cps,
    )

    return cps.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)


def _step_model(name, input_size):
    if name == "reference_cnn":
        return reference_cnn(keras_module=keras), (28, 28, 1)
    from collabopt.reference_models import application

    return application(name, input_size, classifier_activation=None, keras_module=keras), (input_size, input_size, 3)


def step_time(technique, steps, batch_size, repeats, model_name="reference_cnn", input_size=None):
    """``(plain s/step, wrapped s/step)``: compiled fit, best of ``repeats`` rounds that alternate the two models."""
    entries = []
    for t in ("none", technique):
        tf.keras.utils.set_random_seed(0)
        model, shape = _step_model(model_name, input_size)
        model, callbacks = wrap(model, t)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        entries.append((model, callbacks))
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch_size, *shape), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch_size)
    for model, callbacks in entries:
        model.fit(x[: 2 * batch_size], y[: 2 * batch_size], batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, (model, callbacks) in enumerate(entries):
            t = time.perf_counter()
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
            best[i] = min(best[i], (time.perf_counter() - t) / steps)
    return tuple(best)


def _fit(model, x, y, epochs, lr, callbacks=()):
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=2, callbacks=list(callbacks))
    return model


def _copy(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _full_int8_converter(model, representative=None):
    """TFMOT's int8 recipe with int8 input and output: trained ranges (QAT), else calibration on ``representative``."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative is not None:
        conv.representative_dataset = lambda: ([representative[i : i + 1]] for i in range(len(representative)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv


def collaborative(args):
    """TFMOT's deployment tree on the same architecture and data; writes .tflite files and a JSON line."""
    from collabopt import datasets
    from collabopt.reference_models import ds_cnn, mobilenet_style

    data = datasets.fashion_mnist(n_train=args.n_train) if args.data == "fashion_mnist" else datasets.spoken_digits()
    (x, y), (xt, yt) = data
    build = mobilenet_style if args.arch == "mobilenet_style" else ds_cnn
    tf.keras.utils.set_random_seed(0)
    sp, cl, qz = tfmot.sparsity.keras, tfmot.clustering.keras, tfmot.quantization.keras
    E, e = args.epochs, args.stage_epochs
    base = _fit(build(x.shape[1:], keras_module=keras), x, y, E, 1e-3)
    steps = int(np.ceil(len(x) / 64))
    pruned = _fit(
        sp.prune_low_magnitude(_copy(base), pruning_schedule=sp.PolynomialDecay(0.0, 0.5, 0, steps, frequency=max(steps // 10, 1))),
        x, y, e, 5e-4, [sp.UpdatePruningStep()],
    )
    pruned = sp.strip_pruning(pruned)
    init = cl.CentroidInitialization.KMEANS_PLUS_PLUS
    clustered = cl.strip_clustering(_fit(cl.cluster_weights(_copy(base), number_of_clusters=args.clusters, cluster_centroids_init=init), x, y, e, 1e-4))
    spc = cl.strip_clustering(
        _fit(cl.cluster_weights(_copy(pruned), number_of_clusters=args.clusters, cluster_centroids_init=init, preserve_sparsity=True), x, y, e, 1e-4)
    )
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as cps,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
        default_8bit_prune_preserve_quantize_scheme as pps,
    )

    def qat(model, scheme=None):
        annotated = qz.quantize_annotate_model(_copy(model))
        q = qz.quantize_apply(annotated, scheme) if scheme is not None else qz.quantize_apply(annotated)
        return _fit(q, x, y, e, 1e-4)

    stages = {
        "Baseline": (base, False),
        "Pruned": (pruned, False),
        "Clustered": (clustered, False),
        "Sparsity-preserving clustered": (spc, False),
        "QAT": (qat(base), True),
        "PQAT": (qat(pruned, pps.Default8BitPrunePreserveQuantizeScheme()), True),
        "CQAT": (qat(clustered, cps.Default8BitClusterPreserveQuantizeScheme()), True),
        "PCQAT": (qat(spc, cps.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)), True),
    }
    out = {}
    os.makedirs(args.out, exist_ok=True)
    rep = x[:500]
    for name, (model, is_qat) in stages.items():
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        acc = model.evaluate(xt, yt, verbose=0)[1]
        conv = _full_int8_converter(model, None if is_qat else rep)
        path = os.path.join(args.out, f"tfmot_{name.replace(' ', '_')}.tflite")
        with open(path, "wb") as f:
            f.write(conv.convert())
        out[name] = {"float_top1": acc, "int8_path": path}
        if name == "Baseline":
            fp = tf.lite.TFLiteConverter.from_keras_model(model).convert()
            fpath = os.path.join(args.out, "tfmot_baseline_float32.tflite")
            with open(fpath, "wb") as f:
                f.write(fp)
            out["float32_path"] = fpath
    print(json.dumps({"tfmot_version": tfmot.__version__, "stages": out}))


def mobilenet_tables(args):
    """TFMOT's tree on MobileNetV2 (alpha 0.35, Fashion-MNIST 32x32x3) from collabopt's trained baseline weights.

    The same data, stage epochs, learning rates and seed as examples/mobilenet_v2.ipynb; each stage is
    stripped before the next, as TFMOT's guide does. Writes .tflite files and prints a JSON line.
    """
    from collabopt import datasets
    from collabopt.reference_models import application

    (x, y), (xt, yt) = datasets.fashion_mnist(n_train=args.n_train, n_test=args.n_test)
    x, xt = (np.repeat(np.pad(a, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1) for a in (x, xt))
    tf.keras.utils.set_random_seed(0)
    sp, cl, qz = tfmot.sparsity.keras, tfmot.clustering.keras, tfmot.quantization.keras
    e, batch = args.stage_epochs, 64
    base = application("MobileNetV2", 32, classifier_activation=None, keras_module=keras)
    saved = np.load(args.weights)
    base.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])

    steps = int(np.ceil(len(x) / batch))

    def fit(model, lr, callbacks=(), epochs=e):
        # From lr decayed to 0 along a cosine over the stage, as the notebook's fine_tune.
        schedule = keras.optimizers.schedules.CosineDecay(lr, epochs * steps)
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        model.fit(x, y, epochs=epochs, batch_size=batch, verbose=2, callbacks=list(callbacks))
        return model

    init = cl.CentroidInitialization.KMEANS_PLUS_PLUS
    schedule = sp.PolynomialDecay(0.0, 0.5, 0, steps, frequency=max(steps // 10, 1))
    stages, errors = {"Baseline": (base, False)}, {}

    def stage(name, make, is_qat=False):
        try:
            stages[name] = (make(), is_qat)
        except Exception as error:  # noqa: BLE001 - recorded as the row's result
            errors[name] = _error(name, error)

    stage(
        "Pruned",
        lambda: sp.strip_pruning(
            fit(sp.prune_low_magnitude(_copy(base), pruning_schedule=schedule), 5e-4, [sp.UpdatePruningStep()], epochs=args.prune_epochs)
        ),
    )
    stage("Clustered", lambda: cl.strip_clustering(fit(cl.cluster_weights(_copy(base), number_of_clusters=16, cluster_centroids_init=init), 1e-4)))
    stage(
        "Clustered per channel",
        lambda: cl.strip_clustering(
            fit(cl.cluster_weights(_copy(base), number_of_clusters=16, cluster_centroids_init=init, cluster_per_channel=True), 1e-4)
        ),
    )
    if "Pruned" in stages:
        stage(
            "Sparsity-preserving clustered",
            lambda: cl.strip_clustering(
                fit(cl.cluster_weights(_copy(stages["Pruned"][0]), number_of_clusters=16, cluster_centroids_init=init, preserve_sparsity=True), 1e-4)
            ),
        )
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as cps,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
        default_8bit_prune_preserve_quantize_scheme as pps,
    )

    def qat(source, scheme=None):
        annotated = qz.quantize_annotate_model(_copy(stages[source][0]))
        return fit(qz.quantize_apply(annotated, scheme) if scheme is not None else qz.quantize_apply(annotated), 1e-4)

    for name, source, scheme in (
        ("QAT", "Baseline", None),
        ("PQAT", "Pruned", pps.Default8BitPrunePreserveQuantizeScheme()),
        ("CQAT", "Clustered", cps.Default8BitClusterPreserveQuantizeScheme()),
        ("CQAT per channel", "Clustered per channel", cps.Default8BitClusterPreserveQuantizeScheme()),
        ("PCQAT", "Sparsity-preserving clustered", cps.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)),
    ):
        if source in stages:
            stage(name, lambda source=source, scheme=scheme: qat(source, scheme), is_qat=True)
        else:
            errors[name] = f"{name}: its parent stage {source} failed"
    out = {}
    os.makedirs(args.out, exist_ok=True)
    rep = x[:500]
    for name, (model, is_qat) in stages.items():
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        acc = model.evaluate(xt, yt, verbose=0)[1]
        conv = _full_int8_converter(model, None if is_qat else rep)
        path = os.path.join(args.out, f"tfmot_{name.replace(' ', '_')}.tflite")
        try:
            content = conv.convert()
        except Exception as error:  # noqa: BLE001
            errors[name] = _error(f"{name} int8 conversion", error)
            continue
        with open(path, "wb") as f:
            f.write(content)
        out[name] = {"float_top1": acc, "int8_path": path}
    print(json.dumps({"tfmot_version": tfmot.__version__, "stages": out, "errors": errors}))


def int4(args):
    """TFMOT's side of benchmarks/int4.py: the stages TFMOT can train, same architecture, data and epochs.

    QAT (8-bit), 4-bit QAT (its experimental DefaultNBitQuantizeScheme),
    4-bit QAT of the pruned model, and PCQAT (8-bit, cluster- and
    sparsity-preserving). TFMOT has no 4-bit scheme that keeps clusters, so no
    PC4QAT. Writes one int8 .tflite per stage (float input and output, as
    collabopt's) and prints their paths as a JSON line.
    """
    from collabopt import datasets
    from collabopt.reference_models import ds_cnn, reference_cnn
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as cps,
    )

    if args.data == "fashion_mnist":
        (x, y), _ = datasets.fashion_mnist()
        x, y = x[: args.n_train], y[: args.n_train]
    else:
        (x, y), _ = datasets.spoken_digits()
    build = reference_cnn if args.arch == "reference_cnn" else ds_cnn
    tf.keras.utils.set_random_seed(0)
    sp, cl, qz = tfmot.sparsity.keras, tfmot.clustering.keras, tfmot.quantization.keras
    E, e = args.epochs, args.stage_epochs
    base = _fit(build(x.shape[1:], keras_module=keras), x, y, E, 1e-3)
    steps = int(np.ceil(len(x) / 64))
    schedule = sp.PolynomialDecay(0.0, 0.5, 0, steps, frequency=max(steps // 10, 1))
    pruned = sp.strip_pruning(_fit(sp.prune_low_magnitude(_copy(base), pruning_schedule=schedule), x, y, e, 5e-4, [sp.UpdatePruningStep()]))
    init = cl.CentroidInitialization.KMEANS_PLUS_PLUS
    spc = cl.strip_clustering(
        _fit(cl.cluster_weights(_copy(pruned), number_of_clusters=args.clusters, cluster_centroids_init=init, preserve_sparsity=True), x, y, e, 1e-4)
    )
    four = qz.experimental.default_n_bit.DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=8)

    def qat(model, scheme, lr):
        return _fit(qz.quantize_apply(qz.quantize_annotate_model(_copy(model)), scheme), x, y, e, lr)

    stages = {
        "QAT (8-bit)": qat(base, qz.default_8bit.Default8BitQuantizeScheme(), 1e-4),
        "4-bit QAT": qat(base, four, 3e-4),
        "4-bit QAT of the pruned model": qat(pruned, four, 3e-4),
        "PCQAT (8-bit)": qat(spc, cps.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True), 1e-4),
    }
    os.makedirs(args.out, exist_ok=True)
    paths = {}
    for name, model in stages.items():
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        path = os.path.join(args.out, f"tfmot_int4_{args.arch}_{len(paths)}.tflite")
        with open(path, "wb") as f:
            f.write(converter.convert())
        paths[name] = path
    print(json.dumps({"tfmot_version": tfmot.__version__, "files": paths}))


def _zoo_model(name):
    """The same zoo model as benchmarks/coverage.py builds, in tf_keras."""
    from collabopt import reference_models as zoo

    if name in zoo.APPLICATIONS:
        return zoo.application(name, keras_module=keras)
    return {
        "conv1d": lambda: zoo.conv1d_kws(keras_module=keras),
        "lstm": lambda: zoo.recurrent_kws("lstm", keras_module=keras),
        "bigru": lambda: zoo.recurrent_kws("gru", bidirectional=True, keras_module=keras),
        "transformer": lambda: zoo.tiny_transformer(keras_module=keras),
    }[name]()


def _int8_file(model, path, representative=None):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative is not None:
        converter.representative_dataset = lambda: ([representative[i : i + 1]] for i in range(len(representative)))
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


def _error(stage, error):
    return f"{stage}: {type(error).__name__}: {' '.join(str(error).split())[:160]}"


def coverage(args):
    """TFMOT on one zoo model: PTQ int8, then prune 50% -> sparsity-preserving cluster 16 -> PCQAT -> int8.

    Mirrors benchmarks/coverage.py (same architecture, same random data, the
    same few steps per stage); writes the .tflite files and prints a JSON line
    with their paths, or the stage that failed and TFMOT's message.
    """
    sp, cl, qz = tfmot.sparsity.keras, tfmot.clustering.keras, tfmot.quantization.keras
    model = _zoo_model(args.model)
    rng = np.random.default_rng(0)
    shape = (8,) + tuple(model.inputs[0].shape[1:])
    integer = "int" in str(model.inputs[0].dtype)
    x = rng.integers(0, 100, shape).astype("int32") if integer else rng.random(shape).astype("float32")
    y = rng.integers(0, model.outputs[0].shape[-1], 8)
    from_logits = getattr(model.layers[-1], "activation", None) is not keras.activations.softmax
    os.makedirs(args.out, exist_ok=True)
    row = {"tfmot_version": tfmot.__version__}

    start = time.perf_counter()
    try:
        row["ptq_path"] = _int8_file(model, os.path.join(args.out, f"{args.model}_ptq.tflite"), x)
    except Exception as error:  # recorded, not raised: the table shows it
        row["ptq_error"] = _error("convert", error)
    row["ptq_seconds"] = round(time.perf_counter() - start, 1)
    print("[stage] ptq done", file=sys.stderr, flush=True)

    def train(m, steps, callbacks=()):
        m.compile(optimizer=keras.optimizers.SGD(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
        m.fit(x, y, batch_size=8, epochs=steps, verbose=0, callbacks=list(callbacks))
        return m

    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as cps,
    )

    start = time.perf_counter()
    stage = "prune_low_magnitude"

    def entering(name):
        print(f"[stage] {name}", file=sys.stderr, flush=True)  # the parent names the stage if this process is stopped
        return name

    try:
        entering(stage)
        pruned = train(sp.prune_low_magnitude(model, pruning_schedule=sp.ConstantSparsity(0.5, 0, frequency=1)), 2, [sp.UpdatePruningStep()])
        stage = entering("cluster_weights")
        pruned = sp.strip_pruning(pruned)
        init = cl.CentroidInitialization.LINEAR
        clustered = cl.strip_clustering(
            train(cl.cluster_weights(pruned, number_of_clusters=16, cluster_centroids_init=init, preserve_sparsity=True), 1)
        )
        stage = entering("quantize_model")
        annotated = qz.quantize_annotate_model(clustered)
        qat = train(qz.quantize_apply(annotated, cps.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)), 2)
        stage = entering("convert")
        row["pcqat_path"] = _int8_file(qat, os.path.join(args.out, f"{args.model}_pcqat.tflite"))
        stage = entering("convert with representative data")
        row["pcqat_calibrated_path"] = _int8_file(qat, os.path.join(args.out, f"{args.model}_pcqat_calibrated.tflite"), x)
    except Exception as error:
        row["pcqat_error"] = _error(stage, error)
    row["pcqat_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(row))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["step_time", "collaborative", "coverage", "int4", "mobilenet_tables"])
    parser.add_argument("--model", default="MobileNetV2")
    parser.add_argument("--arch", default="mobilenet_style")
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--weights", default=None, help="mobilenet_tables: the baseline's weights (.npz, w0, w1, ...)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--stage-epochs", type=int, default=1)
    parser.add_argument("--prune-epochs", type=int, default=1, help="mobilenet_tables: epochs of the pruning stage")
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--out", default="/tmp/collabopt_tfmot")
    parser.add_argument("--technique", default="prune")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-model", default="reference_cnn", help="step_time: reference_cnn or a keras.applications name")
    parser.add_argument("--input-size", type=int, default=None)
    args = parser.parse_args()
    if args.what == "collaborative":
        return collaborative(args)
    if args.what == "coverage":
        return coverage(args)
    if args.what == "int4":
        return int4(args)
    if args.what == "mobilenet_tables":
        return mobilenet_tables(args)
    plain, wrapped = step_time(args.technique, args.steps, args.batch_size, args.repeats, args.step_model, args.input_size)
    print(json.dumps({"tfmot_version": tfmot.__version__, "plain_s": plain, "wrapped_s": wrapped}))


if __name__ == "__main__":
    main()
