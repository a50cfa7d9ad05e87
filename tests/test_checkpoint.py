"""Checkpoints: safetensors + JSON round trip; strangers' files are refused, never unpickled."""
from __future__ import annotations

import json
import pickle

import pytest

from conftest import speech_like
from voiceguard import checkpoint
from voiceguard.calibration import Calibration
from voiceguard.detector import Detector
from voiceguard.errors import CheckpointError


def test_round_trip_gives_identical_scores(tmp_path):
    d = Detector.untrained(seed=3)
    short_cal = Calibration(scale=0.4, bias=0.1)
    path = checkpoint.save(tmp_path / "m", d.model, d.config.replace(threshold=0.7, name="m",
                                                                    short_calibration=short_cal))
    assert path.suffix == ".safetensors" and (tmp_path / "m.json").exists()
    d2 = Detector.load(tmp_path / "m.json")
    x = speech_like(6.0, pauses=False)
    assert d2.threshold == 0.7 and d2.config.name == "m" and d2.config.short_calibration == short_cal
    assert d2.score_array(x, 16000).logit == pytest.approx(d.score_array(x, 16000).logit, abs=1e-6)
    cfg = json.loads((tmp_path / "m.json").read_text())
    for key in ("format_version", "voiceguard_version", "features", "model", "window", "calibration", "threshold"):
        assert key in cfg


def test_fine_resolution_front_end_round_trips(tmp_path):
    """A 256-band spectrum every 20 ms with a frequency-strided first layer: saved, loaded, scored alike."""
    from dataclasses import replace

    from voiceguard.checkpoint import CheckpointConfig
    from voiceguard.features import FeatureConfig
    from voiceguard.model import ModelConfig

    feats = replace(FeatureConfig.of_kind("lfb", 256), hop_length=320)
    cfg = CheckpointConfig(name="fine", features=feats, model=ModelConfig(n_features=256, freq_stride=2))
    d = Detector.untrained(cfg, seed=4)
    checkpoint.save(tmp_path / "fine", d.model, cfg)
    d2 = Detector.load(tmp_path / "fine")
    assert d2.config.model.freq_stride == 2 and d2.config.features.hop_length == 320
    x = speech_like(5.0, pauses=False)
    assert d2.score_array(x, 16000).logit == pytest.approx(d.score_array(x, 16000).logit, abs=1e-5)
    assert d2.score_array(x[:56000], 16000).logit is not None  # a short call (3.5 s, under one window) too


def test_global_mean_front_end_keeps_the_spectral_shape_and_round_trips(tmp_path):
    """``norm="global"`` removes one mean per window: a gain still changes nothing, but a tilt of the spectrum
    (here a first-order high-pass) reaches the features, where per-row normalisation removes it. A JSON
    written before the option existed loads as per-row."""
    from dataclasses import replace

    import torch

    from voiceguard.checkpoint import CheckpointConfig
    from voiceguard.features import FeatureConfig, FrontEnd
    from voiceguard.model import ModelConfig

    x = torch.from_numpy(speech_like(4.0, pauses=False)).float()[None]
    tilted = torch.cat([x[:, :1], x[:, 1:] - 0.9 * x[:, :-1]], dim=1)
    row, glob = FrontEnd(FeatureConfig.of_kind("lfb")), FrontEnd(replace(FeatureConfig.of_kind("lfb"), norm="global"))
    for fe in (row, glob):
        torch.testing.assert_close(fe(4.0 * x), fe(x), atol=1e-3, rtol=0)
    assert float(row(tilted).mean(dim=2).abs().max()) < 1e-3  # each row's mean is gone, tilt or not
    def top_minus_bottom(fe, w):  # dB: mean of the top 10 rows' means less that of the bottom 10
        m = fe(w).mean(dim=2)[0]
        return float(m[-10:].mean() - m[:10].mean())

    assert top_minus_bottom(glob, tilted) - top_minus_bottom(glob, x) > 10.0  # the high-pass lifted the top bands
    with pytest.raises(ValueError, match="norm"):
        FeatureConfig(norm="band")

    cfg = CheckpointConfig(name="gn", features=replace(FeatureConfig.of_kind("lfb"), norm="global"),
                           model=ModelConfig(n_features=60))
    d = Detector.untrained(cfg, seed=5)
    checkpoint.save(tmp_path / "gn", d.model, cfg)
    d2 = Detector.load(tmp_path / "gn")
    assert d2.config.features.norm == "global"
    y = speech_like(5.0, pauses=False)
    assert d2.score_array(y, 16000).logit == pytest.approx(d.score_array(y, 16000).logit, abs=1e-5)
    old = json.loads((tmp_path / "gn.json").read_text())
    del old["features"]["norm"]
    (tmp_path / "gn.json").write_text(json.dumps(old))
    assert checkpoint.load(tmp_path / "gn")[1].features.norm == "row"


