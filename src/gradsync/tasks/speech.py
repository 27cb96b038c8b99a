"""``--task speech``: keyword classification from log-mel spectrograms with a 1-D GroupNorm
convnet over time. Augmentation: a random time shift of up to 100 ms and a random gain of ±3 dB,
seeded per draw so it is the same at any world size."""

from __future__ import annotations

import math

import numpy as np
import torch

from gradsync.data.audio import load_speech
from gradsync.data.labeled import LabeledData
from gradsync.model.convnet import ConvNet1d
from gradsync.tasks.classify import ClassificationTask

_GAIN = 0.3 * math.log(10)  # ±3 dB of power, in natural-log units before standardisation


class SpeechTask(ClassificationTask):
    name = "speech"

    def load_data(self) -> LabeledData:
        data = load_speech(self.cfg.speech)
        self._gain = _GAIN / float(data.train_x.std())
        return data.standardized()

    def build_model(self) -> ConvNet1d:
        return ConvNet1d(self.cfg.speech.n_mels, self.n_classes, self.cfg.speech.width)

    def augment(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        frames = x.size(-1)
        shift = int(rng.integers(-10, 11))
        out = torch.full_like(x, float(x.amin()))
        if shift >= 0:
            out[:, shift:] = x[:, : frames - shift]
        else:
            out[:, :shift] = x[:, -shift:]
        return out + float(rng.uniform(-1.0, 1.0)) * self._gain
