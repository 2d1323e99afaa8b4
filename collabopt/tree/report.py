"""Results of a tree run: per-node figures, Pareto front, markdown / JSON, plots."""

from __future__ import annotations

import dataclasses
import json
import pathlib


@dataclasses.dataclass
class NodeResult:
    """Figures of one node (its int8 .tflite file and the Keras model it came from)."""

    name: str
    label: str
    parent: str | None
    float_top1: float
    int8_top1: float
    raw_bytes: int
    gzip_bytes: int
    compression: float
    latency_us: float
    seconds: float
    meets_targets: bool
    misses: list = dataclasses.field(default_factory=list)
    pareto: bool = False
    tflite: str | None = None
    keras: str | None = None
    latency_p25_us: float | None = None
    latency_p75_us: float | None = None
    zeros_fraction: float | None = None
    macs: int | None = None
    macs_uncounted: list = dataclasses.field(default_factory=list)
    params: int | None = None
    float32_latency_us: float | None = None
    batched_latency_us: float | None = None
    float32_batched_latency_us: float | None = None
    float32_top1: float | None = None
    float32_raw_bytes: int | None = None
    float32_gzip_bytes: int | None = None
    int8_slower: bool | None = None
    deploy_format: str = "int8"

    @property
    def deployed_gzip_bytes(self) -> int:
        """Gzip bytes of the file the node deploys (``deploy_format``)."""
        return self.float32_gzip_bytes if self.deploy_format == "float32" else self.gzip_bytes

    @property
    def deployed_top1(self) -> float:
        """Top-1 of the file the node deploys (``deploy_format``)."""
        return self.float32_top1 if self.deploy_format == "float32" else self.int8_top1


def format_macs(node: NodeResult) -> str:
    """A node's MACs for a report: ``"1,117,056"``, or ``"n/a"`` when they could not be counted.

    Example:

    >>> format_macs(NodeResult("a", "A", None, 0.9, 0.9, 10, 9, 1.0, 1.0, 0.0, True, macs=1117056))
    '1,117,056'
    >>> format_macs(NodeResult("a", "A", None, 0.9, 0.9, 10, 9, 1.0, 1.0, 0.0, True, macs_uncounted=["lstm"]))
    'n/a (lstm)'
    """
    if node.macs is not None:
        return f"{node.macs:,}"
    if node.macs_uncounted:
        names = ", ".join(node.macs_uncounted[:3]) + (", ..." if len(node.macs_uncounted) > 3 else "")
        return f"n/a ({names})"
    return "n/a"


#: What "smallest" means when choosing a node.
SIZE_KEY = "gzip_bytes"


def choose(nodes: list[NodeResult]) -> str | None:
    """Name of the smallest node (gzip bytes of the file it deploys, int8 unless float32 was allowed and needed) meeting every target.

    Ties go to the higher top-1, then to the earlier node. None if no
    node meets every target.
    """
    met = [n for n in nodes if n.meets_targets]
    if not met:
        return None
    return min(met, key=lambda n: (n.deployed_gzip_bytes, -n.deployed_top1, nodes.index(n))).name


def pareto_front(nodes: list[NodeResult]) -> list[NodeResult]:
    """Marks (and returns) the nodes no other node beats on both gzip size and int8 accuracy."""
    front = []
    for n in nodes:
        dominated = any(
            o is not n
            and o.gzip_bytes <= n.gzip_bytes
            and o.int8_top1 >= n.int8_top1
            and (o.gzip_bytes < n.gzip_bytes or o.int8_top1 > n.int8_top1)
            for o in nodes
        )
        n.pareto = not dominated
        if n.pareto:
            front.append(n)
    return front


