"""Builds (and with --execute, runs and saves) the example notebooks.

    python examples/make_notebooks.py --execute     # full run, outputs saved in the .ipynb files
    COLLABOPT_QUICK=1 python examples/make_notebooks.py --execute --no-save   # what CI does

Each notebook walks one scheme of TFMOT's collaborative-optimization guide
step by step with the public API (baseline, prune / cluster, per-layer
sparsity or values, QAT, convert, verify, size/accuracy table, weight-density
plot) on Fashion-MNIST, then runs the same tree in one call with
collabopt.tree.run on two offline data sets: Fashion-MNIST (image, reference
CNN) and spoken-digit MFCCs (keyword spotting, DS-CNN), beside TFMOT's
published figures.
"""

from __future__ import annotations

import argparse
import os
import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).parent

SETUP = '''import os

from collabopt.quiet import native_stderr_silenced, quiet_environment, quiet_python_logs

quiet_environment()  # TF_CPP_MIN_LOG_LEVEL=3 before TensorFlow is imported
with native_stderr_silenced():  # TensorFlow's start-up lines (cudart, absl, cuInit) stay out of the outputs
    import keras
    import tensorflow as tf
    tf.config.list_logical_devices()  # initialises the devices now, inside the silenced block
quiet_python_logs()

import matplotlib.pyplot as plt
import numpy as np

import collabopt.keras as co
import collabopt.tflite as ct
import collabopt.tree as tree
from collabopt import datasets
from collabopt.reference_models import compile_for_classification, ds_cnn, reference_cnn

QUICK = os.environ.get("COLLABOPT_QUICK") == "1"   # CI: small data, short training
print("quick run (small data, 1 epoch per step)" if QUICK else "full run")


def load(name):
    (x, y), (xt, yt) = datasets.load(name)
    if QUICK:
        x, y, xt, yt = x[:1500], y[:1500], xt[:500], yt[:500]
    return (x, y), (xt, yt)


(x, y), (xt, yt) = load("fashion_mnist")
EPOCHS = 1 if QUICK else 2
STEPS = int(np.ceil(len(x) / 64))
print(f"Fashion-MNIST: {len(x):,} training and {len(xt):,} test images of {x.shape[1:]}")'''

BASELINE = '''keras.utils.set_random_seed(0)
model = compile_for_classification(reference_cnn(x.shape[1:]))
model.fit(x, y, epochs=1 if QUICK else 4, batch_size=64, verbose=0)
print(f"baseline float top-1: {100 * model.evaluate(xt, yt, verbose=0)[1]:.2f}%")

results = {}   # stage -> (model, int8 TFLiteModel)


def measure(name, trained):
    """Exports a stage to int8 (QAT ranges if it has them, else calibration on training images)."""
    int8 = ct.convert(trained, "int8") if ct.has_trained_ranges(trained) else ct.convert(trained, "int8", x)
    results[name] = (trained, int8)
    print(f"{name}: int8 top-1 {100 * int8.evaluate(xt, yt):.2f}%, {int8.size_report().gzip_bytes:,} gzip bytes")


float32 = ct.convert(model, "float32")
measure("Baseline", model)'''

PRUNE = '''# Prune to 50% sparsity over the first epoch, then keep the masks fixed while fine-tuning.
schedule = co.PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=STEPS, frequency=max(STEPS // 10, 1))
pruned = co.prune_low_magnitude(model, pruning_schedule=schedule)
compile_for_classification(pruned, 5e-4).fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0, callbacks=[co.UpdatePruningStep()])
measure("Pruned (50%)", pruned)'''

SPARSITY = '''# Per-layer sparsity: strip the wrappers and count the exact zeros of each kernel.
plain = co.strip_pruning(pruned)
for layer in plain.layers:
    kernel = getattr(layer, "kernel", None)
    if kernel is not None:
        k = kernel.numpy()
        print(f"{layer.name:14s} {str(k.shape):18s} {100 * np.mean(k == 0):5.1f}% zeros")'''

