"""The espeak-ng speech synthesizer, from the ``espeakng-loader`` wheel (libespeak-ng and its voice
data, no system package), driven through ``ctypes``: text in, 16-bit mono samples out.

Only what gradsync's spoken-digit set needs: a voice with a variant (``en-us+m1``), the speaking
rate in words per minute and the pitch (0-100), synchronous synthesis into a buffer.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import itertools
from typing import Any

import numpy as np

from gradsync.core.errors import DataError

_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns when the callback has had every sample
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_POS_CHARACTER = 1
_CHARS_UTF8 = 1


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Synthesizer:
    """One process's espeak-ng (the library keeps global state: build it once, :func:`synthesizer`)."""

    def __init__(self) -> None:
        if importlib.util.find_spec("espeakng_loader") is None:
            raise DataError(
                "speech.source=espeak-digits needs the espeak-ng synthesizer: "
                "pip install 'gradsync[speech]' (the espeakng-loader wheel), or pass "
                "--speech.source FOLDER of WAV files"
            )
        import espeakng_loader  # noqa: PLC0415  (optional dependency, imported when first used)

        self.lib: Any = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_ng_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self.lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        self.lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise DataError(f"the espeak-ng library could not start (espeak_Initialize returned {rate})")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []

        def collect(wav: Any, n: int, events: Any) -> int:
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0  # go on

        self.by_language = self._voices_by_language()
        self._callback = _CALLBACK(collect)  # kept referenced: the library calls it later
        self.lib.espeak_SetSynthCallback(self._callback)

    def _voices_by_language(self) -> dict[str, str]:
        """Each language code to the identifier of the voice that speaks it first (``en-gb`` is
        the voice file ``gmw/en``: the library finds voices by name or file, not by language)."""
        found: dict[str, tuple[int, str]] = {}
        voices = self.lib.espeak_ListVoices(None)
        for i in itertools.count():
            if not voices[i]:
                break
            v = voices[i].contents
            raw = ctypes.string_at(v.languages, 256)
            pos = 0
            while pos < len(raw) and raw[pos] != 0:  # (priority byte, language, NUL) ..., then NUL
                priority, end = raw[pos], raw.index(b"\0", pos + 1)
                lang = raw[pos + 1 : end].decode().lower()
                if lang not in found or priority < found[lang][0]:
                    found[lang] = (priority, v.identifier.decode())
                pos = end + 1
        return {lang: ident for lang, (_, ident) in found.items()}

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """``text`` spoken by ``voice`` (a language, ``+`` a variant) at ``rate`` words per minute
        and ``pitch``, as int16 samples at :attr:`sample_rate`."""
        name, _, variant = voice.partition("+")
        if self.lib.espeak_ng_SetVoiceByName(voice.encode()) != 0 and (
            name.lower() not in self.by_language
            or self.lib.espeak_ng_SetVoiceByName(
                (self.by_language[name.lower()] + (f"+{variant}" if variant else "")).encode()
            )
            != 0
        ):
            raise DataError(f"espeak-ng has no voice '{voice}'")
        self.lib.espeak_SetParameter(_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._chunks = []
        data = text.encode() + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise DataError(f"espeak-ng could not speak '{text}' with voice '{voice}' (error {status})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


@functools.cache
def synthesizer() -> Synthesizer:
    """The process's synthesizer, started on first use."""
    return Synthesizer()
