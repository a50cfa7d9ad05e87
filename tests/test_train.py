"""Training and fine-tuning on tiny generated data; fine-tune -> evaluate through the CLI."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, speech_like, write
from voiceguard.data import read_folders
from voiceguard.train import (ClipBank, CropStream, TrainConfig, ValSet, _batches, group_of, split_by_group,
                              split_new_data, train, view_consistency_loss)

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
    x, y, _, _, _ = next(_batches(probe_stream, 32, 0, seed=5))

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


def test_weight_averaging_returns_the_validated_weights(dataset):
    """With ema > 0 the moving average is what is validated, kept and returned (not the raw weights)."""
    import numpy as np

    from voiceguard.detector import Detector
    from voiceguard.train import score_valset

    items = read_folders(dataset / "real", dataset / "fake")
    tr, va = split_by_group(items, 0.3, seed=0)
    val = ValSet.build(ClipBank(va), telephone=False)
    res = train(ClipBank(tr), val, config=TrainConfig(epochs=2, steps_per_epoch=4, batch_size=8, workers=0,
                                                        lr=3e-3, ema=0.9, freq_mask=0.2, mixup=0.4,
                                                        sam=0.05))
    again = score_valset(Detector(res.model, res.config.replace(calibration=type(res.config.calibration)())), val)
    np.testing.assert_allclose(again, res.val_logits, rtol=1e-4, atol=1e-4)


def test_mixup_blends_features_and_labels_alike():
    from voiceguard.train import mix_batch

    feats = torch.randn(16, 60, 50)
    labels = torch.tensor([0.0, 1.0] * 8)
    domains = torch.arange(16)
    before = feats.clone()
    mixed, soft, dom = mix_batch(feats, labels, domains, 0.4, np.random.default_rng(0))
    assert torch.equal(feats, before) and mixed.shape == feats.shape
    assert ((soft >= 0) & (soft <= 1)).all()
    blends = 0
    for i in range(16):
        # each example is lam * itself + (1 - lam) * one example j of the batch; its label is the same blend
        fits = []
        for j in range(16):
            diff = feats[i] - feats[j]
            lam = 1.0 if j == i else float(((mixed[i] - feats[j]) * diff).sum() / (diff * diff).sum())
            if torch.allclose(mixed[i], lam * feats[i] + (1 - lam) * feats[j], atol=1e-4):
                fits.append((j, lam))
        assert fits and all(-1e-6 <= lam <= 1 + 1e-6 for _, lam in fits), (i, fits)
        assert len(fits) == 1 or all(lam > 0.999 for _, lam in fits)  # lam ~ 1: any partner fits
        j, lam = fits[0]
        assert torch.isclose(soft[i], lam * labels[i] + (1 - lam) * labels[j], atol=1e-4)
        assert dom[i] == (domains[i] if lam >= 0.5 else domains[j])  # the adversary's label: the larger part
        blends += 0.05 < lam < 0.95
    assert blends >= 4  # Beta(0.4, 0.4) puts about half its mass in the middle


def test_sam_step_takes_the_gradient_at_the_moved_weights():
    """SAM: the gradient left for the optimiser is the loss's gradient at w + rho * g / |g|, the weights
    come back unchanged, and batch-norm running statistics see only the first pass."""
    from voiceguard.train import sam_step

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    params = list(model.parameters())

    def loss_fn():
        return ((model(x) - y) ** 2).mean()

    loss_fn().backward()
    g = [p.grad.clone() for p in params]
    w = [p.detach().clone() for p in params]
    stats = model[1].running_mean.clone()
    rho = 0.3
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    # the expected gradient, at the moved weights, in a copy
    import copy

    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p, gi in zip(moved.parameters(), g):
            p.add_(rho * gi / norm)
    moved.zero_grad()
    ((moved(x) - y) ** 2).mean().backward()
    sam_step(model, params, rho, loss_fn)
    for p, w0 in zip(params, w):
        assert torch.allclose(p, w0, atol=1e-6)  # weights restored
    for p, q, gi in zip(params, moved.parameters(), g):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)  # the moved point's gradient ...
    assert any(not torch.allclose(p.grad, gi, atol=1e-4) for p, gi in zip(params, g))  # ... not the first one
    assert torch.equal(model[1].running_mean, stats) and model[1].momentum == 0.1


def test_frequency_masking_blanks_one_band_per_example():
    from voiceguard.train import mask_bands

    feats = torch.randn(64, 60, 100) + 5.0  # no row is zero by chance
    before = feats.clone()
    out = mask_bands(feats, 0.2, torch.Generator().manual_seed(0))
    assert out.shape == feats.shape and torch.equal(feats, before)  # input untouched
    widths = []
    for ex_in, ex_out in zip(feats, out):
        blank = (ex_out == 0).all(dim=1)
        rows = torch.nonzero(blank).flatten()
        widths.append(len(rows))
        if len(rows):
            assert rows.max() - rows.min() + 1 == len(rows)  # one contiguous band
        torch.testing.assert_close(ex_out[~blank], ex_in[~blank])  # the rest unchanged
    assert max(widths) <= 12 and len(set(widths)) > 3  # up to 20 % of 60 rows, widths vary


def test_finetune_then_evaluate_through_the_cli(dataset, untrained_checkpoint, tmp_path):
    out = run_cli("finetune", "--real", dataset / "real", "--fake", dataset / "fake", "--from", untrained_checkpoint,
                  "--out", tmp_path / "ft", "--epochs", "2", "--steps", "6", "--batch-size", "16", "--workers", "0")
    assert out.returncode == 0, out.stderr
    assert re.search(r"EER on the new data's validation part: before .*%; after .*%\n  pooled: [+-]\d+\.\d points "
                     r"\(95 % CI [+-]\d+\.\d to [+-]\d+\.\d, \d+ clips drawn with their telephone copies\): "
                     r"(better|worse|within noise)", out.stdout), out.stdout
    assert (tmp_path / "ft.safetensors").exists() and (tmp_path / "ft.json").exists()
    ev = run_cli("evaluate", "--real", dataset / "real", "--fake", dataset / "fake", "--checkpoint",
                 tmp_path / "ft.safetensors", "--by", "generator", "--plot", tmp_path / "plots",
                 "--scores", tmp_path / "scores.csv", "--baseline", untrained_checkpoint)
    assert ev.returncode == 0, ev.stderr
    assert re.search(r"EER +[0-9.]+ +\([0-9.]+ %, 95 % CI [0-9.]+-[0-9.]+ %;", ev.stdout), ev.stdout
    # did the fine-tune help? the same recordings scored by both, the change with its interval
    change = re.search(r"against the baseline .*\n  EER ([0-9.]+) % -> ([0-9.]+) %: [+-][0-9.]+ points \(95 % CI "
                       r"([+-][0-9.]+) to ([+-][0-9.]+)\): (better|worse|within noise)", ev.stdout)
    assert change, ev.stdout
    low, high, verdict = float(change[3]), float(change[4]), change[5]
    assert low <= high and verdict == ("better" if high < 0 else "worse" if low > 0 else "within noise")
    assert (tmp_path / "plots" / "det.png").exists()
    rows = (tmp_path / "scores.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 24 + 24


def _flat_copy(src_dirs, dest):
    """All files of ``src_dirs`` in one flat folder: one voice, speakers unknown, as a user often has them."""
    dest.mkdir(parents=True)
    for d in src_dirs:
        for f in sorted(d.rglob("*.wav")):
            (dest / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    return dest


def test_finetune_flags_default_to_the_python_api_defaults():
    """`voiceguard finetune` without flags runs what `train.finetune` runs by default (the CLI keeps its own
    defaults so that its start-up does not import torch; this keeps the two from drifting apart)."""
    from voiceguard.cli import build_parser
    from voiceguard.train import FINETUNE_CONFIG

    args = build_parser().parse_args(["finetune", "--fake", "x", "--out", "y"])
    got = {"epochs": args.epochs, "steps_per_epoch": args.steps, "lr": args.lr, "patience": args.patience,
           "max_seconds": args.max_minutes * 60, "l2sp": args.l2sp, "distill": args.distill,
           "replay_fraction": args.replay_fraction, "adversary": args.adversary, "batch_size": args.batch_size,
           "interpolate": tuple(args.interpolate), "ema": args.ema, "seed": args.seed, "warmup": args.warmup,
           "fit_budget": args.fit_budget}
    assert got == {k: getattr(FINETUNE_CONFIG, k) for k in got}


def test_flat_folders_are_split_by_file_with_a_note(dataset, tmp_path):
    """A flat folder (speakers unknown, one group) cannot be split by speaker: its files are held out at
    random and the user is told how to get a speaker split; labelled speaker folders still split by speaker."""
    fake = _flat_copy([dataset / "fake"], tmp_path / "newtts")
    items = read_folders(dataset / "real", fake)
    tr, va, notes = split_new_data(items, 0.25, seed=0)
    assert len(tr) + len(va) == len(items) and not {i.path for i in tr} & {i.path for i in va}
    fakes_va = [i for i in va if i.label == 1]
    assert len(fakes_va) == 6  # a quarter of the 24 synthetic files
    assert len(notes) == 1 and "synthetic" in notes[0] and "sub-folder" in notes[0]
    assert not {group_of(i) for i in tr if i.label == 0} & {group_of(i) for i in va if i.label == 0}


def test_a_class_missing_from_the_new_bank_is_drawn_from_the_replay_bank(dataset):
    fakes = [i for i in read_folders(dataset / "real", dataset / "fake") if i.label == 1]
    stream = CropStream(ClipBank(fakes), 16000, TrainConfig().augment, seed=3,
                        replay=ClipBank(read_folders(dataset / "real", None)), replay_fraction=0.0)
    drawn = [(lab, d, r) for _, (_, lab, d, r, _) in zip(range(200), stream)]
    assert 70 <= sum(lab for lab, _, _ in drawn) <= 130  # about half synthetic, half real (from the replay bank)
    # replayed real clips carry their source for the source adversary; synthetic ones do not
    assert stream.domains == ["real"]
    assert {d for lab, d, _ in drawn if lab == 0} == {0} and {d for lab, d, _ in drawn if lab == 1} == {-1}
    # and each example says whether it was replayed: here exactly the real ones
    assert all(r == (lab == 0) for lab, _, r in drawn)


def test_finetune_on_fakes_only_through_the_cli(dataset, untrained_checkpoint, tmp_path):
    """The common case: a folder of one new generator's output and nothing else. The real side comes from
    the original data (here named with --replay); without any original data the error says what to add."""
    fake = _flat_copy([dataset / "fake" / "en", dataset / "fake" / "it", dataset / "fake" / "de"],
                      tmp_path / "newvoice")
    replay = tmp_path / "original.csv"
    rows = ["path,label,speaker,source"] + [f"{f},bonafide,{f.parent.name},orig" for f in
                                            sorted((dataset / "real").rglob("*.wav"))]
    rows += [f"{f},spoof,{f.parent.name},orig" for d in ("en_f3", "en_m3", "it_f2")
             for f in sorted((dataset / "fake" / d).glob("*.wav"))]
    replay.write_text("\n".join(rows) + "\n")
    common = ["--from", untrained_checkpoint, "--epochs", "1", "--steps", "4", "--batch-size", "8", "--workers", "0"]
    out = run_cli("finetune", "--fake", fake, "--replay", replay, "--out", tmp_path / "ft", *common,
                  "--l2sp", "0", "--replay-fraction", "0.25", "--distill", "0.2", "--interpolate", "0.5")
    assert out.returncode == 0, out.stderr
    assert "holds no real recordings" in out.stderr and "held out at random, by file" in out.stderr
    assert re.search(r"EER on the new data's validation part: before all \d", out.stdout)
    assert (tmp_path / "ft.safetensors").exists()
    # the checkpoint records how it was fine-tuned, the regulariser flags included
    record = json.loads((tmp_path / "ft.json").read_text())["training"]["finetunes"][-1]
    assert record["settings"] == {"epochs": 1, "steps_per_epoch": 4, "lr": 1e-3, "warmup": None, "l2sp": 0.0,
                                  "distill": 0.2,
                                  "replay_fraction": 0.25, "adversary": 0.0, "interpolate": [0.5], "ema": 0.0,
                                  "fit_budget": True, "seed": 0}
    # with --interpolate the fine-tune runs to its last epoch and chooses among its mixes with the start
    assert record["kept_epoch"] == 1 and record["mix"] in (0.0, 0.5, 1.0)

    alone = run_cli("finetune", "--fake", fake, "--out", tmp_path / "ft2", *common)
    assert alone.returncode != 0 and not (tmp_path / "ft2.safetensors").exists()
    assert "no real recordings" in alone.stderr and "--real DIR" in alone.stderr
    last = alone.stderr.strip().splitlines()[-1]  # a clear one-line error, not a traceback
    assert "Traceback" not in alone.stderr and last.startswith("voiceguard: error:") and "--real DIR" in last


def test_training_from_a_model_keeps_it_when_no_epoch_beats_it(dataset):
    """Fine-tuning must never hand back a model worse than the one it started from (by its own rule)."""
    from voiceguard.detector import Detector

    items = read_folders(dataset / "real", dataset / "fake")
    tr, va = split_by_group(items, 0.3, seed=0)
    start = Detector.untrained(seed=4)
    before = {k: v.detach().cpu().clone() for k, v in start.model.state_dict().items()}  # (on CUDA when present)

    def only_the_start(logits, initial):  # every trained epoch scores worse than the starting weights
        return 0.0 if logits is initial else 1.0

    result = train(ClipBank(tr), ValSet.build(ClipBank(va), telephone=False), base=start.config,
                   init_model=start.model, select=only_the_start,
                   config=TrainConfig(epochs=2, steps_per_epoch=3, batch_size=8, workers=0, lr=5e-3))
    assert result.best_epoch == 0 and [h["epoch"] for h in result.history] == [0, 1, 2]
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(v.cpu(), before[k])


def test_distillation_keeps_the_replayed_clips_scores(dataset):
    """With ``distill`` the replayed clips' logits stay nearer the starting model's than without it, the more so
    the higher its weight, while the model still moves (learning without forgetting)."""
    import copy

    from voiceguard.detector import Detector
    from voiceguard.train import score_valset

    items = read_folders(dataset / "real", dataset / "fake")
    new = [i for i in items if i.label == 1 and "/en" in i.path.replace("\\", "/")]  # a "new generator"
    old = [i for i in items if i not in new]
    old_val = ValSet.build(ClipBank(old), telephone=False)
    start = train(ClipBank(old), old_val, config=TrainConfig(epochs=3, steps_per_epoch=16, batch_size=8, workers=0,
                                                             lr=3e-3))  # a model that has learnt the old data
    ok = np.isfinite(start.val_logits)  # clips without enough speech score NaN
    assert ok.sum() >= 10 and np.std(start.val_logits[ok]) > 0.1
    change = {}
    for distill in (0.0, 1.0, 4.0):
        res = train(ClipBank(new), ValSet.build(ClipBank(new[:2] + old[:4]), telephone=False), base=start.config,
                    init_model=copy.deepcopy(start.model), replay_bank=ClipBank(old),
                    select=lambda logits, initial: 1.0 - 0.1 * (logits is not initial),  # keep the trained epoch
                    config=TrainConfig(epochs=1, steps_per_epoch=40, batch_size=8, workers=0, lr=3e-3,
                                       replay_fraction=0.5, distill=distill))
        assert res.best_epoch == 1
        plain = start.config.replace(calibration=type(start.config.calibration)())  # as val_logits were scored
        after = score_valset(Detector(res.model, plain), old_val)
        change[distill] = float(((after[ok] - start.val_logits[ok]) ** 2).mean())
    # Forty steps, not a handful: AdamW's first steps move every weight by about the learning rate whatever the
    # loss, so in six steps the extra term mostly changed their direction; there the scores moved more with it
    # than without for 2 of 6 seeds on a CPU (the six-step test also failed on a GPU, cause not seen). With 40
    # steps, over seeds 0-3 on one CPU, the change fell to 24-80 % of the undistilled one; this seed's margin
    # is wide (0.24 and 0.29 there).
    assert 0 < change[4.0] < 0.75 * change[0.0] and 0 < change[1.0] < 0.75 * change[0.0], change


@pytest.mark.parametrize("front_ends", ["shared", "lfb+mgd"])
def test_finetuning_an_ensemble_moves_every_member(dataset, front_ends):
    """A combined checkpoint (scripts/combine_checkpoints.py) is fine-tuned as a whole, also when its networks
    read different front-ends."""
    from voiceguard.detector import Detector
    from voiceguard.features import FeatureConfig
    from voiceguard.model import MeanEnsemble, combine
    from voiceguard.train import finetune

    mixed = front_ends == "lfb+mgd"
    ens = combine([Detector.untrained(seed=1).model, Detector.untrained(seed=2).model],
                  inputs=(0, 1) if mixed else ())
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in ens.members]
    base = Detector.untrained().config.replace(
        model=ens.config, extra_features=(FeatureConfig.of_kind("mgd"),) if mixed else ())
    result, report = finetune(read_folders(dataset / "real", dataset / "fake"), ens, base, log_fn=lambda s: None,
                              config=TrainConfig(epochs=1, steps_per_epoch=3, batch_size=8, workers=0, lr=1e-3))
    assert isinstance(result.model, MeanEnsemble) and result.config.model.members == 2
    for m, b in zip(result.model.members, before):
        assert any(not torch.equal(v, b[k]) for k, v in m.state_dict().items() if v.is_floating_point())
    assert "eer_all" in report.after["new"]


def test_the_forgetting_check_leaves_out_the_new_data_s_own_sources(dataset):
    """Original validation files of a source the new data comes from (say, its real references, or copies made
    from them) are not "elsewhere": a fine-tune's gain there would hide its losses on everything else."""
    from dataclasses import replace

    from voiceguard.detector import Detector
    from voiceguard.train import finetune

    items = read_folders(dataset / "real", dataset / "fake")
    new = [replace(it, source="newsrc") for it in items[::2]]
    rest = items[1::2]
    same = [replace(it, source="newsrc") for it in rest[:4]]
    copies = [replace(it, source="local-world", extra={"orig_source": "newsrc"}) for it in rest[4:6]]
    other = [replace(it, source="other") for it in rest[6:]]
    assert {it.label for it in other} == {0, 1}

    def original_part(new_items, original):
        notes: list[str] = []
        start = Detector.untrained(seed=3)  # afresh: a fine-tune trains the model it is given
        _, report = finetune(new_items, start.model, start.config, original_val_items=original,
                             log_fn=notes.append,
                             config=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=8, workers=0, lr=1e-3))
        return report.before["original"], notes

    checked, notes = original_part(new, same + copies + other)
    assert any("6 files of the original validation data come from the new data's sources (newsrc)" in n
               for n in notes), notes
    assert checked == original_part(new, other)[0]  # scored on the other source's files alone
    # without a source in common, nothing is left out
    unnamed, notes = original_part([replace(it, source="") for it in new], same + copies + other)
    assert not any("left out of the check" in n for n in notes)
    assert unnamed["n"] > checked["n"]