CLUSTER_SPARSE = '''# Cluster each kernel to 16 values while keeping every pruned zero (a pinned zero centroid).
clustered = co.cluster_weights(pruned, number_of_clusters=16, preserve_sparsity=True)
compile_for_classification(clustered, 1e-4).fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0)
measure("Sparsity-preserving clustered (16)", clustered)'''

CLUSTER = '''# Cluster each kernel to 16 shared values (k-means++ initialisation), then fine-tune the centroids.
clustered = co.cluster_weights(model, number_of_clusters=16)
compile_for_classification(clustered, 1e-4).fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0)
measure("Clustered (16)", clustered)'''

CLUSTER_PER_CHANNEL = '''# 8 centroids per output channel (the first conv has 9 weights per channel).
clustered = co.cluster_weights(model, number_of_clusters=8, cluster_per_channel=True)
compile_for_classification(clustered, 1e-4).fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0)
measure("Per-channel clustered (8)", clustered)'''

VALUES = '''# Distinct values per kernel (per output channel for per-channel clustering) after stripping.
plain = co.strip_clustering(clustered)
for layer in plain.layers:
    kernel = getattr(layer, "kernel", None)
    if kernel is not None:
        k = kernel.numpy()
        per_channel = max(len(np.unique(c)) for c in np.moveaxis(k, -1, 0))
        print(f"{layer.name:14s} {len(np.unique(k)):4d} values, at most {per_channel} per output channel, {100 * np.mean(k == 0):5.1f}% zeros")'''


def qat_cell(source, label):
    return f'''# Quantization-aware training on top: the wrappers inside keep their constraints.
qat = co.quantize_model({source})
compile_for_classification(qat, 1e-4).fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0)
measure("{label}", qat)'''


CONVERT_VERIFY = '''# Convert with the trained ranges and check that every recorded constraint holds in the file.
int8 = ct.convert(qat, "int8")
print(int8.size_report(float32))
print()
print(ct.verify(qat, int8))'''

TABLE = '''# The size / accuracy table: int8 files against the float32 baseline.
base_float_top1 = float32.evaluate(xt, yt)
print(f"float32 baseline: top-1 {100 * base_float_top1:.2f}%, {float32.size_report().gzip_bytes:,} gzip bytes\\n")
print(f"{'stage':36s} {'int8 top-1':>10s} {'gzip bytes':>11s} {'vs float32':>10s}")
for name, (_, int8) in results.items():
    size = int8.size_report(float32)
    print(f"{name:36s} {100 * int8.evaluate(xt, yt):9.2f}% {size.gzip_bytes:11,} {size.compression:9.2f}x")'''

DENSITY = '''# Weight density of the largest kernel through the stages (log scale: zeros and clusters show as spikes).
name = "fc1"
fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3), sharex=True)
for ax, (stage, (trained, _)) in zip(np.atleast_1d(axes), results.items()):
    w = tree.runner.effective_weight(trained, name).ravel()
    ax.hist(w, bins=100)
    ax.set_yscale("log")
    ax.set_title(f"{stage}\\n{len(np.unique(w))} values, {100 * np.mean(w == 0):.0f}% zeros", fontsize=8)
    ax.set_xlabel("weight value", fontsize=8)
np.atleast_1d(axes)[0].set_ylabel("number of weights", fontsize=8)
fig.suptitle(f"Weights of '{name}'", fontsize=10)
fig.tight_layout()
plt.show()'''

TREE_INTRO = (
    "## The one-call version: `collabopt.tree.run`\n\n"
    "The same stages as data: `tree.run` trains each node from its parent, exports it to int8 and measures it, "
    "here on Fashion-MNIST (reference CNN) and on spoken-digit MFCCs from FSDD (DS-CNN, the keyword-spotting "
    "model of TFMOT's table). **Chosen** is the smallest node meeting the default target (at most one point of int8 "
    "top-1 below the float baseline)."
)

