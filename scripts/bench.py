#!/usr/bin/env python
"""Speed and memory benchmarks (not tests): prints a Markdown table to paste into the README.

    .venv/bin/python scripts/bench.py                 # 10- and 60-minute calls, 2-hour RSS, --help, scan
    .venv/bin/python scripts/bench.py --minutes 10    # one length only
    .venv/bin/python scripts/bench.py --no-scan
    .venv/bin/python scripts/bench.py --device cuda   # model and features on the GPU

Each case runs in a fresh subprocess limited to ``--threads`` torch/BLAS threads, so its peak RSS is its own.
"End to end" is ``Detector.score_file`` (decode, resample, VAD, windows, features, model, aggregation);
"floor" is decode + resample + features of the same windows, without the VAD and the model.
Recordings are synthetic speech-like signals in a typical call-recorder format: 8 kHz mu-law WAV.
Figures are ratios measured in one run on whatever machine runs this; the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASE = r"""
import json, os, resource, sys, time
import torch
torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
mode, path, ckpt, device = sys.argv[1:5]
t0 = time.perf_counter()
if mode == "e2e":
    from voiceguard.detector import Detector
    det = Detector.load(ckpt or None, device=device)
    t1 = time.perf_counter()
    r = det.score_file(path)
    seconds, extra = r.duration, {"verdict": r.verdict, "windows": len(r.segments)}
else:
    import numpy as np
    from voiceguard import audio
    from voiceguard import checkpoint
    from voiceguard.features import build_frontend
    cfg = checkpoint.load(ckpt or None)[1]  # the same windows and features as the end-to-end case
    fe = build_frontend(cfg.front_ends).to(device)
    win, hop = int(cfg.window.seconds * 16000), int(cfg.window.hop_seconds * 16000)
    t1 = time.perf_counter()
    n, rest = 0, np.zeros(0, np.float32)
    with torch.inference_mode():
        for block in audio.iter_blocks(path):
            x = np.concatenate([rest, block[0]])
            k = max(0, (len(x) - win) // hop + 1)
            if k:
                idx = np.arange(k)[:, None] * hop + np.arange(win)[None, :]
                for i in range(0, k, 32):
                    fe(torch.from_numpy(x[idx[i:i + 32]]).to(device))
                rest = x[k * hop:]
            else:
                rest = x
            n += block.shape[1]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds, extra = n / 16000, {}
t2 = time.perf_counter()
print(json.dumps({"audio_seconds": seconds, "load_s": t1 - t0, "run_s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
"""


def make_call(path: Path, minutes: float, sr: int = 8000) -> Path:
    """Write a speech-like 8 kHz mu-law call, block by block."""
    import soundfile as sf

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import speech_like

    with sf.SoundFile(str(path), "w", sr, 1, subtype="ULAW") as f:
        for i in range(int(np.ceil(minutes * 2))):
            f.write(speech_like(30.0, sr, seed=i, f0=110 + 10 * (i % 9)))
    return path


def run_case(mode: str, path: Path, ckpt: str, threads: int, device: str = "cpu") -> dict:
    env = dict(os.environ, BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CASE, mode, str(path), ckpt, device], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def help_seconds() -> float:
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "voiceguard", "--help"], capture_output=True, check=True, cwd=ROOT)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    ap.add_argument("--rss-minutes", type=float, default=120, help="length of the peak-RSS-only case (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch device of the model and features (e.g. cuda)")
    ap.add_argument("--checkpoint", default="", help="default: the shipped checkpoint")
    ap.add_argument("--no-scan", action="store_true", help="skip the 1,000-file scan benchmark")
    ap.add_argument("--scan-files", type=int, default=1000)
    ap.add_argument("--json", metavar="OUT", help="also write the raw figures as JSON")
    args = ap.parse_args(argv)
    results: dict = {"threads": args.threads, "device": args.device, "calls": []}
    with tempfile.TemporaryDirectory() as tmp:
        lengths = list(args.minutes) + ([args.rss_minutes] if args.rss_minutes else [])
        for minutes in lengths:
            path = make_call(Path(tmp) / f"call_{minutes:g}min.wav", minutes)
            e2e = run_case("e2e", path, args.checkpoint, args.threads, args.device)
            row = {"minutes": minutes, "e2e_x_realtime": e2e["audio_seconds"] / e2e["run_s"],
                   "e2e_s": e2e["run_s"], "e2e_peak_rss_mb": e2e["peak_rss_mb"], "model_load_s": e2e["load_s"]}
            if minutes in args.minutes:
                floor = run_case("floor", path, args.checkpoint, args.threads, args.device)
                row.update(floor_x_realtime=floor["audio_seconds"] / floor["run_s"], floor_s=floor["run_s"],
                           floor_peak_rss_mb=floor["peak_rss_mb"])
            results["calls"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            path.unlink()
    results["help_s"] = help_seconds()

    print(f"Scoring one call on {args.device}, {args.threads} CPU threads (8 kHz mu-law WAV; torch "
          f"{__import__('torch').__version__}):\n")
    print("| call | end to end (x real time) | floor: decode+resample+features (x real time) | e2e / floor time "
          "| peak RSS |")
    print("|---|---|---|---|---|")
    for r in results["calls"]:
        if "floor_s" in r:
            print(f"| {r['minutes']:g} min | {r['e2e_x_realtime']:.0f}x ({r['e2e_s']:.1f} s) | "
                  f"{r['floor_x_realtime']:.0f}x ({r['floor_s']:.1f} s) | {r['e2e_s'] / r['floor_s']:.1f} | "
                  f"{r['e2e_peak_rss_mb']:.0f} MB |")
        else:
            print(f"| {r['minutes']:g} min | {r['e2e_x_realtime']:.0f}x ({r['e2e_s']:.1f} s) | - | - | "
                  f"{r['e2e_peak_rss_mb']:.0f} MB |")
    print(f"\n`voiceguard --help`: {results['help_s']:.2f} s (best of 3)")
    if not args.no_scan:
        print("\nScan of a folder (scripts/bench_scan.py): files of 5-30 s, then files of exactly 10 s (the files/s "
              "target's case):\n")
        for lengths in (["--min-seconds", "5", "--max-seconds", "30"], ["--min-seconds", "10", "--max-seconds", "10"]):
            scan = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_scan.py"), "-n", str(args.scan_files),
                                   "--device", args.device, *lengths], capture_output=True, text=True, cwd=ROOT)
            print(scan.stdout.strip() or scan.stderr.strip()[-2000:])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
