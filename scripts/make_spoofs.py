#!/usr/bin/env python3
"""Generate local training spoofs with :func:`voiceguard.synth.generate`.

Two parts, both written into one ``OUT/manifest.csv`` (rewritten after each batch, so partial
results are usable while the run goes on; rerunning resumes and skips finished clips):

* TTS: ``--en`` English and ``--it`` Italian clips spread over all installed engines/voices
  (``--piper`` of the English ones from the neural piper voice);
* copy-synthesis: ``--n-real`` real (``bonafide``) clips of a corpus manifest, ``--min-dur`` to
  ``--max-dur`` s long, picked round-robin over (source, language) groups and their speakers
  (Italian and English weighted up, ``--lang-weight``), each vocoded once with a vocoder
  chosen round-robin among ``--vocoders``.

Example::

    nice -n 10 python scripts/make_spoofs.py --out data/gen --corpus /work/shared/corpus
"""
from __future__ import annotations

import argparse
import csv
import logging
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voiceguard import synth  # noqa: E402
from voiceguard.errors import VoiceGuardError  # noqa: E402

log = logging.getLogger("make_spoofs")


def pick_real(corpus: Path, n: int, min_dur: float, max_dur: float, seed: int,
              weights: dict[str, int] | None = None) -> list[dict]:
    """Pick up to ``n`` bonafide clips spread evenly over sources, then speakers.

    Round-robin over (source, lang) groups, a group taking ``weights[lang]`` clips (default 1)
    per round; inside a group, round-robin over its speakers, so a source with many speakers
    does not crowd out the others.
    """
    man = corpus / "manifest.csv"
    if not man.is_file():
        raise SystemExit(f"corpus manifest {man} not found")
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    with man.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            try:
                dur = float(r.get("duration") or 0)
            except ValueError:
                continue
            if r.get("label") != "bonafide" or not (min_dur <= dur <= max_dur):
                continue
            if not (corpus / r["path"]).is_file():
                continue
            groups[(r["source"], r.get("lang", ""))][r.get("speaker", "")].append(r)
    rnd = random.Random(seed)
    queues: dict[tuple, list[dict]] = {}
    for key in sorted(groups):
        speakers = sorted(groups[key])
        rnd.shuffle(speakers)
        for spk in speakers:
            rnd.shuffle(groups[key][spk])
        # interleave the speakers of this group
        order: list[dict] = []
        while any(groups[key][s] for s in speakers):
            order.extend(groups[key][s].pop() for s in speakers if groups[key][s])
        queues[key] = order[::-1]  # pop() from the end takes them in interleaved order
    keys = sorted(queues)
    rnd.shuffle(keys)
    picked: list[dict] = []
    while len(picked) < n and any(queues[k] for k in keys):
        for k in keys:
            for _ in range((weights or {}).get(k[1], 1)):
                if queues[k] and len(picked) < n:
                    picked.append(queues[k].pop())
    rnd.shuffle(picked)  # so the vocoder round-robin does not follow the groups
    return [{"path": str(corpus / r["path"]), "orig_path": r["path"],
             "speaker": r.get("speaker") or r["source"], "lang": r.get("lang", ""),
             "orig_source": r["source"]} for r in picked]