TREE = '''def walk(build, data, base_epochs, node_epochs):
    (xx, yy), _ = data
    keras.utils.set_random_seed(0)
    base = compile_for_classification(build(xx.shape[1:]))
    base.fit(xx, yy, epochs=1 if QUICK else base_epochs, batch_size=64, verbose=0)
    report = tree.run(base, *data, stages=STAGES, epochs=1 if QUICK else node_epochs,
                      exhaustive=True, latency_runs=20, verbose=0, progress=None)
    print(report.to_markdown())
    return report


image = walk(reference_cnn, ((x, y), (xt, yt)), base_epochs=4, node_epochs=2)
kws = walk(ds_cnn, load("spoken_digits"), base_epochs=20, node_epochs=5)'''

NOTEBOOKS = {
    "pqat": (
        "Prune-preserving QAT (PQAT)",
        "TFMOT's PQAT table: DS-CNN-L 95.23 -> 94.13 float, 94.48 -> 94.13 int8, 528,128 -> 303,997 compressed "
        "bytes; MobileNet v1 on ImageNet 70.99 -> 70.29 float, 69.37 -> 70.29 int8.",
        '''STAGES = [
    tree.Stage("baseline", "baseline", label="Baseline"),
    tree.Stage("qat", "quantize", "baseline", label="QAT"),
    tree.Stage("pruned", "prune", "baseline", {"sparsity": 0.5}, "Pruned (50%)"),
    tree.Stage("pqat", "quantize", "pruned", label="PQAT"),
]''',
    ),
    "cqat": (
        "Cluster-preserving QAT (CQAT)",
        "TFMOT's CQAT table: MobileNet v1 on CIFAR-10 94.88 -> 94.60 float, 94.65 -> 94.52 int8, 3.00 MB -> 1.94 MB; "
        "on ImageNet 71.07 -> 65.35 float, 69.34 -> 65.42 int8.",
        '''STAGES = [
    tree.Stage("baseline", "baseline", label="Baseline"),
    tree.Stage("qat", "quantize", "baseline", label="QAT"),
    tree.Stage("clustered", "cluster", "baseline", {"number_of_clusters": 16}, "Clustered (16)"),
    tree.Stage("cqat", "quantize", "clustered", label="CQAT"),
]''',
    ),
    "pcqat": (
        "Sparsity- and cluster-preserving QAT (PCQAT)",
        "TFMOT's PCQAT rows combine 50% sparsity and clustering: the int8 file keeps both the zeros and at most "
        "K values per kernel, so it compresses more than either alone.",
        '''STAGES = [
    tree.Stage("baseline", "baseline", label="Baseline"),
    tree.Stage("pruned", "prune", "baseline", {"sparsity": 0.5}, "Pruned (50%)"),
    tree.Stage("sparse_clustered", "cluster", "pruned", {"number_of_clusters": 16, "preserve_sparsity": True},
               "Sparsity-preserving clustered (16)"),
    tree.Stage("pcqat", "quantize", "sparse_clustered", label="PCQAT"),
]''',
    ),
    "per_channel_clustering": (
        "Per-channel clustering, then CQAT",
        "TFMOT reports per-channel clustering followed by CQAT improving int8 accuracy: DS-CNN-L 95.95 -> 96.44, "
        "MobileNet-V2 71.54 -> 72.64. Here 8 clusters per output channel (the reference CNN's first conv has 9 "
        "weights per channel).",
        '''STAGES = [
    tree.Stage("baseline", "baseline", label="Baseline"),
    tree.Stage("clustered", "cluster", "baseline", {"number_of_clusters": 8, "cluster_per_channel": True},
               "Per-channel clustered (8)"),
    tree.Stage("cqat", "quantize", "clustered", label="Per-channel CQAT"),
]''',
    ),
}

COMPARE = '''# Beside TFMOT's published figures (printed above): compare the change from the baseline row
# to the last row; the data sets differ (Fashion-MNIST / FSDD here, ImageNet / CIFAR-10 / Speech Commands there).
for name, report in (("Fashion-MNIST", image), ("spoken digits", kws)):
    first, last = report.nodes[0], report.nodes[-1]
    print(f"{name}: {last.label} int8 top-1 {100 * last.int8_top1:.2f}% vs baseline float {100 * first.float_top1:.2f}% "
          f"({100 * (last.int8_top1 - first.float_top1):+.2f} points), {last.compression:.2f}x smaller gzip than the float32 baseline; "
          f"int8 baseline {first.gzip_bytes:,} -> {last.gzip_bytes:,} gzip bytes ({first.gzip_bytes / last.gzip_bytes:.2f}x)")'''

