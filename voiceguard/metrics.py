"""Detection metrics for a synthetic-voice detector: ROC/DET, EER, minDCF, AUC, rates at a threshold.

Pure numpy (the plotting functions import matplotlib and scipy when called).

Conventions used throughout
---------------------------
* ``scores`` [shape=(n,), float, finite]: **higher = more likely synthetic** (e.g. the calibrated
  probability).
* ``labels`` [shape=(n,), int in {0, 1}]: **1 = synthetic (spoof), 0 = human (bona fide)**.
* A recording is *flagged* (called synthetic) when ``score >= threshold``.
* **false alarm** (FAR): share of human recordings flagged; **miss**: share of synthetic recordings not
  flagged (passed as human).

ASVspoof mapping
----------------
ASVspoof countermeasures score the other way round: their positive ("target") class is *bona fide* and a
higher score means more bona fide. Their "miss" is a bona fide trial rejected, which is **our false alarm**;
their "false alarm" is a spoof accepted, which is **our miss**. :func:`min_dcf` takes its costs with the
ASVspoof 5 names (``c_miss`` = cost of rejecting bona fide, ``c_fa`` = cost of accepting a spoof) and
applies them to the right rates; a score file in ASVspoof format uses ``-score`` (see
:mod:`voiceguard.evaluate`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

# ASVspoof 5 Track 1 cost model (evaluation plan, minDCF)
P_SPOOF = 0.05  # prior probability of a spoof
C_MISS = 1.0  # cost of rejecting a bona fide trial (our false alarm)
C_FA = 10.0  # cost of accepting a spoof (our miss)


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length ({s.size} vs {y.size})")
    bad = ~np.isfinite(s)
    if bad.any():
        raise ValueError(f"scores must be finite; got {int(bad.sum())} NaN/inf of {s.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (human) or 1 (synthetic); got values {np.unique(y)[:5].tolist()}")
    return s, y.astype(np.int64)


def _split(scores, labels, *, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(sorted human scores, sorted synthetic scores)."""
    s, y = _check(scores, labels)
    human, spoof = np.sort(s[y == 0]), np.sort(s[y == 1])
    if need_both and (human.size == 0 or spoof.size == 0):
        raise ValueError(f"needs both classes; got {human.size} human and {spoof.size} synthetic scores")
    return human, spoof


def roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every operating point of the detector.

    Parameters
    ----------
    scores : np.ndarray [shape=(n,)], higher = synthetic
    labels : np.ndarray [shape=(n,)], 1 = synthetic, 0 = human; both classes present

    Returns
    -------
    far : np.ndarray [shape=(k + 1,)], non-increasing
        share of human recordings with ``score >= thresholds[i]`` (false alarms).
    miss : np.ndarray [shape=(k + 1,)], non-decreasing
        share of synthetic recordings with ``score < thresholds[i]`` (misses, a.k.a. FRR of the spoof class).
    thresholds : np.ndarray [shape=(k + 1,)], increasing
        the ``k`` distinct scores, then ``+inf`` (nothing flagged: far 0, miss 1). Tied scores are one
        operating point: a threshold cannot split them.
    """
    human, spoof = _split(scores, labels)
    thr = np.unique(np.concatenate([human, spoof]))
    far = (human.size - np.searchsorted(human, thr, side="left")) / human.size
    miss = np.searchsorted(spoof, thr, side="left") / spoof.size
    return (np.append(far, 0.0), np.append(miss, 1.0), np.append(thr, np.inf))


def eer(scores, labels) -> tuple[float, float]:
    """Equal error rate and a threshold near it.

    Method: the *interpolated crossing*. The operating points of :func:`roc` are joined by straight lines
    (the rates reachable by randomising between two neighbouring thresholds) and the EER is where that
    line crosses ``far == miss``. When the ROC is convex this equals the ROC-convex-hull (ROCCH) EER; it is
    never below it. ASVspoof's own scripts take the mean of FAR and miss at the closest operating point
    instead, which differs from this by at most half a step (1 / (2 n) of the smaller class).

    Returns
    -------
    eer : float in [0, 1]
        0 for perfectly separated scores, 1 for perfectly inverted ones, 0.5 when all scores tie.
    threshold : float
        the score threshold (``flag if score >= threshold``) of the operating point next to the crossing
        (the nearer one; the lower one on a tie), i.e. a threshold that attains roughly the EER.
    """
    far, miss, thr = roc(scores, labels)
    d = far - miss  # non-increasing, from 1 (all flagged) to -1 (none flagged)
    i = int(np.argmax(d <= 0))
    if d[i] == 0:
        return float(far[i]), float(thr[i])
    a = d[i - 1] / (d[i - 1] - d[i])  # fraction of the way from point i-1 to point i; i >= 1 since d[0] = 1
    value = far[i - 1] + a * (far[i] - far[i - 1])
    return float(value), float(thr[i - 1] if a <= 0.5 else thr[i])


def min_dcf(scores, labels, *, p_spoof: float = P_SPOOF, c_miss: float = C_MISS,
            c_fa: float = C_FA) -> tuple[float, float]:
    """Normalised minimum detection cost, as defined for ASVspoof 5 (Track 1).

    ASVspoof 5 writes, for a countermeasure whose positive class is bona fide::

        DCF(t) = c_miss * P_miss_bona(t) * (1 - p_spoof) + c_fa * P_fa_spoof(t) * p_spoof
        minDCF = min_t DCF(t) / min(c_miss * (1 - p_spoof), c_fa * p_spoof)

    With our convention ``P_miss_bona`` (bona fide rejected) is our **false alarm** and ``P_fa_spoof``
    (spoof accepted) is our **miss**, so here ``DCF(t) = c_miss * far(t) * (1 - p_spoof) + c_fa * miss(t)
    * p_spoof``. The normaliser is the cost of the better trivial system (flag all or flag nothing), so
    a useless detector scores 1 and a perfect one 0. Defaults: p_spoof 0.05, c_miss 1, c_fa 10, i.e.
    ``minDCF = min_t (1.9 * far(t) + miss(t))``.

    Returns
    -------
    min_dcf : float in [0, 1]
    threshold : float
        score threshold attaining it (``+inf``: flag nothing is best).
    """
    if not 0.0 < p_spoof < 1.0 or c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"need 0 < p_spoof < 1 and positive costs; got p_spoof={p_spoof}, c_miss={c_miss}, "
                         f"c_fa={c_fa}")
    far, miss, thr = roc(scores, labels)
    cost = c_miss * far * (1.0 - p_spoof) + c_fa * miss * p_spoof
    norm = min(c_miss * (1.0 - p_spoof), c_fa * p_spoof)
    i = int(np.argmin(cost))
    return float(cost[i] / norm), float(thr[i])


def roc_auc(scores, labels) -> float:
    """Area under the ROC: the probability that a random synthetic recording scores above a random human
    one, ties counting one half (Mann-Whitney U / (n_synthetic * n_human))."""
    human, spoof = _split(scores, labels)
    allv = np.concatenate([human, spoof])
    uniq, inverse, counts = np.unique(allv, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts  # values strictly below each unique value
    avg_rank = below + (counts + 1) / 2.0  # 1-based average rank of each unique value
    rank_sum = avg_rank[inverse[human.size:]].sum()
    u = rank_sum - spoof.size * (spoof.size + 1) / 2.0
    return float(u / (spoof.size * human.size))


def rates_at_threshold(scores, labels, threshold: float) -> tuple[float, float]:
    """(false alarm, miss) when flagging ``score >= threshold``.

    false alarm: share of human recordings flagged; miss: share of synthetic recordings not flagged.
    A rate whose class is absent is NaN.
    """
    s, y = _check(scores, labels)
    human, spoof = s[y == 0], s[y == 1]
    fa = float(np.mean(human >= threshold)) if human.size else float("nan")
    mi = float(np.mean(spoof < threshold)) if spoof.size else float("nan")
    return fa, mi


def _num(x: float | None) -> float | None:
    """JSON-safe: None for NaN / inf."""
    return None if x is None or not np.isfinite(x) else float(x)


def summary(scores, labels, threshold: float | None = None, *, clusters: Sequence | None = None,
            resamples: int = 0) -> dict:
    """All metrics in one JSON-safe dict (``None`` where undefined, e.g. EER with one class only).

    Keys: ``n, n_bonafide, n_spoof, eer, eer_threshold, min_dcf, min_dcf_threshold, auc`` and, when a
    threshold is given, ``threshold, false_alarm, miss, n_false_alarm, n_miss``. ``dcf`` holds the cost
    parameters used. ``resamples`` > 0: also ``eer_ci``, the [low, high] bootstrap interval of
    :func:`eer_interval` over that many resamples (``clusters`` resampled whole).
    """
    s, y = _check(scores, labels)
    n_h, n_s = int((y == 0).sum()), int((y == 1).sum())
    out: dict = {"n": int(s.size), "n_bonafide": n_h, "n_spoof": n_s, "eer": None, "eer_threshold": None,
                 "min_dcf": None, "min_dcf_threshold": None, "auc": None,
                 "dcf": {"p_spoof": P_SPOOF, "c_miss": C_MISS, "c_fa": C_FA}}
    if n_h and n_s:
        e, et = eer(s, y)
        d, dt = min_dcf(s, y)
        out.update(eer=e, eer_threshold=_num(et), min_dcf=d, min_dcf_threshold=_num(dt), auc=roc_auc(s, y))
        if resamples:
            ci = eer_interval(s, y, clusters, n_resamples=resamples)
            out["eer_ci"] = None if ci["low"] is None else [ci["low"], ci["high"]]
    if threshold is not None:
        fa, mi = rates_at_threshold(s, y, threshold)
        out.update(threshold=float(threshold), false_alarm=_num(fa), miss=_num(mi),
                   n_false_alarm=int(((y == 0) & (s >= threshold)).sum()),
                   n_miss=int(((y == 1) & (s < threshold)).sum()))
    return out


def group_masks(labels, groups: Sequence[str]) -> dict[str, tuple[np.ndarray, str | None]]:
    """Which recordings each group's EER is measured on, in sorted group order: ``name -> (mask, vs)``.

    ``vs`` is ``"group"`` for a group holding both classes (its own recordings), ``"all bonafide"`` for a group
    of synthetic recordings only (they and every human recording) and None for a group without an EER (human
    recordings only; the mask is then the group's own recordings).
    """
    y = np.asarray(labels).ravel()
    g = np.asarray([str(v) for v in groups], dtype=object)
    if g.shape != y.shape:
        raise ValueError(f"groups and labels differ in length ({g.size} vs {y.size})")
    human = y == 0
    out = {}
    for name in sorted(set(g.tolist())):
        m = g == name
        n_h, n_s = int((human & m).sum()), int((~human & m).sum())
        if n_h and n_s:
            out[name] = (m, "group")
        elif n_s and human.any():
            out[name] = (m | human, "all bonafide")
        else:
            out[name] = (m, None)
    return out


def by_group(scores, labels, groups: Sequence[str], *, threshold: float | None = None,
             clusters: Sequence | None = None, resamples: int = 0) -> dict[str, dict]:
    """Metrics per group (e.g. per generator, source, language), in sorted group order.

    * a group holding both classes is scored on its own (its synthetic vs its human recordings);
    * a group of synthetic recordings only (e.g. one generator) is scored against **all** human
      recordings of the evaluation: ``eer``, ``eer_threshold``, ``min_dcf``, ``auc`` and, at the
      threshold, its ``miss`` rate;
    * a group of human recordings only gets its ``false_alarm`` rate at the threshold (no EER).

    Every entry has ``n``, ``n_bonafide``, ``n_spoof`` and ``vs`` (``"group"``, ``"all bonafide"`` or
    ``None``: which human recordings the EER was computed against). ``resamples`` > 0: also ``eer_ci``, as in
    :func:`summary`.
    """
    s, y = _check(scores, labels)
    g = np.asarray([str(v) for v in groups], dtype=object)
    if g.shape != s.shape:
        raise ValueError(f"groups and scores differ in length ({g.size} vs {s.size})")
    out: dict[str, dict] = {}
    for name, (sel, vs) in group_masks(y, g).items():
        m = g == name
        gs, gy = s[m], y[m]
        r: dict = {"n": int(m.sum()), "n_bonafide": int((gy == 0).sum()), "n_spoof": int((gy == 1).sum()),
                   "vs": vs, "eer": None, "eer_threshold": None, "min_dcf": None, "auc": None}
        if vs is not None:
            es, ey = s[sel], y[sel]
            e, et = eer(es, ey)
            r.update(eer=e, eer_threshold=_num(et), min_dcf=min_dcf(es, ey)[0], auc=roc_auc(es, ey))
            if resamples:
                ci = eer_interval(es, ey, None if clusters is None else [clusters[i] for i in np.flatnonzero(sel)],
                                  n_resamples=resamples)
                r["eer_ci"] = None if ci["low"] is None else [ci["low"], ci["high"]]
        if threshold is not None:
            fa, mi = rates_at_threshold(gs, gy, threshold)
            r.update(threshold=float(threshold), false_alarm=_num(fa), miss=_num(mi))
        out[name] = r
    return out


# ---------------------------------------------------------------------------- how sure an EER is
CONFIDENCE = 0.95  # level of the bootstrap intervals
N_RESAMPLES = 2000  # bootstrap resamples (the interval's ends move by a few tenths of a point between seeds)
MAX_RESAMPLED = 10_000_000  # unit numbers drawn at once (resamples x units); bounds the memory of large evaluations


class _Resampler:
    """Draws the recordings of a bootstrap resample: each class on its own (a resample keeps the human and
    synthetic counts), whole clusters at a time (the copies of one clip, or one speaker's recordings, are not
    independent evidence: resampling them one by one would make an interval too narrow)."""

    def __init__(self, labels: np.ndarray, clusters: Sequence | None):
        self.sides = []  # per class: (indices ordered by cluster, cluster starts, cluster sizes)
        for cls in (0, 1):
            idx = np.flatnonzero(labels == cls)
            if clusters is None:
                self.sides.append((idx, np.arange(idx.size), np.ones(idx.size, np.int64)))
                continue
            keys = np.asarray([str(clusters[i]) for i in idx], dtype=object)
            _, inverse = np.unique(keys, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            sizes = np.bincount(inverse)
            self.sides.append((idx[order], np.cumsum(sizes) - sizes, sizes))

    @property
    def n_clusters(self) -> tuple[int, int]:
        return tuple(int(side[1].size) for side in self.sides)

    def members(self, cls: int, chosen: np.ndarray) -> np.ndarray:
        """Indices of the recordings of clusters ``chosen`` (cluster numbers, repeats allowed) of class ``cls``."""
        order, starts, sizes = self.sides[cls]
        n = sizes[chosen]
        offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        return order[np.repeat(starts[chosen], n) + offsets]

    def interval(self, statistic, *, confidence: float, n_resamples: int,
                 seed: int) -> tuple[float, float] | tuple[None, None]:
        """Percentile bootstrap interval of ``statistic(indices)`` (indices of one resample's recordings);
        (None, None) when a class has fewer than two units to draw from."""
        from scipy.stats import bootstrap

        if min(self.n_clusters) < 2:
            return None, None

        def stat(h, s, axis=-1):
            h2, s2 = h.reshape(-1, h.shape[-1]), s.reshape(-1, s.shape[-1])
            out = [statistic(np.concatenate([self.members(0, a), self.members(1, b)])) for a, b in zip(h2, s2)]
            return np.asarray(out).reshape(h.shape[:-1])

        data = tuple(np.arange(k) for k in self.n_clusters)
        batch = max(1, min(n_resamples, MAX_RESAMPLED // sum(self.n_clusters)))  # memory of a batch of resamples
        res = bootstrap(data, stat, vectorized=True, paired=False, axis=-1, confidence_level=confidence,
                        n_resamples=n_resamples, batch=batch, method="percentile", rng=np.random.default_rng(seed))
        ci = res.confidence_interval
        return float(ci.low), float(ci.high)


def eer_interval(scores, labels, clusters: Sequence | None = None, *, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """The EER with a bootstrap confidence interval.

    Resamples the human and the synthetic recordings apart, ``clusters`` (one key per recording, e.g. the
    speaker, or the clip a telephone copy was made from) whole; None: recording by recording. Percentile
    interval (``scipy.stats.bootstrap``). An interval is about the recordings: it says how much the EER
    could move on another draw of the same kind of recordings, not on recordings of another kind.

    Returns
    -------
    dict
        ``eer``, ``low``, ``high`` (fractions; None when a class has a single unit), ``confidence``,
        ``n_resamples``, ``resampled`` (``"recording"`` or ``"cluster"``) and ``n_units`` ([human, synthetic]
        units resampled).
    """
    s, y = _check(scores, labels)
    _split(s, y)  # both classes present
    rs = _Resampler(y, clusters)
    low, high = rs.interval(lambda i: eer(s[i], y[i])[0], confidence=confidence, n_resamples=n_resamples, seed=seed)
    return {"eer": eer(s, y)[0], "low": low, "high": high, "confidence": confidence, "n_resamples": n_resamples,
            "resampled": "recording" if clusters is None else "cluster", "n_units": list(rs.n_clusters)}


def eer_change(before, after, labels, clusters: Sequence | None = None, *, confidence: float = CONFIDENCE,
               n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """How the EER changed from one model's scores (``before``) to another's (``after``) on the same
    recordings, with a paired bootstrap interval of the change: both models are scored on each resample.

    Resampling as :func:`eer_interval`. ``verdict``: ``"better"`` when the whole interval lies below 0
    (the EER fell), ``"worse"`` when it lies above, else ``"within noise"``. ``n_resamples=0``: the change
    alone (``low``, ``high`` and ``verdict`` None, as when a class has a single unit).

    Returns
    -------
    dict
        ``before``, ``after``, ``change`` (after - before), ``low``, ``high`` (of the change), ``verdict``,
        ``confidence``, ``n_resamples``, ``resampled``, ``n_units``.
    """
    a, y = _check(before, labels)
    b, _ = _check(after, labels)
    _split(a, y)
    rs = _Resampler(y, clusters)
    low = high = verdict = None
    if n_resamples:
        low, high = rs.interval(lambda i: eer(b[i], y[i])[0] - eer(a[i], y[i])[0], confidence=confidence,
                                n_resamples=n_resamples, seed=seed)
        if low is not None:
            verdict = "better" if high < 0 else "worse" if low > 0 else "within noise"
    e_a, e_b = eer(a, y)[0], eer(b, y)[0]
    return {"before": e_a, "after": e_b, "change": e_b - e_a, "low": low, "high": high, "verdict": verdict,
            "confidence": confidence, "n_resamples": n_resamples,
            "resampled": "recording" if clusters is None else "cluster", "n_units": list(rs.n_clusters)}


# ---------------------------------------------------------------------------- plots
DET_TICKS = (0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999)  # rates labelled
DET_LIMITS = (0.0005, 0.9995)  # rates drawn on a DET plot; 0 and 1 are clipped to these


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png) -> str:
    out = str(out_png)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    _pyplot().close(fig)
    return out


def plot_det(curves: Mapping[str, tuple], out_png: str | os.PathLike, *, threshold: float | None = None,
             title: str = "DET") -> str:
    """Write a DET plot (miss vs false alarm on normal-deviate axes) of one or more score sets.

    Parameters
    ----------
    curves : {name: (scores, labels)}, each with both classes (others are skipped)
    out_png : path of the PNG to write (folders are created)
    threshold : optional; marks each curve's operating point at ``score >= threshold`` with an ``x``
    title : plot title

    Returns the path written.
    """
    from scipy.stats import norm

    plt = _pyplot()
    lo, hi = DET_LIMITS
    fig, ax = plt.subplots(figsize=(6.2, 6.0), dpi=100)
    for name, (sc, lab) in curves.items():
        sc, lab = _check(sc, lab)
        if not ((lab == 0).any() and (lab == 1).any()):
            continue
        far, miss, _ = roc(sc, lab)
        e, _ = eer(sc, lab)
        line, = ax.plot(norm.ppf(np.clip(far, lo, hi)), norm.ppf(np.clip(miss, lo, hi)), linewidth=1.6,
                        label=f"{name} (EER {100 * e:.1f} %)")
        ax.plot(norm.ppf(np.clip(e, lo, hi)), norm.ppf(np.clip(e, lo, hi)), "o", color=line.get_color(),
                markersize=5)
        if threshold is not None:
            fa, mi = rates_at_threshold(sc, lab, threshold)
            ax.plot(norm.ppf(np.clip(fa, lo, hi)), norm.ppf(np.clip(mi, lo, hi)), "x", color=line.get_color(),
                    markersize=9, markeredgewidth=2)
    ticks = norm.ppf(DET_TICKS)
    labels = [f"{100 * t:g}" for t in DET_TICKS]
    ax.plot(norm.ppf([lo, hi]), norm.ppf([lo, hi]), color="0.7", linestyle=":", linewidth=1)
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(norm.ppf(lo), norm.ppf(hi))
    ax.set_ylim(norm.ppf(lo), norm.ppf(hi))
    ax.set_xlabel("false alarm: human flagged as synthetic (%)")
    ax.set_ylabel("miss: synthetic passed as human (%)")
    ax.grid(True, color="0.9")
    sub = "" if threshold is None else f"; x = operating point at threshold {threshold:.2f}"
    ax.set_title(f"{title} (o = EER{sub})", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    return _save(fig, out_png)


def plot_roc(curves: Mapping[str, tuple], out_png: str | os.PathLike, *, threshold: float | None = None,
             title: str = "ROC") -> str:
    """Write a ROC plot (detection rate of synthetic vs false-alarm rate on human, linear axes).

    Same arguments as :func:`plot_det`. Returns the path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 6.0), dpi=100)
    for name, (sc, lab) in curves.items():
        sc, lab = _check(sc, lab)
        if not ((lab == 0).any() and (lab == 1).any()):
            continue
        far, miss, _ = roc(sc, lab)
        line, = ax.plot(far, 1.0 - miss, linewidth=1.6, label=f"{name} (AUC {roc_auc(sc, lab):.3f})")
        if threshold is not None:
            fa, mi = rates_at_threshold(sc, lab, threshold)
            ax.plot(fa, 1.0 - mi, "x", color=line.get_color(), markersize=9, markeredgewidth=2)
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false alarm: human flagged as synthetic")
    ax.set_ylabel("detection: synthetic flagged")
    ax.grid(True, color="0.9")
    sub = "" if threshold is None else f" (x = threshold {threshold:.2f})"
    ax.set_title(f"{title}{sub}", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out_png)