def split(total: int, parts: dict[str, int | None]) -> dict[str, int]:
    """Fixed counts where given, the rest of ``total`` shared evenly among the others."""
    fixed = {k: v for k, v in parts.items() if v is not None}
    free = [k for k, v in parts.items() if v is None]
    rest = max(0, total - sum(fixed.values()))
    out = dict(fixed)
    for i, k in enumerate(free):
        out[k] = rest // len(free) + (1 if i < rest % len(free) else 0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/gen"))
    ap.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus"))
    ap.add_argument("--en", type=int, default=250, help="English TTS clips in all")
    ap.add_argument("--it", type=int, default=250, help="Italian TTS clips in all")
    ap.add_argument("--piper", type=int, default=80, help="of the English clips, from piper")
    ap.add_argument("--n-real", type=int, default=300, help="real clips to vocode")
    ap.add_argument("--min-dur", type=float, default=2.0)
    ap.add_argument("--max-dur", type=float, default=12.0)
    ap.add_argument("--engines", nargs="*", default=None,
                    help="default: all installed but kokoro (its clips are a separate step: data/gen3, see the "
                         "model card)")
    ap.add_argument("--vocoders", nargs="*", default=["world", "griffinlim", "lpc"],
                    help="copy-synthesis vocoders (default: world griffinlim lpc, the shipped model's recipe; "
                         "hifigan copies are a separate step, scripts/make_more_vocoded.py)")
    ap.add_argument("--lang-weight", nargs="*", default=["it=6", "en=2"], metavar="LANG=K",
                    help="real clips picked per round from groups of this language (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="ignore an existing manifest")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")

    engines = args.engines if args.engines is not None else [e for e in synth.available_engines() if e != "kokoro"]
    missing = [e for e in synth.ENGINES if e not in engines]
    if missing:
        log.warning("engines not used/installed: %s", ", ".join(missing))

    # batches: fast engines first, then the vocoders, then piper (slowest per clip)
    plan: list[tuple[str, str, int]] = []
    for lang, total in (("en", args.en), ("it", args.it)):
        speakers = [e for e in engines if lang in synth.ENGINES[e].voices]
        if not speakers or total <= 0:
            continue
        fixed = {e: (args.piper if e == "piper" else None) for e in speakers}
        for e, c in split(total, fixed).items():
            if c > 0:
                plan.append((e, lang, c))
    plan.sort(key=lambda p: p[0] == "piper")
    fast = [p for p in plan if p[0] != "piper"]
    slow = [p for p in plan if p[0] == "piper"]

    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def progress(done: int, total: int, msg: str) -> None:
        if done % 25 == 0 or done == total:
            log.info("%d/%d %s", done, total, msg)

    def run_tts(batch: list[tuple[str, str, int]], first: bool) -> None:
        for i, (e, lang, c) in enumerate(batch):
            t = time.monotonic()
            rows = synth.generate(args.out, engines={e: c}, langs=(lang,), seed=args.seed,
                                  resume=not (args.fresh and first and i == 0),
                                  progress=progress)
            key = f"{synth.ENGINES[e].program}/{lang}"
            stats[key][0] += len(rows)
            stats[key][1] += time.monotonic() - t
            log.info("TTS %s: %d clips in %.1f s", key, len(rows), time.monotonic() - t)

    try:
        run_tts(fast, first=True)
        if args.n_real > 0 and args.vocoders:
            weights = {w.split("=")[0]: int(w.split("=")[1]) for w in args.lang_weight}
            clips = pick_real(args.corpus, args.n_real, args.min_dur, args.max_dur, args.seed,
                              weights)
            log.info("vocoding %d real clips from %d sources", len(clips),
                     len({c["orig_source"] for c in clips}))
            t = time.monotonic()
            rows = synth.generate(args.out, engines=(), real_clips=clips,
                                  vocoders=args.vocoders, seed=args.seed,
                                  resume=not (args.fresh and not fast), progress=progress)
            dt = time.monotonic() - t
            for v in args.vocoders:
                k = sum(r["generator"] == v for r in rows)
                stats[v][0] += k
            log.info("vocoders: %d clips in %.1f s", len(rows), dt)
            stats["(all vocoders)"] = [len(rows), dt]
        run_tts(slow, first=not fast and not args.n_real)
    except VoiceGuardError as err:
        log.error("%s", err)
        return 1

    rows = synth.read_manifest(args.out / "manifest.csv")
    counts: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for r in rows:
        counts[r["generator"]][0] += 1
        counts[r["generator"]][1] += float(r.get("duration") or 0) / 60.0
    log.info("manifest %s: %d rows", args.out / "manifest.csv", len(rows))
    for g, (k, minutes) in sorted(counts.items()):
        log.info("  %-14s %4d clips %6.1f min audio", g, k, minutes)
    for g, (k, sec) in sorted(stats.items()):
        if sec:
            log.info("  compute %-14s %4d clips %6.1f s", g, k, sec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