WALKS = {
    "pqat": [("## 2. Prune", PRUNE), ("## 3. Per-layer sparsity", SPARSITY), ("## 4. Prune-preserving QAT (PQAT)", qat_cell("pruned", "PQAT"))],
    "cqat": [("## 2. Cluster", CLUSTER), ("## 3. Values per kernel", VALUES), ("## 4. Cluster-preserving QAT (CQAT)", qat_cell("clustered", "CQAT"))],
    "pcqat": [
        ("## 2. Prune", PRUNE),
        ("## 3. Per-layer sparsity", SPARSITY),
        ("## 4. Cluster, preserving sparsity", CLUSTER_SPARSE),
        ("## 5. Values and zeros per kernel", VALUES),
        ("## 6. Sparsity- and cluster-preserving QAT (PCQAT)", qat_cell("clustered", "PCQAT")),
    ],
    "per_channel_clustering": [
        ("## 2. Cluster per channel", CLUSTER_PER_CHANNEL),
        ("## 3. Values per channel", VALUES),
        ("## 4. CQAT on the per-channel clusters", qat_cell("clustered", "Per-channel CQAT")),
    ],
}


# --- MobileNetV2: the seed's tables on a real architecture ---------------------------------------

MOBILENET_INTRO = """# The collaborative-optimization tables on MobileNetV2

TFMOT's collaborative-optimization guide reports its tables for MobileNet and DS-CNN. This notebook
reproduces them on **MobileNetV2** (`keras.applications`, alpha 0.35, `weights=None`: nothing is downloaded)
trained from scratch on Fashion-MNIST, padded to 32x32 and tiled to 3 channels: a baseline trained to
convergence, then pruned (50%; the depthwise kernels stay dense, as in TFMOT), clustered (16 values per tensor, and per output channel), sparsity-preserving
clustered, QAT, PQAT, CQAT (per tensor and per channel), PCQAT and PC4QAT (4-bit weights), each fine-tuned from
its parent, exported to TFLite and measured: float and int8 top-1, raw and gzip bytes, latency.

Published for comparison (TFMOT's guide, MobileNetV2 on ImageNet): per-channel clustering then CQAT lifts int8
top-1 from 71.54 to 72.64 (per tensor vs per channel). `python benchmarks/mobilenet_tables.py` executes this
notebook (full run) and adds TFMOT 0.8.1's rows on the same data, epochs and seeds to docs/results.md.

Set `COLLABOPT_QUICK=1` for a fast run on small data (CI does)."""

MOBILENET_SETUP = SETUP.split("def load(name):")[0] + '''import json
import pathlib

from collabopt.reference_models import application

(x, y), (xt, yt) = datasets.fashion_mnist(n_train=1500 if QUICK else None, n_test=500 if QUICK else None)


def to_rgb32(images):
    """28x28x1 -> 32x32x3: zero-padded to MobileNetV2's smallest input, the grey channel tiled."""
    return np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)


x, xt = to_rgb32(x), to_rgb32(xt)
BASE_EPOCHS = 1 if QUICK else 10
STAGE_EPOCHS = 1
PRUNE_EPOCHS = 1 if QUICK else 3  # sparsity reached over the first epoch, then fine-tuned with the masks fixed
BATCH = 64
STEPS = int(np.ceil(len(x) / BATCH))
OUT = pathlib.Path(os.environ.get("COLLABOPT_MOBILENET_OUT", "runs/mobilenet_v2"))
print(f"Fashion-MNIST as 32x32x3: {len(x):,} training and {len(xt):,} test images; "
      f"baseline {BASE_EPOCHS} epochs, pruning {PRUNE_EPOCHS}, every other stage {STAGE_EPOCHS} from its parent")'''