def test_an_epoch_that_forgot_more_than_the_tolerance_is_never_kept():
    """The issue's bar: a fine-tune may cost at most 2 points elsewhere. The check keeps a margin below it (1 point)
    for its own noise; however much an epoch gained on the new data, if the original validation data lost more than
    that it ranks below the starting weights."""
    from voiceguard.train import FORGET_TOLERANCE, eer_lost, selection_key

    assert FORGET_TOLERANCE == 0.01
    start = selection_key(0.30, 0.0)  # the starting weights: nothing lost
    assert selection_key(0.05, 0.005) < start  # half a point lost: ranked by the new data
    assert selection_key(0.05, 0.01) < selection_key(0.06, 0.0)  # exactly 1 point still counts
    assert selection_key(0.0, 0.0101) > start  # 1.01 points lost: below the start, whatever it gained
    assert selection_key(0.0, 0.03) > selection_key(0.29, 0.009)
    assert selection_key(0.1, None) == 0.1  # no original data to check
    # what was lost is the largest rise of the pooled, clean and telephone EERs
    before = {"eer_all": 0.20, "eer_clean": 0.16, "eer_telephone": 0.22, "n": 100}
    assert eer_lost(before, {"eer_all": 0.19, "eer_clean": 0.15, "eer_telephone": 0.235, "n": 100}) \
        == pytest.approx(0.015)  # pooled and clean gained, telephone lost 1.5 points: that counts
    assert eer_lost(before, {"eer_all": 0.215, "eer_clean": 0.155, "eer_telephone": 0.21}) \
        == pytest.approx(0.015)  # both conditions gained, but their scores moved apart: the pooled EER lost
    assert eer_lost(before, {"eer_all": 0.18, "eer_clean": 0.14, "eer_telephone": 0.20}) == pytest.approx(-0.02)
    assert eer_lost({"eer_all": 0.2}, {"eer_all": 0.25, "eer_clean": 0.1}) == pytest.approx(0.05)  # shared ones
    assert eer_lost({}, {"eer_all": 0.2}) is None


