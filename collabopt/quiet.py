"""Keeping TensorFlow's and the TFLite converter's log lines out of the user's console.

TensorFlow writes some lines from C++ straight to file descriptor 2 (absl's
"All log messages before absl::InitializeLog() ...", cudart / oneDNN notices,
the converter's "fully_quantize: 0, inference_type: 6 ..."), which no Python
setting reaches; :func:`native_stderr_silenced` captures that descriptor around
the calls that print them and replays the capture if the call fails. Python-level
noise (the ``tensorflow`` and ``absl`` loggers, tf.function retracing warnings)
is lowered by :func:`quiet_python_logs`.

Set ``COLLABOPT_VERBOSE=1`` (or pass ``--verbose`` to the CLI) to see everything.

Example:

>>> from collabopt.quiet import native_stderr_silenced
>>> with native_stderr_silenced():
...     pass
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

#: Lines TensorFlow / LiteRT write from C++ that carry no information for a user.
NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"  # absl: I0000 00:00:17.123  42 file.cc:31]
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "  # TF's older format
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|fully_quantize: \d"
    r"|To enable the following instructions: "
    r"|Estimated count of arithmetic ops"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU"
    r"|E\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ cuda_(?:platform|executor|diagnostics)\.cc:\d+\] "  # no GPU: cuInit fails
    r"|loc\(.*\): error: "  # MLIR diagnostics: the converter's exception carries them (ConversionError)
    r"|\s*$)"
)

VERBOSE = os.environ.get("COLLABOPT_VERBOSE", "") not in ("", "0")


def set_verbose(verbose: bool) -> None:
    """Shows (True) or hides (False) TensorFlow and converter logs from now on."""
    global VERBOSE
    VERBOSE = bool(verbose)
    os.environ["COLLABOPT_VERBOSE"] = "1" if VERBOSE else "0"
    if VERBOSE:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    else:
        quiet_environment()
        quiet_python_logs()


def quiet_environment() -> None:
    """Environment settings that must precede ``import tensorflow`` (C++ log level)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def quiet_python_logs() -> None:
    """Lowers the Python loggers TensorFlow and absl write through to errors only."""
    for name in ("tensorflow", "absl", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*triggered tf\.function retracing.*")


@contextlib.contextmanager
def native_stderr_silenced():
    """Captures file descriptor 2 (C++ logs) for the duration and drops TensorFlow's noise.

    Lines matching :data:`NOISE` are dropped (also when the body raises: the
    converter's diagnostics travel in its exception); anything else written
    to the descriptor meanwhile (a Python warning, an unexpected error) is
    written back afterwards.

    Does nothing when verbose, or when stderr has no file descriptor (e.g.
    some notebook kernels already route it elsewhere).
    """
    if VERBOSE:
        yield
        return
    fd = 2  # C++ code writes to descriptor 2 whatever Python's sys.stderr points at
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