@dataclasses.dataclass
class TreeReport:
    """What :func:`collabopt.tree.run` measured.

    Attributes:
        nodes: One :class:`NodeResult` per node run, in run order.
        chosen: Name of the smallest node (gzip bytes of its int8 .tflite)
            meeting every target (None if none did); see :func:`choose`.
        settings: Targets, epochs, stages, data set, model and versions used.
    """

    nodes: list
    chosen: str | None
    settings: dict

    @property
    def targets_met(self) -> bool:
        return self.chosen is not None

    def node(self, name) -> NodeResult:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def closest(self, k: int = 3) -> list[NodeResult]:
        """The nodes that miss the fewest targets, smallest first."""
        return sorted(self.nodes, key=lambda n: (len(n.misses), n.gzip_bytes))[:k]

    def to_json(self) -> str:
        return json.dumps(
            {"chosen": self.chosen, "chosen_by": f"smallest {SIZE_KEY} meeting every target", "settings": self.settings,
             "nodes": [dataclasses.asdict(n) for n in self.nodes]},
            indent=2,
            default=_jsonable,
        )

    @classmethod
    def from_json(cls, text: str) -> "TreeReport":
        data = json.loads(text)
        return cls([NodeResult(**n) for n in data["nodes"]], data["chosen"], data["settings"])

    def to_markdown(self) -> str:
        lines = [
            "| stage | float top-1 % | int8 top-1 % | MACs | params | weight zeros % | raw bytes | gzip bytes | vs float32 gzip "
            "| int8 us (IQR) | float32 us | us/sample at batch 64, int8 / float32 | targets | Pareto |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n in self.nodes:
            met = "met" if n.meets_targets else "missed: " + "; ".join(n.misses)
            label = f"**{n.label}**" if n.name == self.chosen else n.label
            lines.append(
                f"| {label} | {100 * n.float_top1:.2f} | {100 * n.int8_top1:.2f} | {format_macs(n)} | "
                f"{'n/a' if n.params is None else f'{n.params:,}'} | "
                f"{'' if n.zeros_fraction is None else f'{100 * n.zeros_fraction:.1f}'} | {n.raw_bytes:,} | {n.gzip_bytes:,} | "
                f"{n.compression:.2f}x | {_latency(n)} | {_us(n.float32_latency_us)} | "
                f"{_us(n.batched_latency_us, 2)} / {_us(n.float32_batched_latency_us, 2)} | {met} | {'*' if n.pareto else ''} |"
            )
        if self.chosen:
            c = self.node(self.chosen)
            head = (
                f"Chosen: **{c.label}**, the smallest {c.deploy_format} .tflite (gzip bytes: {c.deployed_gzip_bytes:,}) "
                f"that meets every target{_targets_text(self.settings.get('targets'))}."
            )
        else:
            head = f"No node met every target{_targets_text(self.settings.get('targets'))}."
        data = self.settings.get("data")
        if isinstance(data, dict) and data.get("name"):
            head += f"\nData: {data['name']} ({data.get('train_samples', '?'):,} train / {data.get('test_samples', '?'):,} test)."
            if data.get("note"):
                head += f" {data['note']}."
        notes = "".join(f"\n{note}\n" for note in self.notes())
        return head + "\n\n" + "\n".join(lines) + "\n" + notes

    def notes(self) -> list[str]:
        """What a reader of the table should know: where int8 runs slower than float32 on this machine.

        Example:

        >>> node = NodeResult("a", "A", None, 0.9, 0.9, 10, 9, 1.0, 40.0, 0.0, True, float32_latency_us=25.0, int8_slower=True)
        >>> TreeReport([node], "a", {}).notes()[0][:73]
        'On this machine int8 runs slower than float32 (batch 1) for: A (40.0 vs 2'
        """
        slower = [n for n in self.nodes if n.int8_slower]
        if not slower:
            return []
        names = ", ".join(f"{n.label} ({n.latency_us:.1f} vs {n.float32_latency_us:.1f} us)" for n in slower)
        return [
            f"On this machine int8 runs slower than float32 (batch 1) for: {names}. "
            "Latency targets judge the int8 file; allow_float32=True (--allow-float32) lets a node meet them with its "
            "float32 file instead (4x the weight bytes, float accuracy)."
        ]

    def __str__(self) -> str:
        return self.to_markdown()

    def save(self, out_dir) -> None:
        """Writes report.md and report.json into ``out_dir``."""
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        settings = "\n".join(f"- {k}: {v}" for k, v in self.settings.items() if k != "stages")
        (out / "report.md").write_text(f"# Deployment tree\n\n{self.to_markdown()}\n## Settings\n\n{settings}\n")
        (out / "report.json").write_text(self.to_json())


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _us(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _latency(n: NodeResult) -> str:
    if n.latency_p25_us is None or n.latency_p75_us is None:
        return f"{n.latency_us:.1f}"
    return f"{n.latency_us:.1f} ({n.latency_p25_us:.1f}-{n.latency_p75_us:.1f})"


def _targets_text(targets) -> str:
    if not isinstance(targets, dict):
        return ""
    parts = []
    if targets.get("max_accuracy_drop") is not None:
        parts.append(f"int8 top-1 at most {100 * targets['max_accuracy_drop']:g} point(s) below the float baseline")
    if targets.get("max_gzip_bytes") is not None:
        parts.append(f"gzip <= {targets['max_gzip_bytes']:,} B")
    if targets.get("max_latency_us") is not None:
        parts.append(f"latency <= {targets['max_latency_us']:g} us")
    return f" ({'; '.join(parts)})" if parts else ""