def test_copies_tell_the_forgetting_check_where_unnamed_new_data_comes_from(dataset, tmp_path):
    """Plain folders say nothing of where their clips come from; when some are copies of original validation
    files, the originals' source is the new data's, and the rest of that source leaves the check too."""
    from dataclasses import replace

    from voiceguard.detector import Detector
    from voiceguard.train import finetune

    items = read_folders(dataset / "real", dataset / "fake")
    new, rest = items[::2], items[1::2]
    copied = []
    for i, it in enumerate(new):
        dest = tmp_path / ("real", "fake")[it.label] / f"{i}{Path(it.path).suffix}"
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(it.path, dest)
        copied.append(replace(it, path=str(dest), source=dest.parent.name, speaker=dest.parent.name))
    originals = [replace(it, source="newsrc") for it in new[:3]]  # the files the user copied
    same = [replace(it, source="newsrc") for it in rest[:4]]
    made = [replace(it, source="local-world", extra={"orig_source": "newsrc"}) for it in rest[4:6]]
    other = [replace(it, source="other") for it in rest[6:]]

    def original_part(original):
        notes: list[str] = []
        start = Detector.untrained(seed=3)
        _, report = finetune(copied, start.model, start.config, original_val_items=original, log_fn=notes.append,
                             config=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=8, workers=0, lr=1e-3))
        return report.before["original"], notes

    checked, notes = original_part(originals + same + made + other)
    assert any("3 files of the original data are copies of new files" in n for n in notes), notes
    assert any("6 files of the original validation data come from the new data's sources (newsrc)" in n
               for n in notes), notes
    assert checked == original_part(other)[0]


