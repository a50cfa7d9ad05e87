"""Command line: parse arguments, call the Python API, format output, return an exit code.

No logic lives only here. ``main(argv)`` is testable; only ``__main__`` calls ``sys.exit``.
Heavy imports (torch) happen inside the command functions, so ``voiceguard --help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
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
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint (NAME.safetensors; NAME.json beside it)")
    p.add_argument("--threshold", type=float, metavar="P", help="probability for the verdict 'synthetic' "
                                                                 "(default: the checkpoint's)")
    p.add_argument("--plot", metavar="OUT.png", help="write a timeline plot (one file: OUT.png; several: "
                                                     "OUT-<name>.png)")
    p.add_argument("--top", type=int, default=3, metavar="N", help="suspicious stretches listed (default 3)")
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    p.set_defaults(func=_cmd_score)


def _print_human(res, top: int) -> None:
    name = res.path or "<array>"
    if res.channel is not None:
        name += f" [channel {res.channel}]"
    if res.verdict == "inconclusive":
        print(f"{name}: INCONCLUSIVE ({res.reason}); duration {_fmt_time(res.duration)}")
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


# ---------------------------------------------------------------------------- parser
COMMANDS: list[Callable] = [_add_score]


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
