"""`voiceguard scan`: discovery, one row per file, errors, exit status, crash-safe resume, report, Ray.

Recordings are generated here (speech-like harmonic tones with syllable-rate AM and noise, 1-6 s) in mixed
formats and rates, next to broken files; the model is a random-weight checkpoint written by the tests.
"""
from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voiceguard import batch, cli
from voiceguard.errors import DataError

REPO = Path(__file__).resolve().parent.parent
ODD_NAME = "quote's & <tag>.wav"  # a file name that must be escaped in HTML
FLOATS = sorted(batch.FLOAT_FIELDS)


# ---------------------------------------------------------------------------- helpers
def speech_like(sr: int, seconds: float, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    """A voiced-speech-like signal [shape=(n,) or (n, channels)], float32: harmonics of a wandering f0,
    amplitude-modulated at a syllable rate, plus a little noise."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    out = []
    for _ in range(channels):
        f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        k = np.arange(1, 16)[:, None]
        harmonics = (np.sin(k * phase[None, :]) / k * (k * f0.mean() < sr / 2 - 200)).sum(axis=0)
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6)), 0, None) ** 0.7
        x = 0.25 * harmonics * syllables + 0.005 * rng.standard_normal(n)
        out.append(np.clip(x, -0.99, 0.99).astype(np.float32))
    return out[0] if channels == 1 else np.stack(out, axis=1)


def run_cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", "voiceguard", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def keyed(rows: list[dict]) -> dict:
    keys = [(r["path"], r["channel"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return dict(zip(keys, rows, strict=True))


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    ka, kb = keyed(a), keyed(b)
    assert sorted(ka) == sorted(kb)
    for key, ra in ka.items():
        rb = kb[key]
        for f in batch.FIELDS:
            if f in batch.FLOAT_FIELDS and ra[f] is not None and rb[f] is not None:
                # on CUDA the batch size changes the last digits (2e-6 seen on an H200); files mixed up differ more
                assert ra[f] == pytest.approx(rb[f], abs=1e-5), (key, f)
            else:
                assert ra[f] == rb[f], (key, f)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    from voiceguard import checkpoint
    from voiceguard.detector import Detector

    d = Detector.untrained()
    return str(checkpoint.save(tmp_path_factory.mktemp("ckpt") / "m", d.model, d.config))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """A work dir holding rec/ (and rec/sub/) with >= 50 recordings and the broken files, plus extras/."""
    root = tmp_path_factory.mktemp("scan")
    rec, sub, extras = root / "rec", root / "rec" / "sub", root / "extras"
    for d in (rec, sub, extras):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    # (folder, extension, sample rate, format, subtype, channels)
    kinds = [(rec, "wav", 16000, "WAV", "PCM_16", 1), (rec, "wav", 44100, "WAV", "PCM_16", 1),
             (rec, "flac", 16000, "FLAC", "PCM_16", 1), (sub, "flac", 22050, "FLAC", "PCM_24", 1),
             (rec, "ogg", 16000, "OGG", "VORBIS", 1), (sub, "mp3", 16000, "MP3", "MPEG_LAYER_III", 1),
             (rec, "wav", 8000, "WAV", "ULAW", 1), (sub, "wav", 8000, "WAV", "GSM610", 1),
             (rec, "wav", 16000, "WAV", "FLOAT", 2)]
    good = []
    for i in range(54):
        folder, ext, sr, fmt, subtype, ch = kinds[i % len(kinds)]
        p = folder / f"call{i:03d}_{sr // 1000}k_{subtype.lower()}.{ext}"
        sf.write(p, speech_like(sr, rng.uniform(1.0, 6.0), rng, ch), sr, format=fmt, subtype=subtype)
        good.append(p)
    sf.write(rec / ODD_NAME, speech_like(16000, 3.0, rng), 16000)
    # wrongly named: FLAC content called .wav, WAV content called .mp3 (both decodable by content)
    sf.write(rec / "flac_named.wav", speech_like(16000, 3.0, rng), 16000, format="FLAC")
    sf.write(rec / "wav_named.mp3", speech_like(16000, 3.0, rng), 16000, format="WAV")
    # broken
    valid = (rec / "call000_16k_pcm_16.wav").read_bytes()
    (rec / "bad_garbage.wav").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (rec / "bad_truncated_header.wav").write_bytes(valid[:30])
    (rec / "truncated_data.wav").write_bytes(valid[: len(valid) // 2])  # scored or failed: one row anyway
    (rec / "bad_empty.wav").write_bytes(b"")
    (rec / "bad_text.wav").write_text("this is a text file, not audio\n" * 20)
    sf.write(rec / "bad_zero_frames.wav", np.zeros(0, np.float32), 16000)
    # given explicitly through a list: a WAV with no extension, a text file, a missing file
    sf.write(extras / "noext", speech_like(16000, 2.5, rng), 16000, format="WAV")
    (extras / "notes.txt").write_text("not audio")
    listed = [str(extras / "noext"), str(extras / "notes.txt"), "extras/missing.wav"]
    (root / "list.txt").write_text("# extra files\n" + "\n".join(listed) + "\n\n")
    expected_errors = {"rec/bad_garbage.wav": "not-audio", "rec/bad_truncated_header.wav": None,
                       "rec/bad_empty.wav": "empty", "rec/bad_text.wav": "not-audio",
                       "rec/bad_zero_frames.wav": "empty", str(extras / "notes.txt"): "not-audio",
                       "extras/missing.wav": "missing"}
    return {"root": root, "n_good": len(good), "listed": listed, "expected_errors": expected_errors,
            "stereo": [p for p in good if "float" in p.name]}


@pytest.fixture(scope="module")
def reference(corpus, ckpt) -> dict:
    """An uninterrupted scan of the corpus with 2 worker processes, a list file and a report."""
    root = corpus["root"]
    proc = run_cli("scan", "rec", "--recursive", "--from-list", "list.txt", "--out", "ref.csv",
                   "--checkpoint", ckpt, "--workers", "2", "--report", "report.html", cwd=root)
    return {"proc": proc, "rows": batch.read_rows(root / "ref.csv"), "out": root / "ref.csv"}


# ---------------------------------------------------------------------------- whole scans
def test_scan_one_row_per_file_with_errors(corpus, reference, monkeypatch):
    proc, rows = reference["proc"], reference["rows"]
    monkeypatch.chdir(corpus["root"])
    assert proc.returncode == 1, proc.stderr  # some files failed
    files = batch.discover(["rec"], from_list=corpus["root"] / "list.txt", recursive=True)
    assert len(files) >= 50 + len(corpus["expected_errors"])
    assert sorted(r["path"] for r in rows) == sorted(files)  # exactly one row each, paths as given
    assert all(r["path"].startswith(("rec/", "extras/", str(corpus["root"]))) for r in rows)
    by_path = {r["path"]: r for r in rows}
    for path, kind in corpus["expected_errors"].items():
        r = by_path[path]
        assert r["verdict"] == "error" and r["error"] and r["probability"] is None, r
        if kind:
            assert r["error_kind"] == kind, r
    good = [r for r in rows if r["path"] not in corpus["expected_errors"] and "truncated" not in r["path"]]
    assert len(good) >= 50
    for r in good:
        assert r["error"] == "" and r["error_kind"] == "", r
        assert r["verdict"] in ("synthetic", "human", "inconclusive")
        assert r["model"].startswith("untrained:") and r["threshold"] == 0.5
        assert r["duration"] > 0.9 and r["channel"] is None
        assert bool(r["reason"]) == (r["verdict"] == "inconclusive"), r  # why, for exactly the inconclusive ones
    # speech-like enough to be scored (the neural VAD drops some windows of these synthetic buzzes, and their
    # neighbours, so some short files are inconclusive)
    assert sum(r["probability"] is not None for r in good) >= 30
    for name in ("flac_named.wav", "wav_named.mp3", ODD_NAME):
        assert by_path[f"rec/{name}"]["error"] == ""
    assert by_path[str(corpus["root"] / "extras" / "noext")]["error"] == ""  # absolute, as listed
    n_err = sum(1 for r in rows if r["error"])
    assert f"{n_err} files could not be scored" in proc.stdout
    assert "verdicts:" in proc.stdout and "empty 2" in proc.stdout


def test_report_names_every_file(corpus, reference):
    page = (corpus["root"] / "report.html").read_text(encoding="utf-8")
    for r in reference["rows"]:
        assert html.escape(r["path"]) in page, r["path"]
    assert "<tag>" not in page and html.escape(ODD_NAME) in page
    for r in reference["rows"]:  # errors and the reasons for inconclusive verdicts are shown
        assert html.escape(r["error"] or r["reason"]) in page, r
    assert page.count("data:image/png;base64,") >= 2  # histogram + timelines
    assert 'src="http' not in page and "<script" not in page  # self-contained


def test_resume_after_sigkill_matches_uninterrupted(corpus, reference, ckpt):
    root = corpus["root"]
    out = root / "killed.csv"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    args = ["scan", "rec", "--recursive", "--from-list", "list.txt", "--out", out.name, "--checkpoint", ckpt, "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "voiceguard", *args, "--workers", "1", "--batch-size", "1"],
                            cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 4:  # header + 3 rows
                break
            assert proc.poll() is None, "the scan ended before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = batch.read_rows(out)
    assert 0 < len(partial) < len(reference["rows"]), "killed too late to test resume"
    # a torn write: half of the row of a file not written yet (what a crash mid-write leaves)
    done = {r["path"] for r in partial}
    missing = next(r for r in reference["rows"] if r["path"] not in done)
    data = out.read_bytes()
    if data.endswith(b"\n"):
        line = batch.encode_row(missing, "csv")
        with open(out, "ab") as fh:
            fh.write(line[: len(line) // 2])
    assert not out.read_bytes().endswith(b"\n")

    res = run_cli(*args, "--workers", "2", "--resume", cwd=root)
    assert res.returncode == 1, res.stderr
    final = batch.read_rows(out)
    assert_same_rows(final, reference["rows"])
    assert len(out.read_bytes().splitlines()) == len(final) + 1  # header + rows: no leftover half line
    assert batch.read_output(out)[1] == 0
    # a second resume has nothing to do and changes nothing
    before = out.read_bytes()
    again = run_cli(*args, "--workers", "0", "--resume", cwd=root)
    assert again.returncode == 1 and out.read_bytes() == before


@pytest.mark.slow  # starts a local Ray instance (~20 s); run by CI, never skipped: fails without ray
def test_ray_engine_gives_the_same_rows(corpus, reference, ckpt):
    import ray  # noqa: F401 - the optional extra voiceguard[ray] must be installed for this test

    root = corpus["root"]
    res = run_cli("scan", "rec", "--recursive", "--from-list", "list.txt", "--out", "ray.jsonl",
                  "--checkpoint", ckpt, "--engine", "ray", "--workers", "2", "-q", cwd=root)
    assert res.returncode == 1, res.stderr
    assert_same_rows(batch.read_rows(root / "ray.jsonl"), reference["rows"])


def test_exit_zero_when_all_scored_and_refuses_to_overwrite(corpus, ckpt, tmp_path, capsys):
    stereo = [str(p) for p in corpus["stereo"][:2]]
    out = tmp_path / "ok.jsonl"
    assert cli.main(["scan", *stereo, "--out", str(out), "--checkpoint", ckpt, "--workers", "0", "-q"]) == 0
    rows = batch.read_rows(out)
    assert [r["path"] for r in rows] == stereo and all(r["error"] == "" for r in rows)
    capsys.readouterr()
    assert cli.main(["scan", *stereo, "--out", str(out), "--checkpoint", ckpt]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--resume" in err and len(err.splitlines()) == 1
    assert cli.main(["scan", *stereo, "--out", str(tmp_path / "x.txt"), "--checkpoint", ckpt]) == 2


def test_channels_each_gives_a_row_per_channel(corpus, ckpt, tmp_path):
    stereo = str(corpus["stereo"][0])
    summary = batch.scan([stereo, stereo], tmp_path / "each.csv", checkpoint=ckpt, channels="each", workers=0)
    rows = batch.read_rows(tmp_path / "each.csv")
    assert [(r["path"], r["channel"]) for r in rows] == [(stereo, 0), (stereo, 1)]
    assert summary.files == 1 and summary.rows == 2 and summary.ok


class CrashSpec(batch.DetectorSpec):
    """Loads a detector whose process dies (as on a segfault) when handed a file named *crash*."""

    def load(self):
        det = super().load()
        score_files = det.score_files

        def crashing(paths, **kwargs):
            if any("crash" in os.path.basename(p) for p in paths):
                os._exit(3)
            return score_files(paths, **kwargs)

        det.score_files = crashing
        return det


def test_worker_crash_gives_an_error_row(corpus, ckpt):
    rec = corpus["root"] / "rec"
    paths = [str(p) for p in sorted(rec.glob("call00*_16k_pcm_16.wav"))[:4]]
    crash = rec / "crash_me.wav"
    crash.write_bytes((rec / "call000_16k_pcm_16.wav").read_bytes())
    try:
        todo = paths[:2] + [str(crash)] + paths[2:]
        spec = CrashSpec(ckpt)
        got = list(batch._pool(todo, spec, "mix", 2, 3, lambda p, m: batch.error_row(
            p, m, "worker-crash", threshold=0.5, model="m:0")))
    finally:
        crash.unlink()
    assert sorted(p for p, _ in got) == sorted(todo)  # every file once
    rows = {p: r for p, (r,) in got}
    assert rows[str(crash)]["error_kind"] == "worker-crash" and "exit code 3" in rows[str(crash)]["error"]
    assert all(rows[p]["error"] == "" for p in paths)


# ---------------------------------------------------------------------------- output files (no model)
def _row(path: str, p: float | None = 0.25, channel: int | None = None) -> dict:
    row = dict.fromkeys(batch.FIELDS)
    row.update(path=path, channel=channel, probability=p, verdict="human", threshold=0.5, duration=3.0,
               speech_seconds=2.5, top_start=0.0, top_end=3.0, top_probability=0.3, model="m:1", error="",
               error_kind="", reason="")
    return row


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_output_written_before_the_reason_column_is_resumed(tmp_path, ext):
    """An output of an older version (no ``reason`` column) is read, and a resumed scan keeps its layout."""
    out = tmp_path / f"old.{ext}"
    old_rows = [_row("a.wav"), _row("b.wav", p=None)]
    if ext == "csv":
        lines = [",".join(batch.LEGACY_FIELDS)] + [
            batch.encode_row(r, "csv", batch.LEGACY_FIELDS).decode().rstrip("\n") for r in old_rows]
        out.write_text("\n".join(lines) + "\n")
    else:
        out.write_text("".join(json.dumps({k: r[k] for k in batch.LEGACY_FIELDS}) + "\n" for r in old_rows))
    assert batch.read_rows(out) == old_rows  # an empty reason
    new = dict(_row("c.wav"), verdict="inconclusive", reason="1.2 s of speech (needs 2 s)")
    with batch.RowWriter(out, resume=True) as w:
        w.write([new])
    rows = batch.read_rows(out)
    if ext == "csv":  # same header, same number of columns in every line: the old layout goes on
        assert out.read_text().splitlines()[0] == ",".join(batch.LEGACY_FIELDS)
        assert rows == old_rows + [dict(new, reason="")]
    else:  # JSON lines name their keys: the new row keeps its reason
        assert rows == old_rows + [new]
    # a new output has the reason column
    fresh = tmp_path / f"new.{ext}"
    with batch.RowWriter(fresh) as w:
        w.write([new])
    assert batch.read_rows(fresh) == [new]


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_half_written_last_line_is_repaired(tmp_path, ext):
    out = tmp_path / f"r.{ext}"
    names = ["a.wav", 'with,comma "and quotes".wav', "new\nline.wav"]
    with batch.RowWriter(out) as w:
        for n in names:
            w.write([_row(n)])
    whole = out.read_bytes()
    torn = batch.encode_row(_row("d.wav"), ext)
    with open(out, "ab") as fh:
        fh.write(torn[:-9])
    rows, dropped = batch.read_output(out, repair=True)
    assert [r["path"] for r in rows] == names and dropped == len(torn) - 9
    assert out.read_bytes() == whole
    with batch.RowWriter(out, resume=True) as w:
        w.write([_row("d.wav")])
    assert [r["path"] for r in batch.read_rows(out)] == names + ["d.wav"]
    assert batch.read_rows(out)[0] == _row("a.wav")


def test_torn_per_channel_file_is_redone_whole(tmp_path):
    out = tmp_path / "r.csv"
    with batch.RowWriter(out) as w:
        w.write([_row("a.wav", channel=0), _row("a.wav", channel=1)])
        w.write([_row("b.wav", channel=0), _row("b.wav", channel=1)])
    with open(out, "ab") as fh:
        fh.write(b"c.wav,0,0.1")
    rows, _ = batch.read_output(out, repair=True)
    assert [(r["path"], r["channel"]) for r in rows] == [("a.wav", 0), ("a.wav", 1)]


def test_output_checks(tmp_path):
    (tmp_path / "other.csv").write_text("name,score\nx,1\n")
    with pytest.raises(DataError, match="not a voiceguard scan output"):
        batch.read_output(tmp_path / "other.csv")
    (tmp_path / "other.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    with pytest.raises(DataError, match="not a voiceguard scan output"):
        batch.read_output(tmp_path / "other.jsonl", repair=True)
    assert (tmp_path / "other.jsonl").read_text() == '{"id": 1}\n{"id": 2}\n'  # left alone
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(batch.encode_row(_row("a.wav"), "jsonl") + b"garbage\n" + batch.encode_row(_row("b.wav"),
                                                                                                 "jsonl"))
    with pytest.raises(DataError, match="in the middle"):
        batch.read_output(damaged, repair=True)
    with pytest.raises(DataError, match="name it .csv or .jsonl"):
        batch.output_format(tmp_path / "r.txt")
    batch.RowWriter(tmp_path / "r.csv").close()
    with pytest.raises(DataError, match="already exists"):
        batch.RowWriter(tmp_path / "r.csv")
    assert batch.read_rows(tmp_path / "r.csv") == []


def test_discover(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.wav", "d/a.FLAC", "d/notes.txt", "d/.hidden.wav", "d/sub/c.mp3", "e.dat"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# comment\nd/notes.txt\n\ne.dat\nd/b.wav\n")
    assert batch.discover(["d"]) == ["d/a.FLAC", "d/b.wav"]
    assert batch.discover(["d/"], recursive=True) == ["d/a.FLAC", "d/b.wav", "d/sub/c.mp3"]
    assert batch.discover(["d", "./d/b.wav"], from_list="list.txt") == ["d/a.FLAC", "d/b.wav", "d/notes.txt",
                                                                       "e.dat"]
    assert batch.discover(["nope.wav"]) == ["nope.wav"]  # kept: it gets a "missing" error row
    with pytest.raises(DataError, match="cannot read the list"):
        batch.discover([], from_list="absent.txt")


def test_summary_counts(tmp_path):
    rows = [_row("a.wav"), {**_row("b.wav", None), "verdict": "inconclusive"},
            batch.error_row("c.wav", "c.wav: empty file", "empty", threshold=0.5, model="m:1")]
    out = tmp_path / "r.jsonl"
    with batch.RowWriter(out) as w:
        for r in rows:
            w.write([r])
    assert json.loads(out.read_text().splitlines()[2])["error_kind"] == "empty"
    tally = batch._Tally()
    for r in batch.read_rows(out):
        tally.add([r])
    assert tally.verdicts == {"human": 1, "inconclusive": 1, "error": 1} and tally.kinds == {"empty": 1}
    assert tally.failed == 1 and tally.audio == pytest.approx(6.0)
