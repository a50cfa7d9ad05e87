"""Evaluate a detector on labelled recordings: metrics, per-group breakdown, score files and plots.

>>> from voiceguard.detector import Detector
>>> from voiceguard.data import read_folders
>>> from voiceguard.evaluate import evaluate, format_report
>>> report = evaluate(Detector.load(), read_folders("real/", "fake/"), by="generator", plot_dir="plots/")
>>> print(format_report(report))

Each recording is scored as one call (channels mixed) and its calibrated call-level probability is the
score of the metrics (see :mod:`voiceguard.metrics` for the conventions). Recordings with too little speech
for a verdict (*inconclusive*) are scored with the low-confidence probability the checkpoint gives them (its
``short_calibration``) and counted apart; recordings that cannot be read, or that are inconclusive without
a probability, are counted and listed, not scored.
"""
from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import metrics
from .data import Item
from .errors import DataError

log = logging.getLogger(__name__)

PROB_EPS = 1e-12  # probabilities are clipped to [eps, 1 - eps] before taking log-odds
MAX_PLOT_GROUPS = 8  # per-group curves drawn besides "all" (the groups with most synthetic recordings)
GROUP_FIELDS = ("generator", "source", "lang", "speaker")  # Item fields to group by (besides extra columns)
CSV_COLUMNS = ("path", "label", "probability", "score", "verdict", "error", "speaker", "source", "generator",
               "lang")


@dataclass
class EvalRow:
    """One recording of the evaluation."""

    path: str
    label: int  # 1 = synthetic, 0 = human
    probability: float | None  # calibrated P(synthetic) of the call; None when not scored
    score: float | None  # log-odds of ``probability`` (higher = synthetic); None when not scored
    verdict: str  # "synthetic" | "human" | "inconclusive" | "error"
    error: str = ""  # why it was not scored
    speaker: str = ""
    source: str = ""
    generator: str = ""
    lang: str = ""
    extra: dict = field(default_factory=dict)
    group: str = ""  # its group of the breakdown (``by``); empty without one

    @property
    def scored(self) -> bool:
        return self.probability is not None


@dataclass
class EvalReport:
    """What :func:`evaluate` measured.

    ``metrics``: :func:`voiceguard.metrics.summary` of the scored recordings (probabilities as scores);
    ``groups``: :func:`voiceguard.metrics.by_group` by ``by`` (empty without ``by``); ``rows``: every
    recording, scored or not; ``threshold``: the detector's probability threshold the rates are taken at;
    ``counts``: items, scored, inconclusive, failed; ``outputs``: files written, by kind; ``interval``: how the
    bootstrap intervals (``eer_ci`` in ``metrics`` and ``groups``) were drawn (empty: none were).
    """

    metrics: dict
    groups: dict[str, dict]
    rows: list[EvalRow]
    threshold: float
    by: str | None = None
    model: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    interval: dict = field(default_factory=dict)

    def to_dict(self, *, rows: bool = False) -> dict:
        """JSON-safe dict; per-file rows only when ``rows`` (the scores CSV holds them)."""
        d = {"metrics": self.metrics, "groups": self.groups, "threshold": self.threshold, "by": self.by,
             "model": self.model, "counts": self.counts, "outputs": self.outputs, "interval": self.interval}
        if rows:
            d["rows"] = [asdict(r) for r in self.rows]
        return d


def _log_odds(p: float) -> float:
    p = min(max(p, PROB_EPS), 1.0 - PROB_EPS)
    return math.log(p / (1.0 - p))


def _row_group(row: EvalRow, key: str) -> str:
    return str(getattr(row, key) if key in ("speaker", "source", "generator", "lang") else row.extra.get(key, ""))


def cluster_keys(rows: Sequence[EvalRow], resample_by: str | None) -> list[str] | None:
    """What a bootstrap resamples whole: the recordings' ``resample_by`` value (a recording without one is
    its own unit); None: every recording on its own."""
    if resample_by is None:
        return None
    return [_row_group(r, resample_by) or f"recording:{r.path}" for r in rows]