def test_group_delay_front_end_sees_phase_that_the_filterbank_does_not(tmp_path):
    """``kind="mgd"``: two harmonic tones with the same magnitude spectrum, one with all harmonics in phase (a
    pulse train), one with random phases. The log filterbank barely tells them apart; the modified group delay
    does. A gain changes nothing, digital silence gives finite zeros, and the checkpoint round-trips."""
    from dataclasses import replace

    import numpy as np
    import torch

    from voiceguard.checkpoint import CheckpointConfig
    from voiceguard.features import FeatureConfig, FrontEnd
    from voiceguard.model import ModelConfig

    t = np.arange(64000) / 16000
    phases = {"pulse": np.zeros(52), "random": np.random.default_rng(0).uniform(0, 2 * np.pi, 52)}
    waves = {name: sum(np.cos(2 * np.pi * 150 * (k + 1) * t + ph[k]) / (k + 1) ** 0.5 for k in range(52))
             for name, ph in phases.items()}
    x = {name: torch.from_numpy(w / np.abs(w).max()).float()[None] for name, w in waves.items()}

    def relative_change(kind):  # one mean per window removed, so each band's level (or delay) is kept
        fe = FrontEnd(replace(FeatureConfig.of_kind(kind), norm="global"))
        a, b = fe(x["pulse"]), fe(x["random"])
        return float((a - b).norm() / a.norm())

    assert relative_change("lfb") < 0.02 and relative_change("mgd") > 0.5

    mgd = FrontEnd(FeatureConfig.of_kind("mgd"))
    speech = torch.from_numpy(speech_like(4.0, pauses=False)).float()[None]
    torch.testing.assert_close(mgd(0.1 * speech), mgd(speech), atol=0.05, rtol=0)  # features spread about 3
    silent = mgd(torch.zeros(1, 64000))
    assert silent.shape == (1, 60, 397) and torch.isfinite(silent).all() and float(silent.abs().max()) == 0.0

    cfg = CheckpointConfig(name="pg", features=FeatureConfig.of_kind("mgd"), model=ModelConfig(n_features=60))
    d = Detector.untrained(cfg, seed=6)
    checkpoint.save(tmp_path / "pg", d.model, cfg)
    d2 = Detector.load(tmp_path / "pg")
    assert d2.config.features.kind == "mgd" and d2.config.features.lifter == 30
    y = speech_like(5.0, pauses=False)
    assert d2.score_array(y, 16000).logit == pytest.approx(d.score_array(y, 16000).logit, abs=1e-5)


