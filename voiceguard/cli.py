"""Command line: parse arguments, call the Python API, format output, return an exit code.

No logic lives only here. ``main(argv)`` is testable; only ``__main__`` calls ``sys.exit``.
Heavy imports (torch) happen inside the command functions, so ``voiceguard --help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

from . import __version__
from .errors import VoiceGuardError

EXIT_OK = 0
EXIT_FAILED = 1  # some input could not be processed
EXIT_USAGE = 2  # bad arguments / configuration


def _err(msg: str) -> None:
    print(f"voiceguard: error: {msg}", file=sys.stderr, flush=True)


def _fmt_time(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60:02d}:{s % 60:02d}" if s < 3600 else f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _add_model_args(p) -> None:
    """--checkpoint, --threshold and --device: how every scoring command loads its detector."""
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint (NAME.safetensors; NAME.json beside it; "
                                                        "default: the shipped one or $VOICEGUARD_CHECKPOINT)")
    p.add_argument("--threshold", type=float, metavar="P", help="probability at and above which the verdict is "
                                                                 "'synthetic' (default: the checkpoint's)")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")


def _load_detector(args):
    from .detector import Detector

    det = Detector.load(args.checkpoint, device=getattr(args, "device", None),
                        threshold=getattr(args, "threshold", None))
    if not det.config.trained:
        print("voiceguard: warning: this checkpoint is UNTRAINED (random weights); its scores mean nothing",
              file=sys.stderr)
    return det


# ---------------------------------------------------------------------------- score
def _add_score(sub) -> None:
    p = sub.add_parser("score", help="score recorded calls: probability that the voice is synthetic",
                       description="Score one or more recordings. Prints a verdict, a calibrated probability "
                                   "and the most suspicious stretches of each call.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files (wav, flac, ogg, opus, mp3, ...)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, per file (and channel)")
    p.add_argument("--channels", choices=("mix", "each"), default="mix",
                   help="mix channels into one (default) or score each channel on its own")
    p.add_argument("--plot", metavar="OUT.png", help="write a timeline plot (one file: OUT.png; several: "
                                                     "OUT-<name>.png)")
    p.add_argument("--top", type=int, default=3, metavar="N", help="suspicious stretches listed (default 3)")
    _add_model_args(p)
    p.set_defaults(func=_cmd_score)


def _print_human(res, top: int) -> None:
    name = res.path or "<array>"
    if res.channel is not None:
        name += f" [channel {res.channel}]"
    if res.verdict == "inconclusive":
        low = f"  p(synthetic)={res.probability:.3f}, low confidence" if res.probability is not None else ""
        print(f"{name}: INCONCLUSIVE ({res.reason}){low}; duration {_fmt_time(res.duration)}")
        return
    print(f"{name}: {res.verdict.upper()}  p(synthetic)={res.probability:.3f}  (threshold {res.threshold:.2f}; "
          f"{res.speech_seconds:.1f} s of speech in {_fmt_time(res.duration)})")
    spans = res.regions if res.regions else []
    if spans:
        spans = sorted(spans, key=lambda s: -s.probability)[:top]
        print("  flagged: " + ", ".join(f"{_fmt_time(s.start)}-{_fmt_time(s.end)} (p={s.probability:.2f})"
                                        for s in sorted(spans, key=lambda s: s.start)))
    elif res.segments:
        worst = sorted(res.segments, key=lambda s: -s.probability)[:top]
        print("  most suspicious: " + ", ".join(f"{_fmt_time(s.start)}-{_fmt_time(s.end)} (p={s.probability:.2f})"
                                                for s in sorted(worst, key=lambda s: s.start)))


def _plot_path(base: str, path: str, channel, many: bool) -> str:
    from pathlib import Path

    if not many and channel is None:
        return base
    b = Path(base)
    tag = Path(path).stem + (f"-ch{channel}" if channel is not None else "")
    return str(b.with_name(f"{b.stem}-{tag}{b.suffix or '.png'}"))


def _cmd_score(args) -> int:
    det = _load_detector(args)
    failed = 0
    many = len(args.paths) > 1
    for outcome in det.score_files(args.paths, channels=args.channels):
        if outcome.error is not None:
            failed += 1
            _err(str(outcome.error))
            continue
        for res in outcome.results:
            if args.json:
                print(json.dumps(res.to_dict()), flush=True)
            else:
                _print_human(res, args.top)
            if args.plot:
                from .plot import timeline

                out = timeline(res, _plot_path(args.plot, outcome.path, res.channel, many))
                if not args.json:
                    print(f"  timeline written to {out}")
    return EXIT_FAILED if failed else EXIT_OK


# ---------------------------------------------------------------------------- labelled data (shared)
def _add_data_args(p) -> None:
    src = p.add_argument_group("labelled recordings (folders, manifest and protocol can be combined)")
    src.add_argument("--real", metavar="DIR", help="folder of human recordings (recursive)")
    src.add_argument("--fake", metavar="DIR", help="folder of synthetic recordings (recursive)")
    src.add_argument("--manifest", metavar="CSV", help="CSV with path,label[,speaker,source,generator,lang,...]")
    src.add_argument("--protocol", metavar="FILE",
                     help="ASVspoof 2019 CM protocol, ASVspoof 2021 LA/DF trial_metadata.txt, ASVspoof 5 "
                          "protocol or In-the-Wild meta.csv (format detected)")
    src.add_argument("--audio-dir", metavar="DIR", help="folder of the protocol's audio (default: its folder)")


def _read_data_args(args):
    from .data import read_items

    return read_items(real=args.real, fake=args.fake, manifest=args.manifest, protocol=args.protocol,
                      audio_dir=args.audio_dir)


# ---------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="measure EER, minDCF, ROC AUC and error rates on labelled recordings",
                       description="Score labelled recordings and report EER, minDCF (ASVspoof 5 costs), ROC "
                                   "AUC, false-alarm and miss rates at the checkpoint's threshold, a per-group "
                                   "breakdown, DET/ROC plots and score files. Recordings that cannot be read "
                                   "or are inconclusive are counted, not scored.")
    _add_data_args(p)
    p.add_argument("--by", metavar="KEY", help="per-group breakdown: generator, source, lang, speaker or any "
                                               "manifest/protocol column (e.g. codec)")
    p.add_argument("--plot", metavar="DIR", help="write det.png and roc.png into DIR")
    p.add_argument("--scores", metavar="OUT.csv", help="write one CSV row per recording")
    p.add_argument("--asvspoof-scores", metavar="OUT.txt",
                   help="write 'trial score' lines in ASVspoof format (higher = bona fide)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--baseline", nargs="?", const="", metavar="FILE",
                   help="also score the recordings with this checkpoint (alone: the shipped one) and report how "
                        "the EER changed, with a paired bootstrap interval: better, worse or within noise")
    p.add_argument("--resamples", type=int, default=2000, metavar="N",  # = metrics.N_RESAMPLES (a test checks)
                   help="bootstrap resamples for the 95%% intervals of the EERs (default 2000; 0: no intervals)")
    p.add_argument("--resample-by", metavar="KEY",
                   help="resample whole groups of this column (e.g. speaker: one speaker's recordings are not "
                        "independent evidence); default: recording by recording")
    _add_model_args(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from tqdm import tqdm

    from .detector import Detector
    from .evaluate import compare, evaluate, format_comparison, format_report

    if args.resamples < 0:
        raise ValueError(f"--resamples must be 0 or more, not {args.resamples}")
    items = _read_data_args(args)
    det = _load_detector(args)
    detectors = [det] if args.baseline is None else [det, Detector.load(args.baseline or None, device=args.device)]
    reports = []
    for i, d in enumerate(detectors):
        with tqdm(total=len(items), unit="file", file=sys.stderr, disable=None, leave=False,
                  desc="baseline" if i else None) as bar:
            reports.append(evaluate(d, items, by=args.by, plot_dir=args.plot if i == 0 else None,
                                    scores_csv=args.scores if i == 0 else None,
                                    asvspoof_scores=args.asvspoof_scores if i == 0 else None,
                                    progress=lambda done, total: bar.update(1), resamples=args.resamples,
                                    resample_by=args.resample_by))
    report = reports[0]
    comparison = compare(reports[1], report, resample_by=args.resample_by, resamples=args.resamples) \
        if len(reports) > 1 and report.counts["scored"] else None
    if args.json:
        out = report.to_dict()
        if comparison is not None:
            out["comparison"] = comparison.to_dict()
        print(json.dumps(out), flush=True)
    else:
        print(format_report(report) + ("\n\n" + format_comparison(comparison) if comparison else ""), flush=True)
    if report.counts["scored"] == 0:
        _err(f"none of the {report.counts['items']} recordings could be scored")
        return EXIT_USAGE
    return EXIT_OK


# ---------------------------------------------------------------------------- scan
def _add_scan(sub) -> None:
    from .report import DEFAULT_TOP

    p = sub.add_parser("scan", help="score every recording in folders into one CSV/JSONL file (resumable)",
                       description="Score many recordings in parallel workers. One row per file (per file and "
                                   "channel with --channels each) is appended to --out as files finish, with the "
                                   "fields of `score --json`; unreadable files get a row with the error. An "
                                   "interrupted scan is finished by the same command with --resume. Exit status "
                                   "0: every file scored; 1: some could not be; 2: bad arguments.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="audio files or folders (audio found by extension)")
    p.add_argument("--out", required=True, metavar="FILE", help="results file: .csv or .jsonl")
    p.add_argument("--from-list", metavar="FILE", help="text file with one path per line (blank and # lines skipped)")
    p.add_argument("-r", "--recursive", action="store_true", help="look into subfolders of folders too")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (Ray actors with --engine ray); "
                                                            "0 or 1: score in this process (default: CPU cores, "
                                                            "at most 4)")
    p.add_argument("--batch-size", type=int, metavar="N", help="windows per model call (default: the detector's)")
    p.add_argument("--channels", choices=("mix", "each"), default="mix",
                   help="mix channels into one (default) or one row per channel")
    p.add_argument("--resume", action="store_true", help="continue an interrupted scan into the existing --out: "
                                                         "skip the files in it, repair a half-written last row")
    p.add_argument("--report", metavar="OUT.html", help="also write a self-contained HTML report")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N",
                   help=f"files with a timeline plot in the report (default {DEFAULT_TOP})")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local worker processes (default) or Ray (a running cluster when RAY_ADDRESS is set, "
                        "else a local instance; needs voiceguard[ray])")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    _add_model_args(p)
    p.set_defaults(func=_cmd_scan)


def _cmd_scan(args) -> int:
    import importlib.util
    import os

    from . import batch

    if not args.paths and not args.from_list:
        _err("scan needs at least one PATH or --from-list FILE")
        return EXIT_USAGE
    for name, value, low in (("--workers", args.workers, 0), ("--batch-size", args.batch_size, 1),
                             ("--top", args.top, 0)):
        if value is not None and value < low:
            _err(f"{name} must be >= {low}, got {value}")
            return EXIT_USAGE
    batch.output_format(args.out)
    if os.path.exists(args.out) and not args.resume:
        _err(f"{args.out} already exists; add --resume to continue that scan, or choose another --out")
        return EXIT_USAGE
    if args.engine == "ray" and importlib.util.find_spec("ray") is None:
        _err("--engine ray needs Ray, which is not installed: pip install 'voiceguard[ray]'")
        return EXIT_USAGE
    paths = batch.discover(args.paths, from_list=args.from_list, recursive=args.recursive)
    if not paths:
        _err("no audio files found in " + ", ".join(args.paths + ([args.from_list] if args.from_list else []))
             + ("" if args.recursive else " (add --recursive to look into subfolders)"))
        return EXIT_USAGE
    det = _load_detector(args)
    if args.batch_size:
        det.batch_size = args.batch_size
    bar = None

    def progress(p) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=p.files_total, initial=p.files_done, unit="file", file=sys.stderr,
                       disable=args.quiet or not sys.stderr.isatty(), dynamic_ncols=True, smoothing=0.05)
        if bar.disable:
            return
        bar.update(p.files_done - bar.n)
        speed = p.new_audio_seconds / max(p.elapsed, 1e-9)
        bar.set_postfix_str(f"{p.audio_seconds / 3600:.2f} h audio, {speed:.0f}x real time", refresh=False)

    try:
        summary = batch.scan(paths, args.out, checkpoint=args.checkpoint, device=args.device,
                             batch_size=args.batch_size, threshold=args.threshold, channels=args.channels,
                             workers=args.workers, engine=args.engine, resume=args.resume, progress=progress,
                             detector=det)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        _err(f"interrupted; the rows so far are in {args.out}: run the same command with --resume to finish")
        return 130
    if bar is not None:
        bar.close()
    if args.report:
        from .report import write_report

        wanted = set(paths)
        write_report([r for r in batch.read_rows(args.out) if r["path"] in wanted], args.report, detector=det,
                     top=args.top)
    if not args.quiet:
        rate = summary.new_audio_seconds / max(summary.wall_seconds, 1e-9)
        print(f"scanned {summary.files} files ({summary.new_files} in this run, {summary.files - summary.new_files}"
              f" already in {args.out}) in {_fmt_time(summary.wall_seconds)}: {summary.audio_seconds / 3600:.2f} h "
              f"of audio, {rate:.0f}x real time")
        print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.by_verdict.items())))
        if summary.by_error_kind:
            print(f"{summary.failed} files could not be scored: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(summary.by_error_kind.items())))
        print(f"results: {args.out}" + (f"; report: {args.report}" if args.report else ""), flush=True)
    return EXIT_FAILED if summary.failed else EXIT_OK


# ---------------------------------------------------------------------------- train / finetune
def _add_train_args(p, *, epochs: int, steps: int, lr: float, minutes: float, patience: int, ema: float) -> None:
    p.add_argument("--out", required=True, metavar="NAME", help="checkpoint to write: NAME.safetensors + NAME.json")
    p.add_argument("--epochs", type=int, default=epochs, help=f"at most this many epochs (default {epochs})")
    p.add_argument("--steps", type=int, default=steps, help=f"batches per epoch (default {steps})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    p.add_argument("--warmup", type=float, metavar="SHARE",
                   help="share of the steps over which the learning rate rises to its peak (default: 0.1 when "
                        "training from scratch, 0 when fine-tuning)")
    p.add_argument("--max-minutes", type=float, default=minutes, help=f"stop after this long (default {minutes:g})")
    p.add_argument("--patience", type=int, default=patience,
                   help=f"stop after this many epochs without a better validation EER (default {patience})")
    p.add_argument("--val-fraction", type=float, default=0.25,
                   help="share held out for validation, split by speaker/source (default 0.25)")
    p.add_argument("--ema", type=float, default=ema,
                   help=f"validate and keep a moving average of the weights, this decay per step (0: off; "
                        f"default {ema:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="processes preparing augmented examples (default: 1 on the CPU; "
                                                "on a GPU one per spare CPU core, at most 8)")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")


def _train_config(args, **extra):
    from .train import TrainConfig

    return TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size, lr=args.lr,
                       max_seconds=args.max_minutes * 60, seed=args.seed, workers=args.workers,
                       patience=args.patience, ema=args.ema, warmup=args.warmup,
                       device=args.device, **extra)


def _show_epoch(rec: dict) -> None:
    parts = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items() if k != "epoch"]
    print(f"epoch {rec['epoch']}: " + " ".join(parts), file=sys.stderr, flush=True)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a new model from labelled recordings",
                       description="Train a model from scratch. Validation is split off by speaker/source, never "
                                   "by file; the best epoch by validation EER is kept, then calibrated. To "
                                   "rebuild the shipped checkpoint use scripts/train_default.py.")
    _add_data_args(p)
    _add_train_args(p, epochs=20, steps=100, lr=2e-3, minutes=60, patience=6, ema=0.995)
    # the defaults are the shipped checkpoint's recipe (scripts/train_default.py)
    p.add_argument("--features", choices=("lfb", "lfcc", "logmel", "mgd", "ifd"), default="lfb",
                   help="front-end: log linear filterbank (default), LFCC with deltas, log mel filterbank, or "
                        "a phase front-end: modified group delay (mgd) or instantaneous frequency deviation (ifd)")
    p.add_argument("--bands", type=int, default=None, help="front-end filters (default 60; 70 for lfcc)")
    p.add_argument("--balance", choices=("sqrt", "source"), default="sqrt",
                   help="how clips are drawn across sources and speakers (default sqrt; see the README)")
    p.add_argument("--adversary", type=float, default=0.3,
                   help="weight of a gradient-reversed classifier of real clips' source (default 0.3; 0: off)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from . import checkpoint
    from .checkpoint import CheckpointConfig
    from .features import FeatureConfig
    from .model import ModelConfig
    from .train import ClipBank, ValSet, split_by_group, train

    items = _read_data_args(args)
    tr, va = split_by_group(items, args.val_fraction, seed=args.seed)
    print(f"train: {len(tr)} files, validation: {len(va)} files (split by speaker/source)", file=sys.stderr)
    val = ValSet.build(ClipBank(va))
    feats = FeatureConfig.of_kind(args.features, args.bands)
    base = CheckpointConfig(name=Path(args.out).name, features=feats,
                            model=ModelConfig(n_features=feats.n_features))
    config = _train_config(args, balance=args.balance, adversary=args.adversary)
    result = train(ClipBank(tr), val, config=config, base=base, progress=_show_epoch)
    best = min((h for h in result.history if "eer_all" in h), key=lambda h: h["eer_all"])
    cfg = result.config.replace(training={"history": result.history, "best_epoch": best["epoch"],
                                          "train_files": len(tr), "validation_files": len(va)})
    path = checkpoint.save(args.out, result.model, cfg)
    print(f"wrote {path}; validation EER {best['eer_all']:.3f} (epoch {best['epoch']}); "
          f"threshold {cfg.threshold:.3f}")
    return EXIT_OK


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="adapt a checkpoint to new real/synthetic samples in minutes",
                       description="Fine-tune a checkpoint (default: the shipped one) on new samples, e.g. a "
                                   "new voice generator seen in your calls. Part of the new data is held out by "
                                   "speaker/source; original training data is replayed when it is on this "
                                   "machine (or given with --replay) and its scores kept near the starting "
                                   "model's, and the weights are pulled towards the starting ones. Prints EER "
                                   "before and after on the new and original validation data. Flat folders "
                                   "(speakers unknown) are split by file; --fake alone works when original "
                                   "training data is there to replay, which then supplies the real speech.")
    _add_data_args(p)
    p.add_argument("--from", dest="checkpoint", metavar="CHECKPOINT", help="starting checkpoint (default: shipped)")
    p.add_argument("--replay", metavar="CSV", help="manifest of original training data to replay")
    _add_train_args(p, epochs=8, steps=40, lr=1e-3, minutes=8.5, patience=8, ema=0.0)
    p.add_argument("--adversary", type=float, default=0.0,
                   help="weight of a gradient-reversed classifier of real clips' source, new and replayed "
                        "(default 0: off)")
    p.add_argument("--distill", type=float, default=0.35,
                   help="weight of a loss keeping the replayed clips' scores near the starting model's, so it "
                        "forgets less of what it knew (learning without forgetting; 0: off; default 0.35)")
    p.add_argument("--l2sp", type=float, default=7e-4,
                   help="weight of a pull of the weights towards the starting ones (L2-SP; 0: off; default 0.0007)")
    p.add_argument("--replay-fraction", type=float, default=0.5,
                   help="share of each batch drawn from the replayed original training data when there is any "
                        "(default 0.5)")
    p.add_argument("--fit-budget", action=argparse.BooleanOptionalAction, default=True,
                   help="when the epochs run too slowly for all of them to fit --max-minutes, the learning rate "
                        "anneals over the epochs that fit instead of stopping while still high (default; "
                        "--no-fit-budget: the schedule of all the epochs, cut off at the budget)")
    p.add_argument("--interpolate", type=float, nargs="*", default=[],
                   metavar="SHARE",
                   help="train to the last epoch, then also try its weights mixed with the starting ones at "
                        "these shares of the fine-tuned ones (e.g. 0.25 0.5 0.75; weight-space ensembling, "
                        "WiSE-FT) and keep the best on the validation data, forgetting included (default: off, "
                        "the best epoch is kept; measured in the README)")
    p.set_defaults(func=_cmd_finetune)


FORGETTING_NOTE = 0.01  # EER lost on the original validation data from which `finetune` prints a note


def _cmd_finetune(args) -> int:
    from . import checkpoint
    from .data import read_manifest
    from .train import finetune, replay_sources

    items = _read_data_args(args)
    model, base = checkpoint.load(args.checkpoint)
    replay, original_val = replay_sources(base)
    if args.replay:
        replay = read_manifest(args.replay)
    if not replay:
        print("no original training data found to replay; regularising towards the starting weights only",
              file=sys.stderr)
    result, report = finetune(items, model, base, replay_items=replay, original_val_items=original_val,
                              config=_train_config(args, l2sp=args.l2sp,
                                                   replay_fraction=args.replay_fraction if replay else 0.0,
                                                   adversary=args.adversary, distill=args.distill,
                                                   interpolate=tuple(args.interpolate),
                                                   fit_budget=args.fit_budget),
                              val_fraction=args.val_fraction, log_fn=lambda m: print(m, file=sys.stderr),
                              progress=_show_epoch)
    path = checkpoint.save(args.out, result.model, result.config)

    def fmt(d: dict) -> str:
        return ", ".join(f"{k.replace('eer_', '')} {v:.1%}" for k, v in d.items() if k.startswith("eer_")) or "n/a"

    def change(part: str) -> str:
        from .evaluate import change_text

        c = report.changes.get(part)
        if c is None or c["verdict"] is None:
            return ""
        units = f", {sum(c['n_units'])} clips drawn with their telephone copies"
        return f"\n  pooled: {change_text(c, units)}"

    print(f"EER on the new data's validation part: before {fmt(report.before['new'])}; "
          f"after {fmt(report.after['new'])}{change('new')}")
    print(f"EER on the original validation data:  before {fmt(report.before['original'])}; "
          f"after {fmt(report.after['original'])}{change('original')}")
    lost = report.forgetting()
    if lost >= FORGETTING_NOTE:
        print(f"note: the original validation data lost {lost * 100:.1f} points of EER: the new model may have "
              "forgotten some of what it knew (a point or two is within this measure's noise); check it on real "
              "calls of your own, or fine-tune with more new data",
              file=sys.stderr)
    kept = f"epoch {report.kept_epoch}" if report.kept_epoch else "the starting weights"
    if report.kept_epoch and report.mix < 1.0:
        kept += f", {report.mix:.0%} of the way from the starting weights"
    print(f"wrote {path} in {report.minutes:.1f} min (kept {kept}; replay: {report.replay}); threshold "
          f"{result.config.threshold:.3f}")
    return EXIT_OK


# ---------------------------------------------------------------------------- synth
def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="make synthetic speech locally (TTS engines, vocoder copy-synthesis)",
                       description="Write spoofed clips (16 kHz FLAC) and a manifest.csv into --out, offline: TTS "
                                   "with espeak-ng, festival, flite, the CC0 piper voice and the neural Kokoro-82M, "
                                   "and copy-synthesis of your own real recordings (--real) with WORLD, Griffin-Lim, "
                                   "LPC and the neural HiFi-GAN. Use the output as --fake (or --manifest) for `voiceguard finetune`.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (an existing one is extended)")
    p.add_argument("--real", metavar="DIR", help="real recordings to copy-synthesise (one vocoded copy each)")
    p.add_argument("--texts", metavar="FILE", help="sentences to speak, one per line (default: built-in en/it)")
    p.add_argument("--engines", nargs="*", metavar="ENGINE",
                   help="TTS engines: espeak festival flite piper kokoro (default: all installed; none: --engines)")
    p.add_argument("--vocoders", nargs="*", metavar="VOCODER",
                   help="world griffinlim lpc hifigan hifigan-smooth (default: all installed)")
    p.add_argument("--langs", nargs="+", default=["en", "it"], metavar="LANG", help="TTS languages (default en it)")
    p.add_argument("-n", type=int, default=20, help="TTS clips per engine and language (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args) -> int:
    from tqdm import tqdm

    from .synth import generate

    texts = None
    if args.texts:
        texts = [line.strip() for line in Path(args.texts).read_text(encoding="utf-8").splitlines() if line.strip()]
    with tqdm(unit="clip", file=sys.stderr, disable=None, leave=False) as bar:
        def progress(done, total, message):
            bar.total = total
            bar.update(done - bar.n)

        rows = generate(args.out, texts=texts, real_dir=args.real, engines=args.engines, vocoders=args.vocoders,
                        langs=args.langs, n=args.n, seed=args.seed, progress=progress)
    by_gen: dict[str, int] = {}
    for r in rows:
        by_gen[r["generator"]] = by_gen.get(r["generator"], 0) + 1
    for gen, count in sorted(by_gen.items()):
        print(f"{gen:24s} {count:5d} clips")
    print(f"wrote {len(rows)} clips and {Path(args.out) / 'manifest.csv'}")
    return EXIT_OK


# ---------------------------------------------------------------------------- parser
COMMANDS: list[Callable] = [_add_score, _add_scan, _add_evaluate, _add_train, _add_finetune, _add_synth]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voiceguard",
        description="Tell whether the voice in a call recording is human or AI-synthesised.")
    parser.add_argument("--version", action="version", version=f"voiceguard {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="voiceguard: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except VoiceGuardError as err:
        _err(str(err))
        return EXIT_USAGE if err.kind in ("checkpoint", "missing-checkpoint", "checkpoint-version", "data") \
            else EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except (ValueError, OSError) as err:
        _err(str(err))
        return EXIT_USAGE
