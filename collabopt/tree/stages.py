"""The deployment tree as data: stages (technique, settings, parent) and targets."""

from __future__ import annotations

import dataclasses

import collabopt.keras  # noqa: F401  (registers the techniques)
from collabopt.errors import CollaboptError, InvalidArgumentError
from collabopt.technique import TechniqueConfig, get_technique, technique_names

BASELINE = "baseline"
#: The technique of the filter-pruned branches of the default tree.
FILTER_PRUNE = "filter_prune"
#: Filter-pruning ratios of the default tree: within one point of int8 top-1 of
#: the dense model on both reference models at 30% and 50%, while 70% lost
#: 3 to 6 points (benchmarks/RESULTS.md); 50% is the one that meets the
#: issue's latency target (>= 1.6x faster int8).
DEFAULT_FILTER_RATIOS = (0.3, 0.5)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One node of the deployment tree.

    Attributes:
        name: Unique name, e.g. ``"pcqat"``.
        technique: ``"baseline"`` (the given model) or a registered
            technique (``"prune"``, ``"filter_prune"``, ``"cluster"``,
            ``"quantize"``, or one registered later). A technique registered
            with ``tree_strips`` (filter pruning) is stripped once the node
            has trained (the physically smaller model), and starts from a
            plain model: the baseline or another such stage.
        parent: Name of the stage it starts from (None for the baseline).
        settings: Keyword arguments of the technique's function
            (``prune_low_magnitude``, ``cluster_weights``, ``quantize_model``,
            ``prune_filters``), read by its config's ``from_settings`` (for
            pruning, ``"sparsity"`` becomes a PolynomialDecay schedule over the
            stage's first epoch; for filter pruning, ``"pruning_ratio"`` becomes
            a PolynomialRatio ramp over the first half epoch), plus an optional
            ``"learning_rate"``.
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
        try:
            return get_technique(self.technique).config.from_settings(settings, steps=steps_per_epoch)
        except CollaboptError as error:
            raise type(error)(f"stage '{self.name}' ({self.technique}): {error}") from None

    @property
    def learning_rate(self) -> float:
        """The ``learning_rate`` setting, else the technique's usual fine-tuning rate."""
        if "learning_rate" in self.settings:
            return self.settings["learning_rate"]
        return get_technique(self.technique).learning_rate

    @property
    def strips(self) -> bool:
        """Whether the node is stripped once trained (its technique's ``tree_strips``)."""
        return self.technique != BASELINE and get_technique(self.technique).tree_strips