MOBILENET_BASELINE = '''keras.utils.set_random_seed(0)
base = application("MobileNetV2", 32, classifier_activation=None)   # alpha 0.35, random weights
print(f"MobileNetV2 alpha 0.35: {base.count_params():,} parameters, {len(base.layers)} layers")
schedule = keras.optimizers.schedules.CosineDecay(2e-3, BASE_EPOCHS * STEPS, alpha=0.05)
compile_for_classification(base, schedule).fit(x, y, epochs=BASE_EPOCHS, batch_size=BATCH, verbose=0)
print(f"baseline float top-1: {100 * base.evaluate(xt, yt, verbose=0)[1]:.2f}%")
OUT.mkdir(parents=True, exist_ok=True)
np.savez(OUT / "baseline_weights.npz", **{f"w{i}": w for i, w in enumerate(base.get_weights())})  # TFMOT's rows start here too

rows, files = {}, {}


def record(name, model):
    """Exports a stage to int8 (trained ranges for QAT, else 500 calibration images) and measures it."""
    int8 = ct.convert(model, "int8") if ct.has_trained_ranges(model) else ct.convert(model, "int8", x[:500])
    files[name] = int8
    int8.save(OUT / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".tflite"))
    size = int8.size_report()
    rows[name] = {"float_top1": model.evaluate(xt, yt, verbose=0)[1], "int8_top1": int8.evaluate(xt, yt),
                  "raw_bytes": size.raw_bytes, "gzip_bytes": size.gzip_bytes}
    print(f"{name}: float top-1 {100 * rows[name]['float_top1']:.2f}%, int8 top-1 {100 * rows[name]['int8_top1']:.2f}%, "
          f"{size.gzip_bytes:,} gzip bytes")


def fine_tune(model, learning_rate, callbacks=(), epochs=STAGE_EPOCHS):
    """Fine-tunes from ``learning_rate`` decayed to 0 along a cosine over the stage, so each stage ends settled."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * STEPS)
    compile_for_classification(model, schedule).fit(
        x, y, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=list(callbacks))
    return model


float32 = ct.convert(base, "float32")
files["Baseline float32"] = float32
record("Baseline", base)'''

MOBILENET_PRUNE_CLUSTER = '''# Pruned: 50% sparsity reached over the first epoch, then fine-tuned with the masks fixed (PRUNE_EPOCHS in all).
# The 3x3 depthwise kernels stay dense, as TFMOT leaves them: 9 weights per channel, 6% of the kernel weights, where
# half the filter is a large loss for a small saving. A pruning policy says so; without one every kernel is pruned.
class DepthwiseStaysDense:
    def allow_pruning(self, layer):
        return not isinstance(layer, keras.layers.DepthwiseConv2D)


prune_schedule = co.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=STEPS, frequency=max(STEPS // 10, 1))
pruned = fine_tune(co.prune_low_magnitude(base, pruning_schedule=prune_schedule, pruning_policy=DepthwiseStaysDense()),
                   5e-4, [co.UpdatePruningStep()], epochs=PRUNE_EPOCHS)
record("Pruned", pruned)

# Clustered: 16 shared values per weight tensor (k-means++), centroids fine-tuned.
clustered = fine_tune(co.cluster_weights(base, number_of_clusters=16), 1e-4)
record("Clustered", clustered)

# Per-channel clustered: 16 values per output channel where a channel holds at least 16 weights; per tensor
# elsewhere (the 3x3 depthwise kernels hold 9 weights per channel, the first 1x1 convolutions 8). Chosen per
# layer with TFMOT's recipe, keras.models.clone_model and a clone_function, on a copy of the baseline (the
# layers the function returns unchanged are reused, not copied).
source = keras.models.clone_model(base)
source.set_weights(base.get_weights())


def cluster_per_channel_where_possible(layer):
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return layer
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)  # kernel (3, 3, channels, 1): 9 weights per channel
    per_channel = int(np.prod(kernel.shape[:2] if depthwise else kernel.shape[:-1]))
    return co.cluster_weights(layer, number_of_clusters=16, cluster_per_channel=per_channel >= 16)


clustered_pc = fine_tune(keras.models.clone_model(source, clone_function=cluster_per_channel_where_possible), 1e-4)
record("Clustered per channel", clustered_pc)

# Sparsity-preserving clustered: 16 values per tensor, every pruned zero kept (a pinned zero centroid).
sparse_clustered = fine_tune(co.cluster_weights(pruned, number_of_clusters=16, preserve_sparsity=True), 1e-4)
record("Sparsity-preserving clustered", sparse_clustered)'''

