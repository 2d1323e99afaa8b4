"""The ``collabopt`` command line.

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
