#!/usr/bin/env python
"""More copy-synthesis spoofs (WORLD, Griffin-Lim; or HiFi-GAN) of training-side corpus real clips, into data/gen2.

The WaveFake recipe: a vocoded clip has the words, speaker, room and microphone of its real twin, so the only
difference the model can learn is the machine-made waveform, not the source's style. Real clips of the
held-out validation sources are never used; clips already vocoded in data/gen are skipped.

    .venv/bin/python scripts/make_more_vocoded.py --n 600
    .venv/bin/python scripts/make_more_vocoded.py --vocoders hifigan --out data/gen4 --n 450 --max-dur 8 --seed 4 \
        --source local-hifigan
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.train_default import HELD_OUT_SOURCES  # noqa: E402
from voiceguard import synth  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--done", type=Path, default=ROOT / "data" / "gen" / "manifest.csv")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "gen2")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocoders", nargs="+", default=["world", "griffinlim"], choices=list(synth.VOCODERS))
    ap.add_argument("--max-dur", type=float, default=12.0, help="longest real clip to vocode, in seconds")
    ap.add_argument("--source", default="local-vocoder",
                    help="source name of the copies in the manifest (synth.generate's vocoder_source)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    done = set()
    if args.done.exists():
        done = {r.get("orig_path", "") for r in csv.DictReader(open(args.done, newline=""))}
    by_source = defaultdict(list)
    for r in csv.DictReader(open(args.corpus / "manifest.csv", newline="")):
        if (r["label"] == "bonafide" and r["source"] not in HELD_OUT_SOURCES and 2.0 <= float(r["duration"]) <= args.max_dur
                and r["path"] not in done):
            by_source[r["source"]].append(r)
    rng = np.random.default_rng(args.seed)
    for rows in by_source.values():
        rng.shuffle(rows)
    picked = []
    while len(picked) < args.n and any(by_source.values()):
        for src in sorted(by_source):
            if by_source[src] and len(picked) < args.n:
                picked.append(by_source[src].pop())
    clips = [{"path": str(args.corpus / r["path"]), "speaker": r["speaker"] or r["source"], "lang": r["lang"],
              "orig_path": r["path"], "orig_source": r["source"]} for r in picked]
    logging.info("vocoding %d clips from %d sources", len(clips), len({r["source"] for r in picked}))
    synth.generate(args.out, real_clips=clips, engines=(), vocoders=args.vocoders, seed=args.seed,
                   vocoder_source=args.source, progress=lambda d, t, m: d % 50 == 0 and logging.info("%d/%d", d, t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
