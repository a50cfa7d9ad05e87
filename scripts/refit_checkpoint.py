#!/usr/bin/env python
"""Fit what newer trainings fit themselves on a checkpoint trained before they did: the long-call length penalty
(``aggregation.length_penalty``) and the short-clip calibration (``short_calibration``), each only where the
checkpoint lacks it (``--force``: both anew). The main calibration and the threshold are left as stored.

    .venv/bin/python scripts/refit_checkpoint.py checkpoints/voiceguard

Re-scores the checkpoint's own held-out validation set (as recorded by scripts/train_default.py, clean and
telephone copies; its manifests must be on this machine) through the inference path, exactly as ``train()``
does at its end.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.train_default import heldout_valset  # noqa: E402
from voiceguard import checkpoint  # noqa: E402
from voiceguard.detector import Detector  # noqa: E402
from voiceguard.train import fit_length_penalty, fit_short_calibration, score_valset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--force", action="store_true", help="re-fit both, even where the checkpoint has them")
    args = ap.parse_args(argv)
    model, cfg = checkpoint.load(args.checkpoint)
    val = heldout_valset(cfg.training)
    plain = cfg.replace(aggregation=replace(cfg.aggregation, length_penalty=0.0))  # as train() scores them
    logits, short_logits = score_valset(Detector(model, plain), val, short=True)
    penalty = cfg.aggregation.length_penalty
    if args.force or not penalty:
        penalty = fit_length_penalty(logits, val)
    short_cal = cfg.short_calibration
    if args.force or short_cal is None:
        short_cal = fit_short_calibration(short_logits, val)
    cfg = cfg.replace(aggregation=replace(cfg.aggregation, length_penalty=penalty), short_calibration=short_cal)
    path = checkpoint.save(args.checkpoint, model, cfg)
    y, m = val.labels, np.isfinite(short_logits)
    print(f"{path}: length_penalty {penalty} ({int((np.isfinite(logits) & (y == 0)).sum())} real validation "
          f"scores now); short_calibration {short_cal} (from {int((m & (y == 0)).sum())} real / "
          f"{int((m & (y == 1)).sum())} synthetic short validation clips now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