def test_copies_of_the_new_files_are_found_under_other_paths(dataset, tmp_path):
    """A user's new clips may be copies of files the model was validated on (say, from a public corpus): such
    copies leave the original data, or a fine-tune would be checked on the very clips it trains on."""
    from voiceguard.data import Item
    from voiceguard.train import copies_of

    wavs = sorted((dataset / "real").rglob("*.wav"))
    new = [Item(str(wavs[0]), 0), Item(str(wavs[1]), 0)]
    copy = tmp_path / "copy.wav"
    shutil.copy(wavs[0], copy)
    same_size = tmp_path / "same_size.wav"  # as long as the new file, other bytes
    data = bytearray(wavs[1].read_bytes())
    data[-1] ^= 1
    same_size.write_bytes(bytes(data))
    original = [Item(str(copy), 0), Item(str(same_size), 0), Item(str(wavs[5]), 0), Item(str(wavs[0]), 0),
                Item(str(tmp_path / "missing.wav"), 0)]
    assert copies_of(new, original) == {str(copy)}  # the same path is not a copy; it is left out by path


def test_the_report_says_how_much_the_original_validation_data_lost():
    from voiceguard.cli import FORGETTING_NOTE
    from voiceguard.train import FinetuneReport

    def report(before, after):
        return FinetuneReport({"new": {"eer_all": 0.3}, "original": before}, {"new": {"eer_all": 0.2},
                              "original": after}, [], "none", 10, 5, 1.0)

    assert report({"eer_all": 0.252}, {"eer_all": 0.287}).forgetting() == pytest.approx(0.035)
    assert report({"eer_all": 0.25, "eer_telephone": 0.25}, {"eer_all": 0.24, "eer_telephone": 0.27}
                  ).forgetting() == pytest.approx(0.02)  # a loss on the telephone copies counts
    assert report({"eer_all": 0.287}, {"eer_all": 0.252}).forgetting() == 0.0  # a gain is no loss
    assert report({}, {}).forgetting() == 0.0  # not scored (no original validation data on this machine)
    assert report({"eer_all": 0.25}, {"eer_all": 0.265}).forgetting() >= FORGETTING_NOTE > 0


def test_mixed_weights_lie_on_the_line_from_the_start_to_the_fine_tuned_ones():
    from voiceguard.train import mix_weights

    start = {"w": torch.zeros(3), "bn.running_var": torch.ones(2), "bn.num_batches_tracked": torch.tensor(5)}
    end = {"w": torch.tensor([2.0, -4.0, 8.0]), "bn.running_var": torch.full((2,), 3.0),
           "bn.num_batches_tracked": torch.tensor(9)}
    for share in (0.0, 0.25, 1.0):
        mixed = mix_weights(start, end, share)
        torch.testing.assert_close(mixed["w"], share * end["w"])
        torch.testing.assert_close(mixed["bn.running_var"], torch.full((2,), 1.0 + 2.0 * share))
        assert mixed["bn.num_batches_tracked"].item() == 9  # counters are not interpolated


def test_interpolation_keeps_the_mix_the_validation_prefers_and_refits_for_it(dataset):
    """``finetune``'s last step: of the fine-tuned weights mixed with the starting ones at each share, the one the
    selection rule prefers is kept, its weights exactly that mix and its calibration fitted on its own scores."""
    import copy

    from voiceguard.detector import Detector
    from voiceguard.train import TrainResult, _interpolated, mix_weights, score_valset

    items = read_folders(dataset / "real", dataset / "fake")
    val = ValSet.build(ClipBank(items[::3]), telephone=False)
    start, end = Detector.untrained(seed=1), Detector.untrained(seed=2)
    plain = start.config
    start_state = copy.deepcopy(start.model.state_dict())
    probe = copy.deepcopy(end.model)
    probe.load_state_dict(mix_weights(start_state, end.model.state_dict(), 0.5))
    wanted = score_valset(Detector(probe, plain), val)

    def select(logits, initial):  # prefers the logits of the half-way mix
        ok = np.isfinite(logits) & np.isfinite(wanted)
        return float(np.abs(logits[ok] - wanted[ok]).mean()) if ok.any() else 1.0

    res = TrainResult(copy.deepcopy(end.model), plain, [], score_valset(Detector(end.model, plain), val),
                      initial_logits=score_valset(Detector(start.model, plain), val), best_epoch=3)
    cfg = TrainConfig(interpolate=(0.25, 0.5, 0.75))
    out, share = _interpolated(res, start_state, val, cfg, plain, select, lambda s: None)
    assert share == 0.5
    for k, v in out.model.state_dict().items():  # train() hands models back on the CPU; probe may be on CUDA
        torch.testing.assert_close(v.cpu(), probe.state_dict()[k].cpu())
    np.testing.assert_allclose(out.val_logits, wanted, rtol=1e-5, atol=1e-5)
    assert out.config.calibration != plain.calibration  # re-fitted on the kept mix's scores

    # a rule that prefers the fine-tuned weights keeps them as they are
    res = TrainResult(copy.deepcopy(end.model), plain, [], res.val_logits, res.initial_logits, best_epoch=3)
    keep_end, share = _interpolated(res, start_state, val, cfg, plain, lambda lg, init: float(lg is not res.val_logits),
                                    lambda s: None)
    assert share == 1.0 and keep_end is res
    for k, v in keep_end.model.state_dict().items():
        torch.testing.assert_close(v.cpu(), end.model.state_dict()[k].cpu())


