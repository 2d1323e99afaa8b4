"""Writes one benchmark's section of benchmarks/RESULTS.md (machine, command, date included)."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import re
import sys

RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    import tensorflow as tf
    import keras

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}){mem}; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def write_section(name: str, body: str) -> None:
    """Replaces (or appends) the section ``name`` of RESULTS.md."""
    header = (
        f"<!-- {name}:start -->\n## {name}\n\n"
        f"- date: {datetime.date.today().isoformat()}\n"
        f"- machine: {machine()}\n"
        f"- command: `python {' '.join(['benchmarks/' + pathlib.Path(sys.argv[0]).name] + sys.argv[1:])}`\n\n"
    )
    section = header + body.rstrip() + f"\n<!-- {name}:end -->\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nEach section is written by the script it names.\n\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + "\n" + section
    RESULTS.write_text(text)


def table(rows: list[dict]) -> str:
    """A markdown table from a list of dicts (keys of the first row are the columns)."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
