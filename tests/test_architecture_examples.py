"""Runs the worked examples of docs/architecture.md ("Adding a technique", "a layer", "an export mode") as written.

Each example registers what it adds with the public scoped registrations
(``technique_registered``, ``layer_support_registered``,
``export_mode_registered``); the tests check that nothing stays registered.
"""

import pathlib
import re

import pytest

import collabopt.keras  # noqa: F401  (registers the built-in techniques)
from collabopt.layers.support import registered_records
from collabopt.technique import technique_names
from collabopt.tflite.modes import MODES

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _blocks(section: str) -> list[str]:
    """The python code blocks of one ``## section`` of the architecture doc."""
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/architecture.md has no '## {section}' section"
    blocks = re.findall(r"```python\n(.*?)```", match.group(1), re.S)
    assert blocks, f"'## {section}' has no python example"
    return blocks


def _run(section: str):
    namespace = {"__name__": "architecture_example"}
    for block in _blocks(section):
        exec(compile(block, f"docs/architecture.md ({section})", "exec"), namespace)
    return namespace


def test_adding_a_technique():
    before = technique_names()
    namespace = _run("Adding a technique")
    assert namespace["CLIPPING"].handler is namespace["ClipWeights"]
    assert namespace["stage"].technique == "clip"  # the tree took it inside the block
    # Registered for the example's block only: the registry and the config class are as they were.
    assert technique_names() == before and namespace["ClippingConfig"].technique == ""


@pytest.mark.slow
def test_adding_a_layer():
    before = registered_records()
    namespace = _run("Adding a layer")
    assert namespace["report"].all_hold
    # The roles the custom weightless layers registered reached QAT, the int8 file and filter pruning.
    assert not namespace["int8"].float_islands()
    assert namespace["small"].get_layer("conv1").filters == 4
    assert registered_records() == before  # each record lasted its with block only


def test_adding_an_export_mode():
    before = dict(MODES)
    namespace = _run("Adding an export mode")
    assert namespace["fp16"].mode == "gpu_fp16" and namespace["int8"].mode == "int8_recalibrated"
    assert MODES == before
