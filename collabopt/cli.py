"""The ``collabopt`` command line.

    collabopt tree    [--model m.keras] [--data DATA] [--out DIR] [--force] [--quick] [--exhaustive] [--filter-ratios R ...] [targets]
    collabopt train   --data DATA --out model.keras [--epochs N]
    collabopt export  MODEL.keras --mode int8 [--data DATA] --out FILE.tflite
    collabopt inspect FILE.tflite

DATA is a bundled data set (digits, fashion_mnist, spoken_digits), a .npz file
with x_train, y_train, x_test, y_test, or ``tfds:NAME[:SPLITS]`` for a data set
already prepared with tensorflow-datasets (``--tfds-dir`` names its folder;
SPLITS is ``TEST`` or ``TRAIN,TEST``, default ``train,test``).

Bad input exits with status 2 and one line saying what is wrong. TensorFlow's
log lines are hidden unless ``--verbose`` is given.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from collabopt.errors import CollaboptError, InvalidArgumentError
from collabopt.tflite.modes import MODES, export_mode


class UsageError(InvalidArgumentError):
    """Bad command-line input: printed as one line, exit status 2."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines() or [type(error).__name__])[0]


def _import_heavy(verbose: bool) -> None:
    """Imports TensorFlow and Keras once, with their start-up log lines hidden unless verbose."""
    from collabopt import quiet

    quiet.set_verbose(verbose)
    with quiet.native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf

    if not verbose:
        tf.get_logger().setLevel("ERROR")
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:
            pass
        quiet.quiet_python_logs()


def _load_data(args):
    from collabopt import datasets

    return datasets.load(args.data, tfds_dir=getattr(args, "tfds_dir", None))


def _load_model(path):
    import keras

    import collabopt.keras  # noqa: F401  (registers the wrappers for deserialization)

    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"no such model file: {path}")
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise UsageError(
            f"{path}: expected a Keras model file (.keras, or legacy .h5) saved with model.save(); "
            f"received a '{path.suffix or 'suffix-less'}' file"
            + (" (to read a .tflite file, use `collabopt inspect`)" if path.suffix.lower() == ".tflite" else "")
        )
    try:
        return keras.saving.load_model(path)
    except Exception as error:
        raise UsageError(f"{path} is not a Keras model file that loads ({type(error).__name__}: {_first_line(error)})") from error


def cmd_train(args) -> int:
    import keras

    from collabopt.reference_models import compile_for_classification, reference_cnn

    (x, y), (xt, yt) = _load_data(args)
    keras.utils.set_random_seed(args.seed)
    model = compile_for_classification(reference_cnn(x.shape[1:], int(max(y.max(), yt.max())) + 1))
    model.fit(x, y, epochs=args.epochs, batch_size=64, validation_data=(xt, yt), verbose=2)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    _, acc = model.evaluate(xt, yt, verbose=0)
    print(f"saved {out}  (test top-1 {100 * acc:.2f}% on {args.data})")
    return 0


def cmd_export(args) -> int:
    import collabopt.tflite as ct

    model = _load_model(args.model)
    mode = export_mode(args.mode)
    needs_data = mode.needs_calibration(ct.has_trained_ranges(model))
    if needs_data and not args.data:
        raise UsageError(
            f"--mode {args.mode} calibrates activation ranges on sample inputs: pass --data "
            "(a bundled name, a .npz file or tfds:NAME)"
            + (", or export a model trained with quantize_model" if mode.keeps_fake_quant else "")
        )
    data = _load_data(args) if args.data else None
    rep = data[0][0] if data else None
    tfl = ct.convert(model, args.mode, rep, fused_lstm=args.fused_lstm)
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
    # Reads the flatbuffer with numpy and ai_edge_litert's schema only: no TensorFlow.
    from collabopt.tflite.model import load

    tfl = load(args.file)
    print(tfl.inspect())
    print()
    print(tfl.size_report())
    islands = tfl.float_islands()
    print(f"float islands: {len(islands)}" + (f" ({', '.join(sorted({i['op'] for i in islands}))})" if islands else ""))
    return 0


def default_data() -> tuple[str, str | None]:
    """The data set ``collabopt tree`` uses when no ``--data`` is given.

    Fashion-MNIST when its files are installed, else scikit-learn's digits
    (always available) with a note saying how to install Fashion-MNIST; the
    CLI prints the note and records it in the run's report.

    Returns:
        ``(name, note)``: a name :func:`collabopt.datasets.load` accepts, and
        None or the note.

    Example:

    >>> name, note = default_data()
    >>> name in ("fashion_mnist", "digits") and (note is None) == (name == "fashion_mnist")
    True
    """
    from collabopt import datasets

    try:
        datasets.fashion_mnist(n_train=1, n_test=1)
        return "fashion_mnist", None
    except datasets.DatasetNotInstalled:
        return "digits", (
            "Fashion-MNIST is not installed, using scikit-learn's 8x8 digits instead "
            "(install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data)"
        )