def test_frequency_deviation_front_end_reads_how_far_each_tone_sits_from_its_bin():
    """``kind="ifd"``: thirty tones on FFT bin centres, then the same tones 10 Hz higher or lower. The log
    filterbank barely changes (the energy stays in its bands); the instantaneous frequency deviation does, and
    before pooling it reads the offset itself, in Hz, with its sign. Gain changes nothing; silence gives zeros."""
    from dataclasses import replace

    import numpy as np
    import torch

    from voiceguard.features import FeatureConfig, FrontEnd

    t = np.arange(64000) / 16000

    def tones(shift):  # 250 Hz = 8 bins of 31.25 Hz: every tone on a bin centre when shift is 0
        w = sum(np.cos(2 * np.pi * (250 * (k + 1) + shift) * t) / (k + 1) ** 0.5 for k in range(30))
        return torch.from_numpy(w / np.abs(w).max()).float()[None]

    x = {shift: tones(shift) for shift in (0, 10, -10)}

    def relative_change(kind, shift):
        fe = FrontEnd(replace(FeatureConfig.of_kind(kind), norm="global"))
        a, b = fe(x[0]), fe(x[shift])
        return float((a - b).norm() / a.norm())

    for shift in (10, -10):
        assert relative_change("lfb", shift) < 0.1 and relative_change("ifd", shift) > 0.25

    fe = FrontEnd(FeatureConfig.of_kind("ifd"))
    c = fe.config
    for shift in (0, 10, -10):  # raw deviation at the 1 kHz tone's bin: Im(Y X*) / |X|^2, in Hz
        z = torch.stft(x[shift], c.n_fft, c.hop_length, c.win_length, fe.window, center=False, return_complex=True)
        y = torch.stft(x[shift], c.n_fft, c.hop_length, c.win_length, fe.aux_window, center=False,
                       return_complex=True)
        k = 32  # 1000 Hz
        dev = (z.imag * y.real - z.real * y.imag)[0, k] / z[0, k].abs().square()
        assert float(dev.median()) == pytest.approx(shift, abs=1.0)

    speech = torch.from_numpy(speech_like(4.0, pauses=False)).float()[None]
    torch.testing.assert_close(fe(0.1 * speech), fe(speech), atol=0.05, rtol=0)
    silent = fe(torch.zeros(1, 64000))
    assert silent.shape == (1, 60, 397) and float(silent.abs().max()) == 0.0


def test_combined_networks_score_the_mean_of_their_window_logits(tmp_path):
    """An ensemble checkpoint (scripts/combine_checkpoints.py) round-trips and scores each window with the
    mean of its members' logits; an old single-network JSON (no `members`) still loads as one network."""
    import numpy as np

    from voiceguard.model import MeanEnsemble, combine

    a, b = Detector.untrained(seed=1), Detector.untrained(seed=2)
    ens = combine([a.model, b.model])
    checkpoint.save(tmp_path / "ens", ens, a.config.replace(model=ens.config, name="ens"))
    loaded = Detector.load(tmp_path / "ens")
    assert isinstance(loaded.model, MeanEnsemble) and loaded.config.model.members == 2
    x = speech_like(9.0, pauses=False)
    seg = [np.array([s.probability for s in d.score_array(x, 16000).segments]) for d in (a, b, loaded)]
    logit = [np.log(p / (1 - p)) for p in seg]  # identity calibration on untrained configs
    np.testing.assert_allclose(logit[2], (logit[0] + logit[1]) / 2, atol=1e-4)
    with pytest.raises(ValueError, match="same architecture"):
        combine([a.model])

    checkpoint.save(tmp_path / "one", a.model, a.config)
    cfg = json.loads((tmp_path / "one.json").read_text())
    del cfg["model"]["members"]
    (tmp_path / "one.json").write_text(json.dumps(cfg))
    assert checkpoint.load(tmp_path / "one")[1].model.members == 1


