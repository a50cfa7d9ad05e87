#!/usr/bin/env python
"""Fit ``aggregation.length_penalty`` of an already trained checkpoint (new trainings fit it themselves).

    .venv/bin/python scripts/fit_length_penalty.py checkpoints/voiceguard

Re-scores the checkpoint's own held-out validation set (as recorded by scripts/train_default.py, clean and
telephone copies) and stores the spread of the real clips' call logits, exactly as ``train()`` does.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.train_default import heldout_valset  # noqa: E402
from voiceguard import checkpoint  # noqa: E402
from voiceguard.detector import Detector  # noqa: E402
from voiceguard.train import fit_length_penalty, score_valset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    args = ap.parse_args(argv)
    model, cfg = checkpoint.load(args.checkpoint)
    val = heldout_valset(cfg.training)
    penalty = fit_length_penalty(score_valset(Detector(model, cfg), val), val)
    cfg = cfg.replace(aggregation=replace(cfg.aggregation, length_penalty=penalty))
    path = checkpoint.save(args.checkpoint, model, cfg)
    print(f"{path}: length_penalty {penalty} (from {int((val.labels == 0).sum())} real validation scores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
