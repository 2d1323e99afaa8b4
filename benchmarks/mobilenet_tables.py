"""The collaborative-optimization tables on MobileNetV2, collabopt and TFMOT 0.8.1 side by side.

    python benchmarks/mobilenet_tables.py --tfmot-python /work/tfmot-venv/bin/python

One full run: executes ``examples/mobilenet_v2.ipynb`` (its saved outputs are
this run's), which trains MobileNetV2 (alpha 0.35) on Fashion-MNIST at 32x32x3
to convergence and walks Baseline -> Pruned, Clustered (per tensor and per
channel), Sparsity-preserving clustered, QAT, PQAT, CQAT (per tensor and per
channel), PCQAT, PC4QAT, writing each int8 file; then TFMOT walks its tree in
its own process from the same baseline weights, with the same data, stage
epochs, learning rates and seed; then every file of both is measured here
with the same code (int8 top-1 on the 10,000 test images, raw and gzip bytes,
latency in interleaved rounds). Writes the MobileNetV2 section of
docs/results.md with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

QAT_FAMILY = ("QAT", "PQAT", "CQAT", "CQAT per channel", "PCQAT", "PC4QAT")
SECTION = "mobilenet_v2"


def run_notebook(out: pathlib.Path) -> None:
    """Executes examples/mobilenet_v2.ipynb in full and saves it; its files and rows.json land in ``out``."""
    env = {**os.environ, "COLLABOPT_MOBILENET_OUT": str(out)}
    env.pop("COLLABOPT_QUICK", None)
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_notebooks.py"), "--execute", "mobilenet_v2"], env=env, check=True)


def run_tfmot(python: str, out: pathlib.Path, stage_epochs: int, prune_epochs: int) -> dict:
    command = [python, str(HERE / "peer_tfmot.py"), "mobilenet_tables", "--weights", str(out / "baseline_weights.npz"),
               "--stage-epochs", str(stage_epochs), "--prune-epochs", str(prune_epochs), "--out", str(out / "tfmot")]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace("(", "").replace(")", "")


def measure(out: pathlib.Path, ours: dict, theirs: dict, rounds: int, runs: int):
    """Rows for both frameworks: int8 top-1 (test set), sizes and interleaved latency of every file."""
    import collabopt.tflite as ct
    from collabopt import datasets

    (_, _), (xt, yt) = datasets.fashion_mnist()
    import numpy as np

    xt = np.repeat(np.pad(xt, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
    files = {f"ours/{name}": ct.load(out / f"{_slug(name)}.tflite") for name in ours["rows"]}
    for name, r in theirs.get("stages", {}).items():
        files[f"tfmot/{name}"] = ct.load(r["int8_path"])
    latency = ct.compare_latency(files, rounds=rounds, runs=runs)
    rows = {"ours": [], "tfmot": []}
    for key, tfl in files.items():
        framework, name = key.split("/", 1)
        size = tfl.size_report()
        float_top1 = ours["rows"][name]["float_top1"] if framework == "ours" else theirs["stages"][name]["float_top1"]
        rows[framework].append({
            "stage": name,
            "float top-1 %": f"{100 * float_top1:.2f}",
            "int8 top-1 %": f"{100 * tfl.evaluate(xt, yt):.2f}",
            "raw bytes": f"{size.raw_bytes:,}",
            "gzip bytes": f"{size.gzip_bytes:,}",
            "vs collabopt float32 gzip": f"{ours['float32_gzip_bytes'] / size.gzip_bytes:.2f}x",
            "int8 latency us": f"{latency[key].median_us:.0f}",
        })
    return rows


def targets(rows: dict) -> list[str]:
    ours = {r["stage"]: r for r in rows["ours"]}
    theirs = {r["stage"]: r for r in rows["tfmot"]}
    base = float(ours["Baseline"]["float top-1 %"])
    lines = []
    for name in QAT_FAMILY:
        got = float(ours[name]["int8 top-1 %"])
        lines.append(f"- {name}: int8 top-1 {got:.2f}% vs float baseline {base:.2f}% ({got - base:+.2f} points): "
                     f"{'met' if base - got <= 1 else 'missed'} (target: within 1 point).")
    pc, pt = float(ours["CQAT per channel"]["int8 top-1 %"]), float(ours["CQAT"]["int8 top-1 %"])
    lines.append(f"- Per-channel CQAT {pc:.2f}% vs per-tensor CQAT {pt:.2f}%: {'met' if pc >= pt else 'missed'} "
                 "(target: per channel >= per tensor; TFMOT's guide: 72.64 vs 71.54 on ImageNet).")
    if "PCQAT" in theirs:
        size = lambda r: int(r["gzip bytes"].replace(",", ""))  # noqa: E731
        a, b = ours["PCQAT"], theirs["PCQAT"]
        ok = size(a) < size(b) and float(a["int8 top-1 %"]) >= float(b["int8 top-1 %"])
        lines.append(f"- PCQAT: collabopt {size(a):,} gzip bytes at {a['int8 top-1 %']}% vs TFMOT {size(b):,} at "
                     f"{b['int8 top-1 %']}%: {'met' if ok else 'missed'} (target: smaller at equal or better accuracy).")
    return lines


def write_section(text: str) -> None:
    """Replaces (or appends) the MobileNetV2 section of docs/results.md (benchmarks/collaborative.py keeps it)."""
    path = ROOT / "docs" / "results.md"
    body = f"<!-- {SECTION}:start -->\n{text.rstrip()}\n<!-- {SECTION}:end -->\n"
    doc = path.read_text()
    pattern = re.compile(rf"<!-- {SECTION}:start -->.*?<!-- {SECTION}:end -->\n", re.S)
    doc = pattern.sub(lambda _: body, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + body
    path.write_text(doc)


def main(argv=None):
    from results_file import machine, table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tfmot-python", default=None, help="a Python with tf_keras and tensorflow-model-optimization 0.8.1")
    parser.add_argument("--out", default=None, help="where the .tflite files go (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="measure the files already in --out (no training)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(args.out or tmp)
        if not args.reuse:
            run_notebook(out)
        ours = json.loads((out / "rows.json").read_text())
        if ours.get("quick"):
            parser.error(f"{out / 'rows.json'} comes from a quick run; the tables come from the full run only")
        theirs = {}
        if args.tfmot_python:
            theirs = run_tfmot(args.tfmot_python, out, ours["stage_epochs"], ours.get("prune_epochs", ours["stage_epochs"])) if not args.reuse else json.loads((out / "tfmot.json").read_text())
            (out / "tfmot.json").write_text(json.dumps(theirs))
        rows = measure(out, ours, theirs, args.rounds, args.runs)
    command = "python benchmarks/mobilenet_tables.py" + (" --tfmot-python PATH" if args.tfmot_python else "")
    text = (
        f"### MobileNetV2 alpha 0.35, Fashion-MNIST 32x32x3\n\n"
        f"- date: {datetime.date.today().isoformat()}\n- machine: {machine()}\n- command: `{command}` "
        "(executes `examples/mobilenet_v2.ipynb`, whose saved outputs are this run's)\n\n"
        f"Baseline trained from scratch for {ours['base_epochs']} epochs (Adam, cosine-decayed learning rate from 2e-3, "
        f"batch 64, all 60,000 training images padded to 32x32 and tiled to 3 channels); every later stage fine-tunes "
        f"{ours['stage_epochs']} epoch(s) from its parent, pruning {ours.get('prune_epochs', ours['stage_epochs'])}, with the "
        "learning rate decayed to 0 along a cosine over the stage (from 5e-4 for pruning, with 50% sparsity reached over "
        "the first epoch, then the masks fixed; from 1e-4 for clustering and QAT). Both frameworks prune every kernel but "
        "the 3x3 depthwise ones (TFMOT's default; collabopt's through a `pruning_policy`, since it prunes them unless "
        "told). int8: post-training full-integer quantization with 500 calibration images for the rows "
        "without QAT, the trained ranges for the QAT rows; top-1 of the int8 file on the 10,000 test images. Latency: "
        f"LiteRT, batch 1, one thread, the fastest of {args.rounds} interleaved rounds over every file of both "
        "frameworks. Per-channel clustering: 16 values per output channel where a channel holds at least 16 weights, per "
        "tensor elsewhere (the 3x3 depthwise kernels hold 9 per channel); PC4QAT: 4-bit weights (INT4 in the file), "
        "8-bit activations.\n\n**collabopt**:\n\n" + table(rows["ours"]) + "\n\n"
    )
    if theirs.get("stages"):
        text += (
            f"**TFMOT {theirs['tfmot_version']}** (tf_keras, its own process, from the same baseline weights; each stage "
            "stripped before the next, as its guide does; its per-channel clustering is `cluster_per_channel=True`):\n\n"
            + table(rows["tfmot"]) + "\n\n"
        )
        if theirs.get("errors"):
            text += "TFMOT stages that failed: " + "; ".join(theirs["errors"].values()) + "\n\n"
    elif args.tfmot_python:
        text += f"TFMOT peer failed: {theirs.get('error')}\n\n"
    text += "Targets (issue #27):\n\n" + "\n".join(targets(rows)) + "\n"
    print(text)
    write_section(text)


if __name__ == "__main__":
    main()