def test_networks_of_different_front_ends_combine_and_each_reads_its_own(tmp_path):
    """A filterbank network and a group-delay network combined (as scripts/combine_checkpoints.py does): the
    checkpoint stores both front-ends, round-trips, and scores each window with the mean of the two networks'
    own logits; split into its networks again, each scores as before. A config whose networks do not read its
    front-ends is refused."""
    import numpy as np
    import torch

    from voiceguard.checkpoint import CheckpointConfig
    from voiceguard.features import FeatureConfig
    from voiceguard.model import ModelConfig, combine

    lfb, mgd = FeatureConfig.of_kind("lfb"), FeatureConfig.of_kind("mgd")
    a = Detector.untrained(CheckpointConfig(name="a", features=lfb, model=ModelConfig(n_features=60)), seed=1)
    b = Detector.untrained(CheckpointConfig(name="b", features=mgd, model=ModelConfig(n_features=60)), seed=2)
    ens = combine([a.model, b.model], inputs=(0, 1))
    checkpoint.save(tmp_path / "mix", ens, a.config.replace(model=ens.config, extra_features=(mgd,), name="mix"))
    loaded = Detector.load(tmp_path / "mix")
    assert loaded.config.front_ends == (lfb, mgd) and loaded.config.model.inputs == (0, 1)
    x = speech_like(9.0, pauses=False)
    seg = [np.array([s.probability for s in d.score_array(x, 16000).segments]) for d in (a, b, loaded)]
    logit = [np.log(p / (1 - p)) for p in seg]  # identity calibration on untrained configs
    np.testing.assert_allclose(logit[2], (logit[0] + logit[1]) / 2, atol=1e-4)

    # split again (as combine_checkpoints.py does with a combined input): each network with its own front-end
    # scores as it did alone, and the parts combine into the same ensemble
    parts = checkpoint.members(loaded.model, loaded.config)
    assert [c.features for _, c in parts] == [lfb, mgd] and all(c.model.members == 1 for _, c in parts)
    for (net, cfg), alone in zip(parts, logit[:2]):
        p = np.array([s.probability for s in Detector(net, cfg).score_array(x, 16000).segments])
        np.testing.assert_allclose(np.log(p / (1 - p)), alone, atol=1e-4)
    again = combine([net for net, _ in parts], inputs=(0, 1))
    assert all(torch.equal(u, v) for u, v in zip(again.state_dict().values(), ens.state_dict().values()))
    assert checkpoint.members(a.model, a.config) == [(a.model, a.config)]

    with pytest.raises(ValueError, match="front-ends"):
        a.config.replace(model=ens.config)  # networks reading a second front-end, none stored
    with pytest.raises(ValueError, match="front-ends"):
        a.config.replace(extra_features=(mgd,))  # a second front-end no network reads
    with pytest.raises(ValueError, match="each of the 2 members"):
        ModelConfig(members=2, inputs=(0,))


def test_a_telephone_band_network_reads_only_the_lowest_rows(tmp_path):
    """A network trained on the lowest 30 of the 60 bands (0-4 kHz, `train_default.py --rows 30`) ignores the
    rest of the feature map, round-trips, and is not combined with full-band networks."""
    import torch

    from voiceguard.model import ModelConfig, combine

    full = Detector.untrained(seed=1)
    narrow = Detector.untrained(full.config.replace(model=ModelConfig(rows=30)), seed=2)
    feats = torch.randn(2, 60, 401)
    high = feats.clone()
    high[:, 30:] += 5 * torch.randn(2, 30, 401)  # the band above 4 kHz changes
    with torch.inference_mode():
        assert torch.equal(narrow.model(feats), narrow.model(high))
        assert not torch.allclose(full.model(feats), full.model(high))
    checkpoint.save(tmp_path / "narrow", narrow.model, narrow.config)
    loaded = Detector.load(tmp_path / "narrow")
    assert loaded.config.model.rows == 30
    x = speech_like(5.0, pauses=False)
    assert loaded.score_array(x, 16000).logit == pytest.approx(narrow.score_array(x, 16000).logit, abs=1e-6)
    with pytest.raises(ValueError, match="same architecture"):
        combine([full.model, narrow.model])
    with pytest.raises(ValueError, match="rows"):
        ModelConfig(rows=61)


