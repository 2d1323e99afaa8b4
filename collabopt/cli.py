"""The ``collabopt`` command line.

    collabopt tree   [--model m.keras] [--data NAME] [--out DIR] [--quick] [--exhaustive] [targets]
    collabopt train  --data digits --out model.keras [--epochs N]
    collabopt export MODEL.keras --mode int8 [--data NAME|file.npz] --out FILE.tflite
    collabopt inspect FILE.tflite

Bad input exits with status 2 and one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _load_data(name):
    from collabopt import datasets

    try:
        return datasets.load(name)
    except ValueError as error:
        raise UsageError(str(error)) from error


def _load_model(path):
    import keras

    import collabopt.keras  # noqa: F401  (registers the wrappers for deserialization)

    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"no such model file: {path}")
    try:
        return keras.saving.load_model(path)
    except Exception as error:
        raise UsageError(f"{path} is not a Keras model file ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error


def cmd_train(args) -> int:
    import keras

    from collabopt.reference_models import compile_for_classification, reference_cnn

    (x, y), (xt, yt) = _load_data(args.data)
    keras.utils.set_random_seed(args.seed)
    model = compile_for_classification(reference_cnn(x.shape[1:], int(y.max()) + 1))
    model.fit(x, y, epochs=args.epochs, batch_size=64, validation_data=(xt, yt), verbose=2)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    _, acc = model.evaluate(xt, yt, verbose=0)
    print(f"saved {out}  (test top-1 {100 * acc:.2f}%)")
    return 0


def cmd_export(args) -> int:
    import collabopt.tflite as ct

    if args.mode not in ct.MODES:
        raise UsageError(f"unknown mode {args.mode!r}; accepted: {', '.join(ct.MODES)}")
    model = _load_model(args.model)
    data = _load_data(args.data) if args.data else None
    rep = data[0][0] if data else None
    try:
        tfl = ct.convert(model, args.mode, rep)
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from error
    out = pathlib.Path(args.out or pathlib.Path(args.model).with_suffix(f".{args.mode}.tflite"))
    tfl.save(out)
    baseline = ct.convert(model, "float32") if args.mode != "float32" else None
    print(f"wrote {out} ({args.mode})")
    print(tfl.size_report(baseline))
    if data:
        (_, _), (xt, yt) = data
        print(f"top-1 on {args.data} test: {100 * tfl.evaluate(xt, yt):.2f}%")
    return 0


def cmd_inspect(args) -> int:
    import collabopt.tflite as ct

    try:
        tfl = ct.load(args.file)
    except ValueError as error:
        raise UsageError(f"{args.file}: {error}") from error
    print(tfl.inspect())
    print()
    print(tfl.size_report())
    islands = tfl.float_islands()
    print(f"float islands: {len(islands)}" + (f" ({', '.join(sorted({i['op'] for i in islands}))})" if islands else ""))
    return 0


def _default_data():
    from collabopt import datasets

    try:
        datasets.fashion_mnist(n_train=1, n_test=1)
        return "fashion_mnist"
    except datasets.DatasetNotInstalled:
        return "digits"


def cmd_tree(args) -> int:
    import keras

    import collabopt.tree as tree
    from collabopt.reference_models import compile_for_classification, reference_cnn

    try:
        targets = tree.Targets(
            max_accuracy_drop=args.max_accuracy_drop if args.max_accuracy_drop is not None else 0.01,
            max_gzip_bytes=args.max_size,
            max_latency_us=args.max_latency,
            max_raw_bytes=args.max_raw_size,
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    if args.epochs is not None and args.epochs < 0:
        raise UsageError(f"--epochs must be >= 0; received {args.epochs}")
    data_name = args.data or _default_data()
    (x, y), (xt, yt) = _load_data(data_name)
    if args.quick:
        x, y, xt, yt = x[:2000], y[:2000], xt[:1000], yt[:1000]
    epochs = args.epochs if args.epochs is not None else 1
    out = pathlib.Path(args.out or f"runs/tree_{data_name}")
    keras.utils.set_random_seed(args.seed)
    if args.model:
        model = _load_model(args.model)
        print(f"baseline: {args.model}")
    else:
        base_epochs = 2 if args.quick else 5
        print(f"baseline: reference CNN trained {base_epochs} epochs on {data_name} ({len(x):,} images)")
        model = compile_for_classification(reference_cnn(x.shape[1:], int(max(y.max(), yt.max())) + 1))
        model.fit(x, y, epochs=base_epochs, batch_size=64, verbose=2)
    any_target = any(v is not None for v in (args.max_accuracy_drop, args.max_size, args.max_latency, args.max_raw_size))
    exhaustive = args.exhaustive or args.quick or not any_target
    try:
        report = tree.run(
            model, (x, y), (xt, yt), targets, stages=tree.default_stages(int4=args.int4), epochs=epochs, out_dir=out, exhaustive=exhaustive,
            latency_runs=20 if args.quick else 100, verbose=2,
        )
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from error
    print()
    print(report.to_markdown())
    print(f"wrote {out}/report.md, report.json and one .tflite per node")
    if report.targets_met:
        return 0
    print("no node met every target; closest:", file=sys.stderr)
    for n in report.closest():
        print(f"  {n.label}: int8 {100 * n.int8_top1:.2f}%, gzip {n.gzip_bytes:,} B, misses {'; '.join(n.misses)}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collabopt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the reference CNN on a data set and save it")
    p.add_argument("--data", default="digits", help="digits | fashion_mnist | spoken_digits | file.npz")
    p.add_argument("--out", default="runs/model.keras")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="convert a .keras model to .tflite and print its sizes")
    p.add_argument("model")
    p.add_argument("--mode", default="int8")
    p.add_argument("--data", help="representative/evaluation data: a bundled name or a .npz file")
    p.add_argument("--out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tree", help="walk the deployment tree (prune / cluster / QAT and their combinations)")
    p.add_argument("--model", help="a trained .keras classifier (default: train the reference CNN)")
    p.add_argument("--data", help="digits | fashion_mnist | spoken_digits | file.npz (default: fashion_mnist if installed, else digits)")
    p.add_argument("--out", help="output folder (default runs/tree_<data>)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs per node (default 1)")
    p.add_argument("--max-accuracy-drop", type=float, help="largest int8 top-1 drop below the float baseline, as a fraction (0.01 = 1 point)")
    p.add_argument("--max-size", type=int, help="largest gzip size of the int8 .tflite, bytes")
    p.add_argument("--max-latency", type=float, help="largest batch-1 latency, microseconds")
    p.add_argument("--max-raw-size", type=int, help="largest raw size of the int8 .tflite, bytes")
    p.add_argument("--int4", action="store_true", help="add the 4-bit branches (4-bit QAT, P4QAT, PC4QAT; INT4 weights)")
    p.add_argument("--exhaustive", action="store_true", help="run every node and mark the Pareto front (default when no target is given)")
    p.add_argument("--quick", action="store_true", help="small data subset and short training: every node in a few minutes")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tree)

    p = sub.add_parser("inspect", help="print the tensor table of a .tflite file")
    p.add_argument("file")
    p.set_defaults(func=cmd_inspect)
    return parser




def main(argv=None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except UsageError as error:
        print(f"collabopt {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
