"""CI runs every example notebook in quick mode so none can rot."""

import os
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


#: The notebooks of TFMOT's guides (a step-by-step walk, then the same tree with tree.run).
GUIDES = {"pqat", "cqat", "pcqat", "per_channel_clustering"}


def test_all_five_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} == GUIDES | {"mobilenet_v2"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_the_public_api_step_by_step(path):
    nbformat = pytest.importorskip("nbformat")
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    calls = ("co.quantize_model(", "ct.convert(", "ct.verify(", "plt.show()")
    calls += ("tree.run(",) if path.stem in GUIDES else ("co.prune_low_magnitude(", "co.cluster_weights(", "ct.compare_latency(")
    for call in calls:
        assert call in code, call
    assert "co.prune_low_magnitude(" in code or "co.cluster_weights(" in code


#: The rows of the MobileNetV2 table (the seed's tables plus per-channel clustering and PC4QAT).
MOBILENET_STAGES = (
    "Baseline", "Pruned", "Clustered", "Clustered per channel", "Sparsity-preserving clustered",
    "QAT", "PQAT", "CQAT", "CQAT per channel", "PCQAT", "PC4QAT",
)


#: Float top-1 (%) a converged baseline reaches in the full run: what the saved outputs must show.
CONVERGED = {"Fashion-MNIST": 88.0, "spoken digits": 95.0}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_outputs_come_from_a_full_run(path):
    """What a reader sees was produced by the full run: converged baselines, never the CI quick mode."""
    import re

    nbformat = pytest.importorskip("nbformat")
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    text = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
    assert "full run" in text and "quick run" not in text, f"{path.name}: saved outputs are not from a full run"
    if path.stem in GUIDES:
        for data, floor in CONVERGED.items():
            found = re.findall(rf"^{data}: .* vs baseline float ([0-9.]+)%", text, re.M)
            assert found, f"{path.name}: no {data} baseline in the saved outputs"
            assert float(found[0]) >= floor, f"{path.name}: saved {data} baseline {found[0]}% is not a converged one (>= {floor}%)"
    else:
        assert "60,000 training" in text, f"{path.name}: not trained on the whole training set"
        for stage in MOBILENET_STAGES:
            assert f"| {stage} |" in text, f"{path.name}: no {stage} row in the saved table"
    first = re.search(r"baseline float top-1: ([0-9.]+)%", text)
    assert first and float(first.group(1)) >= CONVERGED["Fashion-MNIST"], f"{path.name}: step-by-step baseline {first and first.group(1)}%"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, monkeypatch, tmp_path):
    from collabopt import datasets

    try:  # the notebooks use both optional data sets
        datasets.fashion_mnist(n_train=1, n_test=1)
        datasets.spoken_digits()
    except datasets.DatasetNotInstalled as error:
        pytest.skip(str(error))
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.chdir(EXAMPLES)  # jupyter_client reads the working directory when it starts a kernel
    monkeypatch.setenv("COLLABOPT_QUICK", "1")
    monkeypatch.setenv("COLLABOPT_MOBILENET_OUT", str(tmp_path))  # the MobileNetV2 notebook's files
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "| Baseline |" in text
    if path.stem in GUIDES:
        assert "smaller gzip than the float32 baseline" in text
    else:
        assert all(f"| {stage} |" in text for stage in MOBILENET_STAGES)
        assert "weight tensors stored as INT4" in text and "PC4QAT file: 0 weight" not in text
    assert "holds" in text and "yes" in text and " NO" not in text  # verify: every constraint in the file
    assert any(o.get("output_type") == "display_data" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    for noise in ("cudart", "cuInit", "absl::InitializeLog", "fully_quantize", "retracing", "Gradients do not exist", "I0000", "W0000", "E0000"):
        assert noise not in text, noise
    assert os.environ["COLLABOPT_QUICK"] == "1"
