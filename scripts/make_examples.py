#!/usr/bin/env python
"""Rebuild the bundled examples in examples/ from ../shared/corpus (CC BY 4.0 sources only).

- human_en_librispeech.flac: LibriSpeech train-clean-100 5867-48852-0000 (CC BY 4.0), via resemble-ai/Resemblyzer
- human_it_cmltts.flac: CML-TTS Italian speaker 6698 ground truth (CC BY 4.0), via freds0/CML-TTS-Dataset
- synthetic_it_yourtts.flac: YourTTS trained on CML-TTS, Italian (CC BY 4.0), via freds0/CML-TTS-Dataset
- call_stereo_8k_ulaw.wav: a two-party "call" as a call recorder stores it: 8 kHz G.711 mu-law, stereo;
  channel 0 (agent) is the real LibriSpeech speaker, channel 1 (caller) takes turns with the YourTTS voice.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from voiceguard import audio  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "audio"
REAL_EN = CORPUS / "bonafide/resemble-ai+Resemblyzer/audio_data__librispeech_train-clean-100__5867-48852-0000.flac"
REAL_IT = CORPUS / "bonafide/freds0+CML-TTS-Dataset/audios_demo__italian__6698__6698_5281_000022_ground_truth.flac"
FAKE_IT = CORPUS / "spoof/freds0+CML-TTS-Dataset/audios_demo__italian__4712__4712_5281_000057_yourtts.flac"


def main() -> int:
    out = ROOT / "examples"
    out.mkdir(exist_ok=True)
    clips = {}
    for name, src in (("human_en_librispeech", REAL_EN), ("human_it_cmltts", REAL_IT),
                      ("synthetic_it_yourtts", FAKE_IT)):
        x = audio.load(src)[0]
        sf.write(out / f"{name}.flac", x, 16000, subtype="PCM_16")
        clips[name] = audio.resample(x, 16000, 8000)
    agent, caller = clips["human_en_librispeech"], clips["synthetic_it_yourtts"]
    gap = np.zeros(4000, np.float32)  # 0.5 s
    half = len(agent) // 2
    ch0 = np.concatenate([agent[:half], gap, np.zeros(len(caller), np.float32), gap, agent[half:]])
    ch1 = np.concatenate([np.zeros(half, np.float32), gap, caller, gap, np.zeros(len(agent) - half, np.float32)])
    rng = np.random.default_rng(0)
    line_noise = lambda n: (rng.standard_normal(n) * 10 ** (-60 / 20)).astype(np.float32)  # noqa: E731
    stereo = np.stack([ch0 + line_noise(len(ch0)), ch1 + line_noise(len(ch1))], axis=1)
    sf.write(out / "call_stereo_8k_ulaw.wav", np.clip(stereo, -1, 1), 8000, subtype="ULAW")
    for f in sorted(out.iterdir()):
        print(f.name, f.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
