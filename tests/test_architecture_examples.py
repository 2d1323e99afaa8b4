"""Runs the worked examples of docs/architecture.md ("Adding a technique", "Adding a layer") as written."""

import pathlib
import re

import pytest

import collabopt.keras  # noqa: F401  (registers the built-in techniques before the registry is copied)
from collabopt.technique import registry

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


@pytest.fixture
def isolated_registry(monkeypatch):
    """The toy technique registers into a copy of the registry, dropped after the test."""
    monkeypatch.setattr(registry, "_TECHNIQUES", dict(registry._TECHNIQUES))


def test_adding_a_technique(isolated_registry):
    namespace = _run("Adding a technique")
    assert registry.get_technique("clip").handler is namespace["ClipWeights"]


@pytest.mark.slow
def test_adding_a_layer():
    namespace = _run("Adding a layer")
    assert namespace["report"].all_hold
    # The roles the custom weightless layers registered reached QAT, the int8 file and filter pruning.
    assert not namespace["int8"].float_islands()
    assert namespace["small"].get_layer("conv1").filters == 4