def test_copy_synthesis_pairs_share_crop_and_channel(tmp_path):
    """A synthetic clip naming its real original (orig_path) is drawn with it: same place, same channel."""
    import numpy as np

    from voiceguard.data import read_manifest

    x = speech_like(6.0, 16000, seed=7)
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    write(tmp_path / "real" / "a.wav", x, 16000)
    write(tmp_path / "real" / "b.wav", speech_like(5.0, 16000, seed=8, f0=200), 16000)
    # a stand-in "copy-synthesis" on the same timeline, whose first speech is cut (so it is trimmed later)
    write(tmp_path / "fake" / "a_voc.wav", np.r_[np.zeros(12000, np.float32), x[12000:]], 16000)
    write(tmp_path / "fake" / "c.wav", speech_like(5.0, 16000, seed=9, f0=90), 16000)
    (tmp_path / "m.csv").write_text("path,label,orig_path\nreal/a.wav,real,\nreal/b.wav,real,\n"
                                    "fake/a_voc.wav,fake,real/a.wav\nfake/c.wav,fake,\n")
    bank = ClipBank(read_manifest(tmp_path / "m.csv"))
    assert len(bank) == 4
    real_a = [i for i, it in enumerate(bank.items) if it.path.endswith("a.wav") and it.label == 0][0]
    fake_a = [i for i, it in enumerate(bank.items) if it.path.endswith("a_voc.wav")][0]
    assert bank.pairs() == [(fake_a, real_a)] and bank.offsets[fake_a] > bank.offsets[real_a]
    stream = iter(CropStream(bank, 32000, TrainConfig().augment, seed=1, pair_fraction=1.0))
    for _ in range(5):
        (xr, yr, _, _, _), (xf, yf, _, _, _) = next(stream), next(stream)
        assert (yr, yf) == (0, 1)
        np.testing.assert_allclose(xr, xf, atol=1e-6)  # identical content through an identical channel
    # without pairing, both classes still come out, from all clips
    labels = [y for _, y, _, _, _ in (next(iter(CropStream(bank, 32000, TrainConfig().augment, seed=s)))
                                   for s in range(20))]
    assert set(labels) == {0, 1}


def _two_real_sources(dataset):
    """The dataset's real clips as two sources: "a" (one speaker, 4 clips) and "b" (five speakers, 20 clips)."""
    from dataclasses import replace

    items = read_folders(dataset / "real", dataset / "fake")
    return [replace(it, source="a" if it.speaker == "spk0" else "b") if it.label == 0 else it for it in items]


def test_source_balance_weighs_every_source_alike(dataset, monkeypatch):
    """balance="source": a one-speaker source is drawn as often as a five-speaker one (with "sqrt" it is not)."""
    import voiceguard.train as vt

    monkeypatch.setattr(vt, "BALANCE_FULL", 4)  # both sources "full" (their size no longer counts)
    bank = ClipBank(_two_real_sources(dataset))
    share = {}
    for balance in ("sqrt", "source"):
        stream = CropStream(bank, 8000, TrainConfig().augment, seed=7, balance=balance)
        assert stream.domains == ["a", "b"]
        domains = [d for _, (_, y, d, _, _) in zip(range(600), stream) if y == 0]
        share[balance] = domains.count(0) / len(domains)
    assert 0.42 < share["source"] < 0.58, share
    assert share["sqrt"] < 0.40, share  # sqrt: 1 against sqrt(5) speakers' worth


def test_source_adversary_reverses_its_gradient_and_trains(dataset):
    """The adversary's classifier learns the source; the embedding gets the opposite gradient, scaled."""
    from voiceguard.train import SourceAdversary

    torch.manual_seed(0)
    adv = SourceAdversary(8, 3, weight=0.5, total_steps=1, device="cpu")
    e = torch.randn(6, 8, requires_grad=True)
    d = torch.tensor([0, 1, 2, -1, 0, -1])  # -1: synthetic, left out
    adv.loss(e, d).backward()
    plain = e.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(adv.classifier(plain[d >= 0]), d[d >= 0]).backward()
    lam = 0.5 * (2 / (1 + torch.exp(torch.tensor(-10.0))) - 1)
    torch.testing.assert_close(e.grad, -lam * plain.grad)
    assert adv.classifier.weight.grad is not None

    items = _two_real_sources(dataset)  # both real sources in training, so the adversary has two to tell apart
    res = train(ClipBank(items), ValSet.build(ClipBank(items[::3]), telephone=False),
                config=TrainConfig(epochs=2, steps_per_epoch=4, batch_size=8, workers=0, adversary=0.5))
    assert res.config.trained and len(res.history) == 2
    assert all(h["adversary_loss"] > 0 for h in res.history)  # the adversary was at work in every epoch


def test_train_through_the_cli_uses_the_shipped_recipe(dataset, tmp_path):
    """`voiceguard train` on folders writes a checkpoint with the shipped model's front-end (60-band log linear
    filterbank) that `voiceguard score` then loads."""
    import json

    out = run_cli("train", "--real", dataset / "real", "--fake", dataset / "fake", "--out", tmp_path / "new",
                  "--epochs", "2", "--steps", "4", "--batch-size", "8", "--workers", "0", "--balance", "source")
    assert out.returncode == 0, out.stderr
    assert re.search(r"wrote .*new\.safetensors; validation EER \d\.\d+ \(epoch \d\)", out.stdout)
    cfg = json.loads((tmp_path / "new.json").read_text())
    assert cfg["features"]["kind"] == "lfb" and cfg["features"]["n_filters"] == 60
    assert cfg["model"]["n_features"] == 60
    score = run_cli("score", next((dataset / "fake" / "it").glob("*.wav")), "--checkpoint", tmp_path / "new.safetensors")
    assert score.returncode == 0, score.stderr


def test_speed_perturbation_changes_pitch_and_keeps_crop_length(tmp_path):
    """With p_speed=1 every crop is a faster or slower playback (pitch moved with it), still n samples long."""
    from dataclasses import replace

    import numpy as np

    from voiceguard.data import read_manifest

    for name, seed in (("r", 1), ("f", 2)):
        write(tmp_path / f"{name}.wav", speech_like(3.0, 16000, seed=seed), 16000)
    (tmp_path / "m.csv").write_text("path,label\nr.wav,real\nf.wav,fake\n")
    bank = ClipBank(read_manifest(tmp_path / "m.csv"))
    tone = (0.5 * np.sin(2 * np.pi * 200 * np.arange(5 * 16000) / 16000)).astype(np.float32)
    quiet = replace(TrainConfig().augment, p_silence=0, p_reverb=0, p_noise=0, p_telephone=0, p_wideband_codec=0,
                    p_band_limit=0)
    stream = CropStream(bank, 16000, replace(quiet, p_speed=1.0, speed=(0.8, 1.25)), seed=5)
    pitches = []
    for x in (stream._crop(tone, np.random.default_rng(s)) for s in range(12)):
        assert len(x) == 16000
        pitches.append(np.argmax(np.abs(np.fft.rfft(x))))  # 1 Hz bins
    assert min(pitches) < 185 and max(pitches) > 215  # 200 Hz moved both ways
    plain = CropStream(bank, 16000, quiet, seed=5)
    assert np.argmax(np.abs(np.fft.rfft(plain._crop(tone, np.random.default_rng(0))))) == 200


