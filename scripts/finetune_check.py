#!/usr/bin/env python
"""Fine-tune the shipped checkpoint on one generator it never saw, and record before/after for the model card.

    .venv/bin/python scripts/finetune_check.py [--source sh-lee-prml+HierSpeechpp-demo] [--seeds 0 1]
                                               [--layout manifest|folders|fakes-only] [finetune options]

Gives the shipped checkpoint the clips of one held-out source, as a user would, runs `voiceguard finetune`, times
it, and adds its printed EERs (new data's held-out part, original validation data) to checkpoints/card_sections.json.
Layouts: `manifest` (synthetic clips and real references, grouped by sample name so the split keeps a sample's
versions together), `folders` (two flat folders, `--real DIR --fake DIR`, speakers unknown: split by file) and
`fakes-only` (one flat folder of the synthetic clips, `--fake DIR`; real speech from the original data).

With `--new CSV --test CSV` the new clips are the synthetic clips of a manifest made here (say ~100 clips of
Kokoro-82M by `voiceguard synth`, given as `--fake DIR`), and the rest of that generator's output, another
manifest, is scored against the held-out real clips (clean and telephone copies) before and after: a test
set larger than the fine-tune's own held-out quarter, which played no part in choosing its epoch.

    .venv/bin/python scripts/finetune_check.py --new data/gen6/manifest.csv --test data/gen5/manifest.csv \
        --source hexgrad+kokoro --seeds 0 1
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voiceguard.train import FINETUNE_TELEPHONE_COPIES  # noqa: E402


class Elsewhere:
    """EER on the held-out sources unrelated to ``source`` (neither its clips nor copy-syntheses of them), before
    and after a fine-tune: what it costs elsewhere. Each file is scored clean and through every telephone codec of
    the validation, as the command's own check does (with one codec per file, one fine-tuned model's cost here read
    +2.4 points; with all four, +0.5 at most, pooled, clean or telephone). The set is decoded and the starting model
    scored once, however many fine-tunes are compared with it."""

    def __init__(self, start: str | None, source: str) -> None:
        from scripts.train_default import heldout_valset

        det = _load(start)
        self.source = source
        self.val = heldout_valset(det.config.training, exclude=source, copies=FINETUNE_TELEPHONE_COPIES)
        self.before = self._metrics(det)

    def _metrics(self, det) -> dict:
        """The EERs (pooled, clean, telephone) of ``det``; the logits under ``"logits"``."""
        from voiceguard.train import score_valset, val_metrics

        logits = score_valset(det, self.val)
        return dict(val_metrics(logits, self.val), logits=logits)

    def change(self, after: dict) -> str:
        """The pooled EER's change with its 95 % paired bootstrap interval (a file and its copies drawn together)."""
        from voiceguard.evaluate import change_text
        from voiceguard.train import val_change

        c = val_change(self.before["logits"], after["logits"], self.val)
        units = f", {c['n_units'][0]} real and {c['n_units'][1]} synthetic files drawn"
        return f"; pooled change {change_text(c, units)}"

    @property
    def files(self) -> int:
        return sum(c == "clean" for c in self.val.condition)

    def line(self, tuned: Path) -> str:
        from voiceguard.train import eer_lost

        after = self._metrics(_load(tuned))
        return self.describe(self.before, after, f"On the {self.files} held-out files unrelated to {self.source}",
                             f"; largest rise {eer_lost(self.before, after) * 100:+.1f} points{self.change(after)}")

    @staticmethod
    def describe(a: dict, b: dict, what: str, tail: str = "") -> str:
        return (f"{what} (each clean and through {FINETUNE_TELEPHONE_COPIES} telephone codecs): EER "
                f"{a['eer_all']:.1%} before, {b['eer_all']:.1%} after (clean {a['eer_clean']:.1%} → "
                f"{b['eer_clean']:.1%}, telephone {a['eer_telephone']:.1%} → {b['eer_telephone']:.1%}{tail}).")


class RestOfOutput(Elsewhere):
    """EER of a generator's other clips (a manifest's synthetic ones) against the held-out real clips, before and
    after fine-tuning on some of its output."""

    def __init__(self, start: str | None, manifest: str) -> None:
        from scripts.train_default import heldout_valset
        from voiceguard.data import read_manifest

        det = _load(start)
        self.manifest = manifest
        fakes = [it for it in read_manifest(manifest) if it.label == 1]
        self.val = heldout_valset(det.config.training, fakes=fakes, copies=FINETUNE_TELEPHONE_COPIES)
        self.n_fakes = len(fakes)
        self.before = self._metrics(det)

    def line(self, tuned: Path) -> str:
        real = self.files - self.n_fakes
        after = self._metrics(_load(tuned))
        return self.describe(self.before, after, f"The rest of its output, {self.n_fakes} other clips "
                                                 f"({self.manifest}), against the {real} held-out real clips",
                             self.change(after))