def _check_column(items: Sequence[Item], key: str | None, what: str) -> None:
    if key is not None and key not in GROUP_FIELDS and not any(key in it.extra for it in items):
        known = sorted(set(GROUP_FIELDS) | {k for it in items for k in it.extra})
        raise DataError(f"cannot {what} {key!r}: the recordings have no such column (known: {', '.join(known)})")


def evaluate(detector, items: Sequence[Item], *, by: str | None = None,
             plot_dir: str | os.PathLike | None = None, scores_csv: str | os.PathLike | None = None,
             asvspoof_scores: str | os.PathLike | None = None,
             progress: Callable[[int, int], None] | None = None, resamples: int = metrics.N_RESAMPLES,
             resample_by: str | None = None) -> EvalReport:
    """Score ``items`` with ``detector`` and measure how well it separates human from synthetic.

    Parameters
    ----------
    detector : voiceguard.detector.Detector
    items : labelled recordings (see :mod:`voiceguard.data`)
    by : group the breakdown by this :meth:`Item.group` key (``generator``, ``source``, ``lang``,
        ``speaker`` or any extra column, e.g. ``codec``)
    plot_dir : write ``det.png`` and ``roc.png`` there (all recordings, plus the largest groups)
    scores_csv : write one row per recording (:data:`CSV_COLUMNS` + extra columns); it reads back as a
        manifest
    asvspoof_scores : write ``trial score`` lines in ASVspoof format (trial = file stem, score =
        ``log((1-p)/p)``: higher = bona fide), scored recordings only
    progress : called as ``progress(done, total)`` after each recording
    resamples : give each EER a 95 % bootstrap interval over this many resamples
        (:func:`voiceguard.metrics.eer_interval`); 0: none
    resample_by : what the bootstrap draws whole, an :meth:`Item.group` key (e.g. ``speaker``: one speaker's
        recordings are not independent evidence); None: recording by recording

    Returns
    -------
    EvalReport
        metrics are ``None`` where undefined (e.g. EER when one class is absent or nothing was scored).
    """
    items = list(items)
    if not items:
        raise DataError("nothing to evaluate: no recordings given")
    _check_column(items, by, "group by")
    _check_column(items, resample_by, "resample by")
    cfg = detector.config
    rows: list[EvalRow] = []
    total = len(items)
    for item, outcome in zip(items, detector.score_files([it.path for it in items], channels="mix")):
        base = dict(path=item.path, label=int(item.label), speaker=item.speaker, source=item.source,
                    generator=item.generator, lang=item.lang, extra=dict(item.extra),
                    group=item.group(by) if by else "")
        if outcome.error is not None:
            rows.append(EvalRow(probability=None, score=None, verdict="error", error=str(outcome.error), **base))
        else:
            res = outcome.results[0]
            if res.probability is None:
                rows.append(EvalRow(probability=None, score=None, verdict=res.verdict, error=res.reason, **base))
            else:
                raw = getattr(res, "logit", None)  # the raw call logit, when the detector reports it
                cal = cfg.short_calibration if res.verdict == "inconclusive" else cfg.calibration
                score = float(cal.logit(raw)) if raw is not None else _log_odds(res.probability)
                rows.append(EvalRow(probability=float(res.probability), score=score, verdict=res.verdict, **base))
        if progress is not None:
            progress(len(rows), total)

    scored = [r for r in rows if r.scored]
    probs = np.array([r.probability for r in scored], dtype=np.float64)
    labels = np.array([r.label for r in scored], dtype=np.int64)
    thr = float(detector.threshold)
    n_failed = sum(r.verdict == "error" for r in rows)
    counts = {"items": total, "scored": len(scored), "inconclusive": total - len(scored) - n_failed,
              "failed": n_failed, "scored_short": sum(r.verdict == "inconclusive" for r in scored)}
    if counts["failed"] or counts["inconclusive"]:
        log.warning("%d of %d recordings not scored (%d unreadable, %d inconclusive); they are left out of the "
                    "metrics", total - len(scored), total, counts["failed"], counts["inconclusive"])
    scored_groups = [r.group for r in scored] if by else None
    clusters = cluster_keys(scored, resample_by)
    groups = metrics.by_group(probs, labels, scored_groups, threshold=thr, clusters=clusters,
                              resamples=resamples) if scored_groups is not None else {}
    report = EvalReport(metrics=metrics.summary(probs, labels, threshold=thr, clusters=clusters, resamples=resamples),
                        groups=groups, rows=rows, threshold=thr, by=by, model=dict(detector.model_info),
                        counts=counts)
    if resamples:
        report.interval = {"confidence": metrics.CONFIDENCE, "n_resamples": resamples,
                           "resampled_by": resample_by or "recording"}

    if scores_csv is not None:
        report.outputs["scores_csv"] = write_scores_csv(report, scores_csv)
    if asvspoof_scores is not None:
        report.outputs["asvspoof_scores"] = write_asvspoof_scores(report, asvspoof_scores)
    if plot_dir is not None:
        curves = _curves(probs, labels, scored_groups, groups)
        d = Path(plot_dir)
        report.outputs["det_plot"] = metrics.plot_det(curves, d / "det.png", threshold=thr,
                                                      title=f"DET: {report.model.get('name', 'model')}")
        report.outputs["roc_plot"] = metrics.plot_roc(curves, d / "roc.png", threshold=thr,
                                                      title=f"ROC: {report.model.get('name', 'model')}")
    return report


