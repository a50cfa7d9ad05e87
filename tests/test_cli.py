"""The `voiceguard score` command, run as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, run_cli, speech_like, write

from voiceguard import batch

FIELDS = {"path", "channel", "probability", "verdict", "threshold", "duration", "speech_seconds", "segments", "model"}


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    d = tmp_path_factory.mktemp("calls")
    x = speech_like(7.0, seed=11)
    files = {
        "wav": write(d / "call.wav", x, 16000),
        "flac": write(d / "call.flac", audio_resample(x, 44100), 44100),
        "ogg": write(d / "call.ogg", x, 16000, format="OGG", subtype="VORBIS"),
        "mp3": write(d / "call.mp3", x, 16000, format="MP3", subtype="MPEG_LAYER_III"),
        "ulaw": write(d / "ulaw.wav", audio_resample(x, 8000), 8000, subtype="ULAW"),
        "gsm": write(d / "gsm.wav", audio_resample(x, 8000), 8000, subtype="GSM610"),
    }
    return files


def audio_resample(x, rate):
    from voiceguard.audio import resample

    return resample(x, 16000, rate)


def test_json_output_for_every_format(calls, untrained_checkpoint):
    out = run_cli("score", "--json", "--checkpoint", untrained_checkpoint, *calls.values())
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in calls.values()]
    for r in rows:
        assert FIELDS <= set(r)
        assert r["channel"] is None and 0 <= r["probability"] <= 1
        assert r["verdict"] in ("synthetic", "human")
        assert abs(r["duration"] - 7.0) < 0.2
        assert all({"start", "end", "probability"} <= set(s) for s in r["segments"])
    assert "UNTRAINED" in out.stderr


def test_human_output_and_plot(calls, untrained_checkpoint, tmp_path):
    png = tmp_path / "t.png"
    out = run_cli("score", "--checkpoint", untrained_checkpoint, "--plot", png, calls["wav"])
    assert out.returncode == 0, out.stderr
    assert "p(synthetic)=" in out.stdout and "threshold" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_stereo_each_channel(tmp_path, untrained_checkpoint):
    st = write(tmp_path / "st.wav", np.stack([speech_like(6.0, seed=1), speech_like(6.0, seed=2, f0=220)], 1), 8000,
               subtype="ULAW")
    out = run_cli("score", "--json", "--channels", "each", "--checkpoint", untrained_checkpoint, st)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["channel"] for r in rows] == [0, 1]
    assert rows[0]["probability"] != rows[1]["probability"]


def test_threshold_override(calls, untrained_checkpoint):
    out = run_cli("score", "--json", "--threshold", "0.99", "--checkpoint", untrained_checkpoint, calls["wav"])
    assert json.loads(out.stdout)["threshold"] == 0.99


def test_bad_files_each_get_one_line_and_nonzero_exit(tmp_path, calls, untrained_checkpoint):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 20)
    zero = tmp_path / "zero.wav"  # a valid header and no frames
    sf.write(str(zero), np.zeros(0, np.float32), 16000)
    missing = tmp_path / "missing.mp3"
    out = run_cli("score", "--json", "--checkpoint", untrained_checkpoint, empty, calls["wav"], text, zero, missing)
    assert out.returncode == 1
    assert len(out.stdout.splitlines()) == 1  # the good file is still scored
    errors = [l for l in out.stderr.splitlines() if l.startswith("voiceguard: error:")]
    assert len(errors) == 4
    assert "Traceback" not in out.stderr
    for path, word in ((empty, "empty"), (text, "not a recognised audio file"), (zero, "no audio samples"),
                       (missing, "no such file")):
        assert any(str(path) in e and word in e for e in errors), (path, errors)


def test_missing_checkpoint_is_a_clear_error(calls, tmp_path):
    out = run_cli("score", "--checkpoint", tmp_path / "nothing.safetensors", calls["wav"])
    assert out.returncode == 2
    assert "no checkpoint" in out.stderr and "Traceback" not in out.stderr


def test_help_does_not_import_torch():
    code = "import sys, voiceguard.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
    assert run_cli("--help").returncode == 0


def test_synth_command_makes_a_manifest_finetune_can_read(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    write(real / "me.wav", speech_like(3.0, seed=1, pauses=False), 16000)
    out = run_cli("synth", "--out", tmp_path / "gen", "--engines", "espeak", "--langs", "it", "-n", "2",
                  "--real", real, "--vocoders", "world")
    assert out.returncode == 0, out.stderr
    from voiceguard.data import read_manifest

    items = read_manifest(tmp_path / "gen" / "manifest.csv")
    assert len(items) == 3 and all(it.label == 1 for it in items)
    assert {it.generator for it in items} == {"espeak-ng/it", "world"}
    for it in items:
        info = sf.info(it.path)
        assert info.samplerate == 16000 and info.frames > 16000


def test_a_short_clip_is_inconclusive_with_a_low_confidence_probability(tmp_path):
    """The shipped checkpoint on 1.8 s of espeak-ng speech: no verdict, but a probability, marked as such, in
    the human output and in the JSON."""
    import shutil

    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required for the tests (make setup installs it)"
    wav = tmp_path / "hello.wav"
    subprocess.run([exe, "-w", str(wav), "Hello mum, it is me."], check=True, timeout=60)
    x, sr = sf.read(str(wav), dtype="float32")
    assert len(x) / sr < 3.0
    proc = run_cli("score", wav)
    assert proc.returncode == 0, proc.stderr
    assert "INCONCLUSIVE (only" in proc.stdout and "low confidence" in proc.stdout, proc.stdout
    res = json.loads(run_cli("score", wav, "--json").stdout)
    assert res["verdict"] == "inconclusive" and 0.0 < res["probability"] < 1.0
    assert "low-confidence" in res["reason"]
    # a scan row says the same, reason included
    proc = run_cli("scan", wav, "--out", tmp_path / "rows.csv", "--workers", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    (row,) = batch.read_rows(tmp_path / "rows.csv")
    assert row["verdict"] == "inconclusive" and row["reason"] == res["reason"]
    assert row["probability"] == pytest.approx(res["probability"], abs=1e-6)
