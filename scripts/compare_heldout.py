#!/usr/bin/env python
"""Score several checkpoints on the same held-out validation set (clean + telephone copies), side by side.

    .venv/bin/python scripts/compare_heldout.py runs/E/voiceguard runs/G/voiceguard
    .venv/bin/python scripts/compare_heldout.py --fakes data/gen5/manifest.csv checkpoints/voiceguard runs/AH/voiceguard

The held-out set is the one recorded in the *last* checkpoint's training record (sources and local generators
it never trained on), so a model trained on more sources is compared with the others on data that none of
them saw. Prints call-level EER (all, clean, telephone) and per source / generator, as JSON.

``--fakes MANIFEST`` scores the synthetic clips of that manifest (say, a generator none of the checkpoints trained
on, made with ``voiceguard synth``) against the held-out real clips, in place of the held-out synthetic clips:
a test that played no part in choosing any checkpoint's epoch.

``--sources S [S ...]`` keeps only the held-out synthetic clips of those sources (all held-out real clips stay),
e.g. the neural generators alone (MARS5, Vocos, HierSpeech++, codec resynthesis, Kokoro), whose pooled EER is
then the overall figure (checkpoints first, as the option takes every name after it):

    .venv/bin/python scripts/compare_heldout.py checkpoints/voiceguard runs/T/voiceguard --sources \\
        Camb-ai+MARS5-TTS gemelo-ai+vocos sh-lee-prml+HierSpeechpp-demo codecfake+codecfake.github.io hexgrad+kokoro

``--codecs C [C ...]`` also scores every held-out clip through each of these narrowband codecs (``ulaw``, ``alaw``,
``gsm``, ``g721``, ``opus8``, ``mp3_8``, ``amr``), twice: after the 300-3400 Hz band-pass of the validation's
telephone copies, and resampled to 8 kHz alone (how a test set's "8 kHz µ-law / GSM copies" may well be made);
the EER of each is reported as ``eer_<codec> bp`` and ``eer_<codec> 8k``. The validation's telephone copies
cycle through µ-law, GSM, A-law and MP3, so its telephone figure is their mix.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.train_default import heldout_valset, per_source_report  # noqa: E402
from voiceguard.checkpoint import load  # noqa: E402
from voiceguard.data import read_manifest  # noqa: E402
from voiceguard.detector import Detector  # noqa: E402
from voiceguard.augment import NARROWBAND_CODECS, codec, telephone_copy  # noqa: E402
from voiceguard.metrics import eer  # noqa: E402
from voiceguard.train import ValSet, score_valset, val_metrics  # noqa: E402


def codec_copies(val: ValSet, codecs: list[str]) -> ValSet | None:
    """Each clean clip of ``val`` through each codec, after the telephone band-pass ("<codec> bp") and without it
    ("<codec> 8k"): the codec's own resampling to 8 kHz is then the only band limit."""
    if not codecs:
        return None
    clean = [i for i, c in enumerate(val.condition) if c == "clean"]
    items, sigs, cond = [], [], []
    for name in codecs:
        for tag, make in (("bp", lambda x: telephone_copy(x, name)), ("8k", lambda x: codec(x, name))):
            for i in clean:
                items.append(val.items[i])
                sigs.append(make(val.signals[i]))
                cond.append(f"{name} {tag}")
    return ValSet(items, sigs, cond)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--fakes", metavar="MANIFEST",
                    help="synthetic clips to score against the held-out real clips, instead of the held-out ones")
    ap.add_argument("--sources", nargs="+", metavar="SOURCE",
                    help="score only the held-out synthetic clips of these sources (against all held-out real clips)")
    ap.add_argument("--codecs", nargs="+", metavar="CODEC", default=[], choices=NARROWBAND_CODECS,
                    help="also score each held-out clip through these narrowband codecs, with and without the band-pass")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    _, last = load(args.checkpoints[-1])
    held = last.training["data"]["held_out_sources"]
    val = heldout_valset(last.training, fakes=read_manifest(args.fakes) if args.fakes else None,
                         sources=args.sources)
    if not val.labels.any():
        ap.error(f"no held-out synthetic clips{' of ' + ', '.join(args.sources) if args.sources else ''}")
    val = ValSet.join(val, codec_copies(val, args.codecs))
    cond = np.array(val.condition)
    out = {"held_out_sources": list(held), "files": int((cond == "clean").sum())}
    for ck in args.checkpoints:
        model, cfg = load(ck)
        logits = score_valset(Detector(model, cfg), val)
        base = np.isin(cond, ("clean", "telephone"))
        row = {k: round(v, 4) if isinstance(v, float) else v
               for k, v in val_metrics(np.where(base, logits, np.nan), val).items()}
        for c in dict.fromkeys(cond[~base]):
            ok = np.isfinite(logits) & (cond == c)
            if len(np.unique(val.labels[ok])) == 2:
                row[f"eer_{c}"] = round(float(eer(logits[ok], val.labels[ok])[0]), 4)
        for g, r in per_source_report(logits, val, cfg).items():
            row.update({f"{g} {c}": r[f"eer_{c}"] for c in ("clean", "telephone") if f"eer_{c}" in r})
        out[ck] = row
        print(ck, json.dumps(row), flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
