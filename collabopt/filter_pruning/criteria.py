"""How output channels are scored: L1 / L2 norm, or distance to the others (geometric median)."""

from __future__ import annotations

import numpy as np

from collabopt.errors import InvalidArgumentError

CRITERIA = ("l1", "l2", "geometric_median")


def check_criterion(criterion) -> str:
    if criterion not in CRITERIA:
        raise InvalidArgumentError(f"criterion must be one of {CRITERIA}; received {criterion!r}.")
    return criterion


def channel_scores(rows: np.ndarray, criterion: str) -> np.ndarray:
    """Importance of each channel of a weight viewed as ``(channels, values)``; low scores are pruned first.

    * ``"l1"``/``"l2"``: the norm of the channel's weights (Li et al., 2017);
    * ``"geometric_median"``: the summed distance of the channel's weights to
      every other channel's (He et al., 2019, FPGM): a channel close to the
      others is redundant, whatever its norm.

    Scores are divided by their mean, so that every layer of a dependency
    group weighs the same in the group's sum.

    Example:

    >>> import numpy as np
    >>> from collabopt.filter_pruning.criteria import channel_scores
    >>> channel_scores(np.array([[1.0, 0.0], [3.0, 4.0]]), "l2").round(2).tolist()
    [0.33, 1.67]
    """
    rows = np.asarray(rows, np.float64).reshape(rows.shape[0], -1)
    if criterion == "l1":
        scores = np.abs(rows).sum(axis=1)
    elif criterion == "l2":
        scores = np.sqrt((rows**2).sum(axis=1))
    else:
        sq = (rows**2).sum(axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * rows @ rows.T, 0.0)
        scores = np.sqrt(d2).sum(axis=1)
    mean = scores.mean()
    return scores / mean if mean > 0 else scores
