"""The tasks' data, as pure functions: BERT masking, image and audio loading, features, the
byte-level tokenizer's alphabet, and the task config."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from gradsync.core.config import build_config
from gradsync.core.errors import ConfigError, DataError
from gradsync.data import TokenSequences
from gradsync.data.audio import fit_clip, log_mel, mel_filterbank, read_wav
from gradsync.data.images import load_images
from gradsync.data.tokenizers import byte_alphabet
from gradsync.model.bert import IGNORE
from gradsync.tasks.bert import MaskedSequences


def _masked(seed: int = 0) -> MaskedSequences:
    tokens = np.random.default_rng(0).integers(0, 50, 200_000).astype(np.uint16)
    return MaskedSequences(TokenSequences(tokens, 64), 50, 0.15, seed)


def test_masking_is_a_function_of_seed_draw_and_position() -> None:
    m = _masked()
    ids = np.array([3, 7, 11])
    a, b = m.batch(ids, np.array([100, 101, 102]), True), m.batch(ids, np.array([100, 101, 102]), True)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = m.batch(ids, np.array([200, 201, 202]), True)  # another draw of the same examples
    assert not torch.equal(a[1], c[1])
    d = _masked(seed=1).batch(ids, np.array([100, 101, 102]), True)
    assert not torch.equal(a[1], d[1])
    e = m.batch(ids, ids, False)  # evaluation: fixed by the example, apart from training draws
    assert torch.equal(e[1], m.batch(ids, ids, False)[1]) and not torch.equal(e[1], m.batch(ids, ids, True)[1])


def test_masking_proportions_follow_bert() -> None:
    m = _masked()
    ids = np.arange(2000)
    x, labels = m.batch(ids, ids, True)
    original = m.sequences.rows(ids)[:, :-1]
    chosen = labels != IGNORE
    assert torch.equal(labels[chosen], original[chosen])  # targets are the original tokens
    assert abs(chosen.float().mean().item() - 0.15) < 0.005
    assert chosen.any(dim=1).all()  # at least one target per sequence
    masked = (x == m.mask_id)[chosen].float().mean().item()
    kept = (x == original)[chosen].float().mean().item()
    # kept: the 10% left alone, plus random replacements that drew the original token (1 in 50)
    assert abs(masked - 0.8) < 0.01 and abs(kept - (0.1 + 0.1 / 50)) < 0.01
    assert torch.equal(x[~chosen], original[~chosen])  # nothing else is touched


def test_digits_load_split_and_standardize() -> None:
    d = load_images(build_config(None, {"task.name": "image"}).image)
    assert d.train_x.shape[1:] == (1, 8, 8) and len(d.train_y) + len(d.test_y) == 1797
    assert len(d.test_y) == 359 and d.classes == [str(i) for i in range(10)]
    assert abs(d.train_x.mean().item()) < 1e-4 and abs(d.train_x.std().item() - 1) < 1e-3


def test_image_folder_and_npz(tmp_path: Path) -> None:
    from PIL import Image

    for c, value in (("cat", 30), ("dog", 220)):
        (tmp_path / "pics" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((6, 6, 3), value + i, dtype=np.uint8)).save(tmp_path / "pics" / c / f"{i}.png")
    cfg = build_config(
        None,
        {"task.name": "image", "image.source": str(tmp_path / "pics"), "image.channels": 3, "image.test_fraction": 0.3},
    )
    d = load_images(cfg.image)
    assert d.classes == ["cat", "dog"] and d.train_x.shape[1:] == (3, 6, 6)
    assert len(d.train_y) + len(d.test_y) == 20 and len(d.test_y) > 0
    np.savez(tmp_path / "x.npz", images=np.zeros((12, 5, 5), np.uint8), labels=np.arange(12) % 3)
    n = load_images(build_config(None, {"image.source": str(tmp_path / "x.npz")}).image)
    assert n.train_x.shape[1:] == (1, 5, 5) and len(n.classes) == 3
    np.savez(tmp_path / "bad.npz", pixels=np.zeros(3))
    with pytest.raises(DataError, match="must hold arrays 'images'"):
        load_images(build_config(None, {"image.source": str(tmp_path / "bad.npz")}).image)
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "pics" / "dog" / "odd.png")
    with pytest.raises(DataError, match="set image.size"):
        load_images(cfg.image)


def _wav(path: Path, rate: int, samples: np.ndarray, width: int = 2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2" if width == 2 else np.uint8).tobytes())


def test_wav_reading_and_its_errors(tmp_path: Path) -> None:
    tone = (10000 * np.sin(np.arange(1600) / 5)).astype(np.int16)
    _wav(tmp_path / "a.wav", 16000, tone)
    x = read_wav(tmp_path / "a.wav", 16000)
    assert x.dtype == np.float32 and len(x) == 1600 and abs(x.max() - 10000 / 32768) < 1e-3
    with pytest.raises(DataError, match="sampled at 16000 Hz, not speech.sample_rate=8000"):
        read_wav(tmp_path / "a.wav", 8000)
    _wav(tmp_path / "b.wav", 16000, np.zeros(100), width=1)
    with pytest.raises(DataError, match="8-bit samples"):
        read_wav(tmp_path / "b.wav", 16000)
    (tmp_path / "c.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match="not a readable WAV"):
        read_wav(tmp_path / "c.wav", 16000)


def test_clip_and_log_mel_features() -> None:
    x = np.zeros(30000, np.float32)
    x[10000:14000] = np.sin(np.arange(4000) / 3)
    clip = fit_clip(x, 16000)
    assert len(clip) == 16000 and abs(np.flatnonzero(np.abs(clip) > 0.02).mean() - 8000) < 100  # centred
    fb = mel_filterbank(40, 400, 16000)
    assert fb.shape == (40, 201) and (fb.sum(dim=1) > 0).all() and fb.max() <= 1.0
    feats = log_mel(torch.from_numpy(np.stack([clip, clip])), 16000, 40)
    assert feats.shape == (2, 40, 101) and torch.isfinite(feats).all()


def test_byte_alphabet_is_a_bijection_onto_printable_characters() -> None:
    chars = byte_alphabet()
    assert len(set(chars)) == 256 and all(c.isprintable() and not c.isspace() for c in chars)
    assert chars[ord("a")] == "a" and chars[ord(" ")] == "Ġ"  # GPT-2's convention


def test_task_config_names_a_task_or_a_factory() -> None:
    assert build_config(None, {"task.name": "pkg.mod:make"}).task.name == "pkg.mod:make"
    for bad in ("nosuch", "pkg.mod:", "pkg mod:make"):
        with pytest.raises(ConfigError, match="task.name"):
            build_config(None, {"task.name": bad})
    with pytest.raises(ConfigError, match="hf.config or hf.pretrained"):
        build_config(None, {"hf.config": "a.json", "hf.pretrained": "b"})