def default_stages(
    sparsity: float = 0.5, clusters: int = 16, int4: bool = False, filter_ratios=DEFAULT_FILTER_RATIOS
) -> list[Stage]:
    """TFMOT's deployment tree: baseline; pruned / clustered / QAT; sparse clustering / PQAT / CQAT; PCQAT.

    Plus filter-pruned branches (whole filters removed, so the exported model
    has fewer MACs and runs faster): for each ratio in ``filter_ratios``, a
    filter-pruned node (``filter_pruned_30``: fine-tuned, then stripped to the
    physically smaller model) and QAT on it (``filter_pruned_30_qat``); from the
    largest ratio also the magnitude chain on the smaller model: pruned ->
    sparsity-preserving clustered -> PCQAT (``filter_pruned_50_pcqat``).
    ``filter_ratios=()`` leaves them out.

    With ``int4=True`` the tree also has 4-bit branches (weights stored as
    INT4): 4-bit QAT from the baseline, P4QAT from the pruned node and PC4QAT
    from the sparsity-preserving clustered node.

    Example:

    >>> [s.name for s in default_stages(filter_ratios=(0.5,)) if s.name.startswith("filter")]
    ['filter_pruned_50', 'filter_pruned_50_qat', 'filter_pruned_50_pruned', 'filter_pruned_50_sparse_clustered', 'filter_pruned_50_pcqat']
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
    return stages + filter_pruned_stages(filter_ratios, sparsity, clusters)


def filter_pruned_stages(ratios=DEFAULT_FILTER_RATIOS, sparsity: float = 0.5, clusters: int = 16, parent: str = BASELINE) -> list[Stage]:
    """The filter-pruned branches of :func:`default_stages` (from ``parent``).

    For each ratio: ``filter_pruned_<percent>`` and ``filter_pruned_<percent>_qat``;
    for the largest ratio also ``_pruned`` (magnitude pruning at ``sparsity``),
    ``_sparse_clustered`` and ``_pcqat`` on the smaller model.
    """
    if isinstance(ratios, (int, float)):
        ratios = (ratios,)
    ratios = list(ratios)
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
            raise InvalidArgumentError(f"filter_ratios: each ratio must be a fraction in (0, 1), e.g. 0.5; received {ratio!r}.")
    stages = []
    for ratio in ratios:
        name, label = f"filter_pruned_{100 * ratio:.0f}", f"Filter-pruned {100 * ratio:.0f}%"
        stages += [
            Stage(name, FILTER_PRUNE, parent, {"pruning_ratio": float(ratio)}, label),
            Stage(f"{name}_qat", "quantize", name, {}, f"{label} + QAT"),
        ]
    if ratios:
        top = max(ratios)
        name, label = f"filter_pruned_{100 * top:.0f}", f"Filter-pruned {100 * top:.0f}%"
        stages += [
            Stage(f"{name}_pruned", "prune", name, {"sparsity": sparsity}, f"{label} + pruned ({100 * sparsity:.0f}%)"),
            Stage(
                f"{name}_sparse_clustered",
                "cluster",
                f"{name}_pruned",
                {"number_of_clusters": clusters, "preserve_sparsity": True},
                f"{label} + sparsity-preserving clustered",
            ),
            Stage(f"{name}_pcqat", "quantize", f"{name}_sparse_clustered", {}, f"{label} + PCQAT"),
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
        if s.strips and s.parent in by_name and not (by_name[s.parent].technique == BASELINE or by_name[s.parent].strips):
            raise InvalidArgumentError(
                f"stage '{s.name}': {s.technique} starts from a plain model (the baseline or another stage the tree "
                f"strips); its parent '{s.parent}' is a {by_name[s.parent].technique} stage. Apply {s.technique} "
                "first, then prune / cluster / quantize the smaller model."
            )

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

    def judge(self, node, baseline_float: float, allow_float32: bool = False) -> None:
        """Sets ``node``'s ``misses``, ``meets_targets`` and ``deploy_format``.

        The int8 file is judged first; with ``allow_float32`` a node that
        misses a target with it but meets every target with its float32 file
        (where int8 runs slower than float32 on this machine, say) deploys
        the float32 file.
        """
        node.deploy_format, node.misses = "int8", self.misses(node, baseline_float)
        if node.misses and allow_float32 and not self.misses(node, baseline_float, "float32"):
            node.deploy_format, node.misses = "float32", []
        node.meets_targets = not node.misses

    def misses(self, node, baseline_float: float, file_format: str = "int8") -> list[str]:
        """Which targets ``node`` misses (empty: it meets them all) with its ``file_format`` file ("int8" or "float32")."""
        if file_format not in ("int8", "float32"):
            raise InvalidArgumentError(f"file_format must be 'int8' or 'float32'; received {file_format!r}.")
        if file_format == "float32":
            top1, gzip, raw, latency = node.float32_top1, node.float32_gzip_bytes, node.float32_raw_bytes, node.float32_latency_us
            if None in (top1, gzip, raw, latency):
                return ["float32 file not measured"]
        else:
            top1, gzip, raw, latency = node.int8_top1, node.gzip_bytes, node.raw_bytes, node.latency_us
        prefix = "" if file_format == "int8" else "float32 "
        out = []
        if self.max_accuracy_drop is not None and baseline_float - top1 > self.max_accuracy_drop + 1e-12:
            out.append(
                f"{prefix}accuracy drop {100 * (baseline_float - top1):.2f} > {100 * self.max_accuracy_drop:.2f} points"
            )
        if self.max_gzip_bytes is not None and gzip > self.max_gzip_bytes:
            out.append(f"{prefix}gzip {gzip:,} > {self.max_gzip_bytes:,} bytes")
        if self.max_raw_bytes is not None and raw > self.max_raw_bytes:
            out.append(f"{prefix}raw {raw:,} > {self.max_raw_bytes:,} bytes")
        if self.max_latency_us is not None and latency > self.max_latency_us:
            out.append(f"{prefix}latency {latency:.0f} > {self.max_latency_us:.0f} us")
        return out
