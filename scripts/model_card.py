#!/usr/bin/env python
"""Write checkpoints/README.md (the model card) from the checkpoint's own JSON and an optional eval JSON.

    .venv/bin/python scripts/model_card.py [--checkpoint checkpoints/voiceguard] [--extra checkpoints/card_sections.json (default)]

Every figure in the card is read from files written by the training and evaluation runs, never retyped.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def corpus_table(corpus_readme: Path) -> str:
    if not corpus_readme.exists():
        return "(corpus README not found on this machine)"
    text = corpus_readme.read_text()
    m = re.search(r"(\| source \| label .*?)\n\n", text, re.S)
    return m.group(1) if m else "(table not found)"


def front_end(f) -> str:
    """One phrase for a FeatureConfig."""
    scale = "mel" if f.kind == "logmel" else "linear"
    if f.kind == "lfcc":
        what = f"LFCC — {f.n_coeffs} cepstral coefficients from {f.n_filters} linear filters"
    elif f.kind in ("mgd", "ifd"):
        name = "modified group delay" if f.kind == "mgd" else "instantaneous frequency deviation"
        what = f"{name} — averaged in {f.n_filters} triangular linear-spaced filters"
    else:
        what = f"log {scale} filterbank — {f.n_filters} triangular {scale}-spaced filters"
    return f"{what} {f.f_min:.0f}–{f.f_max:.0f} Hz" + (", + Δ + ΔΔ" if f.deltas else "")


def front_ends_line(cfg) -> str:
    """The card's front-end line: one front-end, or each one and the networks that read it."""
    def detail(f) -> str:
        part = {"mgd": "Re(Y·X*) (along frequency; Y: the spectrum of n·x)",
                "ifd": "Im(Y·X*) (along time, in Hz; Y: the spectrum under the window's derivative)"}.get(f.kind)
        how = (f"the phase slope {part} over the {f.lifter}-coefficient cepstrally smoothed power, compressed "
               f"to sign(τ)·|τ|^{f.alpha:g}" if part
               else f"floored {f.top_db:.0f} dB below each window's peak")
        return f"{front_end(f)} ({f.n_features} rows), {how}"

    f0 = cfg.features
    frames = (f"{f0.win_length / cfg.sample_rate * 1000:.0f} ms frames every "
              f"{f0.hop_length / cfg.sample_rate * 1000:.0f} ms, mean removed per window"
              + (" and row" if f0.norm == "row" else ""))
    if not cfg.extra_features:
        return f"- Front-end: {detail(f0)}; {frames}."
    parts = []
    for k, f in enumerate(cfg.front_ends):
        readers = [str(i + 1) for i, j in enumerate(cfg.model.inputs) if j == k]
        who = f"network{'s' if len(readers) > 1 else ''} {', '.join(readers)}"
        parts.append(f"{who}: {detail(f)}")
    return f"- Front-ends, each computed once per window and read by its own networks ({frames}): " + \
        "; ".join(parts) + "."


def training_commands(t: dict) -> list[str]:
    """Card lines for how the weights were made: one command, or each member's and the combining one."""
    if not t.get("members"):
        return [f"- Command: `{t.get('command', '?')}` ({t.get('minutes', '?')} min on the machine that trained "
                f"it, best epoch {t.get('best_epoch', '?')} of {len(t.get('history', []))} run)."]
    lines = [f"- {len(t['members'])} networks, trained separately ({t.get('minutes', '?')} min of training and combining in all on "
             "the machine that trained them), then combined:"]
    for m in t["members"]:
        v = m.get("rescored") or m.get("validation") or {}
        md = m.get("data") or {}
        files = (f"{md['train_files']} training files ({md.get('train_minutes', '?')} min, "
                 f"{md.get('train_synthetic_files', '?')} synthetic), " if "train_files" in md else "")
        lines.append(f"  - `{m.get('command', '?')}`: {files}best epoch {m.get('best_epoch', '?')}, {m.get('minutes', '?')} "
                     f"min; held-out validation EER {pct(v.get('eer_all'))} (clean {pct(v.get('eer_clean'))}, "
                     f"telephone {pct(v.get('eer_telephone'))})")
    lines.append(f"  - `{t.get('command', '?')}`: the combination's calibration, threshold and length penalty are "
                 "fitted on the same held-out validation set.")
    return lines