def test_newer_format_refused_naming_both_versions(tmp_path):
    d = Detector.untrained()
    checkpoint.save(tmp_path / "m", d.model, d.config)
    cfg = json.loads((tmp_path / "m.json").read_text())
    cfg["format_version"], cfg["voiceguard_version"] = 99, "9.0.0"
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"format 99.*9\.0\.0.*reads format 1"):
        checkpoint.load(tmp_path / "m")


def test_pickle_is_never_loaded(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    d = Detector.untrained()
    checkpoint.save(tmp_path / "m", d.model, d.config)
    (tmp_path / "m.safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(CheckpointError, match="safetensors"):
        checkpoint.load(tmp_path / "m")
    assert not (tmp_path / "PWNED").exists()


def test_weights_that_do_not_fit_the_config(tmp_path):
    d = Detector.untrained()
    checkpoint.save(tmp_path / "m", d.model, d.config)
    cfg = json.loads((tmp_path / "m.json").read_text())
    cfg["model"]["channels"] = [8, 8, 8, 8]
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        checkpoint.load(tmp_path / "m")


def test_shipped_checkpoint_loads_and_is_trained():
    model, cfg = checkpoint.load()
    assert cfg.trained and cfg.calibration.scale != 1.0
    assert 0.5 <= cfg.threshold < 1.0 and cfg.threshold_rule
    assert cfg.short_calibration is not None  # short clips get a low-confidence probability
    size = sum(p.stat().st_size for p in checkpoint.DEFAULT_DIR.glob("voiceguard.*"))
    assert size < 5 * 2**20  # a few MB at most


def test_fine_tuning_the_shipped_checkpoint_replays_every_networks_training_data(tmp_path):
    """The shipped checkpoint combines networks trained on different data; `voiceguard finetune` replays what the
    checkpoint records (train.replay_sources), so that record must hold every network's manifests."""
    from voiceguard.train import replay_sources

    _, cfg = checkpoint.load()
    members = cfg.training.get("members", [])
    recorded = cfg.training["replay"]["manifests"]
    assert len(recorded) == len(set(recorded))
    for member in members:
        assert member["data"]["manifests"] and set(member["data"]["manifests"]) <= set(recorded), member["checkpoint"]
    # stand-ins for those manifests under a checkout at tmp_path/repo: one training clip and one clip of a held-out
    # source each; the replay reads every one of them and keeps the held-out clips for validation
    held = cfg.training["replay"]["validation_sources"][0]
    root = tmp_path / "repo"
    for i, m in enumerate(recorded):
        path = root / m
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"path,label,source\nclip{i}.flac,spoof,manifest{i}\nheld{i}.flac,bonafide,{held}\n")
        for clip in (f"clip{i}.flac", f"held{i}.flac"):  # a manifest's missing files are skipped
            (path.parent / clip).write_bytes(b"")
    train_items, val_items = replay_sources(cfg, root=root)
    assert sorted(it.source for it in train_items) == [f"manifest{i}" for i in range(len(recorded))]
    assert [it.source for it in val_items] == [held] * len(recorded)


def test_model_card_describes_the_shipped_checkpoint(tmp_path):
    """checkpoints/README.md is generated from the shipped checkpoint's JSON and the measured sections tracked in
    checkpoints/card_sections.json: regenerating it gives the committed text (all but the corpus licence table,
    read from ../shared/corpus), so the card cannot go stale when the checkpoint changes, and a fresh clone can
    rebuild it."""
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "card.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "model_card.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr

    def head(text: str) -> str:  # everything before the licence table
        return text[: text.index("\n## Training data and licences")]

    committed = (ROOT / "checkpoints" / "README.md").read_text()
    assert "## Validation (held-out sources)" in head(committed)
    assert "## Long calls (held-out real speech)" in head(committed)  # a measured section, from card_sections.json
    assert head(out.read_text()) == head(committed)
    _, cfg = checkpoint.load(ROOT / "checkpoints" / "voiceguard")
    assert f"**{cfg.threshold:.3f}**" in head(committed)
