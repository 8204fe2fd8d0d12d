"""Flagging: which channels of a layer have anomalous ℓ∞ behaviour.

Per layer, each channel gets a robust z-score (median / MAD, scaled by 1.4826 so that it reads
like a standard z-score on normal data) of two statistics:

* mean ℓ∞ of its activation map — a channel whose peak response is far above its siblings';
* mean ℓ∞ / mean ℓ2 — a channel whose peak is large *for its energy*: a sparse, localised
  response, which is how a small trigger patch shows up (Cheng et al., arXiv 2002.12162).

The channel's score is the larger of the two, so either signature alone is enough. Only the
upper side counts: a dead or weak channel is not a backdoor finding. The default threshold 3.5
is Iglewicz & Hoaglin's recommended cut-off for modified z-scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAD_SCALE = 1.4826  # consistency constant: 1.4826·MAD estimates σ for normal data
MEAN_AD_SCALE = 1.253314  # sqrt(π/2): the same for the mean absolute deviation (MAD = 0 fallback)
DEFAULT_THRESHOLD = 3.5
RELATIVE_FLOOR = 1e-6  # of |median|: the smallest scale (float32 sums agree to ~1e-7)
MIN_CHANNELS = 4  # below this a median/MAD score says nothing; such layers are not scored
# A channel whose mean ℓ∞ is below this share of its layer's median (or exactly 0) is dead on
# the data: reported apart and left out of the scores. Without this, activations of 1e-8 next
# to siblings of 1e-1 (an untrained or pruned network) produce meaningless huge z-scores.
DEAD_RELATIVE = 1e-4
MIN_IMAGES = 100  # fewer images: the statistics are noisy, and the scan says so

SCORE_DEFINITION = (
    "per layer: score = max(z(mean linf), z(mean linf / mean l2)), "
    "z(v) = (v - median(v)) / (1.4826 * MAD(v)); flagged when score > threshold"
)


def robust_z(values: np.ndarray) -> np.ndarray:
    """Modified z-scores (v − median) / (1.4826·MAD) of the finite entries; NaN stays NaN.

    When more than half of the values are equal (MAD = 0) the mean absolute deviation scaled
    by √(π/2) is used instead (Iglewicz & Hoaglin). The scale never drops below
    ``RELATIVE_FLOOR``·|median|: differences smaller than that are float32 rounding in the
    activation sums, not behaviour, and must not turn into huge scores.
    """
    values = np.asarray(values, dtype=np.float64)
    z = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    if not finite.any():
        return z
    kept = values[finite]
    median = float(np.median(kept))
    deviations = np.abs(kept - median)
    floor = RELATIVE_FLOOR * abs(median)
    scale = MAD_SCALE * float(np.median(deviations))
    if scale <= floor:
        scale = MEAN_AD_SCALE * float(np.mean(deviations))
    scale = max(scale, floor)
    if scale == 0.0:  # every value equal (e.g. all zero)
        z[finite] = 0.0
        return z
    z[finite] = (kept - median) / scale
    return z


@dataclass(frozen=True, eq=False)
class LayerFlags:
    """Anomaly scores of one layer's channels and the channels above the threshold."""

    layer: str
    z_linf: np.ndarray  # robust z of mean ℓ∞, per channel
    z_ratio: np.ndarray  # robust z of mean ℓ∞ / mean ℓ2 (NaN for channels that never fire)
    score: np.ndarray  # max of the two (NaN only when both are; NaN for dead channels)
    flagged: tuple[int, ...]  # channel indices with score > threshold, highest score first
    note: str | None = None  # why a layer was not scored
    dead: tuple[int, ...] = ()  # channels silent on the data (not scored)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "z_linf": _json_floats(self.z_linf),
            "z_ratio": _json_floats(self.z_ratio),
            "score": _json_floats(self.score),
            "flagged": list(self.flagged),
            "dead": list(self.dead),
            "note": self.note,
        }


def flag_channels(
    layer: str, mean_linf: np.ndarray, linf_over_l2: np.ndarray, threshold: float
) -> LayerFlags:
    mean_linf = np.asarray(mean_linf, dtype=np.float64)
    ratio = np.asarray(linf_over_l2, dtype=np.float64)
    channels = mean_linf.shape[0]
    if channels < MIN_CHANNELS:
        zeros = np.zeros(channels)
        return LayerFlags(
            layer, zeros, zeros.copy(), zeros.copy(), (), f"fewer than {MIN_CHANNELS} channels"
        )
    live = mean_linf[np.isfinite(mean_linf) & (mean_linf > 0)]
    scale = float(np.median(live)) if live.size else 0.0
    dead_mask = ~np.isfinite(mean_linf) | (mean_linf <= DEAD_RELATIVE * scale)
    dead = tuple(int(c) for c in np.flatnonzero(dead_mask))
    if channels - len(dead) < MIN_CHANNELS:
        nan = np.full(channels, np.nan)
        return LayerFlags(
            layer, nan, nan.copy(), nan.copy(), (),
            f"fewer than {MIN_CHANNELS} live channels", dead,
        )  # fmt: skip
    z_linf = robust_z(np.where(dead_mask, np.nan, mean_linf))
    z_ratio = robust_z(np.where(dead_mask, np.nan, ratio))
    both = np.stack([z_linf, z_ratio])
    all_nan = np.isnan(both).all(axis=0)
    score = np.max(np.where(np.isnan(both), -np.inf, both), axis=0)
    score[all_nan] = np.nan
    above = np.flatnonzero(np.nan_to_num(score, nan=-np.inf) > threshold)
    order = above[np.argsort(-score[above], kind="stable")]
    return LayerFlags(layer, z_linf, z_ratio, score, tuple(int(c) for c in order), None, dead)


def _json_floats(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN/inf: they become null."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]