# how each manifest of locally generated spoofs is made (scripts that write them, with their settings)
SPOOF_RECIPES = {
    "data/gen/manifest.csv": "`scripts/make_spoofs.py`: espeak-ng, festival, flite, piper in English and Italian; "
                             "WORLD, Griffin-Lim and LPC copy-synthesis of 300 corpus real clips",
    "data/gen2/manifest.csv": "`scripts/make_more_vocoded.py`: WORLD and Griffin-Lim copy-synthesis of 600 more",
    "data/gen4/manifest.csv": "`scripts/make_more_vocoded.py --vocoders hifigan --out data/gen4 --n 450 --max-dur 8 "
                              "--seed 4 --source local-hifigan`: HiFi-GAN copy-synthesis of 450 more",
}


def spoof_recipes(t: dict) -> str:
    """The recipes of the generated manifests a checkpoint (or any of its combined networks) trained on; for a
    combination, a manifest only some networks trained on says so."""
    per_net = [m.get("data", {}).get("manifests") or [] for m in t.get("members", [])] \
        or [t.get("replay", {}).get("manifests", [])]
    kept = [m.get("data", {}).get("train_generators") for m in t.get("members", [])] \
        or [t.get("data", {}).get("train_generators")]
    used = [m for m in SPOOF_RECIPES if any(m in ms for ms in per_net)]
    parts = []
    for m in used:
        nets = [i + 1 for i, ms in enumerate(per_net) if m in ms]
        only = (f" (network {', '.join(map(str, nets))} only)" if len(nets) < len(per_net) else "")
        parts.append(SPOOF_RECIPES[m] + only)
    for i, gens in enumerate(kept):  # train_default.py --generators: only some of the generated spoofs
        if gens:
            net = f"network {i + 1} " if len(kept) > 1 else ""
            parts.append(f"{net}trained only on the generators {', '.join(gens)} of these (`--generators`)")
    return "; ".join(parts) or "none"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "voiceguard"))
    ap.add_argument("--extra", default=str(ROOT / "checkpoints" / "card_sections.json"),
                    help="JSON of the card's measured sections, {'title': markdown, ...}, as written by "
                         "scripts/field_checks.py and scripts/finetune_check.py (tracked, so the card can be rebuilt)")
    ap.add_argument("--corpus-readme", default=str(ROOT.parent / "shared" / "corpus" / "README.md"))
    ap.add_argument("--out", default=str(ROOT / "checkpoints" / "README.md"))
    args = ap.parse_args(argv)

    from voiceguard import checkpoint

    model, cfg = checkpoint.load(args.checkpoint)
    n_params = sum(p.numel() for p in model.parameters())
    weights, _ = checkpoint.resolve(args.checkpoint)
    t = cfg.training
    d = t.get("data", {})
    val = t.get("validation", {})
    lines = [
        f"# Model card: `{weights.stem}` ({cfg.name})",
        "",
        "Detects synthetic (TTS, voice-cloning, voice-conversion, vocoder, codec-resynthesised) speech in "
        "recordings. Output: a calibrated probability that a call's voice is synthetic, per-window scores and "
        "a verdict. **Evidence for triage, not proof.**",
        "",
        "## Architecture",
        front_ends_line(cfg),
        f"- Model: light CNN with max-feature-map activations (channels {list(cfg.model.channels)}, time stride "
        f"{cfg.model.time_stride}" + (f", frequency stride {cfg.model.freq_stride}" if cfg.model.freq_stride > 1 else "")
        + f"), mean+std pooling over time, {cfg.model.embedding}-d embedding, one logit"
        + (f"; **{cfg.model.members} such networks, trained separately** (see Training), each window's logit is "
           "the mean of theirs" if cfg.model.members > 1 else "")
        + f"; **{n_params:,} parameters**, {weights.stat().st_size / 1024:.0f} KiB of weights (safetensors).",
        f"- Windows: {cfg.window.seconds:g} s every {cfg.window.hop_seconds:g} s over {cfg.sample_rate} Hz audio; "
        f"windows with under {cfg.window.min_speech_fraction:.0%} speech (WebRTC VAD mode "
        f"{cfg.vad.aggressiveness} + {cfg.vad.energy_floor_db:g} dBFS energy floor) are not scored"
        + (f"; nor are windows where Silero VAD calls under {cfg.vad.neural_min_share:.0%} of the 32 ms frames of "
           "the loudest half speech (tones, DTMF, music on hold, noise), nor the windows next to those."
           if cfg.vad.neural else "."),
        f"- Call score: max over the means of {cfg.aggregation.context} consecutive window logits, then Platt "
        f"calibration (scale {cfg.calibration.scale:.3f}, bias {cfg.calibration.bias:.3f})."
        + (f" Calls with more than {cfg.aggregation.reference_runs} such runs (longer than the validation clips) "
           f"have every run mean lowered by {cfg.aggregation.length_penalty:g} × (√(2 ln n) − √(2 ln "
           f"{cfg.aggregation.reference_runs})) for n runs — the growth of the maximum of n scores whose spread is "
           "that of real validation clips' call logits — so long real calls are held to the short clips' "
           "false-alarm rate (fitted on the validation set at the end of training; `scripts/refit_checkpoint.py` "
           "re-fits it for a checkpoint trained before this existed)."
           if cfg.aggregation.length_penalty else ""),
        f"- Threshold: **{cfg.threshold:.3f}** — {cfg.threshold_rule}.",
        f"- Under {cfg.min_speech_seconds:g} s of speech: verdict `inconclusive`"
        + (f", with a low-confidence probability from a calibration of its own (scale "
           f"{cfg.short_calibration.scale:.3f}, bias {cfg.short_calibration.bias:.3f}), fitted on the validation "
           "clips that short, classes weighted equally (see \"Short clips: inconclusive verdicts\")."
           if cfg.short_calibration else "."),
        "",
        "## Training",
        *training_commands(t),
        ("- Data (each network's count above)" if t.get("members") else
         f"- Data: {d.get('train_files', '?')} training files ({d.get('train_minutes', '?')} min, "
         f"{d.get('train_synthetic_files', '?')} synthetic)")
        + f" from `../shared/corpus` and locally generated spoofs ({spoof_recipes(t)}). Skipped: {d.get('skipped', {})}.",
        f"- Validation: {d.get('validation_files', '?')} files ({d.get('validation_minutes', '?')} min) from "
        f"**whole sources held out of training**: {', '.join(d.get('held_out_sources', []))}; and the locally "
        f"generated generators {', '.join(d.get('held_out_generators', []))} (copy-syntheses of held-out real "
        "clips are held out with them). Each clip is scored clean and as a telephone copy (300–3400 Hz, "
        "8 kHz, µ-law / GSM / A-law / MP3 in turn), through the same inference path users run.",
        "- Augmentation (both classes alike): telephone band + codec (µ-law, A-law, GSM 6.10, G.721, Opus, MP3, "
        "AMR-NB) 45 %, wideband codec 15 %, band-limit 15 %, coloured noise 8–40 dB SNR 35 %, synthetic reverb "
        "15 %, inserted digital silence 25 %, random level −35…−14 dBFS, dither always. Crops of "
        f"{cfg.window.seconds:g} s, classes balanced per batch, sources and speakers weighted by 1/sqrt(count)."
        + (f" Telephone codecs drawn with relative weights {', '.join(f'{c} {w:g}' for c, w in tw)}, the others 1"
           + (" (the first network; see each network's command)" if t.get("members") else "") + "."
           if (tw := t.get("augment", {}).get("telephone_weights")) else "")
        + (f" RawBoost distortions (linear/non-linear convolutive, impulsive and coloured stationary noise) on "
           f"{t['augment'].get('p_rawboost', 0) * 100:.0f} % of examples." if t.get("augment", {}).get("p_rawboost") else "")
        + (f" Matched pairs: {t['train_config'].get('pair_fraction', 0) * 100:.0f} % of examples are a "
           f"copy-synthesis and the real clip it was made from ({t.get('pairs')} such pairs), cropped at the same "
           "place and sent through the same random channel, so only the synthesis tells them apart."
           if t.get("train_config", {}).get("pair_fraction") else ""),
        "- Optimiser: AdamW, one-cycle LR, BCE loss"
        + (f"; an exponential moving average of the weights (decay {t['train_config']['ema']} per step) is what "
           "is validated after each epoch and shipped" if t.get("train_config", {}).get("ema") else "")
        + (f"; a source adversary (weight {t['train_config']['adversary']}, ramped up over the run): a linear "
           "classifier learns which training source a real clip comes from, from the 64-d embedding, and its "
           "gradient reaches the network reversed (domain-adversarial training), so recording set-ups that tell "
           "real sources apart are unlearnt; synthetic clips are left out of it"
           if t.get("train_config", {}).get("adversary") else "")
        + f"; the epoch with the lowest validation EER is kept. Config: "
        f"`{json.dumps(t.get('train_config', {}))}`",
        "",
        "## Validation (held-out sources)",
        "",
        f"Overall EER (call level): all {pct(val.get('eer_all'))}, clean {pct(val.get('eer_clean'))}, "
        f"telephone {pct(val.get('eer_telephone'))}. These sources were used to pick the best epoch and to fit "
        "the calibration, so they are optimistic for truly unseen data.",
        "",
        "| held-out source / generator | files | EER clean | EER telephone | false alarms clean | false alarms "
        "telephone | misses clean | misses telephone |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for src, row in sorted(t.get("validation_per_source", {}).items()):
        lines.append(f"| {src} | {row.get('files', '')} | {pct(row.get('eer_clean'))} | "
                     f"{pct(row.get('eer_telephone'))} | {pct(row.get('false_alarm_clean'))} | "
                     f"{pct(row.get('false_alarm_telephone'))} | {pct(row.get('miss_clean'))} | "
                     f"{pct(row.get('miss_telephone'))} |")
    lines += ["", "EER per source compares that source's synthetic clips with all held-out real clips; false "
              "alarms and misses are at the stored threshold.", ""]
    if args.extra and Path(args.extra).exists():
        for title, body in json.loads(Path(args.extra).read_text()).items():
            lines += [f"## {title}", "", body.rstrip(), ""]
    for h in t.get("finetunes", []):
        lines += ["## Fine-tuning record", "", "```", json.dumps(h, indent=1), "```", ""]
    lines += [
        "## Known limits",
        "- Trained on ~3 hours of speech from public demo pages and small corpora plus local TTS; modern zero-shot "
        "TTS and voice conversion it never saw may pass as human. Fine-tune on samples of a generator you care "
        "about (`voiceguard finetune`).",
        "- Real speech far from the training data (noisy call centres, children, languages other than the ~11 in "
        "the corpus, singing, music with vocals) may raise false alarms; check `speech_seconds` and the timeline. "
        "Tones and instrumental music are not scored (see \"Tones and music on hold in real calls\"), but a window "
        "of speech over loud music is.",
        "- Vocoded / codec-resynthesised real speech counts as synthetic by design.",
        "- A short synthetic passage inside a long real call (20 s in 6 min, see \"Long calls\") is rarely "
        "flagged, even from a generator seen in training: the long-call correction that keeps long real calls "
        "from being flagged also lowers it. Look at the timeline's top windows, not only the verdict.",
        "- The probability is calibrated on the validation mix above (equal class weights); on your data, check "
        "it with `voiceguard evaluate` and re-fit with `voiceguard finetune`.",
        "",
        "## Training data and licences",
        "",
        "The corpus (`../shared/corpus/README.md`) as it was when this model was trained:",
        "",
        corpus_table(Path(args.corpus_readme)),
        "",
        "Some of these sources are research-only or non-commercial (RAVDESS, EMOVO, EmoDB, NOIZEUS, FoR) or "
        "published without a licence (demo pages): the weights may carry those terms. Local spoofs: espeak-ng "
        "(GPL-3), festival/festvox voices (free licences), flite (BSD-like), piper voice `joe-us` (CC0).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
