"""Benchmark `voiceguard scan`: files per second and audio seconds per wall second on a generated folder.

    python scripts/bench_scan.py                  # 1,000 files of 5-30 s, 2 workers
    python scripts/bench_scan.py -n 200 --workers 2 --checkpoint checkpoints/voiceguard.safetensors

Generates speech-like recordings (harmonics of a wandering f0, syllable-rate AM, noise) at 16 kHz, half FLAC
and half WAV, in a temporary folder, then times the `voiceguard scan` command on them (start-up, model
loading and worker start included) and reports the peak resident memory of the largest process.
``bench_scan(...)`` returns the figures as a dict, for scripts/bench.py.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16_000  # Hz of the generated files


def speech_like(seconds: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced-speech-like signal [shape=(n,), dtype=float32] at ``sr`` Hz."""
    n = int(sr * seconds)
    t = np.arange(n, dtype=np.float32) / sr
    f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = np.zeros(n, np.float32)
    for k in range(1, 13):
        x += np.sin(k * phase).astype(np.float32) / k
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6)), 0, None) ** 0.7
    return np.clip(0.25 * x * syllables + 0.005 * rng.standard_normal(n), -0.99, 0.99).astype(np.float32)


def generate(folder: Path, n: int, *, min_seconds: float = 5.0, max_seconds: float = 30.0, seed: int = 0) -> float:
    """Write ``n`` files into ``folder`` (half FLAC, half WAV); returns their total length in seconds."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for i in range(n):
        dur = float(rng.uniform(min_seconds, max_seconds))
        ext = "flac" if i % 2 else "wav"
        sf.write(folder / f"call{i:05d}.{ext}", speech_like(dur, rng), SAMPLE_RATE)
        total += dur
    return total


def bench_scan(n: int = 1000, *, workers: int = 2, min_seconds: float = 5.0, max_seconds: float = 30.0,
               checkpoint: str | None = None, batch_size: int | None = None, keep: str | None = None,
               device: str | None = None) -> dict:
    """Generate ``n`` files and time ``voiceguard scan`` over them; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="voiceguard-bench-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        folder = work / "calls"
        t = time.perf_counter()
        audio = generate(folder, n, min_seconds=min_seconds, max_seconds=max_seconds)
        gen_s = time.perf_counter() - t
        if checkpoint is None:
            default = REPO / "checkpoints" / "voiceguard.safetensors"
            if default.exists():
                checkpoint = str(default)
            else:  # no trained model here: time a random-weight one (same architecture, same cost)
                from voiceguard import checkpoint as ckpt
                from voiceguard.detector import Detector

                d = Detector.untrained()
                checkpoint = str(ckpt.save(work / "untrained", d.model, d.config))
        out = work / "results.csv"
        if out.exists():
            out.unlink()
        cmd = [sys.executable, "-m", "voiceguard", "scan", str(folder), "--out", str(out), "--checkpoint",
               checkpoint, "--workers", str(workers), "-q"]
        if batch_size:
            cmd += ["--batch-size", str(batch_size)]
        if device:
            cmd += ["--device", device]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"scan failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        rows = out.read_text().count("\n") - 1
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return {"files": n, "rows": rows, "workers": workers, "device": device or "default",
            "audio_seconds": round(audio, 1), "mean_file_seconds": round(audio / n, 1), "wall_seconds": round(wall, 2),
            "files_per_second": round(n / wall, 2), "audio_seconds_per_wall_second": round(audio / wall, 1),
            "peak_rss_mib_largest_process": round(peak_mib, 1), "generate_seconds": round(gen_s, 1),
            "cpu_count": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--files", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--checkpoint", help="default: checkpoints/voiceguard.safetensors, else a random-weight model")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it")
    p.add_argument("--device", help="torch device of the workers (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = bench_scan(args.files, workers=args.workers, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                   checkpoint=args.checkpoint, batch_size=args.batch_size, keep=args.keep,
                   device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"scan of {r['files']} files ({r['audio_seconds'] / 3600:.2f} h, {r['mean_file_seconds']} s each) "
              f"with {r['workers']} workers ({r['device']} device) on {r['cpu_count']} CPUs: "
              f"{r['wall_seconds']} s wall, "
              f"{r['files_per_second']} files/s, {r['audio_seconds_per_wall_second']:.0f} s of audio per second "
              f"(x real time), peak RSS {r['peak_rss_mib_largest_process']:.0f} MiB (largest process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
