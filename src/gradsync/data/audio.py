"""Audio for keyword classification: WAV files (16-bit PCM) as log-mel spectrograms.

Sources: a folder with one subfolder per label (the Speech Commands layout; a
``testing_list.txt`` at its root, as Speech Commands ships, names the test files, else a fixed
share is held out by file-name hash), or ``espeak-digits``: the ten digit words spoken by the
espeak-ng synthesizer (:mod:`gradsync.data.espeak`, from a wheel) in 5 English accents × 9 voices
× 3 speaking rates and pitches, made once on this machine and cached. Its test set is two voices
(``m4``, ``f3``) that training never hears.

Features (Davis & Mermelstein 1980, as every keyword spotter since), computed with ``torch.stft``
(torchaudio has no build for the pinned torch 2.13): 25 ms Hann windows every
10 ms, power spectrum, a triangular mel filterbank (HTK mel scale), log. Each clip is trimmed of
silence, centred and padded (or cut) to ``speech.clip_s`` seconds.
"""

from __future__ import annotations

import functools
import itertools
import wave
import zlib
from pathlib import Path

import numpy as np
import torch

from gradsync.core.config import SpeechConfig
from gradsync.core.errors import DataError
from gradsync.core.files import cache_dir
from gradsync.data.espeak import synthesizer
from gradsync.data.labeled import LabeledData

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029")
TRAIN_VOICES = ("m1", "m2", "m3", "m5", "m7", "f1", "f2", "f4", "f5")
TEST_VOICES = ("m4", "f3")
RATES_PITCHES = ((140, 40), (175, 55), (210, 70))
ESPEAK_SET = "espeak-digits-v2"  # v2: espeak-ng 1.52 from the espeakng-loader wheel


def read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Samples of a mono or multi-channel 16-bit PCM WAV at ``sample_rate`` as float32 in
    [-1, 1] (channels averaged), or a one-line DataError."""
    try:
        with wave.open(str(path), "rb") as w:
            sr, width, channels, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise DataError(f"audio file '{path}' is not a readable WAV file: {e}") from None
    if sr != sample_rate:
        raise DataError(
            f"audio file '{path}' is sampled at {sr} Hz, not speech.sample_rate={sample_rate}; "
            "resample the data set or set --speech.sample_rate"
        )
    if width != 2:
        raise DataError(f"audio file '{path}' has {8 * width}-bit samples; gradsync reads 16-bit PCM WAV")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return x.reshape(-1, channels).mean(axis=1) if channels > 1 else x


def fit_clip(x: np.ndarray, length: int) -> np.ndarray:
    """Trim leading and trailing near-silence, then centre in ``length`` samples (pad or cut)."""
    loud = np.flatnonzero(np.abs(x) > 0.02 * (np.abs(x).max() + 1e-9))
    if len(loud):
        x = x[loud[0] : loud[-1] + 1]
    if len(x) >= length:
        start = (len(x) - length) // 2
        return x[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    start = (length - len(x)) // 2
    out[start : start + len(x)] = x
    return out


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 20.0) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters evenly spaced on the HTK mel scale."""

    def mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(np.array(f_min)), mel(np.array(sample_rate / 2)), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return torch.from_numpy(fb.astype(np.float32))


def log_mel(waves: torch.Tensor, sample_rate: int, n_mels: int) -> torch.Tensor:
    """(N, samples) -> (N, n_mels, frames): 25 ms windows, 10 ms hop, log mel power."""
    n_fft, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
    spec = torch.stft(waves, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True)
    power = spec.abs() ** 2  # (N, n_fft // 2 + 1, frames)
    return torch.log(mel_filterbank(n_mels, n_fft, sample_rate) @ power + 1e-6)


def espeak_digits(sample_rate: int) -> Path:
    """The spoken-digit set, made on first use under the gradsync cache (a few seconds)."""
    root = cache_dir() / f"{ESPEAK_SET}-{sample_rate}"
    if (root / "done").is_file():
        return root
    try:
        return _make_espeak_digits(root, sample_rate)
    except OSError as e:
        raise DataError(
            f"cannot make the spoken-digit set under {root} ({e.strerror or e}); set GRADSYNC_CACHE "
            "to a writable folder"
        ) from None