def test_adversary_over_both_classes_labels_synthetic_sources_apart(dataset):
    """With fake_domains, a synthetic example carries its source's index, after the real sources; without, -1."""
    from dataclasses import replace

    items = _two_real_sources(dataset)
    items = [replace(it, source="tts") if it.label == 1 else it for it in items]
    bank = ClipBank(items)
    both = CropStream(bank, 8000, TrainConfig().augment, seed=2, fake_domains=True)
    assert both.domains == ["a", "b", "synthetic:tts"]
    seen = {(y, d) for _, (_, y, d, _, _) in zip(range(40), both)}
    assert {y for y, _ in seen} == {0, 1} and {d for y, d in seen if y == 1} == {2}
    assert {d for y, d in seen if y == 0} <= {0, 1}
    plain = CropStream(bank, 8000, TrainConfig().augment, seed=2)
    assert {d for _, (_, y, d, _, _) in zip(range(40), plain) if y == 1} == {-1}


def test_short_clips_get_their_own_calibration_fitted_with_classes_weighted_alike():
    """The short-clip calibration is fitted only on short clips, needs enough of both classes, and weighs the
    classes equally: a validation set where short clips are mostly synthetic does not make 'short' mean 'fake'."""
    from types import SimpleNamespace

    from voiceguard.calibration import Calibration
    from voiceguard.checkpoint import CheckpointConfig
    from voiceguard.train import MIN_SHORT_PER_CLASS, fit_short_calibration, fitted_config

    rng = np.random.default_rng(0)
    n_real, n_fake, n_long = 12, 60, 40
    labels = [0] * n_real + [1] * n_fake + [0, 1] * n_long
    val = ValSet([SimpleNamespace(label=y) for y in labels], [np.zeros(1)] * len(labels), ["clean"] * len(labels))
    short = np.full(len(labels), np.nan)
    short[:n_real] = rng.normal(0.0, 1.0, n_real)  # real short clips score lower ...
    short[n_real: n_real + n_fake] = rng.normal(1.0, 1.0, n_fake)  # ... than synthetic ones, but overlap
    logits = np.full(len(labels), np.nan)
    logits[n_real + n_fake:] = np.tile([-2.0, 2.0], n_long) + rng.normal(0, 0.5, 2 * n_long)

    cal = fit_short_calibration(short, val)
    assert cal is not None and 0 < cal.scale < 2
    z_mid = float(np.mean(short[:n_real]) + np.mean(short[n_real: n_real + n_fake])) / 2
    assert abs(float(cal.probability(z_mid)) - 0.5) < 0.1  # equal weights: the midpoint stays near 0.5
    cfg = fitted_config(CheckpointConfig(), logits, val, short_logits=short)
    assert cfg.short_calibration == cal and cfg.calibration != cal

    few = short.copy()
    few[MIN_SHORT_PER_CLASS - 1: n_real] = np.nan  # too few real short clips: no short calibration
    assert fit_short_calibration(few, val) is None
    kept = Calibration(scale=0.5, bias=0.0)
    assert fitted_config(CheckpointConfig(short_calibration=kept), logits, val, short_logits=few
                         ).short_calibration == kept  # (fine-tuning keeps the starting checkpoint's)


def test_train_default_generators_keeps_only_the_named_local_spoofs_for_training(tmp_path):
    """`scripts/train_default.py --generators piper hifigan` (the shipped AN network): of the locally generated
    spoofs only those generators train, and every held-out item stays for validation."""
    import csv
    import dataclasses
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from scripts.train_default import HELD_OUT_SOURCES, is_held_out, keep_generators, without_spoofs
    from voiceguard.data import read_manifest

    rows = [("piper.flac", "spoof", "local-tts", "piper/en"),
            ("espeak.flac", "spoof", "local-tts", "espeak-ng/it"),
            ("world.flac", "spoof", "local-vocoded", "world"),
            ("flite.flac", "spoof", "local-tts", "flite/en"),  # a held-out generator
            ("hifigan.flac", "spoof", "local-hifigan", "hifigan")]
    gen = tmp_path / "gen.csv"
    with open(gen, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "source", "generator"])
        w.writerows(rows)
    for name, *_ in rows:
        (tmp_path / name).write_bytes(b"")  # the reader lists files that exist
    generated = read_manifest(gen)
    assert len(generated) == len(rows)
    kept = keep_generators(generated, ["piper", "hifigan"])
    assert sorted(Path(it.path).name for it in kept) == ["flite.flac", "hifigan.flac", "piper.flac"]
    assert [Path(it.path).name for it in kept if is_held_out(it, HELD_OUT_SOURCES)] == ["flite.flac"]
    # --no-corpus-spoofs: a manifest's synthetic training clips go, its real clips and held-out spoofs stay
    assert sorted(Path(it.path).name for it in without_spoofs(generated)) == ["flite.flac"]
    real = dataclasses.replace(generated[0], label=0)
    assert without_spoofs([real, *generated]) == [real, generated[3]]


def test_crop_workers_default_to_one_on_the_cpu_and_to_the_spare_cores_on_a_gpu(monkeypatch):
    """Crop preparation bounds training on a GPU (one process: ~21 s of a fine-tuning epoch), not on a CPU."""
    import os

    from voiceguard.train import default_crop_workers

    for cores, on_gpu in ((2, 1), (4, 3), (16, 8), (1, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert default_crop_workers("cpu") == 1
        assert default_crop_workers("cuda") == default_crop_workers("cuda:0") == on_gpu
    assert TrainConfig().workers is None  # train() picks default_crop_workers(device)


def test_warmup_sets_where_the_learning_rate_peaks(dataset, monkeypatch):
    """--warmup: the learning rate rises over that share of the steps; by default a fine-tune starts at its peak."""
    from voiceguard.detector import Detector

    items = read_folders(dataset / "real", dataset / "fake")
    tr, va = split_by_group(items, 0.3, seed=0)
    lrs: list[float] = []
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):  # records the learning rate each step is taken with
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    seen = {}
    for warmup in (None, 0.5):
        lrs.clear()
        train(ClipBank(tr), ValSet.build(ClipBank(va), telephone=False), init_model=Detector.untrained().model,
              config=TrainConfig(epochs=1, steps_per_epoch=8, batch_size=8, workers=0, lr=1e-3, warmup=warmup))
        seen[warmup] = list(lrs)
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup=1.5)
    assert seen[None][0] > 0.9e-3 and seen[None] == sorted(seen[None], reverse=True)  # at (about) its peak
    peak = int(np.argmax(seen[0.5]))
    assert seen[0.5][0] < 1e-4 and 2 <= peak <= 4 and seen[0.5][peak] == pytest.approx(1e-3, rel=0.05)