MOBILENET_QAT = '''# The QAT family: quantization-aware training of each stage; the wrappers inside keep their constraints.
qat_models = {
    "QAT": co.quantize_model(base),
    "PQAT": co.quantize_model(pruned),
    "CQAT": co.quantize_model(clustered),
    "CQAT per channel": co.quantize_model(clustered_pc),
    "PCQAT": co.quantize_model(sparse_clustered),
    # 4-bit weights (stored as INT4 in the file), 8-bit activations, on the sparsity-preserving clusters.
    "PC4QAT": co.quantize_model(sparse_clustered, scheme=co.DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=8)),
}
for name, model in qat_models.items():
    record(name, fine_tune(model, 1e-4))'''

MOBILENET_VERIFY = '''# Every constraint the PCQAT and PC4QAT models recorded (50% zeros in the pruned kernels, 16 values per kernel) holds in
# their int8 files.
for name in ("PCQAT", "PC4QAT"):
    report = ct.verify(qat_models[name], files[name])
    print(report)
    print()
int4 = [t for t in files["PC4QAT"].inspect().weights() if t.dtype == "int4"]
print(f"PC4QAT file: {len(int4)} weight tensors stored as INT4")'''

MOBILENET_TABLE = '''# The table: every int8 file against the float32 baseline; latency at batch 1, one thread, interleaved rounds.
latency = ct.compare_latency(files, rounds=3 if QUICK else 5, runs=10 if QUICK else 50)
base_float = rows["Baseline"]["float_top1"]
base_gzip = float32.size_report().gzip_bytes
print(f"float32 baseline: top-1 {100 * base_float:.2f}%, {float32.size_report().raw_bytes:,} raw / {base_gzip:,} gzip bytes, "
      f"{latency['Baseline float32'].median_us:.0f} us\\n")
print(f"| stage | float top-1 % | int8 top-1 % | raw bytes | gzip bytes | vs float32 gzip | int8 latency us |")
print("|---|---|---|---|---|---|---|")
for name, r in rows.items():
    r["latency_us"] = latency[name].median_us
    print(f"| {name} | {100 * r['float_top1']:.2f} | {100 * r['int8_top1']:.2f} | {r['raw_bytes']:,} | {r['gzip_bytes']:,} "
          f"| {base_gzip / r['gzip_bytes']:.2f}x | {r['latency_us']:.0f} |")
OUT.mkdir(parents=True, exist_ok=True)
(OUT / "rows.json").write_text(json.dumps({"quick": QUICK, "base_epochs": BASE_EPOCHS, "stage_epochs": STAGE_EPOCHS,
                                          "prune_epochs": PRUNE_EPOCHS,
                                          "float32_gzip_bytes": base_gzip, "rows": rows}, indent=1))'''

MOBILENET_TARGETS = '''# The issue's targets, read from the table above.
qat_family = ["QAT", "PQAT", "CQAT", "CQAT per channel", "PCQAT", "PC4QAT"]
for name in qat_family:
    drop = 100 * (base_float - rows[name]["int8_top1"])
    print(f"{name}: int8 top-1 {100 * rows[name]['int8_top1']:.2f}% vs baseline float {100 * base_float:.2f}% "
          f"({-drop:+.2f} points; within 1 point: {'yes' if drop <= 1 else 'no'})")
pc, pt = rows["CQAT per channel"]["int8_top1"], rows["CQAT"]["int8_top1"]
print(f"per-channel CQAT {100 * pc:.2f}% vs per-tensor CQAT {100 * pt:.2f}%: {'>=' if pc >= pt else '<'} "
      "(TFMOT's guide on ImageNet: 72.64 vs 71.54)")'''

