"""Centroid initialisation: LINEAR, RANDOM, DENSITY_BASED, KMEANS_PLUS_PLUS."""

from __future__ import annotations

import enum

import numpy as np
from collabopt.errors import InvalidArgumentError


class CentroidInitialization(str, enum.Enum):
    """How the initial centroids are placed (TFMOT's names).

    * ``LINEAR``: evenly spaced between the smallest and largest weight.
    * ``RANDOM``: uniform between the smallest and largest weight (seeded).
    * ``DENSITY_BASED``: at evenly spaced quantiles of the weights (dense
      regions get more centroids).
    * ``KMEANS_PLUS_PLUS``: k-means with k-means++ seeding (scikit-learn).
    """

    LINEAR = "LINEAR"
    RANDOM = "RANDOM"
    DENSITY_BASED = "DENSITY_BASED"
    KMEANS_PLUS_PLUS = "KMEANS_PLUS_PLUS"


def parse_init(value) -> CentroidInitialization:
    try:
        return CentroidInitialization(value.value if isinstance(value, CentroidInitialization) else str(value).upper())
    except ValueError:
        raise InvalidArgumentError(
            f"cluster_centroids_init={value!r} is not known; accepted: "
            f"{', '.join(m.value for m in CentroidInitialization)}."
        ) from None


def init_centroids(values: np.ndarray, k: int, method: CentroidInitialization, seed: int = 0) -> np.ndarray:
    """``k`` sorted initial centroids for the 1-D array ``values``."""
    values = np.asarray(values, np.float64).reshape(-1)
    lo, hi = float(values.min()), float(values.max())
    if method == CentroidInitialization.LINEAR:
        c = np.linspace(lo, hi, k)
    elif method == CentroidInitialization.RANDOM:
        c = np.random.default_rng(seed).uniform(lo, hi, k)
    elif method == CentroidInitialization.DENSITY_BASED:
        c = np.quantile(values, (np.arange(k) + 0.5) / k)
    else:
        from sklearn.cluster import KMeans

        distinct = np.unique(values)
        if distinct.size <= k:
            c = np.concatenate([distinct, np.full(k - distinct.size, distinct[-1])])
        else:
            km = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed, max_iter=100)
            # k-means on at most 100k samples: the centroids of a 1-D
            # distribution are well estimated from a sample, and init time
            # stays under a second for million-weight kernels.
            sample = values if values.size <= 100_000 else np.random.default_rng(seed).choice(values, 100_000, replace=False)
            c = km.fit(sample.reshape(-1, 1)).cluster_centers_.reshape(-1)
    return np.sort(c).astype(np.float32)
