"""`voiceguard evaluate` end to end on a random-weight checkpoint and a few generated speech-like clips."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voiceguard.cli import main
from voiceguard.data import read_folders

SR = 16_000
REPO = Path(__file__).resolve().parent.parent


def speechlike(seconds: float, seed: int, *, f0: float = 140.0, jitter: float = 0.08) -> np.ndarray:
    """Harmonic tone with a wandering pitch, ~4 syllables/s of amplitude modulation and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f = f0 * (1 + jitter * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.6
    x = 0.2 * x * env / np.max(np.abs(x)) + 0.003 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """real/ (3 clips + one too short to score), fake/ (3 clips) and a random-weight checkpoint."""
    from voiceguard import checkpoint
    from voiceguard.detector import Detector

    root = tmp_path_factory.mktemp("eval")
    (root / "fake").mkdir()
    for i in range(3):
        (root / "real" / f"spk{i}").mkdir(parents=True)
        sf.write(str(root / "real" / f"spk{i}" / f"r{i}.wav"), speechlike(3.0 + 0.5 * i, i, f0=110 + 40 * i), SR)
        sf.write(str(root / "fake" / f"f{i}.wav"), speechlike(3.0 + 0.5 * i, 10 + i, f0=130 + 30 * i, jitter=0.0),
                 SR)
    sf.write(str(root / "real" / "short.wav"), speechlike(0.5, 99), SR)  # shorter than min_seconds
    d = Detector.untrained(device="cpu")
    checkpoint.save(root / "m", d.model, d.config)
    return root


def test_cli_evaluate_writes_everything(corpus, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "voiceguard", "evaluate", "--real", str(corpus / "real"), "--fake",
           str(corpus / "fake"), "--checkpoint", str(corpus / "m"), "--by", "generator", "--plot", str(out),
           "--scores", str(out / "scores.csv"), "--asvspoof-scores", str(out / "scores.txt")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "UNTRAINED" in proc.stderr
    m = re.search(r"^\s*EER\s+([0-9.]+)", proc.stdout, re.M)
    assert m and 0.0 <= float(m.group(1)) <= 1.0, proc.stdout
    assert "1 inconclusive" in proc.stdout and "by generator" in proc.stdout

    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7  # every file, scored or not
    assert {r["label"] for r in rows} == {"bonafide", "spoof"}
    short = [r for r in rows if r["path"].endswith("short.wav")]
    assert short[0]["verdict"] == "inconclusive" and short[0]["probability"] == "" and short[0]["error"]
    scored = {Path(r["path"]).stem: float(r["probability"]) for r in rows if r["probability"]}
    assert len(scored) == 6

    lines = (out / "scores.txt").read_text().splitlines()
    assert len(lines) == 6
    for line in lines:  # trial score, higher = bona fide: log((1 - p) / p)
        trial, score = line.split()
        p = scored[trial]
        assert float(score) == pytest.approx(math.log((1 - p) / p), abs=1e-4)
    for png in ("det.png", "roc.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_cli_evaluate_json_manifest_with_unreadable_file(corpus, tmp_path, capsys):
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    manifest = tmp_path / "m.csv"
    rows = ["path,label,codec"]
    rows += [f"{p},{'spoof' if '/fake/' in p else 'bonafide'},{'gsm' if i % 2 else 'none'}"
             for i, p in enumerate(str(it.path) for it in read_folders(corpus / "real", corpus / "fake"))]
    rows.append(f"{tmp_path / 'broken.wav'},spoof,none")
    manifest.write_text("\n".join(rows) + "\n")
    rc = main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(corpus / "m"), "--by", "codec",
               "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["counts"] == {"items": 8, "scored": 6, "inconclusive": 1, "failed": 1, "scored_short": 0}
    assert set(out["groups"]) == {"gsm", "none"} and out["groups"]["gsm"]["vs"] == "group"
    met = out["metrics"]
    assert 0.0 <= met["eer"] <= 1.0 and 0.0 <= met["auc"] <= 1.0 and 0.0 <= met["min_dcf"] <= 1.0
    assert met["n"] == 6 and met["threshold"] == out["threshold"]


@pytest.mark.parametrize("argv,match", [
    (["--real", "{real}", "--manifest", "{real}/x.csv"], "no such manifest"),
    (["--protocol", "{real}/no-such-protocol.txt"], "no such protocol"),
    (["--real", "{real}", "--by", "no_such_column", "--checkpoint", "{ckpt}"], "cannot group by"),
    (["--real", "{real}", "--resample-by", "no_such_column", "--checkpoint", "{ckpt}"], "cannot resample by"),
    (["--real", "{real}", "--resamples", "-1", "--checkpoint", "{ckpt}"], "--resamples must be 0 or more"),
    (["--real", "{real}", "--checkpoint", "{ckpt}", "--baseline", "{real}/missing"], "no checkpoint"),
    (["--real", "{real}", "--checkpoint", "{real}/missing"], "no checkpoint"),
])
def test_cli_evaluate_bad_arguments_exit_2(corpus, capsys, argv, match):
    argv = [a.format(real=corpus / "real", ckpt=corpus / "m") for a in argv]
    assert main(["evaluate"] + argv) == 2
    assert match in capsys.readouterr().err


def test_cli_resamples_default_is_the_api_default():
    from voiceguard import metrics
    from voiceguard.cli import build_parser

    assert build_parser().parse_args(["evaluate", "--real", "x"]).resamples == metrics.N_RESAMPLES


def test_evaluate_api_and_report(corpus, tmp_path):
    from voiceguard.detector import Detector
    from voiceguard.evaluate import evaluate, format_report

    det = Detector.load(corpus / "m", device="cpu")
    items = read_folders(corpus / "real", corpus / "fake")
    seen = []
    rep = evaluate(det, items, by="source", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (7, 7) and len(rep.rows) == 7
    assert rep.counts["scored"] == 6 and rep.threshold == det.threshold
    assert set(rep.groups) == {"real", "fake"} and rep.groups["fake"]["vs"] == "all bonafide"
    assert rep.groups["real"]["eer"] is None and rep.groups["real"]["false_alarm"] is not None
    text = format_report(rep)
    assert "EER" in text and "minDCF" in text and "short.wav: inconclusive" in text
    json.dumps(rep.to_dict(rows=True))  # JSON-safe


def test_short_clips_are_scored_apart_with_the_short_calibration(corpus, tmp_path):
    """A checkpoint with a short-clip calibration: a clip with under 2 s of speech keeps its 'inconclusive'
    verdict but is scored (and counted apart), its score file row carrying that calibration's log-odds."""
    from voiceguard import checkpoint
    from voiceguard.calibration import Calibration
    from voiceguard.detector import Detector
    from voiceguard.evaluate import evaluate, format_report

    model, cfg = checkpoint.load(corpus / "m")
    short_cal = Calibration(scale=0.3, bias=0.2)
    det = Detector(model, cfg.replace(short_calibration=short_cal), device="cpu")
    x = np.zeros(SR * 6, np.float32)
    x[: int(1.9 * SR)] = speechlike(1.9, 7)
    sf.write(str(tmp_path / "brief.wav"), x, SR)
    items = read_folders(corpus / "real", corpus / "fake")
    items.append(type(items[0])(path=str(tmp_path / "brief.wav"), label=0, speaker="brief", source="t"))
    report = evaluate(det, items, scores_csv=tmp_path / "s.csv")
    assert report.counts["scored_short"] == 1 and report.counts["scored"] == 7
    row = next(r for r in report.rows if r.path.endswith("brief.wav"))
    assert row.verdict == "inconclusive" and row.probability is not None
    assert row.score == pytest.approx(math.log(row.probability / (1 - row.probability)), abs=1e-6)
    assert "1 of them inconclusive, too short for a verdict" in format_report(report)
