"""The deployment tree as data: stages (technique, settings, parent) and targets."""

from __future__ import annotations

import dataclasses

import collabopt.keras  # noqa: F401  (registers the techniques)
from collabopt.errors import InvalidArgumentError
from collabopt.technique import TechniqueConfig, get_technique, technique_names

BASELINE = "baseline"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One node of the deployment tree.

    Attributes:
        name: Unique name, e.g. ``"pcqat"``.
        technique: ``"baseline"`` (the given model) or a registered technique
            (``"prune"``, ``"cluster"``, ``"quantize"``, or one registered later).
        parent: Name of the stage it starts from (None for the baseline).
        settings: Keyword arguments of the technique's function
            (``prune_low_magnitude``, ``cluster_weights``, ``quantize_model``),
            read by its config's ``from_settings`` (for pruning, ``"sparsity"``
            becomes a PolynomialDecay schedule over the stage's first epoch),
            plus an optional ``"learning_rate"``.
        label: Row label in reports.
    """

    name: str
    technique: str
    parent: str | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    label: str = ""

    def __post_init__(self):
        accepted = (BASELINE, *technique_names())
        if self.technique not in accepted:
            raise InvalidArgumentError(
                f"stage '{self.name}': technique={self.technique!r}; accepted: {', '.join(accepted)}."
            )
        if (self.technique == BASELINE) != (self.parent is None):
            raise InvalidArgumentError(f"stage '{self.name}': the baseline (and only it) has no parent.")

    def config(self, steps_per_epoch: int = 1) -> TechniqueConfig:
        """The technique's config from this stage's settings (not for the baseline)."""
        settings = {k: v for k, v in self.settings.items() if k != "learning_rate"}
        return get_technique(self.technique).config.from_settings(settings, steps=steps_per_epoch)

    @property
    def learning_rate(self) -> float:
        """The ``learning_rate`` setting, else the technique's usual fine-tuning rate."""
        return self.settings.get("learning_rate", get_technique(self.technique).learning_rate)


def default_stages(sparsity: float = 0.5, clusters: int = 16, int4: bool = False) -> list[Stage]:
    """TFMOT's deployment tree: baseline; pruned / clustered / QAT; sparse clustering / PQAT / CQAT; PCQAT.

    With ``int4=True`` the tree also has 4-bit branches (weights stored as
    INT4): 4-bit QAT from the baseline, P4QAT from the pruned node and PC4QAT
    from the sparsity-preserving clustered node.
    """
    stages = [
        Stage("baseline", "baseline", label="Baseline"),
        Stage("pruned", "prune", "baseline", {"sparsity": sparsity}, f"Pruned ({100 * sparsity:.0f}%)"),
        Stage("clustered", "cluster", "baseline", {"number_of_clusters": clusters}, f"Clustered ({clusters})"),
        Stage("qat", "quantize", "baseline", {}, "QAT"),
        Stage(
            "sparse_clustered",
            "cluster",
            "pruned",
            {"number_of_clusters": clusters, "preserve_sparsity": True},
            "Sparsity-preserving clustered",
        ),
        Stage("pqat", "quantize", "pruned", {}, "PQAT"),
        Stage("cqat", "quantize", "clustered", {}, "CQAT"),
        Stage("pcqat", "quantize", "sparse_clustered", {}, "PCQAT"),
    ]
    if int4:
        from collabopt.quantization import DefaultNBitQuantizeScheme

        four = {"scheme": DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=8)}
        stages += [
            Stage("qat4", "quantize", "baseline", four, "4-bit QAT"),
            Stage("p4qat", "quantize", "pruned", four, "P4QAT"),
            Stage("pc4qat", "quantize", "sparse_clustered", four, "PC4QAT"),
        ]
    return stages


def check_stages(stages: list[Stage]) -> list[Stage]:
    """Validates names, parents and order; returns the stages ordered by depth (parents first)."""
    names = [s.name for s in stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidArgumentError(f"stage names must be unique; repeated: {duplicates}.")
    by_name = {s.name: s for s in stages}
    roots = [s for s in stages if s.parent is None]
    if len(roots) != 1:
        raise InvalidArgumentError(f"the tree needs exactly one baseline stage; found {len(roots)}.")
    for s in stages:
        if s.parent is not None and s.parent not in by_name:
            raise InvalidArgumentError(f"stage '{s.name}': parent '{s.parent}' is not a stage; stages: {names}.")

    def depth(s, seen=()):
        if s.parent is None:
            return 0
        if s.name in seen:
            raise InvalidArgumentError(f"stage '{s.name}' is part of a cycle.")
        return 1 + depth(by_name[s.parent], seen + (s.name,))

    return sorted(stages, key=lambda s: (depth(s), names.index(s.name)))


@dataclasses.dataclass(frozen=True)
class Targets:
    """What a deployable model must achieve.

    Attributes:
        max_accuracy_drop: Largest allowed drop of int8 top-1 below the
            baseline's float top-1, as a fraction (0.01 = one point).
        max_gzip_bytes: Largest gzip size of the int8 .tflite file (None: any).
        max_latency_us: Largest median batch-1 latency in microseconds (None: any).
        max_raw_bytes: Largest raw size of the int8 .tflite file (None: any).
    """

    max_accuracy_drop: float = 0.01
    max_gzip_bytes: int | None = None
    max_latency_us: float | None = None
    max_raw_bytes: int | None = None

    def __post_init__(self):
        if self.max_accuracy_drop is not None and not (0.0 <= self.max_accuracy_drop <= 1.0):
            raise InvalidArgumentError(
                f"max_accuracy_drop must be a fraction in [0, 1] (0.01 = one point); received {self.max_accuracy_drop!r}."
            )
        if self.max_gzip_bytes is not None and self.max_gzip_bytes <= 0:
            raise InvalidArgumentError(f"max_gzip_bytes must be a positive number of bytes; received {self.max_gzip_bytes!r}.")
        if self.max_latency_us is not None and self.max_latency_us <= 0:
            raise InvalidArgumentError(
                f"max_latency_us must be a positive number of microseconds; received {self.max_latency_us!r}."
            )
        if self.max_raw_bytes is not None and self.max_raw_bytes <= 0:
            raise InvalidArgumentError(f"max_raw_bytes must be a positive number of bytes; received {self.max_raw_bytes!r}.")

    def misses(self, node, baseline_float: float) -> list[str]:
        """Which targets ``node`` misses (empty: it meets them all)."""
        out = []
        if self.max_accuracy_drop is not None and baseline_float - node.int8_top1 > self.max_accuracy_drop + 1e-12:
            out.append(
                f"accuracy drop {100 * (baseline_float - node.int8_top1):.2f} > {100 * self.max_accuracy_drop:.2f} points"
            )
        if self.max_gzip_bytes is not None and node.gzip_bytes > self.max_gzip_bytes:
            out.append(f"gzip {node.gzip_bytes:,} > {self.max_gzip_bytes:,} bytes")
        if self.max_raw_bytes is not None and node.raw_bytes > self.max_raw_bytes:
            out.append(f"raw {node.raw_bytes:,} > {self.max_raw_bytes:,} bytes")
        if self.max_latency_us is not None and node.latency_us > self.max_latency_us:
            out.append(f"latency {node.latency_us:.0f} > {self.max_latency_us:.0f} us")
        return out
