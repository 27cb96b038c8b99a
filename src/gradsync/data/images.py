"""Images for classification: scikit-learn's bundled handwritten digits (1,797 8×8 images from
the UCI optical-recognition set; no download), an ImageFolder-layout folder (one subfolder per
class, any image format Pillow reads), or an ``.npz`` file with ``images`` and ``labels``
(optionally ``test_images``/``test_labels``). Pixel values become floats in [0, 1], (N, C, H, W)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from gradsync.core.config import ImageConfig
from gradsync.core.errors import DataError
from gradsync.data.labeled import LabeledData

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def load_images(cfg: ImageConfig) -> LabeledData:
    if cfg.source == "digits":
        data = _digits(cfg)
    else:
        p = Path(cfg.source)
        if not p.exists():
            raise DataError(
                f"image source '{cfg.source}' does not exist; pass 'digits', a folder with one "
                "subfolder per class, or an .npz file"
            )
        data = _npz(p, cfg) if p.suffix == ".npz" else _folder(p, cfg)
    return data.standardized()


def _split(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed split: a permutation seeded with 0, the last ``fraction`` held out."""
    perm = np.random.default_rng(0).permutation(n)
    n_test = max(1, int(round(n * fraction)))
    return np.sort(perm[:-n_test]), np.sort(perm[-n_test:])


def _from_arrays(images: np.ndarray, labels: np.ndarray, fraction: float, classes: list[str], desc: str) -> LabeledData:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    tr, te = _split(len(y), fraction)
    return LabeledData(x[tr], y[tr], x[te], y[te], classes, desc + f", {len(tr)} train / {len(te)} test")


def _digits(cfg: ImageConfig) -> LabeledData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("image.source=digits needs scikit-learn: pip install 'gradsync[image]'") from None
    d = load_digits()
    images = d.images[:, None, :, :] / 16.0  # (N, 1, 8, 8), 17 gray levels
    return _from_arrays(
        images,
        d.target,
        cfg.test_fraction,
        [str(c) for c in d.target_names],
        "scikit-learn digits: 1,797 8×8 grayscale images, 10 classes",
    )


def _npz(path: Path, cfg: ImageConfig) -> LabeledData:
    try:
        z = np.load(path)
    except (OSError, ValueError) as e:
        raise DataError(f"image file '{path}' is not a readable .npz: {e}") from None
    if "images" not in z or "labels" not in z:
        raise DataError(
            f"image file '{path}' must hold arrays 'images' (N, H, W[, C]) and 'labels' (N); "
            f"it holds {', '.join(z.files) or 'nothing'}"
        )

    def chw(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32)
        a = a / 255.0 if a.max() > 1.0 else a
        return a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)

    images, labels = z["images"], z["labels"]
    if images.ndim not in (3, 4) or len(images) != len(labels):
        raise DataError(
            f"image file '{path}': images must be (N, H, W[, C]) with one label each, got "
            f"{images.shape} images and {labels.shape} labels"
        )
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    if "test_images" in z and "test_labels" in z:
        x, y = torch.from_numpy(chw(images)), torch.from_numpy(labels.astype(np.int64))
        tx, ty = torch.from_numpy(chw(z["test_images"])), torch.from_numpy(z["test_labels"].astype(np.int64))
        return LabeledData(x, y, tx, ty, classes, f"{path}: {len(y)} train / {len(ty)} test images")
    return _from_arrays(chw(images), labels, cfg.test_fraction, classes, f"{path}: {len(labels)} images")


def _folder(root: Path, cfg: ImageConfig) -> LabeledData:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"image folder '{root}' has no class subfolders; put each class's images in "
            "its own subfolder (ImageFolder layout: ROOT/CLASS/IMAGE)"
        )
    files = [
        (f, i)
        for i, c in enumerate(classes)
        for f in sorted((root / c).rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(
            f"image folder '{root}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class subfolders"
        )
    mode = "L" if cfg.channels == 1 else "RGB"
    arrays, size = [], None
    for f, _ in files:
        try:
            with Image.open(f) as opened:
                im = opened.convert(mode)
                if cfg.size:
                    im = im.resize((cfg.size, cfg.size))
                a = np.asarray(im, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"image '{f}' cannot be read: {e}") from None
        if size is not None and a.shape != size:
            raise DataError(
                f"image '{f}' is {a.shape[1]}×{a.shape[0]}, others {size[1]}×{size[0]}; "
                "set image.size to resize them all"
            )
        size = a.shape
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays))
    y = torch.tensor([i for _, i in files], dtype=torch.int64)
    # by name, like text documents: adding images never moves an old one across the split
    test = np.array(
        [(zlib.crc32(str(f.relative_to(root)).encode()) % 10_000) < cfg.test_fraction * 10_000 for f, _ in files]
    )
    if test.all() or not test.any():
        tr, te = _split(len(y), cfg.test_fraction)
    else:
        tr, te = np.flatnonzero(~test), np.flatnonzero(test)
    return LabeledData(
        x[tr],
        y[tr],
        x[te],
        y[te],
        classes,
        f"{root}: {len(files)} images, {len(classes)} classes, {len(tr)} train / {len(te)} test",
    )
