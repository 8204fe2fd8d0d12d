"""Channel ranking criteria: which channels of a layer to prune first.

Higher score = more suspicious = pruned first, for every criterion:

- ``linf``: mean ℓ∞ of the channel's activation map on clean data (the design card's reading
  of Cheng et al.). Measured fact: this does *not* find backdoor channels; it is offered so
  users can see that for themselves.
- ``linf-trigger``: mean ℓ∞ on triggered images minus on clean images (the paper's criterion):
  channels the trigger drives far beyond their clean behaviour. Needs ``--trigger``.
- ``mean``: Fine-Pruning (Liu et al. 2018): the lowest mean activation on clean data first.
- ``l1`` / ``l2``: the highest mean ℓ1 / ℓ2 norm on clean data first (the paper's baselines).
- ``clp``: Channel Lipschitz upper bound (Zheng et al. 2022), data-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from kerasaudit import _tf
from kerasaudit.data import Dataset
from kerasaudit.errors import BadInputError
from kerasaudit.inventory import AuditableLayer
from kerasaudit.pruning import clp_scores


class Criterion(StrEnum):
    LINF = "linf"
    LINF_TRIGGER = "linf-trigger"
    MEAN = "mean"
    L1 = "l1"
    L2 = "l2"
    CLP = "clp"

    @property
    def needs_trigger(self) -> bool:
        return self is Criterion.LINF_TRIGGER

    @property
    def needs_data(self) -> bool:
        return self is not Criterion.CLP


@dataclass(frozen=True, eq=False)
class ChannelRanking:
    layer: str
    criterion: Criterion
    scores: np.ndarray  # per channel; higher = pruned first

    @property
    def order(self) -> np.ndarray:
        # Stable sort on -score: ties keep channel order, so results are deterministic.
        return np.argsort(-self.scores, kind="stable")

    def count_for(self, ratio: float) -> int:
        return round(ratio * len(self.scores))

    def top(self, ratio: float) -> tuple[int, ...]:
        return tuple(int(c) for c in self.order[: self.count_for(ratio)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "criterion": str(self.criterion),
            "scores": [float(s) for s in self.scores],
            "order": [int(c) for c in self.order],
        }


def triggered_batches(dataset: Dataset, trigger: Any) -> Any:
    """A tf.data pipeline of triggered input batches (labels dropped); for ``--trigger-data``
    its own images (all of them: the ℓ∞ statistics are unpaired means)."""
    from kerasaudit.triggers import TriggerData

    if isinstance(trigger, TriggerData):
        return trigger.x
    tf = _tf.tf()
    ds = dataset.as_tf_dataset()
    first = ds.element_spec
    if isinstance(first, tuple):
        ds = ds.map(lambda x, *_: x)
    return ds.map(trigger.apply_tf, num_parallel_calls=tf.data.AUTOTUNE)


def rank_channels(
    model: Any,
    layers: Sequence[AuditableLayer],
    criterion: Criterion,
    dataset: Dataset | None,
    *,
    trigger: Any | None = None,
    batch_size: int = 128,
    strategy: Any = None,
    clean_stats: Any | None = None,
) -> dict[str, ChannelRanking]:
    """Score every channel of ``layers`` by ``criterion``."""
    ranked = rank_all(
        model,
        layers,
        [criterion],
        dataset,
        trigger=trigger,
        batch_size=batch_size,
        strategy=strategy,
        clean_stats=clean_stats,
    )
    return {layer: ranking for (_, layer), ranking in ranked.items()}


def rank_all(
    model: Any,
    layers: Sequence[AuditableLayer],
    criteria: Sequence[Criterion],
    dataset: Dataset | None,
    *,
    trigger: Any | None = None,
    batch_size: int = 128,
    strategy: Any = None,
    clean_stats: Any | None = None,
) -> dict[tuple[Criterion, str], ChannelRanking]:
    """Score ``layers`` by every criterion, with one fused pass over clean data and (for
    ``linf-trigger``) one over triggered data, whatever the number of criteria.
    ``clean_stats``: statistics of ``model`` saved by ``scan --save-stats`` (or merged by
    ``merge-stats``) replace the clean pass; they must cover ``layers``."""
    if any(c.needs_trigger for c in criteria) and trigger is None:
        raise BadInputError(
            "--criterion linf-trigger needs --trigger (a known or reversed trigger)"
        )
    needs_data = [c for c in criteria if c.needs_data]
    clean = triggered = None
    if needs_data:
        if dataset is None:
            raise BadInputError(f"--criterion {needs_data[0]} needs --data")
        from kerasaudit.stages.scan import Scanner

        scanner = Scanner(model, layers=[info.path for info in layers], strategy=strategy)
        clean = (
            scanner.stats(dataset, batch_size=batch_size)
            if clean_stats is None
            else checked_stats(model, clean_stats, layers)
        )
        if Criterion.LINF_TRIGGER in criteria:
            triggered = scanner.stats(triggered_batches(dataset, trigger), batch_size=batch_size)
    rankings: dict[tuple[Criterion, str], ChannelRanking] = {}
    for criterion in criteria:
        for info in layers:
            if criterion is Criterion.CLP:
                scores = clp_scores(model, info)
            else:
                assert clean is not None
                stats = clean.layer(info.path)
                if criterion is Criterion.LINF:
                    scores = stats.mean_linf
                elif criterion is Criterion.LINF_TRIGGER:
                    assert triggered is not None
                    scores = triggered.layer(info.path).mean_linf - stats.mean_linf
                elif criterion is Criterion.MEAN:
                    scores = -stats.mean_l1 / max(1, stats.map_size)
                elif criterion is Criterion.L1:
                    scores = stats.mean_l1
                else:
                    scores = stats.mean_l2
            rankings[(criterion, info.path)] = ChannelRanking(
                info.path, criterion, np.asarray(scores, np.float64)
            )
    return rankings


def checked_stats(model: Any, stats: Any, layers: Sequence[AuditableLayer]) -> Any:
    """``stats`` if they were measured on this very model and cover ``layers``."""
    from kerasaudit.stages.scan import model_fingerprint

    if stats.model_fingerprint != model_fingerprint(model):
        raise BadInputError(
            f"--stats were measured on another model ({stats.model_name}, weights "
            f"{stats.model_fingerprint[:12]}): scan this model with --save-stats"
        )
    have = {s.layer for s in stats.layers}
    missing = [info.path for info in layers if info.path not in have]
    if missing:
        raise BadInputError(
            f"--stats have no statistics for {', '.join(missing)}: scan those layers too"
        )
    return stats
