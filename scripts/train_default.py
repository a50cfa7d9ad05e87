#!/usr/bin/env python
"""Train one network of the shipped checkpoint's recipe (into runs/default/voiceguard.* unless --out says otherwise).

    .venv/bin/python scripts/make_spoofs.py --out data/gen --corpus ../shared/corpus   # ~10 min
    .venv/bin/python scripts/make_more_vocoded.py --n 600                              # ~15 min
    .venv/bin/python scripts/train_default.py                      # corpus + data/gen + data/gen2, ~35-70 min on 2 cores
    .venv/bin/python scripts/train_default.py --quick              # a few minutes, for a smoke run

The shipped checkpoint (checkpoints/voiceguard.*) is seven such networks, trained on different spoofs, combined
by scripts/combine_checkpoints.py; `make checkpoint` runs the whole recipe. The third (`--generated
data/gen/manifest.csv data/gen4/manifest.csv --generators piper hifigan`) trains on neural spoofs alone: the
corpus's, piper's and HiFi-GAN copies, none of the rule-based TTS voices or classic vocoder copies. The fourth
and fifth (`--features mgd`) are the first and third one's recipes on another front-end: the modified group
delay, which reads the phase spectrum that the filterbank discards. The sixth and seventh (`--features ifd`) are
the first and third one's recipes on the phase's slope along time, the instantaneous frequency deviation.

Data: ../shared/corpus/manifest.csv (real and synthetic speech of many public sources) plus the locally
generated spoofs in data/gen/manifest.csv (scripts/make_spoofs.py: espeak-ng, festival, flite, piper, and
WORLD / Griffin-Lim / LPC copy-synthesis of corpus clips). Validation holds out whole sources
(leave-sources-out), so its EER measures voices and generators the model never saw.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, replace
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voiceguard import checkpoint  # noqa: E402
from voiceguard.checkpoint import CheckpointConfig  # noqa: E402
from voiceguard.data import read_manifest  # noqa: E402
from voiceguard.features import KINDS  # noqa: E402
from voiceguard.augment import AugmentConfig  # noqa: E402
from voiceguard.train import ClipBank, TrainConfig, ValSet, train  # noqa: E402

#: whole sources kept out of training: their EER is the "unseen generator / unseen speaker" estimate
HELD_OUT_SOURCES = (
    "sh-lee-prml+HierSpeechpp-demo",  # HierSpeech++ zero-shot TTS / VC, with its real references
    "gemelo-ai+vocos",  # Vocos vocoder (en, es, fr, hi), with its real references
    "Camb-ai+MARS5-TTS",  # MARS5 voice cloning
    "codecfake+codecfake.github.io",  # neural codec resynthesis
    "hexgrad+kokoro",  # Kokoro TTS (es)
    "albertofrattini+emozionalmente",  # Italian real speech
    "pyannote+pyannote-audio",  # AMI meeting recordings (long, real)
)
#: locally generated generators held out the same way (prefix match on the generator column)
HELD_OUT_GENERATORS = ("flite", "lpc")


def is_held_out(item, sources=HELD_OUT_SOURCES) -> bool:
    """Held-out sources, held-out generators, and copy-syntheses of held-out sources' real clips
    (a vocoded clip stays on the side of the real clip it was made from, so no speaker leaks)."""
    return (item.comes_from(sources)
            or any(item.generator.startswith(g) for g in HELD_OUT_GENERATORS))


def keep_generators(generated: list, prefixes, held_out=HELD_OUT_SOURCES) -> list:
    """Locally generated items without the training spoofs whose generator does not start with one of
    ``prefixes``; every held-out item stays, so validation does not change."""
    return [it for it in generated if is_held_out(it, held_out) or it.generator.startswith(tuple(prefixes))]


def without_spoofs(items: list, held_out=HELD_OUT_SOURCES) -> list:
    """The items without their synthetic training clips (``--no-corpus-spoofs``); held-out ones stay for validation."""
    return [it for it in items if not it.label or is_held_out(it, held_out)]


def heldout_valset(record: dict, exclude: str | None = None, fakes: list | None = None,
                   sources: list | None = None, copies: int = 1) -> ValSet:
    """The validation set a checkpoint trained by this script was validated on, rebuilt from its training
    record (manifests and held-out sources): clean and telephone copies, as during training. ``exclude``: a
    source left out together with everything made from its clips (to measure "elsewhere" after fine-tuning on it).
    ``fakes``: synthetic items that take the place of the held-out synthetic clips (the real ones stay).
    ``sources``: keep only the synthetic clips of these sources (the real ones stay). ``copies``: telephone copies
    of each clip, each through another codec (see ``ValSet.build``)."""
    items = []
    for m in record["replay"]["manifests"]:
        if (ROOT / m).exists():
            items += read_manifest(ROOT / m)
    held = tuple(record["data"]["held_out_sources"])
    items = [it for it in items if is_held_out(it, held)
             and not (exclude and it.comes_from({exclude}))]
    if fakes is not None:
        items = [it for it in items if not it.label] + [it for it in fakes if it.label]
    if sources is not None:
        items = [it for it in items if not it.label or it.source in sources]
    return ValSet.build(ClipBank(items, max_seconds=20.0), copies=copies)


def per_source_report(logits: np.ndarray, val: ValSet, config: CheckpointConfig) -> dict:
    """Per held-out source (local spoofs: per generator): its synthetic clips against all held-out real clips,
    EER clean and telephone, and false alarms / misses at the config's threshold."""
    from voiceguard.metrics import eer

    y, cond = val.labels, np.array(val.condition)
    p_all = config.calibration.probability(np.nan_to_num(logits, nan=-50))

    def group(it) -> str:  # local spoofs are named by generator (flite, lpc), corpus clips by source
        return it.generator.split("/")[0] if it.source.startswith("local-") else it.source

    per_source = {}
    for src in sorted({group(it) for it in val.items}):
        in_src = np.array([group(it) == src for it in val.items])
        row = {}
        for c in ("clean", "telephone"):
            ok = np.isfinite(logits) & (cond == c)
            fake = ok & in_src & (y == 1)
            real = ok & (y == 0)
            if fake.any():
                row[f"eer_{c}"] = round(float(eer(np.r_[logits[fake], logits[real]],
                                                     np.r_[np.ones(fake.sum()), np.zeros(real.sum())])[0]), 4)
            if (ok & in_src & (y == 0)).any():
                row[f"false_alarm_{c}"] = round(float((p_all[ok & in_src & (y == 0)] >= config.threshold).mean()), 4)
            if (ok & in_src & (y == 1)).any():
                row[f"miss_{c}"] = round(float((p_all[ok & in_src & (y == 1)] < config.threshold).mean()), 4)
        row["files"] = int((in_src & (cond == "clean")).sum())
        per_source[src] = row
    return per_source


