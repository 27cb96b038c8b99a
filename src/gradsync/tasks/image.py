"""``--task image``: image classification with a small GroupNorm convnet (see
:mod:`gradsync.model.convnet` for why not BatchNorm). Default data: scikit-learn's handwritten
digits; augmentation: a random shift of up to 1/8 of the side in each direction, filled with the
background value, seeded per draw so it is the same at any world size."""

from __future__ import annotations

import numpy as np
import torch

from gradsync.data.images import load_images
from gradsync.data.labeled import LabeledData
from gradsync.model.convnet import ConvNet2d
from gradsync.tasks.classify import ClassificationTask


class ImageTask(ClassificationTask):
    name = "image"

    def load_data(self) -> LabeledData:
        return load_images(self.cfg.image)

    def build_model(self) -> ConvNet2d:
        return ConvNet2d(self.data.train_x.size(1), self.n_classes, self.cfg.image.width)

    def augment(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        _, h, w = x.shape
        m = max(1, min(h, w) // 8)
        dy, dx = (int(v) for v in rng.integers(-m, m + 1, 2))
        out = torch.full_like(x, float(x.amin()))
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[:, yd, xd] = x[:, ys, xs]
        return out