def cmd_tree(args) -> int:
    import keras

    import collabopt.tree as tree
    from collabopt.reference_models import compile_for_classification, reference_cnn
    from collabopt.tree.report import format_macs
    from collabopt.tree.runner import fresh_run_dir

    try:
        targets = tree.Targets(
            max_accuracy_drop=args.max_accuracy_drop if args.max_accuracy_drop is not None else 0.01,
            max_gzip_bytes=args.max_size,
            max_latency_us=args.max_latency,
            max_raw_bytes=args.max_raw_size,
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    note = None
    if args.data:
        data_name = args.data
    else:
        data_name, note = default_data()
        args.data = data_name
    (x, y), (xt, yt) = _load_data(args)
    full = (len(x), len(xt))
    if args.quick:
        n_train, n_test = min(2000, max(len(x) // 2, 1)), min(len(xt), 1000)
        x, y, xt, yt = x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]
    epochs = args.epochs if args.epochs is not None else 1
    out = fresh_run_dir(args.out or f"runs/tree_{data_name.replace(':', '_').replace('/', '_')}", force=args.force)
    print(f"data: {data_name}: {len(x):,} train / {len(xt):,} test samples of shape {tuple(x.shape[1:])}"
          + (f" (--quick: of {full[0]:,} / {full[1]:,})" if args.quick else ""))
    if note:
        print(f"note: {note}")
    keras.utils.set_random_seed(args.seed)
    if args.model:
        model = _load_model(args.model)
        model_info = {"source": str(args.model)}
        print(f"baseline: {args.model}")
    else:
        base_epochs = 2 if args.quick else 5
        model_info = {"source": "collabopt.reference_models.reference_cnn", "baseline_epochs": base_epochs}
        print(f"baseline: reference CNN trained {base_epochs} epochs on {data_name} ({len(x):,} samples)")
        model = compile_for_classification(reference_cnn(x.shape[1:], int(max(y.max(), yt.max())) + 1))
        model.fit(x, y, epochs=base_epochs, batch_size=64, verbose=2 if args.verbose else 0)
    model_info.update({"name": model.name, "parameters": int(model.count_params())})
    any_target = any(v is not None for v in (args.max_accuracy_drop, args.max_size, args.max_latency, args.max_raw_size))
    exhaustive = args.exhaustive or args.quick or not any_target
    report = tree.run(
        model, (x, y), (xt, yt), targets, stages=tree.default_stages(int4=args.int4, filter_ratios=args.filter_ratios), epochs=epochs, out_dir=out,
        exhaustive=exhaustive, latency_runs=20 if args.quick else 50, allow_float32=args.allow_float32,
        verbose=2 if args.verbose else 0,
        metadata={
            "data": {"name": data_name, "train_samples": len(x), "test_samples": len(xt),
                     "sample_shape": list(x.shape[1:]), "quick": bool(args.quick), "note": note},
            "model": model_info,
            "command": "collabopt " + " ".join(args.argv),
            "seed": args.seed,
        },
    )
    print()
    print(report.to_markdown())
    print(f"wrote {out}/: report.md, report.json, one .tflite and one .keras per node")
    if report.targets_met:
        return 0
    print("no node met every target; closest:", file=sys.stderr)
    for n in report.closest():
        print(f"  {n.label}: int8 {100 * n.int8_top1:.2f}%, gzip {n.gzip_bytes:,} B, {n.latency_us:.1f} us, "
              f"MACs {format_macs(n)}, misses {'; '.join(n.misses)}", file=sys.stderr)
    return 1


DATA_HELP = (
    "digits | fashion_mnist | spoken_digits | FILE.npz (x_train, y_train, x_test, y_test) | "
    "tfds:NAME[:SPLITS] (a prepared tensorflow-datasets data set; SPLITS: TEST or TRAIN,TEST)"
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="show TensorFlow's and the converter's log lines")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--tfds-dir", help="folder holding data sets prepared with tensorflow-datasets "
                      "(default: $TFDS_DATA_DIR or ~/tensorflow_datasets); used with --data tfds:NAME")

    parser = argparse.ArgumentParser(prog="collabopt", description=__doc__.splitlines()[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the reference CNN on a data set and save it", parents=[common, data])
    p.add_argument("--data", default="digits", help=DATA_HELP)
    p.add_argument("--out", default="runs/model.keras")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="convert a .keras model to .tflite and print its sizes", parents=[common, data])
    p.add_argument("model")
    p.add_argument("--mode", default="int8", help=" | ".join(MODES) + " (default int8)")
    p.add_argument("--data", help="representative/evaluation data: " + DATA_HELP)
    p.add_argument("--out")
    p.add_argument("--fused-lstm", action="store_true", help="export LSTMs as TFLite's fused "
                   "UNIDIRECTIONAL_SEQUENCE_LSTM (one sample per invocation; int8 needs --data)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tree", help="walk the deployment tree (prune / cluster / QAT and their combinations)", parents=[common, data])
    p.add_argument("--model", help="a trained .keras classifier (default: train the reference CNN)")
    p.add_argument("--data", help=DATA_HELP + " (default: fashion_mnist if installed, else digits)")
    p.add_argument("--out", help="parent folder of the run folders (default runs/tree_<data>); each run gets a "
                   "fresh timestamped folder inside it")
    p.add_argument("--force", action="store_true", help="write into --out itself, replacing an earlier run there")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs per node, >= 1 (default 1)")
    p.add_argument("--max-accuracy-drop", type=float, help="largest int8 top-1 drop below the float baseline, as a fraction (0.01 = 1 point; the default)")
    p.add_argument("--max-size", type=int, help="largest gzip size of the int8 .tflite, bytes")
    p.add_argument("--max-latency", type=float, help="largest batch-1 latency, microseconds")
    p.add_argument("--max-raw-size", type=int, help="largest raw size of the int8 .tflite, bytes")
    p.add_argument("--allow-float32", action="store_true", help="a node missing a target with its int8 file may meet "
                   "them with its float32 file (where int8 runs slower than float32 on this machine)")
    p.add_argument("--int4", action="store_true", help="add the 4-bit branches (4-bit QAT, P4QAT, PC4QAT; INT4 weights)")
    p.add_argument("--filter-ratios", type=float, nargs="*", default=[0.3, 0.5], metavar="R",
                   help="filter-pruning ratios of the filter-pruned branches (fewer filters: fewer MACs, lower latency), "
                   "each in (0, 1) (default 0.3 0.5; none: no filter-pruned branches)")
    p.add_argument("--exhaustive", action="store_true", help="run every node and mark the Pareto front (default when no target is given)")
    p.add_argument("--quick", action="store_true", help="at most 2,000 training samples (half of a smaller set), 1,000 test samples, 2 baseline epochs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tree)

    p = sub.add_parser("inspect", help="print the tensor table of a .tflite file (does not import TensorFlow)", parents=[common])
    p.add_argument("file")
    p.set_defaults(func=cmd_inspect)
    return parser


def _check_args(args) -> None:
    """Checks that need no data or model, before TensorFlow is imported."""
    if args.command == "train" and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1; received {args.epochs}")
    if args.command == "tree" and args.epochs is not None and args.epochs < 1:
        raise UsageError(
            f"--epochs must be >= 1 (each node fine-tunes at least one epoch; pruning reaches its "
            f"sparsity over the first); received {args.epochs}"
        )
    if args.command == "tree":
        bad = [r for r in args.filter_ratios if not 0.0 < r < 1.0]
        if bad:
            raise UsageError(f"--filter-ratios must be fractions in (0, 1), e.g. 0.3 0.5; received {bad[0]:g}")
        percents = [f"{100 * r:.0f}" for r in args.filter_ratios]
        if len(set(percents)) < len(percents):
            raise UsageError(f"--filter-ratios must differ in whole percents; received {' '.join(f'{r:g}' for r in args.filter_ratios)}")
    if args.command == "export" and args.mode not in MODES:
        raise UsageError(f"unknown mode {args.mode!r}; accepted: {', '.join(MODES)}")
    if getattr(args, "tfds_dir", None) and not str(getattr(args, "data", "") or "").startswith("tfds:"):
        raise UsageError("--tfds-dir is only used with --data tfds:NAME[:SPLITS]")


def _ours(error: BaseException) -> bool:
    """True if ``error`` was raised by collabopt's own code (its innermost frame is in the package)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    package = pathlib.Path(__file__).resolve().parent
    try:
        return pathlib.Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(package)
    except (OSError, ValueError):
        return False


def main(argv=None) -> int:
    """Runs the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "keras" not in sys.modules:
        # Export converts TensorFlow graphs and the tree exports every node:
        # the command runs Keras on TensorFlow whatever KERAS_BACKEND says
        # (.keras files saved on JAX or PyTorch load here bitwise).
        os.environ["KERAS_BACKEND"] = "tensorflow"
    verbose = "--verbose" in argv
    if not verbose:
        from collabopt import quiet

        quiet.quiet_environment()  # before anything imports TensorFlow
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args.argv = argv
    try:
        _check_args(args)
        if args.command != "inspect":
            _import_heavy(verbose)
        return args.func(args)
    except (CollaboptError, ValueError, TypeError) as error:
        if not isinstance(error, CollaboptError) and not _ours(error):
            raise
        print(f"collabopt {args.command}: error: {_first_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"collabopt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