def test_a_fine_tune_slower_than_its_budget_anneals_over_the_epochs_that_fit(dataset, monkeypatch):
    """--fit-budget: when the epochs are too slow for all of them to fit --max-minutes, the learning rate anneals
    to about zero over those that do (a clock that advances 10 s per optimiser step makes each epoch 40 s);
    without it the schedule is cut off with the learning rate still high."""
    import types

    import voiceguard.train as train_mod
    from voiceguard.detector import Detector

    items = read_folders(dataset / "real", dataset / "fake")
    tr, va = split_by_group(items, 0.3, seed=0)
    clock, lrs = [0.0], []
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        clock[0] += 10.0
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(time=lambda: clock[0]))
    seen = {}
    for fit in (False, True):
        lrs.clear()
        clock[0] = 0.0
        res = train(ClipBank(tr), ValSet.build(ClipBank(va), telephone=False), init_model=Detector.untrained().model,
                    config=TrainConfig(epochs=6, steps_per_epoch=4, batch_size=8, workers=0, lr=1e-3,
                                       max_seconds=100, fit_budget=fit))
        seen[fit] = (list(lrs), res.history)
    (cut, cut_hist), (fitted, fitted_hist) = seen[False], seen[True]
    assert len(cut) == len(fitted) == 8  # two 40 s epochs fit 100 s either way
    assert cut[:4] == fitted[:4]  # the first epoch follows the six-epoch schedule in both
    assert cut[-1] > 0.5e-3  # cut off two-sixths of the way down
    assert fitted[-1] < 0.1e-3 and fitted[4:] == sorted(fitted[4:], reverse=True)
    assert fitted_hist[1].get("planned_epochs") == 2 and "planned_epochs" not in cut_hist[1]
    assert train_mod.last_epoch_in_budget(8, 1, 510, 120, 100) == 4
    assert train_mod.last_epoch_in_budget(8, 1, 510, 500, 100) == 1
    assert train_mod.last_epoch_in_budget(3, 1, 5000, 120, 100) == 3


def test_of_epochs_alike_by_the_rule_the_tiebreak_keeps_the_lower(dataset):
    """train(select=..., tiebreak=...): epochs whose selection keys are equal are told apart by the tiebreak (a
    fine-tune keeps, of epochs alike on the new data, the one whose original validation EER is lower);
    without one the earliest stays."""
    from itertools import count

    from voiceguard.detector import Detector

    tr, va = split_by_group(read_folders(dataset / "real", dataset / "fake"), 0.3, seed=0)
    val = ValSet.build(ClipBank(va), telephone=False)
    cfg = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=8, workers=0, lr=1e-3)
    kept = {}
    for name, ties in (("none", None), ("later lower", count(0, -1)), ("later higher", count())):
        res = train(ClipBank(tr), val, config=cfg, init_model=Detector.untrained().model,
                    select=lambda logits, initial: 0.25, tiebreak=ties and (lambda logits: next(ties)))
        kept[name] = res.best_epoch
    assert kept == {"none": 0, "later lower": 2, "later higher": 0}


class _CallsEverythingReal(torch.nn.Module):
    """A teacher that gives every crop the logit -4 (probability 0.018 of being synthetic)."""

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.full((feats.shape[0],), -4.0, device=feats.device)


def test_distilling_a_teacher_follows_its_probabilities_instead_of_the_labels(dataset):
    """--kd: with the whole detection loss taken against the teacher, the network learns the teacher's
    answer (here "real" for everything), not the labels it learns without a teacher from the same start."""
    from voiceguard.model import ModelConfig, build_model

    items = read_folders(dataset / "real", dataset / "fake")
    tr, va = split_by_group(items, 0.3, seed=0)
    val = ValSet.build(ClipBank(va), telephone=False)
    fake = val.labels == 1
    mean_logit = {}
    for kd in (0.0, 1.0):
        torch.manual_seed(0)
        later = iter(range(0, -100, -1))  # every epoch "better" than the one before: the last one is kept
        res = train(ClipBank(tr), val, init_model=build_model(ModelConfig()), kd_teacher=_CallsEverythingReal(),
                    select=lambda logits, initial: next(later),
                    config=TrainConfig(epochs=3, steps_per_epoch=10, batch_size=16, workers=0, lr=5e-3, kd=kd))
        z = res.val_logits
        mean_logit[kd] = (float(np.nanmean(z[~fake])), float(np.nanmean(z[fake])))
    (real0, fake0), (real1, fake1) = mean_logit[0.0], mean_logit[1.0]
    assert fake0 > 0 > real0, mean_logit  # the labels alone: synthetic clips score as synthetic
    assert max(real1, fake1) < 0, mean_logit  # the teacher's answer ("real"), for real and synthetic alike ...
    # ... the labels mostly unlearnt: the synthetic clips fall by at least 40 % of the separation the labels alone
    # gave, and under a quarter of that separation is left (an absolute margin of 2 logits held on one machine and
    # missed by 0.3 on another, from the same seeds)
    gap0 = fake0 - real0
    assert fake1 < fake0 - 0.4 * gap0 and fake1 - real1 < 0.25 * gap0, mean_logit
    with pytest.raises(ValueError, match="kd"):
        TrainConfig(kd=1.5)
    with pytest.raises(ValueError, match="kd_teacher"):
        train(ClipBank(tr), val, config=TrainConfig(epochs=1, steps_per_epoch=1, workers=0, kd=0.5))


