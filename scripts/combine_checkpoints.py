#!/usr/bin/env python
"""Combine checkpoints trained apart (other seeds, other augmentation) into one that averages their logits.

    .venv/bin/python scripts/combine_checkpoints.py runs/H/voiceguard runs/L/voiceguard --out runs/HL/voiceguard
    .venv/bin/python scripts/combine_checkpoints.py checkpoints/voiceguard runs/M/voiceguard --out runs/plus/voiceguard

A combined checkpoint given as input counts as its networks (the second line adds one to the shipped ones). The
members must share the network shape and windows, and have been validated on the same held-out sources (all
trained by scripts/train_default.py). They may read different front-ends of the same frame grid (say, the log
filterbank and the modified group delay): the combined checkpoint then computes each once per window and gives
each network its own. The combined model is scored on that held-out validation
set through the inference path; its calibration, threshold and length penalty are fitted there, as at the end
of training, and its training record lists each member's. Prints the validation EERs of each member and of the
combination.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.train_default import heldout_valset, per_source_report  # noqa: E402
from voiceguard import checkpoint  # noqa: E402
from voiceguard.calibration import Calibration  # noqa: E402
from voiceguard.detector import Detector  # noqa: E402
from voiceguard.features import build_frontend  # noqa: E402
from voiceguard.model import combine  # noqa: E402
from voiceguard.train import fitted_config, score_valset, val_metrics  # noqa: E402

MEMBER_KEYS = ("command", "best_epoch", "minutes", "validation")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="two or more checkpoints (NAME, NAME.json or NAME.safetensors)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", help="name stored in the checkpoint (default: the first member's + '-xN')")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    loaded, paths = [], []
    for p in args.checkpoints:  # a combined checkpoint counts as its networks, each reading its own front-end
        nets = checkpoint.members(*checkpoint.load(p))
        loaded += nets
        paths += [p] if len(nets) == 1 else [cfg.training.get("checkpoint") or f"{p}[{i}]"
                                             for i, (_, cfg) in enumerate(nets)]
    first = loaded[0][1]
    for path, (_, cfg) in zip(paths[1:], loaded[1:]):
        for what in ("window", "sample_rate"):
            if getattr(cfg, what) != getattr(first, what):
                ap.error(f"{path}: its {what} differ from {paths[0]}'s; members must share them")
        if cfg.training.get("data", {}).get("held_out_sources") != first.training.get("data", {}).get(
                "held_out_sources"):
            ap.error(f"{path}: validated on other held-out sources than {paths[0]}")
    front_ends = list(dict.fromkeys(cfg.features for _, cfg in loaded))  # in order of first use
    inputs = tuple(front_ends.index(cfg.features) for _, cfg in loaded) if len(front_ends) > 1 else ()
    try:
        model = combine([m for m, _ in loaded], inputs)
        base = first.replace(name=args.name or f"{first.name}-x{len(loaded)}", model=model.config,
                             extra_features=tuple(front_ends[1:]),
                             calibration=Calibration(), short_calibration=None,
                             aggregation=replace(first.aggregation, length_penalty=0.0))
        build_frontend(base.front_ends)  # refuses front-ends whose maps differ in shape
    except ValueError as err:
        ap.error(str(err))
    val = heldout_valset(first.training)
    members = []
    for path, (m, cfg) in zip(paths, loaded):
        logits = score_valset(Detector(m, cfg), val)
        data = {k: v for k, v in cfg.training.get("data", {}).items() if k.startswith("train_")}
        data["manifests"] = cfg.training.get("replay", {}).get("manifests", [])
        members.append({"checkpoint": path, **{k: cfg.training.get(k) for k in MEMBER_KEYS}, "data": data,
                        "rescored": {k: round(v, 4) for k, v in val_metrics(logits, val).items() if k != "n"}})
        print(path, json.dumps(members[-1]["rescored"]), flush=True)
    logits, short_logits = score_valset(Detector(model, base), val, short=True)
    metrics = {k: round(v, 4) for k, v in val_metrics(logits, val).items() if k != "n"}
    config = fitted_config(base, logits, val, short_logits=short_logits)
    training = {k: v for k, v in first.training.items() if k not in MEMBER_KEYS + ("history",)}
    # fine-tuning replays the training data of every member (each member's manifests, in order, once)
    manifests = list(dict.fromkeys(m for mem in members for m in mem["data"]["manifests"]))
    training["replay"] = {**training.get("replay", {}), "manifests": manifests}
    training.update({
        "command": "python scripts/combine_checkpoints.py " + " ".join(argv or sys.argv[1:]),
        "members": members,
        "validation": metrics,
        "validation_per_source": per_source_report(logits, val, config),
        "minutes": round(sum(m.get("minutes") or 0 for m in members) + (time.time() - t0) / 60, 1),
    })
    config = config.replace(training=training)
    checkpoint.save(args.out, model, config)
    print("combined", json.dumps(metrics), f"threshold {config.threshold:.3f}", flush=True)
    print(f"wrote {checkpoint.resolve(args.out)[0]} (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