def _curves(probs: np.ndarray, labels: np.ndarray, groups: list[str] | None,
            stats: dict[str, dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score sets to plot: all recordings, then the groups with an EER (as :func:`metrics.by_group`)."""
    curves = {"all": (probs, labels)}
    if not groups:
        return curves
    masks = metrics.group_masks(labels, groups)
    ranked = sorted((name for name, st in stats.items() if st.get("vs")), key=lambda n: -stats[n]["n_spoof"])
    for name in ranked[:MAX_PLOT_GROUPS]:
        sel = masks[name][0]
        curves[name] = (probs[sel], labels[sel])
    return curves


@dataclass
class Comparison:
    """How a model did against a baseline on the same recordings (what :func:`compare` measured).

    ``eer``: :func:`voiceguard.metrics.eer_change` (baseline = before) over the recordings both scored;
    ``groups``: the same per group of the breakdown (groups with an EER); ``counts``: recordings both scored
    (``n``, ``n_bonafide``, ``n_spoof``) and those only one of them scored (``one_only``).
    """

    baseline: dict  # the baseline's model info
    model: dict
    eer: dict
    groups: dict[str, dict]
    by: str | None
    counts: dict
    resampled_by: str

    def to_dict(self) -> dict:
        return asdict(self)


def compare(baseline: EvalReport, report: EvalReport, *, resample_by: str | None = None,
            resamples: int = metrics.N_RESAMPLES) -> Comparison:
    """Compare ``report`` with ``baseline``, two :func:`evaluate` runs over the same recordings: the change of
    the EER with a paired bootstrap interval (both models scored on every resample; ``resample_by`` as in
    :func:`evaluate`), overall and per group of ``report``'s breakdown. Only recordings both scored count."""
    if [r.path for r in baseline.rows] != [r.path for r in report.rows]:
        raise DataError("cannot compare: the two evaluations are not of the same recordings")
    pairs = [(a, b) for a, b in zip(baseline.rows, report.rows) if a.scored and b.scored]
    one_only = sum(a.scored != b.scored for a, b in zip(baseline.rows, report.rows))
    rows = [b for _, b in pairs]
    before = np.array([a.probability for a, _ in pairs], dtype=np.float64)
    after = np.array([b.probability for _, b in pairs], dtype=np.float64)
    labels = np.array([r.label for r in rows], dtype=np.int64)
    clusters = cluster_keys(rows, resample_by)
    counts = {"n": len(rows), "n_bonafide": int((labels == 0).sum()), "n_spoof": int((labels == 1).sum()),
              "one_only": one_only}
    if not counts["n_bonafide"] or not counts["n_spoof"]:
        raise DataError(f"cannot compare EERs: the recordings both models scored hold {counts['n_bonafide']} human "
                        f"and {counts['n_spoof']} synthetic ones (needs both)")
    change = metrics.eer_change(before, after, labels, clusters, n_resamples=resamples)
    groups = {}
    if report.by:
        for name, (sel, vs) in metrics.group_masks(labels, [r.group for r in rows]).items():
            if vs is not None:
                idx = np.flatnonzero(sel)
                groups[name] = metrics.eer_change(before[idx], after[idx], labels[idx],
                                                  None if clusters is None else [clusters[i] for i in idx],
                                                  n_resamples=resamples)
    return Comparison(dict(baseline.model), dict(report.model), change, groups, report.by, counts,
                      resample_by or "recording")


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def change_text(c: dict, note: str = "") -> str:
    """``+1.2 points (95 % CI -0.4 to +2.9<note>): within noise`` of a :func:`voiceguard.metrics.eer_change`
    dict; the change alone when it has no interval."""
    if c["verdict"] is None:
        return f"{_points(c['change'])} points"
    return (f"{_points(c['change'])} points ({100 * c['confidence']:.0f} % CI {_points(c['low'])} to "
            f"{_points(c['high'])}{note}): {c['verdict']}")


def _change(c: dict) -> str:
    return f"{_pct(c['before'])} -> {_pct(c['after'])}: {change_text(c)}"


def format_comparison(c: Comparison) -> str:
    """What ``voiceguard evaluate --baseline`` prints after the report."""
    n = c.counts
    e = c.eer
    lines = [f"against the baseline {c.baseline.get('name', '?')} (voiceguard {c.baseline.get('version', '?')}), "
             f"on the {n['n']} recordings both scored ({n['n_bonafide']} human, {n['n_spoof']} synthetic"
             + (f"; {n['one_only']} scored by one model only are left out" if n["one_only"] else "") + "):",
             f"  EER {_change(e)}"]
    if e["verdict"] is not None:
        units = "recordings" if c.resampled_by == "recording" else f"{c.resampled_by} groups"
        lines.append(f"  (paired bootstrap: {e['n_resamples']} resamples of the {e['n_units'][0]} human and "
                     f"{e['n_units'][1]} synthetic {units}; 'within noise': the interval holds 0)")
    if c.groups:
        width = max(12, *(len(g) for g in c.groups)) + 1
        lines.append(f"  by {c.by}:")
        lines += [f"    {g:<{width}} {_change(ch)}" for g, ch in c.groups.items()]
    return "\n".join(lines)


def write_scores_csv(report: EvalReport, path: str | os.PathLike) -> str:
    """One row per recording: ``path,label,probability,score,verdict,error,speaker,source,generator,lang``
    then the extra columns. ``label`` is ``bonafide``/``spoof``, so the file reads back as a manifest."""
    extras = sorted({k for r in report.rows for k in r.extra if k not in CSV_COLUMNS})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(CSV_COLUMNS) + extras)
        for r in report.rows:
            w.writerow([r.path, "spoof" if r.label == 1 else "bonafide",
                        "" if r.probability is None else f"{r.probability:.6f}",
                        "" if r.score is None else f"{r.score:.6f}", r.verdict, r.error, r.speaker, r.source,
                        r.generator, r.lang] + [r.extra.get(k, "") for k in extras])
    return str(out)


def write_asvspoof_scores(report: EvalReport, path: str | os.PathLike) -> str:
    """``trial score`` per scored recording, as ASVspoof's evaluation scripts read them: trial = file stem,
    score = ``-score`` = ``log((1 - p) / p)``, so **higher = bona fide**."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in report.rows:
            if r.score is not None:
                f.write(f"{Path(r.path).stem} {-r.score:.6f}\n")
    return str(out)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _span(ci: list | None) -> str:
    return "" if not ci else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f} %"


def format_report(report: EvalReport) -> str:
    """A readable summary table of ``report`` (what ``voiceguard evaluate`` prints)."""
    m, c = report.metrics, report.counts
    name = report.model.get("name", "?")
    lines = [f"model {name} (voiceguard {report.model.get('version', '?')}"
             f"{'' if report.model.get('trained', True) else ', UNTRAINED'}); threshold p >= {report.threshold:.3f}",
             f"recordings: {c.get('items', 0)}; scored {c.get('scored', 0)} ({m['n_bonafide']} human, "
             f"{m['n_spoof']} synthetic"
             + (f"; {c['scored_short']} of them inconclusive, too short for a verdict, with a low-confidence "
                "probability" if c.get("scored_short") else "")
             + f"); not scored: {c.get('inconclusive', 0)} inconclusive, {c.get('failed', 0)} unreadable", ""]
    if m["eer"] is None:
        lines.append("EER, minDCF, AUC: n/a (needs scored human and synthetic recordings)")
    else:
        dcf = m["dcf"]
        ci = (f", {100 * report.interval['confidence']:.0f} % CI {_span(m['eer_ci'])}" if m.get("eer_ci") else "")
        lines += [f"  EER        {m['eer']:.4f}  ({_pct(m['eer'])}{ci}; at p >= {_f(m['eer_threshold'])})",
                  f"  minDCF     {m['min_dcf']:.4f}  (ASVspoof 5 costs: Pspoof {dcf['p_spoof']:g}, "
                  f"Cmiss {dcf['c_miss']:g}, Cfa {dcf['c_fa']:g})",
                  f"  ROC AUC    {m['auc']:.4f}"]
        if report.interval:
            iv = report.interval
            unit = "recording by recording" if iv["resampled_by"] == "recording" else \
                f"{iv['resampled_by']} by {iv['resampled_by']}"
            lines.append(f"  (CI: percentile bootstrap, {iv['n_resamples']} resamples, human and synthetic drawn "
                         f"apart, {unit})")
    lines.append(f"  at the threshold {report.threshold:.3f}: false alarms {_pct(m.get('false_alarm'))} of human "
                 f"({m.get('n_false_alarm', 0)}/{m['n_bonafide']}), misses {_pct(m.get('miss'))} of synthetic "
                 f"({m.get('n_miss', 0)}/{m['n_spoof']})")
    if report.groups:
        width = max(12, *(len(g) for g in report.groups)) + 1
        ci_head = f"{100 * report.interval['confidence']:.0f} % CI" if report.interval else ""
        lines += ["", f"by {report.by} (groups of synthetic recordings only are scored against all human ones):",
                  f"  {'group':<{width}} {'n':>6} {'human':>6} {'synth':>6} {'EER':>8} {ci_head:>13} {'minDCF':>7} "
                  f"{'AUC':>6} {'false al.':>9} {'miss':>8}"]
        for g, st in report.groups.items():
            lines.append(f"  {g:<{width}} {st['n']:>6} {st['n_bonafide']:>6} {st['n_spoof']:>6} "
                         f"{_pct(st['eer']):>8} {_span(st.get('eer_ci')):>13} {_f(st['min_dcf']):>7} "
                         f"{_f(st['auc']):>6} {_pct(st.get('false_alarm')):>9} {_pct(st.get('miss')):>8}")
    not_scored = [r for r in report.rows if not r.scored]
    if not_scored:
        lines += ["", f"not scored ({len(not_scored)}):"]
        lines += [f"  {r.path}: {r.verdict}: {r.error}" for r in not_scored[:10]]
        if len(not_scored) > 10:
            lines.append(f"  ... and {len(not_scored) - 10} more (see the scores CSV)")
    if report.outputs:
        lines += [""] + [f"{kind.replace('_', ' ')}: {p}" for kind, p in report.outputs.items()]
    return "\n".join(lines)