def test_compare_heldout_codec_copies_code_each_clean_clip_with_and_without_the_band_pass():
    """scripts/compare_heldout.py --codecs gsm ulaw: every clean held-out clip once more per codec and per way of
    making the copy; the band-passed copy loses what lies under 300 Hz, the plain 8 kHz copy keeps it."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from scripts.compare_heldout import codec_copies
    from voiceguard.data import Item

    t = np.arange(32000) / 16000
    low = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32) + 0.5 * speech_like(2.0, seed=1)
    items = [Item(path=f"{i}.flac", label=i % 2) for i in range(2)]
    val = ValSet(items=[items[0], items[0], items[1]], signals=[low, low, speech_like(2.0, seed=2)],
                 condition=["clean", "telephone", "clean"])
    extra = codec_copies(val, ["gsm", "ulaw"])
    assert extra.condition == ["gsm bp"] * 2 + ["gsm 8k"] * 2 + ["ulaw bp"] * 2 + ["ulaw 8k"] * 2
    assert [it.label for it in extra.items] == [0, 1] * 4  # the clean clips only, in order
    assert all(len(s) == 32000 for s in extra.signals)

    def under_300(x):
        spec = np.abs(np.fft.rfft(x)) ** 2
        return spec[np.fft.rfftfreq(len(x), 1 / 16000) < 300].sum() / spec.sum()

    bp, plain = extra.signals[4], extra.signals[6]  # clip 0 through µ-law, band-passed and not
    assert under_300(bp) < 0.2 * under_300(plain)
    assert under_300(plain) > 0.5 * under_300(low)
    assert codec_copies(val, []) is None


def test_view_pairs_are_one_crop_through_no_channel_and_a_telephone_channel(dataset):
    """view_fraction=1: every draw is a clean view (1) then its telephone view (2) of the same crop, label and
    source; batches keep the pairs next to each other."""
    items = read_folders(dataset / "real", dataset / "fake")
    bank = ClipBank(items)
    stream = iter(CropStream(bank, 16000, TrainConfig().augment, seed=4, view_fraction=1.0))
    f = np.fft.rfftfreq(16000, 1 / 16000)
    labels = set()
    for _ in range(6):
        (xc, yc, dc, rc, vc), (xt, yt, dt, rt, vt) = next(stream), next(stream)
        assert (vc, vt) == (1, 2) and (yc, dc, rc) == (yt, dt, rt)
        labels.add(yc)
        sc, st = np.abs(np.fft.rfft(xc)) ** 2, np.abs(np.fft.rfft(xt)) ** 2
        assert st[f > 4500].sum() / st.sum() < 0.2 * sc[f > 4500].sum() / sc.sum()  # only one lost the top band
        lo = (f > 400) & (f < 3000)  # the same speech below it (levels differ: each view gets its own gain)
        assert np.corrcoef(np.log(sc[lo] + 1e-9), np.log(st[lo] + 1e-9))[0, 1] > 0.6
    assert labels == {0, 1}
    _, _, _, _, v = next(_batches(CropStream(bank, 16000, TrainConfig().augment, seed=4, view_fraction=1.0),
                                  8, 0, seed=1))
    assert v.tolist() == [1, 2] * 4
    plain = [e[4] for _, e in zip(range(20), CropStream(bank, 16000, TrainConfig().augment, seed=4))]
    assert set(plain) == {0}


def test_the_consistency_loss_moves_the_telephone_view_towards_the_clean_one_only():
    logits = torch.tensor([2.0, -1.0, 0.5, 1.0], requires_grad=True)  # clean 0 <-> telephone 1; 2 <-> 3
    loss = view_consistency_loss(logits, torch.tensor([0, 2]), torch.tensor([1, 3]))
    loss.backward()
    g = logits.grad
    assert g[0] == 0 and g[2] == 0  # the clean views are the targets, not moved
    assert g[1] < 0 and g[3] > 0  # gradient descent raises -1 towards 2 and lowers 1 towards 0.5
    # at agreement the gradient vanishes
    same = torch.tensor([1.5, 1.5], requires_grad=True)
    view_consistency_loss(same, torch.tensor([0]), torch.tensor([1])).backward()
    assert abs(same.grad[1].item()) < 1e-7
    with pytest.raises(ValueError, match="view pairs"):
        TrainConfig(consistency=1.0)
    with pytest.raises(ValueError, match="mixup"):
        TrainConfig(consistency=1.0, view_fraction=0.5, mixup=0.4)


def test_training_with_view_pairs_records_and_narrows_the_views_gap(dataset):
    """With view pairs, each epoch records the mean telephone-clean logit gap; the consistency loss keeps it
    smaller than the same training without it."""
    items = read_folders(dataset / "real", dataset / "fake")
    tr, va = split_by_group(items, 0.3, seed=0)
    val = ValSet.build(ClipBank(va), telephone=False)
    gaps = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=3, steps_per_epoch=8, batch_size=16, workers=0, lr=5e-3, view_fraction=1.0,
                          consistency=weight)
        res = train(ClipBank(tr), val, config=cfg)
        gaps[weight] = [h["view_gap"] for h in res.history]
    assert len(gaps[0.0]) == len(gaps[5.0]) == 3
    assert np.mean(gaps[5.0]) < 0.7 * np.mean(gaps[0.0]), gaps


def test_the_short_clip_table_calibrates_short_clips_three_ways():
    """scripts/heldout_checks.py: short clips whose logits sit 3 below the long ones' but separate the classes
    perfectly among themselves. Pooled through the main calibration they blur the ranking; through a
    calibration of their own, fitted on them or on the other sources', they do not."""
    import sys
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from scripts.heldout_checks import short_clip_rows
    from voiceguard.calibration import Calibration

    rng = np.random.default_rng(0)
    n = 240
    y = np.tile([0, 1], n // 2)
    cond = np.array(["clean", "telephone"] * (n // 2))[np.argsort(rng.random(n))]
    val = ValSet([SimpleNamespace(label=int(y[i]), source=f"src{i % 4}") for i in range(n)], [np.zeros(1)] * n,
                 list(cond))
    is_short = (np.arange(n) // 2) % 3 == 0  # a third of the clips, both classes, every source
    long_z = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 0.8, n)
    short_z = np.where(y == 1, -2.5, -3.5) + rng.normal(0, 0.1, n)
    logits = np.where(is_short, np.nan, long_z)
    short = np.where(is_short, short_z, np.nan)
    main_cal = Calibration.fit(logits[~is_short], y[~is_short])
    own = Calibration.fit(short[is_short], y[is_short])
    rows = short_clip_rows(logits, short, val, main_cal, own)

    assert rows["the short clips alone"]["all"] == 0.0
    assert rows["clips with a verdict only"]["n"] == (~is_short).sum()
    pooled = rows["both, short clips through the main calibration"]
    shipped = rows["both, short clips through their own calibration (as shipped)"]
    crossed = rows["both, short calibration fitted with each held-out source left out"]
    assert pooled["n"] == shipped["n"] == crossed["n"] == n
    assert pooled["all"] > shipped["all"] + 5  # short real and synthetic clips all rank below the long reals
    assert abs(crossed["all"] - shipped["all"]) < 2  # the same fit, made without each source's own clips


def test_a_validation_set_can_hold_every_clip_through_every_telephone_codec(dataset):
    """A fine-tune compares two models on the same files; with one telephone copy per clip, which clip drew which
    codec moved that comparison by more than a point (session 34: +2.4 points one way, +0.5 at most with every
    codec). ``copies=4`` scores each clip through all four codecs.
    The calibration is still fitted on one copy per clip, so its false-alarm rate is not mostly the telephone's."""
    from voiceguard.checkpoint import CheckpointConfig
    from voiceguard.train import TELEPHONE_VAL_CODECS, fitted_config
    from voiceguard.augment import telephone_copy

    bank = ClipBank(read_folders(dataset / "real", dataset / "fake")[::5])
    one, every = ValSet.build(bank), ValSet.build(bank, copies=len(TELEPHONE_VAL_CODECS))
    n = len(bank)
    assert len(one.items) == 2 * n and not one.extra and one.primary.all()
    assert len(every.items) == 5 * n and every.condition.count("telephone") == 4 * n
    for i in range(n):  # clip i: clean, then each codec once, starting where one copy per clip would
        got = every.signals[5 * i + 1: 5 * i + 5]
        for k, x in enumerate(got):
            want = telephone_copy(bank.signal(i)[:320000], TELEPHONE_VAL_CODECS[(i + k) % 4])
            assert np.array_equal(x, want) or np.abs(x - want).max() < 1e-3  # (mp3's encoder may dither)
        assert every.extra[5 * i: 5 * i + 5] == [False, False, True, True, True]
    np.testing.assert_array_equal(every.signals[1], one.signals[1])
    primary = every.subset(every.primary)
    assert primary.condition == one.condition and [it.path for it in primary.items] == [it.path for it in one.items]
    joined = ValSet.join(one, every)  # a set without further copies joined to one with them
    assert joined.extra == [False] * (2 * n) + every.extra and joined.primary.sum() == 4 * n

    rng = np.random.default_rng(0)
    logits = rng.normal(every.labels * 2.0, 1.0)
    a = fitted_config(CheckpointConfig(), logits, every)
    b = fitted_config(CheckpointConfig(), logits[every.primary], primary)
    assert a.calibration == b.calibration and a.threshold == b.threshold
    assert a.aggregation.length_penalty == b.aggregation.length_penalty