def _make_espeak_digits(root: Path, sample_rate: int) -> Path:
    synth = synthesizer()
    for word, accent, voice, (rate, pitch) in itertools.product(
        DIGITS, ACCENTS, TRAIN_VOICES + TEST_VOICES, RATES_PITCHES
    ):
        out = root / word / f"{accent}_{voice}_{rate}_{pitch}.wav"
        if out.is_file():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        samples = synth.speak(word, f"{accent}+{voice}", rate, pitch)
        _write_wav(out, resample(samples, synth.sample_rate, sample_rate), sample_rate)
    (root / "done").write_text("ok\n")
    return root


def resample(x: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    """16-bit samples at ``sr`` resampled to ``sample_rate`` by linear interpolation (espeak-ng
    speaks at 22,050 Hz and carries little energy near the new Nyquist frequency)."""
    t = np.arange(int(len(x) * sample_rate / sr)) * (sr / sample_rate)
    return np.clip(np.interp(t, np.arange(len(x)), x.astype(np.float64)), -32768, 32767).astype("<i2")


def _write_wav(dst: Path, samples: np.ndarray, sample_rate: int) -> None:
    """A 16-bit mono WAV, written under a temporary name and renamed into place."""
    part = dst.with_suffix(".part")
    with wave.open(str(part), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.tobytes())
    part.replace(dst)


@functools.lru_cache(maxsize=2)  # a process that trains several runs (tests, bench) decodes once
def load_speech(cfg: SpeechConfig) -> LabeledData:
    """The clips ``cfg.source`` names as log-mel features (not standardised), split train/test."""
    if cfg.source == "espeak-digits":
        root = espeak_digits(cfg.sample_rate)
        desc = (
            f"espeak-ng spoken digits: {len(ACCENTS)} accents × {len(TRAIN_VOICES)} train voices, "
            f"{len(TEST_VOICES)} unseen test voices ({', '.join(TEST_VOICES)})"
        )
    else:
        root = Path(cfg.source)
        if not root.is_dir():
            raise DataError(
                f"speech source '{cfg.source}' is not a folder; pass 'espeak-digits' or a folder "
                "with one subfolder of WAV files per label"
            )
        desc = str(root)
    labels = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    files = [(f, i) for i, c in enumerate(labels) for f in sorted((root / c).glob("*.wav"))]
    if not files:
        raise DataError(f"speech folder '{root}' holds no WAV files in label subfolders (ROOT/LABEL/*.wav)")
    length = int(round(cfg.clip_s * cfg.sample_rate))
    waves = torch.from_numpy(np.stack([fit_clip(read_wav(f, cfg.sample_rate), length) for f, _ in files]))
    feats = log_mel(waves, cfg.sample_rate, cfg.n_mels)
    y = torch.tensor([i for _, i in files], dtype=torch.int64)
    test = _test_mask(root, [f for f, _ in files], cfg)
    if test.all() or not test.any():
        raise DataError(
            f"speech folder '{root}': the test split would be {'everything' if test.all() else 'empty'}; "
            "add files or change speech.test_fraction"
        )
    tr, te = np.flatnonzero(~test), np.flatnonzero(test)
    return LabeledData(
        feats[tr],
        y[tr],
        feats[te],
        y[te],
        labels,
        f"{desc}: {len(files)} clips, {len(labels)} labels, {len(tr)} train / {len(te)} test, "
        f"{cfg.n_mels} log-mel bands × {feats.size(-1)} frames",
    )


def _test_mask(root: Path, files: list[Path], cfg: SpeechConfig) -> np.ndarray:
    rel = [str(f.relative_to(root)) for f in files]
    if cfg.source == "espeak-digits":
        return np.array([Path(r).stem.split("_")[1] in TEST_VOICES for r in rel])
    listing = root / "testing_list.txt"
    if listing.is_file():
        names = set(listing.read_text(encoding="utf-8").split())
        return np.array([r in names for r in rel])
    return np.array([(zlib.crc32(r.encode()) % 10_000) < cfg.test_fraction * 10_000 for r in rel])
