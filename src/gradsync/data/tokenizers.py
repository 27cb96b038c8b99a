"""Tokenizers: byte-level (no training, vocabulary 256) and byte-level BPE trained locally with
HF ``tokenizers`` and cached on disk, so a corpus is tokenized the same way on every run."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from gradsync.core.errors import DataError
from gradsync.core.files import cache_dir, write_cache


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: bytes) -> np.ndarray: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class ByteTokenizer:
    """Each byte is a token: no unknown tokens, no training, any file is valid input."""

    vocab_size = 256

    def encode(self, text: bytes) -> np.ndarray:
        return np.frombuffer(text, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def as_hf(self) -> object:
        """The same mapping as a HF ``tokenizers.Tokenizer`` (byte-level, no merges: token id =
        byte value), so that an exported model ships a tokenizer ``transformers`` loads."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        vocab = {ch: b for b, ch in enumerate(byte_alphabet())}
        tok = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        return tok


def byte_alphabet() -> list[str]:
    """The printable character byte-level BPE uses for each byte 0..255 (GPT-2's convention,
    which HF ``tokenizers``' ByteLevel pre-tokenizer follows): printable Latin-1 bytes stand for
    themselves, the others for the code points from 256 on, in byte order."""
    printable = (
        set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    )
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


class BPETokenizer:
    """Byte-level BPE (as in GPT-2) from HF ``tokenizers``, trained on the run's own corpus."""

    def __init__(self, tok: object) -> None:
        self._tok = tok
        self.vocab_size: int = tok.get_vocab_size()  # type: ignore[attr-defined]
        self._dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.uint32

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        """A tokenizer saved by HF ``tokenizers`` (``tokenizer.json``), e.g. an existing model's."""
        from tokenizers import Tokenizer as HFTokenizer

        if not Path(path).is_file():
            raise DataError(f"tokenizer file '{path}' does not exist")
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises its own Exception type for any parse error
            raise DataError(
                f"tokenizer file '{path}' is not a tokenizers JSON file: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None

    def save(self, path: Path) -> None:
        """Write ``tokenizer.json`` (atomically), loadable by :meth:`from_file` and by
        ``transformers.PreTrainedTokenizerFast``."""
        tmp = path.with_suffix(".tmp")
        self._tok.save(str(tmp))  # type: ignore[attr-defined]
        tmp.replace(path)

    @classmethod
    def train_or_load(cls, documents: list[bytes], vocab_size: int, cache_dir: Path) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        key = hashlib.sha256()
        key.update(str(vocab_size).encode())
        for d in documents:
            key.update(hashlib.sha256(d).digest())
        path = cache_dir / f"bpe-{vocab_size}-{key.hexdigest()[:16]}.json"
        if path.is_file():
            return cls(HFTokenizer.from_file(str(path)))
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tok.train_from_iterator((d.decode("utf-8", errors="replace") for d in documents), trainer)
        write_cache(path, tok.to_str().encode())  # a read-only cache only costs the next run this time
        return cls(tok)

    def encode(self, text: bytes) -> np.ndarray:
        ids = self._tok.encode(text.decode("utf-8", errors="replace")).ids  # type: ignore[attr-defined]
        return np.asarray(ids, dtype=self._dtype)

    def encode_batch(self, texts: list[bytes]) -> list[np.ndarray]:
        encs = self._tok.encode_batch([t.decode("utf-8", errors="replace") for t in texts])  # type: ignore[attr-defined]
        return [np.asarray(e.ids, dtype=self._dtype) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids])  # type: ignore[attr-defined]

    def as_hf(self) -> object:
        """The underlying HF ``tokenizers.Tokenizer``."""
        return self._tok

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` (e.g. ``[MASK]``), or None if the vocabulary lacks it."""
        return self._tok.token_to_id(token)  # type: ignore[attr-defined]


def tokenizer_for(spec: str, documents: Callable[[], list[bytes]], bpe_vocab_size: int) -> Tokenizer:
    """The tokenizer ``data.tokenizer = spec`` names: ``byte``; ``bpe``, trained on ``documents()``
    (called only then) and cached; or a ``tokenizer.json``. A run and ``gradsync prepare`` both
    build theirs here, so prepared shards hold the tokens the run would make."""
    if spec == "bpe":
        return BPETokenizer.train_or_load(documents(), bpe_vocab_size, cache_dir())
    if spec.endswith(".json"):
        return BPETokenizer.from_file(spec)
    if spec == "byte":
        return ByteTokenizer()
    raise DataError(f"--tokenizer '{spec}' is not byte, bpe or a tokenizer.json file")
