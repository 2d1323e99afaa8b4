"""Where a wrapped training step's time goes: ablations against plain Keras on one train_speed model.

    python benchmarks/train_step_ablation.py mobilenet_v2 prune,prune_no_update,cluster,cluster_op_by_op,qat,filter_prune

Each variant is the model of ``benchmarks/train_speed.py`` (same builder,
data and compile) with one part of the step switched: ``prune_no_update``
multiplies by the current masks only (no schedule, no mask update: the
floor of any masking); ``cluster_op_by_op`` keeps every clustered weight on
TensorFlow's op-by-op assignment (the eager threshold in traced steps too);
``*_no_xla`` takes no XLA kernel at all (every fake quant and assignment op
by op: what the fused kernels buy, against their memory).
Compiled ``fit`` steps at batch 32, interleaved over 5 rounds, best round
kept; printed as ms per step and the ratio to plain Keras. A profiling
tool: it patches collabopt internals for the variants and writes nothing.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))


def main(name, variants):
    import keras
    from keras import ops

    import collabopt.fused as fusing
    import train_speed as ts
    from collabopt.sparsity.wrapper import PruneLowMagnitude

    base = ts.build(name)
    x, y = ts.data(name, 32 * 6)
    transform = PruneLowMagnitude.transform_weights
    clustering_threshold = fusing.TRACED_WEIGHT_MIN_ELEMENTS
    fused_min = fusing.FUSED_MIN_ELEMENTS
    never = 1 << 62  # no tensor takes an XLA kernel

    def masks_only(self, weights, training):
        return {**weights, **{n: weights[n] * ops.cast(m, weights[n].dtype) for n, m in self.masks.items()}}

    def plain():
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
        return model, []

    # variant -> (builder, pruning transform, clustering threshold in traced steps, fused-path threshold)
    table = {
        "plain": (plain, transform, clustering_threshold, fused_min),
        "prune": (lambda: ts.wrap("prune", base), transform, clustering_threshold, fused_min),
        "prune_no_update": (lambda: ts.wrap("prune", base), masks_only, clustering_threshold, fused_min),
        "filter_prune": (lambda: ts.wrap("filter_prune", base), transform, clustering_threshold, fused_min),
        "cluster": (lambda: ts.wrap("cluster", base), transform, clustering_threshold, fused_min),
        "cluster_op_by_op": (lambda: ts.wrap("cluster", base), transform, fused_min, fused_min),
        "cluster_no_xla": (lambda: ts.wrap("cluster", base), transform, never, never),
        "qat": (lambda: ts.wrap("qat", base), transform, clustering_threshold, fused_min),
        "qat_no_xla": (lambda: ts.wrap("qat", base), transform, never, never),
        "pcqat": (lambda: ts.wrap("pcqat", base), transform, clustering_threshold, fused_min),
        "pcqat_no_xla": (lambda: ts.wrap("pcqat", base), transform, never, never),
    }
    models = {}

    def fit(variant, steps):
        model, callbacks, prune_transform, threshold, minimum = models[variant]
        PruneLowMagnitude.transform_weights = prune_transform  # read when the step is traced (its first fit)
        fusing.TRACED_WEIGHT_MIN_ELEMENTS, fusing.FUSED_MIN_ELEMENTS = threshold, minimum
        start = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
        return time.perf_counter() - start

    for variant in ["plain"] + [v for v in variants if v != "plain"]:
        make, prune_transform, threshold, minimum = table[variant]
        model, callbacks = make()
        ts._compiled(model)
        models[variant] = (model, callbacks, prune_transform, threshold, minimum)
        fit(variant, 2)  # traced here, with this variant's parts
    best = dict.fromkeys(models, float("inf"))
    for _ in range(5):
        for variant in models:
            best[variant] = min(best[variant], fit(variant, 6) / 6)
    for variant, seconds in best.items():
        print(f"{name} {variant}: {1000 * seconds:.1f} ms/step, {seconds / best['plain']:.2f}x", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(",") if len(sys.argv) > 2 else ["prune", "cluster", "cluster_op_by_op", "qat"])
