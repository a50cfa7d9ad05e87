"""An HTML report of a scan: one self-contained page an analyst opens to see the most suspicious calls first.

``write_report(rows, "report.html", detector=det)`` takes the rows of a scan (:func:`voiceguard.batch.read_rows`)
and writes one page with no outside links: counts by verdict and error kind, a histogram of the calls'
probabilities, the timeline plot (:func:`voiceguard.plot.timeline`) of the ``top`` most suspicious calls, and
a table naming every file, most suspicious first, failed files last with their error. Images are embedded as
base64 PNG; every file name and message is HTML-escaped.

The rows hold no window-by-window scores, so the timelines come from scoring the top files again with
``detector`` (deterministic: the same scores as the scan); without a detector the page has no timelines.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

DEFAULT_TOP = 10  # files whose timeline the report shows
HIST_BINS = 20  # bars across [0, 1] in the histogram of probabilities


def sort_rows(rows: Sequence[dict]) -> list[dict]:
    """Most suspicious first: scored rows by falling probability, then inconclusive, then errors."""
    def key(r: dict):
        if r.get("error"):
            group = 2
        elif r.get("probability") is None:
            group = 1
        else:
            group = 0
        return group, -(r.get("probability") or 0.0), str(r["path"]), r.get("channel") or 0
    return sorted(rows, key=key)


def _png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_png(probabilities: Sequence[float], threshold: float | None = None) -> str:
    """A histogram of call probabilities, as base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.hist(list(probabilities), bins=HIST_BINS, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
        ax.legend(loc="upper center")
    ax.set_xlim(0, 1)
    ax.set_xlabel("p(synthetic)")
    ax.set_ylabel("calls")
    fig.tight_layout()
    try:
        return _png_base64(fig)
    finally:
        plt.close(fig)


def _timelines(rows: Sequence[dict], detector) -> dict[tuple[str, int | None], str | Exception]:
    """Base64 PNG timeline (or the error) for each (path, channel) of ``rows``, scored again."""
    from .plot import timeline

    out: dict[tuple[str, int | None], str | Exception] = {}
    wanted = {(r["path"], r.get("channel")) for r in rows}
    with tempfile.TemporaryDirectory(prefix="voiceguard-report-") as tmp:
        for mode in ("mix", "each"):
            paths = list(dict.fromkeys(p for p, c in wanted if (c is None) == (mode == "mix")))
            if not paths:
                continue
            for outcome in detector.score_files(paths, channels=mode):
                if outcome.error is not None:
                    for key in wanted:
                        if key[0] == outcome.path and (key[1] is None) == (mode == "mix"):
                            out[key] = outcome.error
                    continue
                for res in outcome.results:
                    key = (outcome.path, res.channel)
                    if key not in wanted:
                        continue
                    try:
                        png = timeline(res, os.path.join(tmp, f"{len(out)}.png"))
                        out[key] = base64.b64encode(Path(png).read_bytes()).decode("ascii")
                    except Exception as err:  # noqa: BLE001 - a missing plot must not lose the report
                        log.warning("%s: timeline plot failed: %s", outcome.path, err)
                        out[key] = err
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:2em}
table{border-collapse:collapse;font-size:0.9em} th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.synthetic td.verdict{color:#b00;font-weight:bold} tr.human td.verdict{color:#070}
tr.inconclusive td.verdict{color:#a60} tr.error td{color:#777} tr.error td.verdict{color:#b00}
.path{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.timeline{margin:1em 0 2em} .timeline img{max-width:100%;border:1px solid #ddd}
.note{color:#666}
"""


def _fmt(x, nd: int) -> str:
    return "" if x is None else f"{x:.{nd}f}"


def render(rows: Sequence[dict], *, timelines: dict | None = None, top: int = DEFAULT_TOP,
           title: str = "VoiceGuard scan report") -> str:
    """The report page as a string (see :func:`write_report`)."""
    e = html.escape
    ordered = sort_rows(rows)
    files = {r["path"] for r in rows}
    failed = {r["path"] for r in rows if r.get("error")}
    verdicts = Counter(r.get("verdict") or "error" for r in rows)
    kinds = Counter(r.get("error_kind") or "error" for r in rows if r.get("error"))
    probs = [r["probability"] for r in rows if r.get("probability") is not None]
    thresholds = [r["threshold"] for r in rows if r.get("threshold") is not None]
    threshold = Counter(thresholds).most_common(1)[0][0] if thresholds else None
    models = sorted({r.get("model") or "" for r in rows} - {""})
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    head = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{_CSS}</style></head><body>")
    parts = [head, f"<h1>{e(title)}</h1>",
             f"<p>{len(files)} files, {len(rows)} rows; {len(failed)} could not be scored. "
             f"Model: {e(', '.join(models) or 'unknown')}"
             + (f"; threshold {threshold:.2f}" if threshold is not None else "") + f". Written {e(stamp)}.</p>",
             "<p>Verdicts: " + e(", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))) + "</p>"]
    if kinds:
        parts.append("<p>Errors by kind: " + e(", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))) + "</p>")

    parts.append("<h2>Scores</h2>")
    if probs:
        parts.append(f'<img alt="histogram of p(synthetic)" src="data:image/png;base64,'
                     f'{histogram_png(probs, threshold)}">')
    else:
        parts.append('<p class="note">No file was scored.</p>')

    scored = [r for r in ordered if r.get("probability") is not None][: max(0, top)]
    anchors: dict[tuple[str, int | None], str] = {}
    if scored:
        parts.append(f"<h2>The {len(scored)} most suspicious</h2>")
        if timelines is None:
            parts.append('<p class="note">Timelines not drawn (no detector given).</p>')
        for i, r in enumerate(scored):
            key = (r["path"], r.get("channel"))
            anchor = f"tl-{i}"
            anchors[key] = anchor
            name = r["path"] + (f" [channel {r['channel']}]" if r.get("channel") is not None else "")
            parts.append(f'<div class="timeline" id="{anchor}"><h3><span class="path">{e(name)}</span>: '
                         f"{e(r['verdict'])}, p={r['probability']:.3f}</h3>")
            img = (timelines or {}).get(key)
            if isinstance(img, str):
                parts.append(f'<img alt="timeline of {e(name)}" src="data:image/png;base64,{img}">')
            elif img is not None:
                parts.append(f'<p class="note">No timeline: {e(str(img))}</p>')
            parts.append("</div>")

    parts.append("<h2>All files</h2><table><thead><tr><th>#</th><th>file</th><th>channel</th><th>verdict</th>"
                 "<th>p(synthetic)</th><th>duration (s)</th><th>speech (s)</th><th>most suspicious (s)</th>"
                 "<th>error / why inconclusive</th></tr></thead><tbody>")
    for i, r in enumerate(ordered, 1):
        key = (r["path"], r.get("channel"))
        name = e(r["path"])
        if key in anchors:
            name = f'<a href="#{anchors[key]}">{name}</a>'
        top_seg = ""
        if r.get("top_start") is not None:
            top_seg = f"{r['top_start']:.1f}-{r['top_end']:.1f} (p={r['top_probability']:.2f})"
        verdict = r.get("verdict") or "error"
        err = f"{r.get('error_kind') or 'error'}: {r['error']}" if r.get("error") else (r.get("reason") or "")
        parts.append(
            f'<tr class="{e(verdict)}"><td class="num">{i}</td><td class="path">{name}</td>'
            f'<td class="num">{"" if r.get("channel") is None else int(r["channel"])}</td>'
            f'<td class="verdict">{e(verdict)}</td><td class="num">{_fmt(r.get("probability"), 3)}</td>'
            f'<td class="num">{_fmt(r.get("duration"), 1)}</td><td class="num">{_fmt(r.get("speech_seconds"), 1)}</td>'
            f"<td>{e(top_seg)}</td><td>{e(err)}</td></tr>")
    parts.append("</tbody></table></body></html>\n")
    return "\n".join(parts)


def write_report(rows: Sequence[dict], out: str | os.PathLike, *, detector=None, top: int = DEFAULT_TOP,
                 title: str = "VoiceGuard scan report") -> str:
    """Write the HTML report of ``rows`` (a scan's output rows) to ``out``; returns its path.

    Parameters
    ----------
    rows : sequence of dict
        rows with the fields of :data:`voiceguard.batch.FIELDS`, e.g. from :func:`voiceguard.batch.read_rows`.
    out : path
        the HTML file to write (its folder is created).
    detector : Detector or None
        scores the ``top`` files again for their timeline plots; None: no timelines.
    top : int >= 0
        how many of the most suspicious files get a timeline.
    """
    top_rows = [r for r in sort_rows(rows) if r.get("probability") is not None][: max(0, top)]
    timelines = _timelines(top_rows, detector) if detector is not None and top_rows else None
    page = render(rows, timelines=timelines, top=top, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8", errors="backslashreplace")
    os.replace(tmp, out)
    return str(out)