MOBILENET_PLOT = '''# Accuracy against size: each int8 file (gzip bytes, log scale) and its top-1.
fig, ax = plt.subplots(figsize=(7, 4.5))
for name, r in rows.items():
    ax.scatter(r["gzip_bytes"], 100 * r["int8_top1"], s=30)
    ax.annotate(name, (r["gzip_bytes"], 100 * r["int8_top1"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
ax.axhline(100 * base_float, color="grey", lw=0.8, ls="--", label="float baseline")
ax.axhline(100 * base_float - 1, color="grey", lw=0.8, ls=":", label="1 point below")
ax.set_xscale("log")
ax.set_xlabel("int8 file, gzip bytes")
ax.set_ylabel("int8 top-1 %")
ax.set_title("MobileNetV2 alpha 0.35, Fashion-MNIST 32x32x3")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()'''


def build_mobilenet():
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell(MOBILENET_INTRO),
        new_code_cell(MOBILENET_SETUP),
        new_markdown_cell("## 1. Baseline\n\nTrained from scratch to convergence (cosine-decayed learning rate), exported to float32 and int8."),
        new_code_cell(MOBILENET_BASELINE),
        new_markdown_cell("## 2. Pruning and clustering"),
        new_code_cell(MOBILENET_PRUNE_CLUSTER),
        new_markdown_cell("## 3. QAT on every stage"),
        new_code_cell(MOBILENET_QAT),
        new_markdown_cell("## 4. Verify the file"),
        new_code_cell(MOBILENET_VERIFY),
        new_markdown_cell("## 5. The table"),
        new_code_cell(MOBILENET_TABLE),
        new_code_cell(MOBILENET_TARGETS),
        new_markdown_cell("## 6. Accuracy against size"),
        new_code_cell(MOBILENET_PLOT),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def build(name):
    title, published, stages = NOTEBOOKS[name]
    nb = new_notebook()
    cells = [
        new_markdown_cell(
            f"# {title}\n\nStep by step with the public API, as in TFMOT's guides: train a baseline, apply each "
            "technique, look at what it did to the weights, convert to int8 TFLite, check with `verify` that the file "
            "keeps what training recorded, compare sizes and accuracies, and plot the weights. Then the same tree in one "
            "call with `collabopt.tree.run`, on Fashion-MNIST and on spoken digits, beside TFMOT's published figures.\n\n"
            f"Published for comparison: {published}\n\nSet `COLLABOPT_QUICK=1` for a fast run on small data (CI does)."
        ),
        new_code_cell(SETUP),
        new_markdown_cell("## 1. Baseline\n\nThe reference CNN, trained in float, exported to float32 and (post-training calibrated) int8."),
        new_code_cell(BASELINE),
    ]
    for heading, code in WALKS[name]:
        cells += [new_markdown_cell(heading), new_code_cell(code)]
    n = len(WALKS[name]) + 2
    cells += [
        new_markdown_cell(f"## {n}. Convert and verify"),
        new_code_cell(CONVERT_VERIFY),
        new_markdown_cell(f"## {n + 1}. Size / accuracy table"),
        new_code_cell(TABLE),
        new_markdown_cell(f"## {n + 2}. Weight density"),
        new_code_cell(DENSITY),
        new_markdown_cell(TREE_INTRO),
        new_code_cell(stages),
        new_code_cell(TREE),
        new_code_cell(COMPARE),
    ]
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def execute(nb, cwd):
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--execute", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("names", nargs="*", default=[*NOTEBOOKS, "mobilenet_v2"])
    args = parser.parse_args()
    if args.execute and not args.no_save and os.environ.get("COLLABOPT_QUICK") == "1":
        # The saved outputs are what a reader sees: they come from the full run only.
        parser.error("COLLABOPT_QUICK=1 is the CI switch: execute with --no-save, or unset it for the full run that saves")
    for name in args.names:
        nb = build_mobilenet() if name == "mobilenet_v2" else build(name)
        if args.execute:
            print(f"executing {name} ...", flush=True)
            nb = execute(nb, HERE)
        if not args.no_save:
            nbformat.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
