"""The inference path: invariances, locality, determinism, memory, inconclusive cases."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, speech_like, write
from voiceguard import audio
from voiceguard.detector import Detector


@pytest.fixture(scope="module")
def det(untrained_checkpoint):
    return Detector.load(untrained_checkpoint, device="cpu")


def test_result_fields_and_determinism(det, tmp_path):
    p = write(tmp_path / "a.wav", speech_like(9.0, seed=4), 16000)
    r1, r2 = det.score_file(p), det.score_file(p)
    assert r1.to_dict() == r2.to_dict()
    assert r1.verdict in ("synthetic", "human") and 0.0 <= r1.probability <= 1.0
    assert r1.duration == pytest.approx(9.0, abs=0.01)
    assert 3.0 < r1.speech_seconds <= 9.0
    assert [(s.start, s.end) for s in r1.segments] == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (5.0, 9.0)]
    d = r1.to_dict()
    for key in ("path", "channel", "probability", "verdict", "threshold", "duration", "speech_seconds",
                "segments", "model"):
        assert key in d
    assert d["model"]["trained"] is False


def test_same_audio_at_44k1_scores_the_same(det, tmp_path):
    x = speech_like(8.0, 16000, seed=5)
    a = det.score_file(write(tmp_path / "a16.wav", x, 16000, subtype="FLOAT"))
    b = det.score_file(write(tmp_path / "a44.wav", audio.resample(x, 16000, 44100), 44100, subtype="FLOAT"))
    assert abs(a.probability - b.probability) < 0.02
    assert abs(a.logit - b.logit) < 0.1


def test_identical_stereo_channels_score_as_mono(det, tmp_path):
    x = speech_like(6.0, seed=6)
    mono = det.score_file(write(tmp_path / "m.wav", x, 16000, subtype="FLOAT"))
    st = write(tmp_path / "s.wav", np.stack([x, x], 1), 16000, subtype="FLOAT")
    mixed = det.score_file(st)
    each = det.score_file(st, channels="each")
    assert abs(mixed.probability - mono.probability) < 1e-4
    assert [r.channel for r in each] == [0, 1]
    assert abs(each[0].probability - mono.probability) < 1e-4


def test_clip_alone_scores_as_inside_a_long_call(det):
    """Features are local to their window: the windows of a clip are unchanged by what follows it."""
    a, b = speech_like(8.0, seed=7), speech_like(30.0, seed=8, f0=210)
    alone = det.score_array(a, 16000)
    inside = det.score_array(np.concatenate([a, b]), 16000)
    for sa, si in zip(alone.segments[:3], inside.segments[:3]):
        assert (sa.start, sa.end) == (si.start, si.end)
        assert sa.probability == pytest.approx(si.probability, abs=1e-5)


def test_array_and_file_agree(det, tmp_path):
    x = speech_like(5.0, seed=9)
    f = det.score_file(write(tmp_path / "x.wav", x, 16000, subtype="FLOAT"))
    a = det.score_array(x, 16000)
    assert f.probability == pytest.approx(a.probability, abs=1e-6)


def test_silence_and_tiny_files_are_inconclusive(det, tmp_path):
    silent = det.score_array(np.zeros(16000 * 10, np.float32), 16000)
    assert silent.verdict == "inconclusive" and silent.probability is None
    assert "speech" in silent.reason and silent.speech_seconds == 0
    tiny = det.score_array(speech_like(0.5), 16000)
    assert tiny.verdict == "inconclusive" and "audio" in tiny.reason
    short_speech = np.zeros(16000 * 10, np.float32)
    short_speech[:16000] = speech_like(1.0)
    assert det.score_array(short_speech, 16000).verdict == "inconclusive"


def test_short_speech_gets_a_low_confidence_probability_from_its_own_calibration(det, untrained_checkpoint):
    """Under min_speech_seconds of speech the verdict stays inconclusive; a checkpoint with a short-clip
    calibration still gives the probability, from that calibration (and without one, none)."""
    from voiceguard.calibration import Calibration

    x = np.zeros(16000 * 6, np.float32)
    x[: 30400] = speech_like(1.9, seed=12, pauses=False)
    plain = det.score_array(x, 16000)
    assert plain.verdict == "inconclusive" and plain.probability is None and plain.logit is not None
    short_cal = Calibration(scale=0.4, bias=-0.1)
    short = Detector(det.model, det.config.replace(short_calibration=short_cal)).score_array(x, 16000)
    assert short.verdict == "inconclusive" and "low-confidence" in short.reason and not short.regions
    assert short.logit == pytest.approx(plain.logit)
    assert short.probability == pytest.approx(float(short_cal.probability(plain.logit)))
    assert len(short.segments) == 1  # under 2 s of speech: one window is speech enough to score
    assert short.segments[0].probability == pytest.approx(short.probability)
    long = Detector(det.model, det.config.replace(short_calibration=short_cal)).score_array(
        speech_like(6.0, seed=12), 16000)
    assert long.verdict in ("human", "synthetic")  # enough speech: the main calibration, as before
    assert long.probability == pytest.approx(float(det.config.calibration.probability(long.logit)))


def test_short_call_is_scored_as_one_window(det):
    r = det.score_array(speech_like(3.8, seed=10, pauses=False), 16000)
    assert r.verdict in ("human", "synthetic")
    assert [(s.start, s.end) for s in r.segments] == [(0.0, 3.8)]


def test_many_files_pack_into_shared_batches(det, tmp_path):
    paths = [write(tmp_path / f"f{i}.wav", speech_like(3.9 + i, seed=i, pauses=False), 16000) for i in range(5)]
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    singles = [det.score_file(p).probability for p in paths]
    outcomes = list(det.score_files([paths[0], bad, *paths[1:]]))
    assert [o.path for o in outcomes] == [str(paths[0]), str(bad), *map(str, paths[1:])]
    assert outcomes[1].error is not None and outcomes[1].error.kind == "not-audio"
    got = [o.results[0].probability for o in outcomes if o.ok]
    np.testing.assert_allclose(got, singles, atol=1e-6)


def _peak_rss_mb(ckpt, path) -> float:
    code = ("import resource, sys; from voiceguard.detector import Detector; "
            f"r = Detector.load({str(ckpt)!r}, device='cpu').score_file({str(path)!r}); "
            "print(r.duration, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    duration, rss = out.stdout.split()
    return float(duration), float(rss)


def test_long_call_memory_does_not_grow_with_length(untrained_checkpoint, tmp_path):
    """A 12-minute 48 kHz stereo call (~265 MB as float32) is scored in blocks: peak RSS stays near a 3-minute call's.

    (Both are long enough to fill full model batches, whose activations set the plateau.)"""
    def make(path, minutes):
        with sf.SoundFile(str(path), "w", 48000, 2, subtype="PCM_16") as f:
            for i in range(int(minutes * 2)):
                x = speech_like(30.0, 48000, seed=i)
                f.write(np.stack([x, x[::-1]], 1))
        return path

    short = make(tmp_path / "short.wav", 3)
    long = make(tmp_path / "long.wav", 12)
    d_short, rss_short = _peak_rss_mb(untrained_checkpoint, short)
    d_long, rss_long = _peak_rss_mb(untrained_checkpoint, long)
    assert d_long == pytest.approx(720.0, abs=0.1)
    assert rss_long - rss_short < 100, (rss_short, rss_long)  # decoding it whole would add > 260 MB


@pytest.mark.parametrize("threshold", [0.3, 0.499, 0.5, 0.501, 0.7])
def test_regions_exist_exactly_when_the_verdict_is_synthetic(untrained_checkpoint, threshold):
    det = Detector.load(untrained_checkpoint, device="cpu", threshold=threshold)
    x = np.concatenate([speech_like(20.0, seed=21), speech_like(14.0, seed=22, f0=230, pauses=False)])
    r = det.score_array(x, 16000)
    assert r.verdict in ("synthetic", "human")
    assert (r.verdict == "synthetic") == bool(r.regions), (r.probability, r.regions)
    for reg in r.regions:
        assert reg.probability >= threshold - 1e-9 and reg.end > reg.start


def test_a_scoring_plan_rescored_with_other_weights_gives_what_scoring_in_full_does():
    """Training scores its validation set after every epoch: the windows, speech checks and features are made
    once (prepare_arrays) and only the networks run again (rescore), with the same results as a full scoring."""
    signals = [speech_like(3.8, seed=1, pauses=False), speech_like(25.0, seed=2), np.zeros(16000 * 5, np.float32),
               speech_like(9.0, seed=3)[::2].copy()]  # the last one at 8 kHz, resampled like any other
    rates = [16000, 16000, 16000, 8000]
    first, second = Detector.untrained(seed=0, device="cpu"), Detector.untrained(seed=1, device="cpu")
    for rate in (16000, 8000):
        chosen = [x for x, r in zip(signals, rates) if r == rate]
        plan = first.prepare_arrays(chosen, rate)
        assert plan is not None and plan.batches
        for det in (first, second, first):  # other weights, then the first ones again: nothing left over
            full = [o.results[0].to_dict() for o in det.score_arrays(chosen, rate)]
            assert [o.results[0].to_dict() for o in det.rescore(plan)] == full
        assert len({round(o.results[0].logit, 6) for o in second.rescore(plan) if o.results[0].logit is not None}
                   ^ {round(o.results[0].logit, 6) for o in first.rescore(plan) if o.results[0].logit is not None}) > 0
    assert first.rescore(first.prepare_arrays([signals[2]], 16000))[0].results[0].verdict == "inconclusive"
    assert first.prepare_arrays(signals[:2], 16000, max_bytes=1000) is None  # too large to keep: score in full
    other = Detector.untrained(first.config.replace(window=replace(first.config.window, hop_seconds=1.0)),
                                 device="cpu")
    with pytest.raises(ValueError, match="other windows"):
        other.rescore(first.prepare_arrays(signals[:1], 16000))
