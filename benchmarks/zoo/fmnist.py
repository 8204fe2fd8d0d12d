"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package and the zoo's fixed splits.

The defender gets 1,000 test images chosen by a fixed seed; every efficacy number is measured
on the other 9,000 test images, which no defence sees.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 2026
DEFENDER_IMAGES = 1000
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28, 1) and labels of ``train`` or ``test``."""
    prefix = "train" if split == "train" else "t10k"
    if not DATA_DIR.is_dir():
        raise SystemExit(
            f"{DATA_DIR} not found: install Debian's package "
            "(apt-get install dataset-fashion-mnist)"
        )
    x = _idx(DATA_DIR / f"{prefix}-images-idx3-ubyte.gz")[..., None]
    y = _idx(DATA_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


def test_split() -> tuple[np.ndarray, np.ndarray]:
    """(defender indices, evaluation indices) into the 10,000 test images."""
    order = np.random.default_rng(SPLIT_SEED).permutation(10_000)
    return np.sort(order[:DEFENDER_IMAGES]), np.sort(order[DEFENDER_IMAGES:])


def to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0
