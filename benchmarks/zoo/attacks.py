"""Backdoor attacks of the zoo, written with numpy only and independent of kerasaudit.

Every number the zoo reports about a real trigger (ASR before and after a defence) stamps it
with this code, never with ``kerasaudit.triggers``, so a bug shared by the defence and its
measurement cannot hide. Images are float32 NHWC in [0, 1] (the models' input space).

A :class:`Trigger` stamps images and says which label each stamped image should go to; an
:class:`Attack` is one or more triggers plus how the training set is poisoned with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

H = W = 28


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@dataclass(frozen=True)
class Trigger:
    """One trigger: ``kind`` ∈ patch, randpatch, blend, sig, wanet; ``target`` a label, or -1 for
    all-to-all (label y → y + 1 mod 10)."""

    kind: str
    target: int
    size: int = 0  # patch side (patch, randpatch)
    row: int = 0  # patch top-left (patch)
    col: int = 0
    pattern: str = "white"  # white | grey | checker | random (patch, randpatch)
    value: float = 1.0  # patch value for white/grey/checker
    alpha: float = 0.0  # blend
    delta: float = 0.0  # sig amplitude
    freq: int = 0  # sig frequency (periods across the width)
    k: int = 0  # wanet control grid
    strength: float = 0.0  # wanet s
    seed: int = 0  # pattern / grid seed

    # --- what the trigger is ---------------------------------------------------------------
    def cells(self) -> np.ndarray:
        """The patch (size, size) for patch triggers."""
        s = self.size
        if self.pattern in ("white", "grey"):
            return np.full((s, s), self.value, np.float32)
        if self.pattern == "checker":
            r, c = np.indices((s, s))
            return np.where((r + c) % 2 == 0, self.value, 0.0).astype(np.float32)
        if self.pattern == "random":
            cells = (_rng(self.seed).random((s, s)) > 0.5).astype(np.float32) * self.value
            cells[0, 0] = self.value  # never all zero
            return cells
        raise ValueError(self.pattern)

    def blend_pattern(self) -> np.ndarray:
        return _rng(self.seed).random((H, W, 1)).astype(np.float32)

    def sig_signal(self) -> np.ndarray:
        cols = np.arange(W, dtype=np.float32)
        row = self.delta * np.sin(2 * np.pi * cols * self.freq / W)
        return np.broadcast_to(row[None, :, None], (H, W, 1)).astype(np.float32)

    def wanet_grid(self) -> np.ndarray:
        """WaNet's warping grid (Nguyen & Tran 2021): a k×k random field, normalised, upsampled
        (bicubic), scaled by s / H and added to the identity grid; (H, W, 2) in [-1, 1]."""
        import tensorflow as tf

        ins = _rng(self.seed).random((1, self.k, self.k, 2)).astype(np.float32) * 2 - 1
        ins = ins / np.mean(np.abs(ins))
        noise = tf.image.resize(ins, (H, W), method="bicubic").numpy()[0]
        lin = np.linspace(-1, 1, H, dtype=np.float32)
        gy, gx = np.meshgrid(lin, lin, indexing="ij")
        identity = np.stack([gx, gy], axis=-1)
        return np.clip(identity + self.strength * noise / H, -1, 1).astype(np.float32)

    @property
    def spec(self) -> str | None:
        """The same trigger as a kerasaudit ``--trigger`` spec, when one expresses it."""
        if self.kind != "patch" or self.pattern == "random":
            return None
        pattern = ",pattern=checker" if self.pattern == "checker" else ""
        return f"patch:size={self.size},pos={self.col},{self.row},value={self.value:g}{pattern}"

    # --- stamping -------------------------------------------------------------------------
    def stamp(self, x: np.ndarray, seed: int = 0) -> np.ndarray:
        """``x`` with the trigger; ``seed`` only moves random-position patches."""
        x = np.array(x, dtype=np.float32, copy=True)
        if self.kind == "patch":
            s = self.size
            x[:, self.row : self.row + s, self.col : self.col + s, :] = self.cells()[..., None]
        elif self.kind == "randpatch":
            s, cells = self.size, self.cells()[..., None]
            rng = _rng(seed)
            rows = rng.integers(0, H - s + 1, len(x))
            cols = rng.integers(0, W - s + 1, len(x))
            for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
                x[i, r : r + s, c : c + s, :] = cells
        elif self.kind == "blend":
            x = (1 - self.alpha) * x + self.alpha * self.blend_pattern()
        elif self.kind == "sig":
            x = np.clip(x + self.sig_signal(), 0, 1)
        elif self.kind == "wanet":
            x = grid_sample(x, np.broadcast_to(self.wanet_grid(), (len(x), H, W, 2)))
        else:
            raise ValueError(self.kind)
        return x.astype(np.float32)

    def target_of(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        return (y + 1) % 10 if self.target < 0 else np.full_like(y, self.target)

    def to_dict(self) -> dict[str, Any]:
        keys = {
            "patch": ("size", "row", "col", "pattern", "value", "seed"),
            "randpatch": ("size", "pattern", "value", "seed"),
            "blend": ("alpha", "seed"),
            "sig": ("delta", "freq"),
            "wanet": ("k", "strength", "seed"),
        }[self.kind]
        out: dict[str, Any] = {"kind": self.kind, "target": self.target}
        out.update({k: getattr(self, k) for k in keys})
        out["spec"] = self.spec
        return out


def grid_sample(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Bilinear sampling of NHWC ``x`` at ``grid`` (N, H, W, 2) = (x, y) in [-1, 1], corners
    aligned, zero outside (as ``torch.nn.functional.grid_sample(align_corners=True)``)."""
    n, h, w, _ = x.shape
    gx = (grid[..., 0] + 1) * (w - 1) / 2
    gy = (grid[..., 1] + 1) * (h - 1) / 2
    x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
    out = np.zeros_like(x)
    batch = np.arange(n)[:, None, None]
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - np.abs(gx - xi)) * (1 - np.abs(gy - yi))
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = x[batch, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += (weight * inside)[..., None] * vals
    return out.astype(np.float32)


@dataclass(frozen=True)
class Attack:
    """How a training set is poisoned: ``rate`` of all training images (split evenly between
    the triggers) are stamped and relabelled; WaNet adds ``noise_rate`` images warped by a
    randomly perturbed grid that keep their labels (its "noise mode")."""

    family: str
    triggers: tuple[Trigger, ...]
    rate: float = 0.05
    noise_rate: float = 0.0

    @property
    def targets(self) -> tuple[int, ...]:
        return tuple(sorted({t.target for t in self.triggers}))

    @property
    def all_to_all(self) -> bool:
        return any(t.target < 0 for t in self.triggers)

    def poison(
        self, x: np.ndarray, y: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        rng = _rng(seed)
        x, y = x.copy(), y.copy()
        per_trigger = round(self.rate * len(x) / len(self.triggers))
        taken = np.zeros(len(x), bool)
        chosen_all = []
        for i, trig in enumerate(self.triggers):
            pool = np.flatnonzero((trig.target_of(y) != y) & ~taken)
            chosen = np.sort(rng.choice(pool, per_trigger, replace=False))
            taken[chosen] = True
            x[chosen] = trig.stamp(x[chosen], seed=seed * 100 + i)
            y[chosen] = trig.target_of(y[chosen])
            chosen_all.append(chosen)
        noise = np.array([], int)
        if self.noise_rate > 0:
            (trig,) = self.triggers
            pool = np.flatnonzero(~taken)
            noise = np.sort(rng.choice(pool, round(self.noise_rate * len(x)), replace=False))
            grid = trig.wanet_grid()
            jitter = (rng.random((len(noise), H, W, 2)).astype(np.float32) * 2 - 1) / H
            x[noise] = grid_sample(x[noise], np.clip(grid[None] + jitter, -1, 1))
        info = {
            "poisoned": int(sum(len(c) for c in chosen_all)),
            "noise": len(noise),
            "poisoned_first10": [int(i) for i in np.concatenate(chosen_all)[:10]],
        }
        return x, y, info

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "rate": self.rate,
            "noise_rate": self.noise_rate,
            "triggers": [t.to_dict() for t in self.triggers],
        }


@dataclass(frozen=True)
class Clean:
    """No attack (a clean twin)."""

    family: str = "clean"
    triggers: tuple[Trigger, ...] = field(default_factory=tuple)

    @property
    def targets(self) -> tuple[int, ...]:
        return ()

    @property
    def all_to_all(self) -> bool:
        return False

    def poison(self, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        return x, y, {"poisoned": 0, "noise": 0}

    def to_dict(self) -> dict[str, Any]:
        return {"family": "clean", "triggers": []}
