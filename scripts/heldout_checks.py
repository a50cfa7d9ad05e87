#!/usr/bin/env python
"""Two checks of a checkpoint on its held-out validation set (clean + telephone copies), for the model card:
what the Silero speech check changes, and how the short clips (too little speech for a verdict) score.

    .venv/bin/python scripts/heldout_checks.py                                  # the shipped checkpoint
    .venv/bin/python scripts/heldout_checks.py --checkpoint runs/x/voiceguard --out runs/heldout_checks.json

- **Silero**: the held-out set scored twice in one process, with the checkpoint's ``vad.neural`` on and off;
  EER (all / clean / telephone) over the clips that got a verdict, and how many of each class were left
  ``inconclusive``.
- **Short clips**: the clips left ``inconclusive`` for too little speech that still had a window scored get a
  probability from the checkpoint's short-clip calibration. EER over the clips with a verdict; the short clips
  alone; both together with the short ones through the main calibration, through their own (as shipped; it was
  fitted on these clips), and through one fitted with each held-out source left out in turn and applied to it.

Prints JSON and writes it to ``--out`` (default runs/heldout_checks.json).
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.train_default import heldout_valset  # noqa: E402
from voiceguard.calibration import Calibration  # noqa: E402
from voiceguard.checkpoint import load  # noqa: E402
from voiceguard.detector import Detector  # noqa: E402
from voiceguard.train import ValSet, fit_short_calibration, score_valset, val_metrics  # noqa: E402


def eers(scores: np.ndarray, val: ValSet) -> dict:
    """:func:`~voiceguard.train.val_metrics` in %: EER over the finite scores, all / clean / telephone, and n."""
    m = val_metrics(scores, val)
    return {**{c: round(100 * m[f"eer_{c}"], 1) if f"eer_{c}" in m else None for c in ("all", "clean", "telephone")},
            "n": m["n"]}


def short_clip_rows(logits, short, val: ValSet, main: Calibration, own: Calibration | None) -> dict:
    """The short-clip table: EERs of the clips with a verdict, the short ones alone, and both together with the
    short ones calibrated three ways (main, their own, their own fitted with each source left out)."""
    verdict, is_short = np.isfinite(logits), np.isfinite(short)
    rows = {"clips with a verdict only": eers(logits, val),
            "the short clips alone": eers(short, val),
            "both, short clips through the main calibration": eers(np.where(verdict, logits, short), val)}
    p_main = main.probability(np.nan_to_num(logits))
    if own is not None:
        p = np.where(verdict, p_main, own.probability(np.nan_to_num(short)))
        rows["both, short clips through their own calibration (as shipped)"] = \
            eers(np.where(verdict | is_short, p, np.nan), val)
    sources = np.array([it.source for it in val.items])
    crossed = np.full(len(sources), np.nan)
    for g in np.unique(sources[is_short]):
        cal = fit_short_calibration(np.where(sources != g, short, np.nan), val)
        if cal is None:
            continue  # too few short clips elsewhere to fit on: this source's short clips stay out
        here = is_short & (sources == g)
        crossed[here] = cal.probability(short[here])
    rows["both, short calibration fitted with each held-out source left out"] = \
        eers(np.where(verdict, p_main, crossed), val)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    ap.add_argument("--out", default="runs/heldout_checks.json")
    args = ap.parse_args(argv)

    model, config = load(args.checkpoint)
    val = heldout_valset(config.training)
    logits, short = score_valset(Detector(model, config), val, short=True)
    plain = config.replace(vad=replace(config.vad, neural=False))
    logits_plain = score_valset(Detector(model, plain), val)

    def per_class(mask):
        return {"real": int((mask & (val.labels == 0)).sum()), "synthetic": int((mask & (val.labels == 1)).sum())}

    report = {
        "checkpoint": config.name,
        "files": len(val.items) // 2, "scorings": len(val.items),
        "silero": {
            "with the check": {**eers(logits, val), "inconclusive": per_class(~np.isfinite(logits))},
            "WebRTC VAD alone": {**eers(logits_plain, val), "inconclusive": per_class(~np.isfinite(logits_plain))},
        },
        "short_clips": {
            "short clips scored": per_class(np.isfinite(short)),
            "short calibration": config.short_calibration.to_dict() if config.short_calibration else None,
            "rows": short_clip_rows(logits, short, val, config.calibration, config.short_calibration),
        },
        "validation_metrics": val_metrics(logits, val),
    }
    text = json.dumps(report, indent=1)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
