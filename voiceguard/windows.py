"""Sliding windows over a call and the aggregation of their scores: pure functions, no I/O, no torch.

A call is cut into windows of ``length`` samples every ``hop`` samples. A ragged tail gets one more window
aligned to the end of the call, so every sample is covered; a call shorter than one window is one window.
Window scores (logits, higher = more likely synthetic) become a call score by
:func:`call_logit`, and flagged regions by :func:`flag_regions` (hysteresis + minimum duration).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def window_starts(n_samples: int, length: int, hop: int) -> np.ndarray:
    """Start indices of the windows covering ``n_samples``.

    Parameters
    ----------
    n_samples : int >= 0
    length : int > 0, window length in samples
    hop : int, 0 < hop <= length

    Returns
    -------
    np.ndarray [shape=(k,), dtype=int64]
        k = 0 for an empty signal; ``[0]`` when ``n_samples <= length`` (one short window);
        otherwise ``0, hop, 2*hop, ...`` plus ``n_samples - length`` when the last regular window
        does not reach the end.
    """
    if length <= 0:
        raise ValueError(f"window length must be > 0 samples, got {length}")
    if hop <= 0 or hop > length:
        raise ValueError(f"hop must be in 1..{length} samples (the window length), got {hop}")
    if n_samples <= 0:
        return np.zeros(0, dtype=np.int64)
    if n_samples <= length:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - length + 1, hop, dtype=np.int64)
    if starts[-1] + length < n_samples:
        starts = np.append(starts, n_samples - length)
    return starts


@dataclass(frozen=True)
class AggregationConfig:
    """How window logits become one call-level logit.

    The call logit is the highest mean logit over any run of ``context`` consecutive scored windows
    (all of them when fewer). A short synthetic stretch inside a long real call still raises the call
    score (a max), while a single noisy window does not (the mean over ``context`` windows).
    """

    context: int = 3  # windows averaged before taking the maximum
    # The maximum over many runs grows with their number even on real speech: a long call gets more chances
    # for one unlucky run. Beyond ``reference_runs`` runs, every run mean is lowered by
    # ``length_penalty * (sqrt(2 ln n) - sqrt(2 ln reference_runs))`` for n runs (the growth of the
    # expected maximum of n Gaussian scores of spread ``length_penalty``), so a 10-minute call is held to the
    # same false-alarm rate as the short clips the threshold was fitted on.
    length_penalty: float = 0.0  # logits; the spread of call logits on real validation speech
    reference_runs: int = 3  # runs in the clips the threshold was fitted on (20 s at 4 s windows)

    def to_dict(self) -> dict:
        return {"context": self.context, "length_penalty": self.length_penalty,
                "reference_runs": self.reference_runs}


def length_offset(n_runs: int, config: AggregationConfig = AggregationConfig()) -> float:
    """What is subtracted from every run mean of a call with ``n_runs`` runs (0 up to ``reference_runs``)."""
    if config.length_penalty <= 0 or n_runs <= max(1, config.reference_runs):
        return 0.0
    ref = max(1, config.reference_runs)
    return float(config.length_penalty * (np.sqrt(2 * np.log(n_runs)) - np.sqrt(2 * np.log(ref))))


def call_logit(window_logits: np.ndarray, config: AggregationConfig = AggregationConfig()) -> float:
    """Call-level logit from the logits of the scored windows, in time order.

    Parameters
    ----------
    window_logits : np.ndarray [shape=(k,)], k >= 1

    Returns
    -------
    float
        max over i of mean(window_logits[i : i + context]), minus :func:`length_offset` for long calls.
    """
    return float(run_scores(window_logits, config)[0].max())


def run_scores(window_logits: np.ndarray, config: AggregationConfig = AggregationConfig()
               ) -> tuple[np.ndarray, int]:
    """The scores of the runs the call score is the maximum of: :func:`context_means` minus
    :func:`length_offset` (same shapes and run length as :func:`context_means`)."""
    means, c = context_means(window_logits, config)
    return means - length_offset(len(means), config), c


def context_means(window_logits: np.ndarray, config: AggregationConfig = AggregationConfig()
                  ) -> tuple[np.ndarray, int]:
    """Means of every run of ``context`` consecutive window logits (one run of all when fewer).

    Returns
    -------
    means : np.ndarray [shape=(k - c + 1,)]
        ``means[i]`` = mean(window_logits[i : i + c]).
    c : int
        the run length used, ``min(context, k)``.
    """
    z = np.asarray(window_logits, dtype=np.float64)
    if z.size == 0:
        raise ValueError("no scored windows to aggregate")
    c = max(1, min(int(config.context), z.size))
    csum = np.concatenate([[0.0], np.cumsum(z)])
    return (csum[c:] - csum[:-c]) / c, c


def flag_regions(
    starts: np.ndarray,
    ends: np.ndarray,
    probs: np.ndarray,
    *,
    onset: float,
    offset: float | None = None,
    min_duration: float = 0.0,
) -> list[tuple[float, float, float]]:
    """Regions where the synthetic probability is high, with hysteresis.

    A region opens at a window whose probability is >= ``onset`` and stays open while windows are
    >= ``offset`` (default ``onset - 0.1``). Regions shorter than ``min_duration`` seconds are dropped.

    Parameters
    ----------
    starts, ends : np.ndarray [shape=(k,)], seconds, windows in time order
    probs : np.ndarray [shape=(k,)], in [0, 1]

    Returns
    -------
    list of (start_s, end_s, max_probability)
    """
    off = onset - 0.1 if offset is None else offset
    if off > onset:
        raise ValueError(f"offset ({off}) must not exceed onset ({onset})")
    regions: list[tuple[float, float, float]] = []
    cur: list[float] | None = None
    for s, e, p in zip(starts, ends, probs):
        if cur is None:
            if p >= onset:
                cur = [float(s), float(e), float(p)]
        elif p >= off and s <= cur[1] + 1e-9:
            cur[1] = max(cur[1], float(e))
            cur[2] = max(cur[2], float(p))
        else:
            regions.append((cur[0], cur[1], cur[2]))
            cur = [float(s), float(e), float(p)] if p >= onset else None
    if cur is not None:
        regions.append((cur[0], cur[1], cur[2]))
    return [r for r in regions if r[1] - r[0] >= min_duration]


def touching(starts: np.ndarray, ends: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Which windows touch or overlap any of ``spans`` (a shared edge counts).

    Parameters
    ----------
    starts, ends : np.ndarray [shape=(k,)], both non-decreasing (windows in time order)
    spans : list of (start, end), same unit

    Returns
    -------
    np.ndarray [shape=(k,), dtype=bool]

    Examples
    --------
    >>> touching(np.array([0, 4, 8, 12]), np.array([4, 8, 12, 16]), [(8, 12)])
    array([False,  True,  True,  True])
    """
    starts, ends = np.asarray(starts), np.asarray(ends)
    mark = np.zeros(len(starts) + 1, dtype=np.int64)
    for c, d in spans:  # windows with end >= c and start <= d
        mark[np.searchsorted(ends, c, side="left")] += 1
        mark[np.searchsorted(starts, d, side="right")] -= 1
    return np.cumsum(mark)[:-1] > 0