def _load(path):
    from voiceguard.detector import Detector

    return Detector.load(path, device="cpu")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="sh-lee-prml+HierSpeechpp-demo")
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--extra", default=str(ROOT / "checkpoints" / "card_sections.json"))
    ap.add_argument("--layout", choices=("manifest", "folders", "fakes-only"), default="manifest")
    ap.add_argument("--from", dest="start", metavar="CHECKPOINT", help="starting checkpoint (default: shipped)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="one fine-tune per seed (each splits the new data into other train/held-out parts)")
    ap.add_argument("--new", metavar="CSV", help="fine-tune on the synthetic clips of this manifest (as --fake DIR) "
                                                 "instead of the clips of --source; --source then names the corpus "
                                                 "source of the same generator, left out of 'elsewhere'")
    ap.add_argument("--test", metavar="CSV", help="with --new: the rest of the generator's output, scored before and "
                                                  "after against the held-out real clips")
    args, finetune_args = ap.parse_known_args(argv)  # the rest goes to `voiceguard finetune` (e.g. --epochs 10)
    corpus = Path(args.corpus)
    out = ROOT / "runs" / "finetune_check"
    out.mkdir(parents=True, exist_ok=True)
    if args.test and not args.new:
        ap.error("--test goes with --new")
    if args.new:  # a manifest made here: its paths are relative to its folder
        corpus, args.layout = Path(args.new).resolve().parent, "fakes-only"
        rows = [r for r in csv.DictReader(open(args.new, newline="")) if r["label"] == "spoof"]
    else:
        rows = [r for r in csv.DictReader(open(corpus / "manifest.csv", newline="")) if r["source"] == args.source]
    with open(out / "new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker", "source", "generator", "lang"])
        for r in rows:
            # speaker unknown on demo pages: group by the sample's name stem so pairs stay together
            stem = Path(r["path"]).stem.rsplit("__", 1)[0]
            w.writerow([str(corpus / r["path"]), r["label"], r["speaker"] or stem, r["source"], r["generator"],
                        r["lang"]])
    if args.layout == "manifest":
        data_args = ["--manifest", str(out / "new.csv")]
    else:  # flat folders of links, as files usually arrive
        data_args = []
        for label, flag in (("spoof", "--fake"), ("bonafide", "--real")):
            if label == "bonafide" and args.layout == "fakes-only":
                continue
            d = out / f"{args.layout}-{label}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            for r in rows:
                if r["label"] == label:
                    src = corpus / r["path"]
                    (d / f"{src.parent.name}__{src.name}").symlink_to(src)
            data_args += [flag, str(d)]
    if args.start:
        finetune_args = ["--from", args.start, *finetune_args]
    elsewhere = Elsewhere(args.start, args.source)
    rest = RestOfOutput(args.start, args.test) if args.test else None
    runs = []
    for seed in args.seeds:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "voiceguard", "finetune", *data_args,
                               "--out", str(out / f"model-{args.layout}-seed{seed}"), "--seed", str(seed),
                               *finetune_args],
                              capture_output=True, text=True, cwd=ROOT)
        minutes = (time.time() - t0) / 60
        print(proc.stderr[-3000:])
        print(proc.stdout)
        if proc.returncode != 0:
            return proc.returncode
        runs.append(f"`{' '.join(['--seed', str(seed), *finetune_args])}`: wall time {minutes:.1f} min on this "
                    "2-core machine (including decoding the replay data). Its output:\n\n```\n"
                    + proc.stdout.strip() + "\n```\n\n"
                    + (rest.line(out / f"model-{args.layout}-seed{seed}") + "\n\n" if rest else "")
                    + elsewhere.line(out / f"model-{args.layout}-seed{seed}"))
    how = {"manifest": "`voiceguard finetune --manifest new.csv`, the clips grouped by sample name (a sample's "
                       "versions stay on one side of the split),",
           "folders": "`voiceguard finetune --real real/ --fake fake/` with two flat folders (speakers unknown, so "
                      "the command holds out files at random),",
           "fakes-only": "`voiceguard finetune --fake fake/` with the synthetic clips alone in one flat folder "
                         "(real speech comes from the original training and validation data),"}[args.layout]
    used = [r for r in rows if args.layout != "fakes-only" or r["label"] == "spoof"]
    if args.new:
        gens = sorted({r["generator"].split("/")[0] for r in rows})
        langs = sorted({r["lang"] for r in rows})
        body = (f"{how} on the {len(used)} synthetic clips of `{args.new}` ({', '.join(gens)}, made here with "
                f"`voiceguard synth`; {'/'.join(langs)}), a generator none of the shipped networks trained on; each "
                f"seed holds out a different quarter of them. The fine-tuned model is then scored on the rest of "
                f"the generator's output, other clips it never saw (`{args.test}`).\n\n" + "\n\n".join(runs))
        key = f"Fine-tuning on {len(used)} clips of an unseen generator ({', '.join(gens)})"
    else:
        body = (f"{how} on {len(used)} clips of **{args.source}** "
                f"({sum(r['label'] == 'spoof' for r in used)} synthetic, {sum(r['label'] == 'bonafide' for r in used)} "
                f"real), a source the shipped model never trained on (it is one of the validation sources that chose "
                "its epoch); each seed splits the new data differently into a training and a held-out part.\n\n"
                + "\n\n".join(runs))
        key = "Fine-tuning on an unseen generator" + {"manifest": "", "folders": " (plain folders)",
                                                      "fakes-only": " (synthetic clips only)"}[args.layout]
    extra_path = Path(args.extra)
    extra = json.loads(extra_path.read_text()) if extra_path.exists() else {}
    extra[key] = body
    extra_path.write_text(json.dumps(extra, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