def _rel(path: str) -> str:
    """A path relative to the repository root when it can be (so the record works on other clones)."""
    import os

    return os.path.relpath(Path(path).resolve(), ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus" / "manifest.csv"))
    ap.add_argument("--generated", nargs="*", default=[str(ROOT / "data" / "gen" / "manifest.csv"),
                                                       str(ROOT / "data" / "gen2" / "manifest.csv")],
                    help="manifests of locally generated spoofs")
    ap.add_argument("--out", default=str(ROOT / "runs" / "default" / "voiceguard"),
                    help="checkpoint to write (default runs/default/voiceguard; the shipped one is a combination)")
    ap.add_argument("--epochs", type=int, default=28)
    ap.add_argument("--steps", type=int, default=80, help="steps per epoch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-minutes", type=float, default=90.0, help="stop training after this much time")
    ap.add_argument("--workers", type=int,
                    help="crop-preparing processes (default: voiceguard.train.default_crop_workers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", choices=KINDS, default="lfb", help="front-end kind")
    ap.add_argument("--bands", type=int, default=None,
                    help="filters of the front-end (default: 70 for lfcc, 60 for the others)")
    ap.add_argument("--norm", choices=("row", "global"), default="row",
                    help="mean removed per window from each feature row (row) or from the whole map (global)")
    ap.add_argument("--freq-stride", type=int, default=1,
                    help="stride of the LCNN's first layer along frequency (2 for fine-resolution spectra)")
    ap.add_argument("--frame-hop", type=int, default=160, help="front-end frame step in samples (default 160: 10 ms)")
    ap.add_argument("--rows", type=int, default=0,
                    help="the network reads only the lowest ROWS bands of the front-end (30 of 60: 0-4 kHz)")
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 24, 32, 32], help="LCNN channels per stage")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay,
                    help="AdamW's decoupled weight decay (default %(default)g)")
    ap.add_argument("--head", choices=("linear", "ocsoftmax"), default="linear", help="loss / output head")
    ap.add_argument("--window", type=float, default=4.0, help="seconds of audio per scored window (training crop)")
    ap.add_argument("--hop", type=float, default=None, help="seconds between scored windows (default: --window)")
    ap.add_argument("--pair-fraction", type=float, default=0.0,
                    help="share of training examples drawn as matched (copy-synthesis, its real original) pairs")
    ap.add_argument("--rawboost", type=float, default=0.0, help="probability of a RawBoost distortion per example")
    ap.add_argument("--music", type=float, default=0.0,
                    help="probability of random instrumental music under a training crop, 3-25 dB below it")
    ap.add_argument("--telephone", type=float, default=AugmentConfig.p_telephone, metavar="P",
                    help="share of training crops put through a telephone channel (default %(default)s)")
    ap.add_argument("--band-limit", type=float, default=AugmentConfig.p_band_limit, metavar="P",
                    help="share of training crops low-passed at 3.4-7.5 kHz, no codec (default %(default)s)")
    ap.add_argument("--wideband-codecs", nargs="+", default=list(AugmentConfig.wideband_codecs), metavar="CODEC",
                    help="codecs of the wideband-codec augmentation (default: %(default)s; opus16 may be added)")
    ap.add_argument("--telephone-weights", nargs="+", default=[], metavar="CODEC=W",
                    help="relative weights of the narrowband codecs in the telephone augmentation, e.g. gsm=3 ulaw=2 "
                         "(codecs not named weigh 1)")
    ap.add_argument("--speed", type=float, default=0.0,
                    help="probability that a training crop is played 0.88-1.12 times as fast (real and fake alike)")
    ap.add_argument("--mixup", type=float, default=0.0,
                    help="training only: mix examples pairwise, features and labels, weights ~ Beta(MIXUP, MIXUP)")
    ap.add_argument("--sam", type=float, default=0.0,
                    help="training only: sharpness-aware minimisation with this radius (e.g. 0.05; each step costs "
                         "a second forward and backward pass)")
    ap.add_argument("--consistency", type=float, default=0.0,
                    help="weight of a loss pulling a crop's telephone-channel logit towards its clean one's "
                         "(with --view-fraction)")
    ap.add_argument("--view-fraction", type=float, default=0.0,
                    help="share of training examples drawn as clean/telephone view pairs of one crop")
    ap.add_argument("--freq-mask", type=float, default=0.0,
                    help="training only: blank a random band of up to this share of the feature rows per example")
    ap.add_argument("--balance", choices=("sqrt", "source"), default="sqrt",
                    help="sampling weight of training clips: sqrt of each source's and speaker's size, or every "
                         "source alike (see ClipBank.sampling_weights)")
    ap.add_argument("--adversary", type=float, default=0.3,
                    help="weight of the gradient-reversed classifier of real clips' source (0: off)")
    ap.add_argument("--adversary-fakes", action="store_true",
                    help="the source adversary also tells synthetic clips' sources apart (within their class)")
    ap.add_argument("--ema", type=float, default=0.995,
                    help="validate and ship an exponential moving average of the weights (decay per step; 0: off)")
    ap.add_argument("--patience", type=int, default=100,
                    help="epochs without a better validation EER before stopping (default: run them all)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the training step")
    ap.add_argument("--train-on", nargs="*", default=[], metavar="SOURCE",
                    help="move these of the held-out sources into training (the rest stay held out)")
    ap.add_argument("--generators", nargs="+", metavar="PREFIX",
                    help="train only on these of the locally generated spoofs (prefix of the manifests' generator "
                         "column, e.g. piper hifigan); held-out ones stay in validation either way")
    ap.add_argument("--no-corpus-spoofs", action="store_true",
                    help="train on none of the corpus's synthetic clips, only on the generated ones (with --generators "
                         "hifigan: copy-syntheses of training-side real clips); held-out ones stay in validation")
    ap.add_argument("--kd", metavar="CHECKPOINT",
                    help="distil this trained checkpoint (same features; e.g. checkpoints/voiceguard, three "
                         "networks) into the one network trained here, on the same augmented crops")
    ap.add_argument("--kd-weight", type=float, default=0.5,
                    help="with --kd: share of the detection loss taken against the teacher's probabilities")
    ap.add_argument("--quick", action="store_true", help="tiny run (a few minutes) to check the pipeline")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("train_default")
    import torch

    torch.set_num_threads(args.threads)

    unknown = set(args.train_on) - set(HELD_OUT_SOURCES)
    if unknown:
        ap.error(f"--train-on: not held-out sources: {sorted(unknown)}")
    held_out = tuple(s for s in HELD_OUT_SOURCES if s not in args.train_on)
    try:
        augment = AugmentConfig(p_rawboost=args.rawboost, p_speed=args.speed, p_music=args.music,
                                p_telephone=args.telephone, p_band_limit=args.band_limit,
                                wideband_codecs=tuple(args.wideband_codecs),
                                telephone_weights=tuple((c, float(w)) for c, w in
                                                        (a.split("=", 1) for a in args.telephone_weights)))
    except ValueError as err:  # unknown codecs, or a --telephone-weights item without "="
        ap.error(f"{err} (--telephone-weights takes CODEC=WEIGHT, e.g. gsm=3; --wideband-codecs takes names)")
    from voiceguard.features import FeatureConfig

    feats = replace(FeatureConfig.of_kind(args.features, args.bands), hop_length=args.frame_hop, norm=args.norm)
    teacher = None
    if args.kd:  # checked before any data is decoded
        teacher, teacher_cfg = checkpoint.load(args.kd)
        if teacher_cfg.front_ends != (feats,):
            ap.error(f"--kd: {args.kd} has other features ({teacher_cfg.front_ends}) than this run ({feats})")
    items = read_manifest(args.corpus)
    if args.no_corpus_spoofs:
        items = without_spoofs(items, held_out)
    for gen in args.generated:
        if Path(gen).exists():
            more = read_manifest(gen)
            items += keep_generators(more, args.generators, held_out) if args.generators else more
        else:
            log.warning("no generated spoofs at %s (run scripts/make_spoofs.py first)", gen)
    if args.quick:
        rng = np.random.default_rng(0)
        items = [items[i] for i in sorted(rng.choice(len(items), 300, replace=False))]
        args.epochs, args.steps, args.max_minutes = 2, 10, 5
    train_items = [it for it in items if not is_held_out(it, held_out)]
    val_items = [it for it in items if is_held_out(it, held_out)]
    log.info("train: %d files (%d synthetic); validation (held-out sources): %d files (%d synthetic)",
             len(train_items), sum(it.label for it in train_items), len(val_items),
             sum(it.label for it in val_items))
    t0 = time.time()
    train_bank = ClipBank(train_items)
    val_bank = ClipBank(val_items, max_seconds=20.0)
    val = ValSet.build(val_bank)
    n_pairs = len(train_bank.pairs())
    log.info("matched copy-synthesis pairs in training: %d", n_pairs)
    log.info("decoded: train %.1f min (skipped %s), validation %.1f min, in %.0f s", train_bank.seconds() / 60,
             dict(train_bank.skipped), val_bank.seconds() / 60, time.time() - t0)

    cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                      max_seconds=args.max_minutes * 60, workers=args.workers, seed=args.seed, patience=args.patience,
                      lr=args.lr, weight_decay=args.weight_decay, pair_fraction=args.pair_fraction, ema=args.ema,
                      freq_mask=args.freq_mask,
                      mixup=args.mixup, sam=args.sam, consistency=args.consistency,
                      view_fraction=args.view_fraction, balance=args.balance, adversary=args.adversary,
                      adversary_fakes=args.adversary_fakes, kd=args.kd_weight if args.kd else 0.0,
                      augment=augment)
    from voiceguard.checkpoint import WindowConfig
    from voiceguard.model import ModelConfig

    base = CheckpointConfig(name=f"voiceguard-lcnn-{args.features}", features=feats,
                            window=WindowConfig(seconds=args.window, hop_seconds=args.hop or args.window),
                            model=ModelConfig(n_features=feats.n_features, channels=tuple(args.channels),
                                              head=args.head, freq_stride=args.freq_stride, rows=args.rows))

    def show(rec):
        log.info("epoch %s: %s", rec["epoch"], {k: round(v, 4) if isinstance(v, float) else v
                                               for k, v in rec.items() if k != "epoch"})

    result = train(train_bank, val, config=cfg, base=base, progress=show, kd_teacher=teacher)

    per_source = per_source_report(result.val_logits, val, result.config)
    best = min((h for h in result.history if "eer_all" in h), key=lambda h: h["eer_all"])
    summary = {
        "command": "python scripts/train_default.py " + " ".join(argv or sys.argv[1:]),
        "data": {
            "train_files": len(train_bank), "train_minutes": round(train_bank.seconds() / 60, 1),
            "train_synthetic_files": int(train_bank.labels.sum()),
            "train_generators": args.generators or [],  # of the generated spoofs; [] = all of them
            "corpus_spoofs": not args.no_corpus_spoofs,  # the corpus's synthetic clips trained on
            "validation_files": len(val_bank), "validation_minutes": round(val_bank.seconds() / 60, 1),
            "held_out_sources": list(held_out), "held_out_generators": list(HELD_OUT_GENERATORS),
            "skipped": dict(train_bank.skipped),
        },
        "replay": {  # lets `voiceguard finetune` replay this data when it is on the machine
            "manifests": [_rel(args.corpus)] + [_rel(g) for g in args.generated],
            "validation_sources": list(held_out), "validation_generators": list(HELD_OUT_GENERATORS),
        },
        "train_config": {k: v for k, v in vars(cfg).items() if k not in ("augment", "device")},
        **({"kd_teacher": _rel(args.kd)} if args.kd else {}),
        "augment": asdict(cfg.augment),
        "pairs": n_pairs,
        "best_epoch": best["epoch"],
        "validation": {k: v for k, v in best.items() if k.startswith("eer")},
        "validation_per_source": per_source,
        "history": result.history,
        "minutes": round((time.time() - t0) / 60, 1),
    }
    config = result.config.replace(training=summary)
    path = checkpoint.save(args.out, result.model, config)
    log.info("wrote %s (+ .json); validation %s; threshold %.3f", path, summary["validation"], config.threshold)
    print(json.dumps({"validation": summary["validation"], "per_source": per_source}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
