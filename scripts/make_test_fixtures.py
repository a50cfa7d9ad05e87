#!/usr/bin/env python
"""Rebuild tests/fixtures/ (small, licence-clean clips from ../shared/corpus) and its attribution file.

real/: AMI meeting excerpts (CC BY 4.0, via pyannote/pyannote-audio; a source held out from training),
       LibriSpeech (CC BY 4.0, via resemble-ai/Resemblyzer), CML-TTS ground truth (CC BY 4.0).
fake/: CML-TTS YourTTS output (CC BY 4.0), Vocos copy-synthesis (MIT, gemelo-ai/vocos; held out from
       training), VITS (LJSpeech public domain / VCTK CC BY 4.0, jaywalnut310/vits-demo).
Each clip is a 4 s excerpt (the part with the most speech), 16 kHz 16-bit FLAC.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from voiceguard import audio  # noqa: E402
from voiceguard.vad import speech_mask  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
PLAN = [  # (folder, source, label, count, excerpts per file)
    ("real", "pyannote+pyannote-audio", "bonafide", 7, 2),
    ("real", "resemble-ai+Resemblyzer", "bonafide", 12, 1),
    ("real", "freds0+CML-TTS-Dataset", "bonafide", 8, 1),
    ("fake", "freds0+CML-TTS-Dataset", "spoof", 8, 1),
    ("fake", "gemelo-ai+vocos", "spoof", 6, 1),
    ("fake", "jaywalnut310+vits-demo", "spoof", 4, 1),
]
SECONDS = 4.0


def excerpts(x: np.ndarray, k: int, n: int) -> list[np.ndarray]:
    """The k non-overlapping n-sample excerpts with the most speech."""
    m = speech_mask(x).astype(np.float64)
    if len(x) <= n:
        return [x]
    c = np.concatenate([[0], np.cumsum(m)])
    score = c[n:] - c[:-n]
    out = []
    for _ in range(k):
        i = int(np.argmax(score))
        if score[i] < 0:
            break
        out.append(x[i: i + n])
        score[max(0, i - n + 1): i + n] = -1
    return out


def main() -> int:
    rows = list(csv.DictReader(open(CORPUS / "manifest.csv", newline="")))
    out = ROOT / "tests" / "fixtures"
    attribution = ["file,source,corpus_path,speaker,lang,license"]
    for folder, source, label, count, per in PLAN:
        (out / folder).mkdir(parents=True, exist_ok=True)
        cands = [r for r in rows if r["source"] == source and r["label"] == label and float(r["duration"]) >= 3.0]
        seen, picked = set(), []
        for r in cands:  # one clip per speaker first
            key = r["speaker"] or r["path"]
            if key not in seen:
                seen.add(key)
                picked.append(r)
        picked = (picked + [r for r in cands if r not in picked])[:count]
        for r in picked:
            x = audio.load(CORPUS / r["path"])[0]
            for j, ex in enumerate(excerpts(x, per, int(SECONDS * 16000))):
                name = f"{source.split('+')[0]}_{Path(r['path']).stem[-24:]}_{j}.flac".replace(" ", "_")
                sf.write(out / folder / name, ex, 16000, subtype="PCM_16")
                attribution.append(f"{folder}/{name},{source},{r['path']},{r['speaker']},{r['lang']},"
                                   f"\"{r['license']}\"")
    (out / "ATTRIBUTION.csv").write_text("\n".join(attribution) + "\n")
    print(len(attribution) - 1, "clips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
