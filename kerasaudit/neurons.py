"""Cheng et al.'s flagged neurons under a trigger: channels whose ℓ∞ the trigger raises far
beyond what it does to their sibling channels.

The paper's observation (arXiv 2002.12162) is that a backdoor shows up as a strong ℓ∞ bias of a
few conv channels. Measured here, and the reason this stage needs a trigger: ranking channels by
ℓ∞ on *clean* images does not find them; the *increase* of a channel's mean ℓ∞ when images
carry the trigger does. Per layer, each channel's increase (mean ℓ∞ on triggered images minus
on clean images) gets a robust z-score against the layer's other channels
(:func:`kerasaudit.flags.robust_z`); channels above the threshold are flagged, strongest first.

Dead channels — silent (ℓ∞ ≈ 0) on the clean and the triggered images — are reported apart and
left out of the statistics: a channel that never fires is not evidence of anything, and scoring
activations of 1e-9 produces meaningless z-scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasaudit.flags import DEFAULT_THRESHOLD, robust_z

DEAD_RELATIVE = 1e-6  # × the layer's median clean ℓ∞: below this (clean and triggered), dead
DEAD_ABSOLUTE = 1e-12


@dataclass(frozen=True, eq=False)
class LayerNeurons:
    layer: str
    clean_linf: np.ndarray  # mean ℓ∞ per channel on clean images
    triggered_linf: np.ndarray  # ... on triggered images
    z: np.ndarray  # robust z of the increase within the layer (NaN for dead channels)
    dead: tuple[int, ...]
    flagged: tuple[int, ...]  # strongest first

    @property
    def increase(self) -> np.ndarray:
        return self.triggered_linf - self.clean_linf

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "channels": int(self.clean_linf.shape[0]),
            "flagged": list(self.flagged),
            "dead": list(self.dead),
            "flagged_detail": [
                {
                    "channel": c,
                    "clean_mean_linf": float(self.clean_linf[c]),
                    "triggered_mean_linf": float(self.triggered_linf[c]),
                    "z": float(self.z[c]),
                }
                for c in self.flagged
            ],
        }


@dataclass(frozen=True, eq=False)
class TriggerNeurons:
    """The flagged neurons of every scanned layer under one trigger."""

    trigger: dict[str, Any]  # the trigger's to_dict()
    label: int | None  # its target, when known
    layers: tuple[LayerNeurons, ...]
    threshold: float
    clean_images: int
    triggered_images: int

    @property
    def flagged_count(self) -> int:
        return sum(len(layer.flagged) for layer in self.layers)

    @property
    def dead_count(self) -> int:
        return sum(len(layer.dead) for layer in self.layers)

    def top(self, limit: int = 10) -> list[tuple[str, int, float]]:
        """(layer, channel, z), strongest first."""
        found = [(n.layer, c, float(n.z[c])) for n in self.layers for c in n.flagged]
        found.sort(key=lambda item: -item[2])
        return found[:limit]

    def to_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "label": self.label,
            "threshold": self.threshold,
            "clean_images": self.clean_images,
            "triggered_images": self.triggered_images,
            "flagged_count": self.flagged_count,
            "dead_count": self.dead_count,
            "top": [{"layer": layer, "channel": c, "z": z} for layer, c, z in self.top()],
            "layers": [n.to_dict() for n in self.layers],
        }


def score_layer(
    layer: str, clean_linf: np.ndarray, triggered_linf: np.ndarray, threshold: float
) -> LayerNeurons:
    clean = np.nan_to_num(np.asarray(clean_linf, np.float64))
    triggered = np.nan_to_num(np.asarray(triggered_linf, np.float64))
    live = clean[clean > 0]
    scale = float(np.median(live)) if live.size else 0.0
    floor = max(DEAD_ABSOLUTE, DEAD_RELATIVE * scale)
    dead = (clean <= floor) & (triggered <= floor)
    increase = np.where(dead, np.nan, triggered - clean)
    z = robust_z(increase) if (~dead).sum() >= 4 else np.full(clean.shape, np.nan)
    above = np.flatnonzero(np.nan_to_num(z, nan=-np.inf) > threshold)
    order = above[np.argsort(-z[above], kind="stable")]
    return LayerNeurons(
        layer,
        clean,
        triggered,
        z,
        tuple(int(c) for c in np.flatnonzero(dead)),
        tuple(int(c) for c in order),
    )


def trigger_neurons(
    model: Any,
    clean: np.ndarray,
    trigger: Any,
    *,
    label: int | None = None,
    layers: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 128,
    scanner: Any = None,
) -> TriggerNeurons:
    """Flag the channels ``trigger`` drives (see module doc). ``clean``: clean images in
    memory; a stamp trigger is applied to them, ``--trigger-data`` brings its own images.
    ``scanner``: a :class:`kerasaudit.stages.scan.Scanner` to reuse (one per model and layer
    set)."""
    from kerasaudit.stages.scan import Scanner
    from kerasaudit.triggers import TriggerData

    if scanner is None:
        scanner = Scanner(model, layers=list(layers) if layers else None)
    triggered = trigger.x if isinstance(trigger, TriggerData) else trigger.apply(clean)
    clean_stats = scanner.stats(np.asarray(clean, np.float32), batch_size=batch_size)
    trig_stats = scanner.stats(np.asarray(triggered, np.float32), batch_size=batch_size)
    scored = tuple(
        score_layer(s.layer, s.mean_linf, trig_stats.layer(s.layer).mean_linf, threshold)
        for s in clean_stats.layers
    )
    return TriggerNeurons(
        trigger.to_dict(),
        label if label is not None else getattr(trigger, "target", None),
        scored,
        float(threshold),
        len(clean),
        len(triggered),
    )
