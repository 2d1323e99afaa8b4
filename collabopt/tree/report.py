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
        chosen: Name of the first node meeting every target (None if none did).
        settings: Targets, epochs, data and stages used.
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
        return json.dumps({"chosen": self.chosen, "settings": self.settings, "nodes": [dataclasses.asdict(n) for n in self.nodes]}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TreeReport":
        data = json.loads(text)
        return cls([NodeResult(**n) for n in data["nodes"]], data["chosen"], data["settings"])

    def to_markdown(self) -> str:
        lines = [
            "| stage | float top-1 % | int8 top-1 % | raw bytes | gzip bytes | vs float32 gzip | latency us | targets | Pareto |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for n in self.nodes:
            met = "met" if n.meets_targets else "missed: " + "; ".join(n.misses)
            lines.append(
                f"| {n.label} | {100 * n.float_top1:.2f} | {100 * n.int8_top1:.2f} | {n.raw_bytes:,} | {n.gzip_bytes:,} | "
                f"{n.compression:.2f}x | {n.latency_us:.0f} | {met} | {'*' if n.pareto else ''} |"
            )
        head = f"Chosen: **{self.node(self.chosen).label}**" if self.chosen else "No node met every target."
        return head + "\n\n" + "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()

    def save(self, out_dir) -> None:
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        settings = "\n".join(f"- {k}: {v}" for k, v in self.settings.items())
        (out / "report.md").write_text(f"# Deployment tree\n\n{self.to_markdown()}\n## Settings\n\n{settings}\n")
        (out / "report.json").write_text(self.to_json())
