#!/usr/bin/env python
"""Check that scoring on a GPU gives the CPU's results (run where CUDA is present; not a test: CI has no GPU).

    python scripts/cuda_check.py                     # the shipped checkpoint, examples/ and tests/fixtures/
    python scripts/cuda_check.py --json cuda.json --checkpoint my.safetensors

Scores the same recordings with the same checkpoint on ``cpu`` and on ``cuda`` and reports, per file, the
largest difference in call probability and in window probability, and whether the verdicts agree; then
scores 256 generated speech-like clips through ``Detector.score_arrays`` (windows of many clips packed into
shared batches) both ways. Exits 1 when a verdict differs or a probability differs by more than ``--tolerance``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _flat(results) -> list:
    return results if isinstance(results, list) else [results]


def compare(a, b) -> dict:
    """Largest call- and window-probability differences and verdict agreement of two scorings of one file."""
    call, window, same = 0.0, 0.0, True
    for ra, rb in zip(_flat(a), _flat(b)):
        if (ra.probability is None) != (rb.probability is None):
            return {"call": float("inf"), "window": float("inf"), "same_verdict": False}
        if ra.probability is not None:
            call = max(call, abs(ra.probability - rb.probability))
        pa = np.array([s.probability for s in ra.segments], dtype=float)
        pb = np.array([s.probability for s in rb.segments], dtype=float)
        if pa.shape != pb.shape:
            return {"call": float("inf"), "window": float("inf"), "same_verdict": False}
        if len(pa):
            window = max(window, float(np.nanmax(np.abs(pa - pb))) if not np.isnan(pa).all() else 0.0)
        same &= ra.verdict == rb.verdict
    return {"call": call, "window": window, "same_verdict": same}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="default: the shipped checkpoint")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="largest probability difference accepted")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import torch

    from voiceguard.detector import Detector
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_scan import speech_like

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here", file=sys.stderr)
        return 2
    out: dict = {"torch": torch.__version__, "device": args.device,
                 "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                 "files": {}}
    dets = {d: Detector.load(args.checkpoint, device=d) for d in ("cpu", args.device)}
    files = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in {".wav", ".flac"})
    files += sorted(p for p in (ROOT / "tests" / "fixtures").rglob("*") if p.suffix in {".wav", ".flac"})
    worst = {"call": 0.0, "window": 0.0}
    ok = True

    def within(c: dict) -> bool:
        return c["same_verdict"] and c["call"] <= args.tolerance and c["window"] <= args.tolerance

    for path in files:
        for channels in ("mix", "each"):
            res = {d: det.score_file(path, channels=channels) for d, det in dets.items()}
            c = compare(res["cpu"], res[args.device])
            out["files"][f"{path.relative_to(ROOT)}:{channels}"] = c
            worst = {k: max(worst[k], c[k]) for k in worst}
            ok &= within(c)
    rng = np.random.default_rng(0)
    clips = [speech_like(float(rng.uniform(2, 12)), rng) for _ in range(256)]
    packed = {}
    for d, det in dets.items():
        t = time.perf_counter()
        packed[d] = [o.results[0] for o in det.score_arrays(clips, 16000)]
        packed[f"{d}_s"] = time.perf_counter() - t
    pc = [compare(a, b) for a, b in zip(packed["cpu"], packed[args.device])]
    out["packed"] = {"clips": len(clips), "call": max(c["call"] for c in pc), "window": max(c["window"] for c in pc),
                     "same_verdict": all(c["same_verdict"] for c in pc),
                     "seconds": {d: round(packed[f"{d}_s"], 2) for d in dets}}
    ok &= within(out["packed"])
    out.update(worst_file=worst, ok=bool(ok), tolerance=args.tolerance)
    print(f"{len(files)} files, mixed and per channel: largest difference cpu vs {args.device}: call "
          f"{worst['call']:.2e}, window {worst['window']:.2e}; verdicts "
          f"{'all the same' if all(c['same_verdict'] for c in out['files'].values()) else 'DIFFER'}")
    p = out["packed"]
    print(f"{p['clips']} generated clips packed into shared batches: call {p['call']:.2e}, window {p['window']:.2e}, "
          f"verdicts {'all the same' if p['same_verdict'] else 'DIFFER'}; {p['seconds']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
