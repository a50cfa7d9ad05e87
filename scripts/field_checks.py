#!/usr/bin/env python
"""Checks of the shipped checkpoint beyond its validation EER, written for the model card.

    .venv/bin/python scripts/field_checks.py [--checkpoint checkpoints/voiceguard] [--out checkpoints/card_sections.json]

1. Long calls: pseudo-calls of several minutes stitched from held-out *real* clips (sources never trained on),
   clean and as 8 kHz mu-law copies: how many are called synthetic? Then the same calls with 20 s of a held-out
   generator's speech inserted (and, as an upper bound, 20 s of a generator seen in training): how many are
   flagged, and does a flagged region cover the insertion?
2. Shortcut cues on held-out real clips: share flagged before/after resampling, codecs, padding, gain.
3. Long calls through telephone codecs: longer pseudo-calls (14 min; call-centre recordings run 5-14 min) of
   held-out real speech through mu-law, GSM 6.10, AMR-NB and noise: how many are called synthetic, and how close
   the highest call probability comes to the threshold. ``--only codec-calls`` runs this check alone.
4. Copies against their originals: each vocoder copy-synthesis (WORLD, Griffin-Lim, LPC) of a held-out real clip
   scored against that very clip, clean and as a telephone copy. Same speaker, words and recording: only the
   synthesis differs, so the share of copies scored above their original measures what the model sees of the
   synthesis itself, apart from any difference between sources (50 %: it sees nothing).
Figures go to a JSON file that scripts/model_card.py turns into sections of checkpoints/README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.train_default import HELD_OUT_SOURCES, heldout_valset  # noqa: E402
from voiceguard import audio  # noqa: E402
from voiceguard.augment import add_noise, codec, telephone_copy  # noqa: E402
from voiceguard.data import read_manifest  # noqa: E402
from voiceguard.detector import Detector  # noqa: E402
from voiceguard.signals import busy, dtmf, hold_music, ringback  # noqa: E402
from voiceguard.train import copy_pairs, score_valset  # noqa: E402

SR = 16000


def stitch(clips: list[np.ndarray], minutes: float, rng) -> np.ndarray:
    out, n = [], 0
    while n < minutes * 60 * SR:
        x = clips[int(rng.integers(len(clips)))]
        x = x * 10 ** (rng.uniform(-6, 6) / 20) / (np.abs(x).max() + 1e-9) * 0.5
        gap = np.zeros(int(rng.uniform(0.2, 1.0) * SR), np.float32)
        out += [x.astype(np.float32), gap]
        n += len(x) + len(gap)
    return np.concatenate(out)


#: the channels of the codec long-call check: name -> transform of a 16 kHz call
CALL_CHANNELS = {
    "clean": lambda x: x,
    "µ-law 8 kHz (300–3400 Hz)": lambda x: telephone_copy(x, "ulaw"),
    "GSM 6.10 (300–3400 Hz)": lambda x: telephone_copy(x, "gsm"),
    "AMR-NB 12.2 kbit/s (300–3400 Hz)": lambda x: telephone_copy(x, "amr"),
    "µ-law with pink noise at 15 dB SNR": lambda x: telephone_copy(add_noise(x, 15.0, np.random.default_rng(1)),
                                                                   "ulaw"),
}


def codec_calls(det: Detector, real: list[np.ndarray], calls: int, minutes: float) -> str:
    """Real pseudo-calls of ``minutes`` through each of :data:`CALL_CHANNELS`: verdicts and call probabilities."""
    rng = np.random.default_rng(5)
    probs: dict[str, list[float]] = {name: [] for name in CALL_CHANNELS}
    flagged: dict[str, int] = {name: 0 for name in CALL_CHANNELS}
    skipped = []
    for i in range(calls):
        call = stitch(real, minutes, rng)
        for name, f in CALL_CHANNELS.items():
            try:
                y = f(call)
            except RuntimeError as e:  # AMR-NB without sox
                skipped.append(f"{name}: {e}")
                continue
            r = det.score_array(y, SR)
            probs[name].append(r.probability)
            flagged[name] += r.verdict == "synthetic"
            print(json.dumps({"call": i, "channel": name, "p": r.probability, "verdict": r.verdict}), flush=True)
    lines = ["| channel | real calls called synthetic | highest call probability | mean call probability |",
             "|---|---|---|---|"]
    for name, ps in probs.items():
        if ps:
            lines.append(f"| {name} | {flagged[name]} of {len(ps)} | {max(ps):.3f} | {np.mean(ps):.3f} |")
    note = f" Not run: {sorted(set(skipped))}." if skipped else ""
    return (f"{calls} pseudo-calls of about {minutes:g} min stitched from real clips of the held-out sources (as "
            "under \"Long calls\", other draws), each scored clean and through telephone codecs (µ-law, GSM and "
            "AMR-NB after a 300–3400 Hz band-pass at 8 kHz; noise added before the band-pass); threshold "
            f"{det.threshold:.3f}. Measured by `scripts/field_checks.py`.{note}\n\n" + "\n".join(lines))


def copies_against_originals(det: Detector) -> str:
    """Share of held-out copy-syntheses scored above their own original, per vocoder and condition (Markdown)."""
    val = heldout_valset(det.config.training)
    logits = score_valset(det, val)  # raw call logits: the comparison needs no calibration
    wins: dict[tuple[str, str], list[bool]] = {}
    for cond in ("clean", "telephone"):
        idx = [i for i, c in enumerate(val.condition) if c == cond]
        items = [val.items[i] for i in idx]
        for f, r in copy_pairs(items):
            zf, zr = logits[idx[f]], logits[idx[r]]
            if np.isfinite(zf) and np.isfinite(zr):  # an inconclusive clip counts neither way
                wins.setdefault((items[f].generator.split("/")[0], cond), []).append(bool(zf > zr))
    lines = ["| vocoder | pairs | copy scored above its original: clean | telephone |", "|---|---|---|---|"]
    for gen in sorted({g for g, _ in wins}):
        c, t = wins.get((gen, "clean"), []), wins.get((gen, "telephone"), [])
        share = lambda w: f"{np.mean(w):.0%}" if w else "–"  # noqa: E731
        lines.append(f"| {gen} | {len(c)} | {share(c)} | {share(t)} |")
        print(gen, len(c), share(c), share(t), flush=True)
    return ("Each vocoder copy-synthesis of a held-out real clip against that very clip (same speaker, words and "
            "recording; only the synthesis differs), clean and as a telephone copy: how often the copy gets the "
            "higher score. 50 % means the model sees nothing of the synthesis itself; the held-out EER also "
            "mixes in differences between sources.\n\n" + "\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus" / "manifest.csv"))
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--long-minutes", type=float, default=14.0, help="length of the codec long-call check's calls")
    ap.add_argument("--out", default=str(ROOT / "checkpoints" / "card_sections.json"))
    ap.add_argument("--only", choices=("codec-calls",), help="run this check alone (the others keep their figures)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    det = Detector.load(args.checkpoint, device="cpu")
    # the sources this checkpoint never trained on (as recorded by scripts/train_default.py)
    held_out = det.config.training.get("data", {}).get("held_out_sources") or HELD_OUT_SOURCES
    corpus = read_manifest(args.corpus)
    items = [it for it in corpus if it.source in held_out]
    real = [audio.load(it.path)[0] for it in items if it.label == 0]
    codec_section = {"Long calls through telephone codecs": codec_calls(det, real, args.calls, args.long_minutes)}
    if args.only == "codec-calls":
        return _write(args.out, codec_section)

    def fakes_to_splice(pool) -> list[tuple[str, np.ndarray]]:  # (generator, signal) of synthetic clips over 4 s
        loaded = ((it.generator, audio.load(it.path)[0]) for it in pool if it.label == 1 and it.extra.get("duration"))
        return [(g, x) for g, x in loaded if len(x) > 4 * SR]

    fakes = fakes_to_splice(items)
    # a generator seen in training, spliced in the same way: what the timeline finds once the model knows a voice
    # (as after `voiceguard finetune` on it), apart from how well it generalises to voices it never saw
    seen = [it for it in corpus if it.label == 1 and it.source not in held_out and it.extra.get("duration")]
    pick = np.random.default_rng(1).choice(len(seen), min(200, len(seen)), replace=False)
    seen_fakes = fakes_to_splice([seen[int(i)] for i in pick])

    rows = []
    for i in range(args.calls):
        call = stitch(real, args.minutes, rng)
        at = int(rng.uniform(0.2, 0.7) * len(call))
        for kind, pool in (("held-out", fakes), ("seen", seen_fakes)):
            gen, fake = pool[int(rng.integers(len(pool)))]
            fake = np.resize(fake, 20 * SR) * (0.5 / (np.abs(fake).max() + 1e-9))
            spliced = np.concatenate([call[:at], np.zeros(SR // 2, np.float32), fake.astype(np.float32),
                                      np.zeros(SR // 2, np.float32), call[at:]])
            span = ((at + SR // 2) / SR, (at + SR // 2 + 20 * SR) / SR)
            for cond, f in (("clean", lambda x: x), ("telephone", lambda x: telephone_copy(x, "ulaw"))):
                r_real = det.score_array(f(call), SR) if kind == "held-out" else None
                r_fake = det.score_array(f(spliced), SR)

                def in_insertion(seg) -> bool:
                    return seg is not None and seg.start < span[1] and seg.end > span[0]

                covered = any(in_insertion(s) for s in r_fake.regions)
                top_in = in_insertion(r_fake.top_segment)  # the window an analyst looks at first, flagged or not
                row = {"call": i, "condition": cond, "kind": kind, "minutes": round(len(call) / SR / 60, 1),
                       "inserted": gen, "spliced_p": r_fake.probability, "spliced_verdict": r_fake.verdict,
                       "region_covers_insertion": covered, "top_window_in_insertion": top_in}
                if r_real is not None:
                    row.update(real_p=r_real.probability, real_verdict=r_real.verdict)
                rows.append(row)
                print(json.dumps(row), flush=True)

    def count(cond, kind, key, value):
        return sum(1 for r in rows if r["condition"] == cond and r["kind"] == kind and r.get(key) == value)

    lines = ["| condition | real calls called synthetic | 20 s inserted from | calls flagged | ... with a region "
             "over the insertion | ... whose top-scoring window lies in the insertion |", "|---|---|---|---|---|---|"]
    for kind, what in (("held-out", "a held-out generator"), ("seen", "a generator seen in training")):
        for cond in ("clean", "telephone"):
            real_calls = f"{count(cond, 'held-out', 'real_verdict', 'synthetic')} of {args.calls}"
            lines.append(f"| {cond} | {real_calls if kind == 'held-out' else '(same calls)'} | {what} | "
                         f"{count(cond, kind, 'spliced_verdict', 'synthetic')} of {args.calls} | "
                         f"{count(cond, kind, 'region_covers_insertion', True)} of {args.calls} | "
                         f"{count(cond, kind, 'top_window_in_insertion', True)} of {args.calls} |")
    long_calls = (f"{args.calls} pseudo-calls of about {args.minutes:g} min, each stitched from real clips of the "
                  "held-out sources (levels varied ±6 dB, pauses 0.2–1 s), scored clean and as 300–3400 Hz µ-law "
                  "copies; then the same calls with 20 s of synthetic speech spliced in: from one held-out "
                  "generator (never trained on), or from a generator of the training sources (an upper bound: "
                  "what the timeline finds once the model knows a voice, as after `voiceguard finetune`). A 4 s "
                  "window overlaps those 20 s at about 24 of the call's ~380 s of start times, so a top window "
                  "lands there by chance in about 6 % of calls. "
                  "Measured by `scripts/field_checks.py`.\n\n" + "\n".join(lines))

    # the same real calls with what call recordings hold besides speech: is any of it scored, and does it flip a call?
    plain = Detector(det.model, det.config.replace(vad=replace(det.config.vad, neural=False)), device="cpu")
    tone_rows = []
    for i in range(args.calls):
        call = stitch(real, args.minutes, np.random.default_rng(100 + i))
        mid = len(call) // 2
        parts = [ringback(12.0), call[:mid], dtmf(6.0), hold_music(40.0, seed=i), call[mid:], busy(6.0)]
        x = np.concatenate(parts).astype(np.float32)
        bounds = np.cumsum([0] + [len(p) for p in parts]) / SR
        spans = [(bounds[k], bounds[k + 1]) for k in (0, 2, 3, 5)]  # the non-speech parts, in s
        for cond, f in (("clean", lambda x: x), ("telephone", lambda x: telephone_copy(x, "ulaw"))):
            y = f(x)
            for name, d in (("with", det), ("without", plain)):
                r = d.score_array(y, SR)
                inside = [s for s in r.segments if any(s.start >= a - 0.01 and s.end <= b + 0.01 for a, b in spans)]
                row = {"call": i, "condition": cond, "neural_vad": name, "verdict": r.verdict, "p": r.probability,
                       "windows_in_tones": len(inside), "windows": len(r.segments)}
                tone_rows.append(row)
                print(json.dumps(row), flush=True)
    tl = ["| condition | Silero check | real calls called synthetic | windows scored inside the tones and music |",
          "|---|---|---|---|"]
    for cond in ("clean", "telephone"):
        for name in ("with", "without"):
            rs = [r for r in tone_rows if r["condition"] == cond and r["neural_vad"] == name]
            tl.append(f"| {cond} | {name} | {sum(r['verdict'] == 'synthetic' for r in rs)} of {len(rs)} | "
                      f"{sum(r['windows_in_tones'] for r in rs)} of {sum(r['windows'] for r in rs)} scored |")
    tones = (f"{args.calls} other pseudo-calls of about {args.minutes:g} min stitched like those above, with 12 s of "
             "ring-back tone before the speech, 6 s of DTMF key tones and 40 s of music on hold (a synthetic "
             "melody) in the middle, and 6 s of busy tone at the end; scored clean and as µ-law copies, with the "
             "Silero VAD check (as shipped) and without it (WebRTC VAD alone, as before it).\n\n" + "\n".join(tl))

    # shortcut cues on held-out real clips
    sel = [real[i] for i in rng.choice(len(real), min(120, len(real)), replace=False)]

    def flagged(clips):
        ps = [o.results[0].probability for o in det.score_arrays(clips, SR)]
        return float(np.mean([p is not None and p >= det.threshold for p in ps]))

    z = np.zeros(SR, np.float32)
    voices = [real[int(i)] for i in rng.choice(len(real), 5, replace=False)]

    def under(x, noise, snr_db):  # x with noise added snr_db below it
        return x + noise * np.sqrt(np.mean(x ** 2) / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr_db / 10))

    def babble(x, snr_db):  # five other held-out real voices summed
        return under(x, sum(np.resize(v, len(x)) for v in voices), snr_db)

    def music_under(x, snr_db):  # the synthetic melody of the tones check
        return under(x, hold_music(len(x) / SR + 1.0, seed=len(x) % 97)[: len(x)], snr_db)

    transforms = {
        "unchanged": lambda x: x,
        "resampled 16→8→16 kHz": lambda x: audio.resample(audio.resample(x, SR, 8000), 8000, SR),
        "µ-law 8 kHz": lambda x: codec(x, "ulaw"),
        "GSM 6.10": lambda x: codec(x, "gsm"),
        "Opus": lambda x: codec(x, "opus16"),
        "MP3": lambda x: codec(x, "mp3_16"),
        "padded with 1 s digital silence": lambda x: np.concatenate([z, x, z]),
        "+12 dB (no clipping)": lambda x: x * min(3.98, 0.99 / (np.abs(x).max() + 1e-9)),
        "−12 dB": lambda x: x * 0.251,
        "hard-clipped at +15 dB": lambda x: np.clip(x * 5.62 / (np.abs(x).max() + 1e-9), -1.0, 1.0),
        "white noise at 20 dB SNR": lambda x: x + np.random.default_rng(0).standard_normal(len(x))
        * np.sqrt(np.mean(x ** 2) / 100.0),
        "5 other voices under it at 10 dB": lambda x: babble(x, 10.0),
        "music on hold under it at 10 dB": lambda x: music_under(x, 10.0),
        "music on hold under it at 5 dB": lambda x: music_under(x, 5.0),
        "µ-law telephone copy, clipped at +10 dB": lambda x: telephone_copy(
            np.clip(x * 3.16 / (np.abs(x).max() + 1e-9), -1.0, 1.0), "ulaw"),
    }
    cues = ["| transform | real clips flagged |", "|---|---|"]
    for name, f in transforms.items():
        share = flagged([f(x).astype(np.float32) for x in sel])
        cues.append(f"| {name} | {share:.1%} |")
        print(name, share, flush=True)
    shortcut = (f"{len(sel)} real clips of the held-out sources, each transformed; share given the verdict "
                "`synthetic` at the stored threshold.\n\n" + "\n".join(cues))
    out = {"Long calls (held-out real speech)": long_calls, **codec_section,
           "Tones and music on hold in real calls": tones, "Channel cues on held-out real speech": shortcut,
           "Vocoded copies against their own originals": copies_against_originals(det)}
    return _write(args.out, out)


def _write(path: str, sections: dict) -> int:
    """Add ``sections`` to the JSON file at ``path``, keeping the others (what finetune_check.py wrote)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    Path(path).write_text(json.dumps({**old, **sections}, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
