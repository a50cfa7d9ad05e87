"""Training and fine-tuning on tiny generated data; fine-tune -> evaluate through the CLI."""
from __future__ import annotations

import re
import subprocess

import pytest
import torch

from conftest import run_cli, speech_like, write
from voiceguard.data import read_folders
from voiceguard.train import (ClipBank, CropStream, TrainConfig, ValSet, _batches, group_of, split_by_group,
                              train)

VOICES = ["en", "en+f3", "en+m3", "it", "it+f2", "de"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """real/<speaker>/*.wav: voiced numpy signals; fake/<voice>/*.wav: espeak-ng speech."""
    root = tmp_path_factory.mktemp("data")
    sentences = ["The meeting is moved to Tuesday at nine.", "Please call me back when you get this message.",
                 "Your parcel could not be delivered today.", "I need the code that we sent you by text."]
    for s, f0 in enumerate((110, 140, 180, 220, 250, 95)):
        d = root / "real" / f"spk{s}"
        d.mkdir(parents=True)
        for k in range(4):
            write(d / f"{k}.wav", speech_like(3.0 + k, 16000, seed=10 * s + k, f0=f0, pauses=False), 16000)
    for voice in VOICES:
        d = root / "fake" / voice.replace("+", "_")
        d.mkdir(parents=True)
        for k, text in enumerate(sentences):
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(140 + 15 * k), "-w", str(d / f"{k}.wav"), text],
                           check=True)
    return root


def test_split_never_cuts_a_speaker(dataset):
    items = read_folders(dataset / "real", dataset / "fake")
    tr, va = split_by_group(items, 0.3, seed=1)
    assert len(tr) + len(va) == len(items)
    assert not {group_of(i) for i in tr} & {group_of(i) for i in va}
    assert {i.label for i in va} == {0, 1}


def test_short_training_lowers_the_loss(dataset):
    items = read_folders(dataset / "real", dataset / "fake")
    tr, va = split_by_group(items, 0.3, seed=0)
    bank = ClipBank(tr)
    val = ValSet.build(ClipBank(va), telephone=False)
    probe_stream = CropStream(bank, 64000, TrainConfig().augment, seed=123)
    x, y = next(_batches(probe_stream, 32, 0, seed=5))

    def loss_of(model):
        from voiceguard.features import FrontEnd

        model.eval()
        with torch.no_grad():
            return float(torch.nn.functional.binary_cross_entropy_with_logits(model(FrontEnd()(x)), y))

    from voiceguard.model import ModelConfig, build_model

    torch.manual_seed(0)
    start = build_model(ModelConfig())
    before = loss_of(start)
    res = train(bank, val, config=TrainConfig(epochs=3, steps_per_epoch=8, batch_size=16, workers=0, lr=3e-3),
                init_model=start)
    after = loss_of(res.model)
    assert after < before - 0.05, (before, after)
    assert res.config.trained and 0.5 <= res.config.threshold < 1.0
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3]


def test_finetune_then_evaluate_through_the_cli(dataset, untrained_checkpoint, tmp_path):
    out = run_cli("finetune", "--real", dataset / "real", "--fake", dataset / "fake", "--from", untrained_checkpoint,
                  "--out", tmp_path / "ft", "--epochs", "2", "--steps", "6", "--batch-size", "16", "--workers", "0")
    assert out.returncode == 0, out.stderr
    assert re.search(r"EER on the new data's validation part: before .*%; after .*%", out.stdout)
    assert (tmp_path / "ft.safetensors").exists() and (tmp_path / "ft.json").exists()
    ev = run_cli("evaluate", "--real", dataset / "real", "--fake", dataset / "fake", "--checkpoint",
                 tmp_path / "ft.safetensors", "--by", "generator", "--plot", tmp_path / "plots",
                 "--scores", tmp_path / "scores.csv")
    assert ev.returncode == 0, ev.stderr
    assert "EER" in ev.stdout
    assert (tmp_path / "plots" / "det.png").exists()
    rows = (tmp_path / "scores.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 24 + 24
