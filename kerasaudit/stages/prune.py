"""The prune stage: rank → choose layer(s) → zero channels → (fine-tune) → evaluate.

Which layer is pruned matters as much as the criterion (measured on the sample kind of model:
the same 10 % of channels removed the backdoor in one layer and did nothing in another). So when
the user does not name ``--layer`` and a trigger and labels are available, every auditable layer
is tried at the requested ratio and the one that lowers ASR most within the accuracy budget is
chosen; every candidate's numbers are reported. Without a trigger there is nothing to measure
ASR with, and the last conv layer is pruned (the Fine-Pruning convention), as the report says.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kerasaudit.data import Dataset
from kerasaudit.errors import BadInputError
from kerasaudit.evaluation import (
    OFF_CLASS,
    AttackResult,
    EvaluationResult,
    classifier_io,
    evaluate,
    forced_label,
    predictions,
    predictor,
)
from kerasaudit.finetune import FineTuneResult, FineTuneSettings, fine_tune_with
from kerasaudit.inventory import (
    NO_CONV_HINT,
    AuditableLayer,
    auditable_layers,
    conv_layers,
    named_layer,
)
from kerasaudit.pruning import LayerPrune, clone_model, zero_channels
from kerasaudit.ranking import ChannelRanking, Criterion, rank_channels
from kerasaudit.triggers import TriggerData

HOLDOUT = 0.25  # share of --data held out from fine-tuning to measure layer candidates on
# --ratio auto: these ratios are tried in the AUTO_LAYERS layers the trigger drives hardest
# (largest robust z of triggered − clean ℓ∞), each fine-tuned and measured held out. Measured
# on the zoo's development models (benchmarks/zoo): BatchNorm nets kept more accuracy with
# 5 %, a plain net needed 20 % to remove the backdoor.
AUTO_RATIOS = (0.05, 0.2)
NO_LAYER = ""  # the layer of the "nothing pruned" candidate (a 0 in auto_ratios)
AUTO_LAYERS = 3
ASR_TIE = 0.005  # held-out ASRs this close are a tie (a few images): keep more accuracy
# Candidates whose held-out ASR is at most this are all "removed": the most accurate wins. The
# goal is a low enough ASR at the least accuracy cost, not the lowest ASR at any cost; held-out
# ASRs below ~1 % differ by one or two images of the defender's data.
ASR_GOAL = 0.01


@dataclass(frozen=True)
class LayerCandidate:
    layer: str
    channels_pruned: int
    accuracy: float
    asr: float | None
    ra: float | None
    ratio: float = 0.0
    # the further known triggers' held-out ASRs (``known_also``, those measured), in order
    others: tuple[float | None, ...] = ()
    epochs: int | None = None  # measured after this many epochs of fine-tuning (None: none)
    # the share of each fine-tuning batch stamped (``auto_fractions``; None: the settings')
    fraction: float | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers it prunes: none for the "nothing pruned" candidate."""
        return () if self.layer == NO_LAYER else (self.layer,)

    @property
    def worst_asr(self) -> float | None:
        """What the candidate is judged by: the highest ASR over every measured trigger."""
        values = [a for a in (self.asr, *self.others) if a is not None]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "ratio": self.ratio,
            "channels_pruned": self.channels_pruned,
            "accuracy": self.accuracy,
            "asr": self.asr,
            "ra": self.ra,
            "other_asrs": list(self.others),
            "worst_asr": self.worst_asr,
            "epochs": self.epochs,
            "fraction": self.fraction,
        }


@dataclass(frozen=True)
class LayerChoice:
    layers: tuple[str, ...]
    reason: str
    candidates: tuple[LayerCandidate, ...]  # every layer tried, when the choice was measured
    # the original model's accuracy on the images the candidates were measured on, and how
    # many (with fine-tuning: the part of --data held out from it)
    held_accuracy: float | None = None
    held_images: int = 0
    held_out: bool = False  # those images were held out from the candidates' fine-tuning
    ratio: float = 0.0  # the ratio kept (with candidates)
    budget: float | None = None  # the accuracy loss a candidate was allowed (max_acc_drop)
    epochs: int | None = None  # the kept candidate's epochs of fine-tuning (None: none)
    fraction: float | None = None  # the kept candidate's share stamped (None: the settings')

    @property
    def chosen(self) -> LayerCandidate | None:
        """The measured candidate that was kept (None: the choice was not measured)."""
        kept = (self.layers, self.ratio, self.epochs, self.fraction)
        for c in self.candidates:
            if (c.layers, c.ratio, c.epochs, c.fraction) == kept:
                return c
        return None

    @property
    def held_out_drop(self) -> float | None:
        """Accuracy the kept candidate lost on images its fine-tuning never saw (a fraction;
        None unless the candidates were fine-tuned on part of --data and measured on the
        rest). The model written is that candidate fine-tuned again on all of --data, so this
        estimates its cost without the optimism of measuring on the images it was tuned on."""
        chosen = self.chosen
        if not self.held_out or chosen is None or self.held_accuracy is None:
            return None
        return self.held_accuracy - chosen.accuracy

    @property
    def over_budget(self) -> bool:
        """The kept candidate lost more than the budget on the held-out images: no candidate
        stayed within it, and the model written may not be usable (on a rebuilt external
        blend model, 20.4 points: the triggers of two wrongly flagged labels were unlearnt too)."""
        drop = self.held_out_drop
        return drop is not None and self.budget is not None and drop > self.budget + 1e-9

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "reason": self.reason,
            "candidates": [c.to_dict() for c in self.candidates],
            "held_accuracy": self.held_accuracy,
            "held_images": self.held_images,
            "held_out": self.held_out,
            "held_out_drop": self.held_out_drop,
            "budget": self.budget,
            "over_budget": self.over_budget,
            "epochs": self.epochs,
            "fraction": self.fraction,
        }


@dataclass(frozen=True)
class AlsoMeasured:
    """A further known trigger (``known_also``: a second backdoor's), measured like the first:
    towards the label the original model sends most images carrying it to."""

    trigger: str  # its description
    target: int | None  # None: it forces no label on the original — unlearnt, not measured
    # of the defender's images of other classes, the share the original sends to ``target``
    # (None: the trigger states its own target, or nothing was measured)
    share: float | None
    before: AttackResult | None
    after_prune: AttackResult | None
    after_fine_tune: AttackResult | None

    def to_dict(self) -> dict[str, Any]:
        def attack(a: AttackResult | None) -> dict[str, Any] | None:
            return None if a is None else a.to_dict()

        return {
            "trigger": self.trigger,
            "target": self.target,
            "target_source": (
                "stated with the trigger"
                if self.target is not None and self.share is None
                else "inferred: the label the original model sends it to"
            ),
            "forced_share": self.share,
            "before": attack(self.before),
            "after_prune": attack(self.after_prune),
            "after_fine_tune": attack(self.after_fine_tune),
        }


@dataclass(frozen=True)
class Verification:
    """The kept recipe (layers, ratio, epochs, share stamped) run once more from the original
    with a second quarter of --data held out — disjoint from the quarter that chose it — and
    measured there (``verify``). No choice was made on these images, so what the original
    loses on them estimates the written model's cost without the optimism of the best of
    several candidates measured on the same images (on the held-out zoo chains that estimate
    read 0.96 points too low on average; JOURNAL, thirtieth session). The written model is not
    this run: it was fine-tuned on all of --data."""

    images: int
    original_accuracy: float  # the original model's on those images
    accuracy: float  # the recipe's, fine-tuned on the rest of --data
    worst_asr: float | None  # the highest ASR over the measured triggers on those images
    seconds: float
    # of those images, how many the original got right and the recipe wrong, and the reverse
    lost: int = 0
    gained: int = 0

    @property
    def drop(self) -> float:
        """Accuracy the recipe lost on images no choice and no fine-tune saw (a fraction)."""
        return self.original_accuracy - self.accuracy

    @property
    def standard_error(self) -> float:
        """The standard error of :attr:`drop`, a paired difference on the same images (from the
        images each model alone got right): on 250 images typically 0.5–1.5 points."""
        n, changed = self.images, self.lost + self.gained
        if n < 2:
            return float("nan")
        net = self.lost - self.gained
        return float(np.sqrt(max(changed - net * net / n, 0.0) * n / (n - 1))) / n

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "original_accuracy": self.original_accuracy,
            "accuracy": self.accuracy,
            "drop": self.drop,
            "standard_error": self.standard_error,
            "lost": self.lost,
            "gained": self.gained,
            "worst_asr": self.worst_asr,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class PruneResult:
    criterion: Criterion
    ratio: float
    choice: LayerChoice
    pruned: tuple[LayerPrune, ...]
    rankings: tuple[ChannelRanking, ...]
    before: EvaluationResult | None
    after_prune: EvaluationResult | None
    fine_tune: FineTuneResult | None
    after_fine_tune: EvaluationResult | None
    evaluated_on: str  # which data the before/after numbers come from
    also: tuple[AlsoMeasured, ...] = ()  # further known triggers, measured like the first
    # how many triggers' scores ranked the channels (0: a criterion without trigger; > 1: the
    # union, ``rank_with`` / ``rank_known``)
    ranked_by: int = 1
    verification: Verification | None = None  # ``verify``: the recipe on a second quarter
    # ``verify_later``: the verification not run yet (:meth:`verified` runs it)
    pending: Callable[[], Verification] | None = field(default=None, compare=False, repr=False)

    def verified(self) -> PruneResult:
        """This result with its deferred verification run (itself when none is pending)."""
        if self.pending is None:
            return self
        return replace(self, verification=self.pending(), pending=None)

    @property
    def final(self) -> EvaluationResult | None:
        return self.after_fine_tune if self.fine_tune is not None else self.after_prune

    @property
    def also_final(self) -> tuple[AttackResult | None, ...]:
        """Each further known trigger's attack on the final model (as :attr:`final`)."""
        tuned = self.fine_tune is not None
        return tuple(o.after_fine_tune if tuned else o.after_prune for o in self.also)

    @property
    def worst_final_asr(self) -> float | None:
        """The highest ASR on the final model over every measured known trigger."""
        final = self.final
        attacks = [None if final is None else final.attack, *self.also_final]
        values = [a.asr for a in attacks if a is not None and a.asr is not None]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        def ev(result: EvaluationResult | None) -> dict[str, Any] | None:
            return None if result is None else result.to_dict()

        return {
            "criterion": str(self.criterion),
            "ratio": self.ratio,
            "layer_choice": self.choice.to_dict(),
            "pruned": [p.to_dict() for p in self.pruned],
            "rankings": [r.to_dict() for r in self.rankings],
            "evaluated_on": self.evaluated_on,
            "before": ev(self.before),
            "after_prune": ev(self.after_prune),
            "fine_tune": None if self.fine_tune is None else self.fine_tune.to_dict(),
            "after_fine_tune": ev(self.after_fine_tune),
            "ranked_by_triggers": self.ranked_by,
            "also_measured": [a.to_dict() for a in self.also],
            "worst_final_asr": self.worst_final_asr,
            "verification": None if self.verification is None else self.verification.to_dict(),
        }


def resolve_layers(model: Any, names: Sequence[str]) -> list[AuditableLayer]:
    """The auditable layers named by path (``features/conv1``) or by a unique bare name
    (``conv1``), as ``scan`` and ``gradcam`` take them."""
    available = {info.path: info for info in auditable_layers(model, include_dense=True)}
    return [named_layer(available, name) for name in names]


def _right(model: Any, data: Dataset) -> np.ndarray:
    """Per image of the (in-memory, labelled) ``data``: does ``model`` get it right."""
    x, y = data.take_array(data.info.count)
    predict = predictor(model, data.info.shape, classifier_io(model).outputs)
    return np.asarray(predictions(predict, x) == y)


def _prune_clone(
    model: Any, selections: Sequence[tuple[AuditableLayer, Sequence[int]]]
) -> tuple[Any, list[LayerPrune], Any]:
    clone = clone_model(model)
    done, mask = zero_channels(clone, selections)
    return clone, done, mask


def prune(
    model: Any,
    dataset: Dataset | None,
    *,
    criterion: Criterion,
    ratio: float | str,
    layers: Sequence[str] = (),
    trigger: Any | None = None,
    target: int | None = None,
    eval_dataset: Dataset | None = None,
    fine_tuning: FineTuneSettings | None = None,
    max_acc_drop: float = 0.015,
    batch_size: int = 128,
    unlearn_with: Sequence[Any] | None = None,
    teacher: Any | None = None,
    strict_ratio: bool = False,
    clean_stats: Any | None = None,
    candidates_unlearn: bool = True,
    rank_with: Sequence[Any] = (),
    spread: float = 0.0,
    final_epochs: int | None = None,
    known_also: Sequence[Any] = (),
    rank_known: bool = True,
    auto_ratios: Sequence[float] = AUTO_RATIOS,
    choose_epochs: bool = False,
    extend_to: int | None = None,
    auto_fractions: Sequence[float] = (),
    verify: bool = False,
    verify_later: bool = False,
) -> tuple[Any, PruneResult]:
    """Return the pruned clone of ``model`` and what was done; ``model`` is never changed.

    ``ratio``: a share of each chosen layer's channels, or ``"auto"``: with a trigger and
    labelled data, :data:`AUTO_RATIOS` are tried in the :data:`AUTO_LAYERS` layers the trigger
    drives hardest, and the (layer, ratio) pair measured best on held-out data is kept.

    The layer choice is measured on ``dataset`` (the defender's data), never on
    ``eval_dataset``, which only provides the reported before/after numbers. ``unlearn_with``:
    the triggers fine-tuning unlearns (default: ``trigger``), e.g. every trigger `reverse`
    found while ``trigger`` ranks the channels. ``teacher``: the model whose clean outputs the
    fine-tune distils (default: ``model`` itself) when the settings ask for distillation.
    ``candidates_unlearn`` False: layer candidates are fine-tuned on clean images only before
    they are measured (the chosen one is then fine-tuned as ``fine_tuning`` says, unlearning
    included): a candidate's held-out ASR then says whether pruning it cut the trigger's path,
    where unlearning the same trigger would bring every candidate's ASR near 0 and leave the
    choice to a few images of accuracy. ``strict_ratio``: a ratio that prunes no channel of
    any candidate layer is an error (the prune command: pruning nothing while saying "pruned"
    would mislead). ``clean_stats``: saved (e.g. merged) clean statistics of ``model`` used
    for the ranking instead of a clean pass. ``rank_with``: more triggers (``linf-trigger``)
    whose channel scores join ``trigger``'s: a channel's score is then its largest robust z
    (per layer) over the triggers — the channels any of them drives (:func:`_union`).
    ``spread`` > 0 (with ``ratio="auto"`` and no ``layers``): no candidate is measured; the
    :data:`AUTO_LAYERS` layers the trigger drives hardest are all pruned, each at this ratio.
    ``final_epochs``: the chosen candidate's fine-tune runs this many epochs instead of
    ``fine_tuning.epochs`` (which the layer candidates keep). ``known_also``: further *known*
    triggers (a second backdoor's): unlearnt with ``trigger`` and measured like it — a layer
    candidate is judged by the worst ASR over every trigger, each towards the label the original
    model sends most images carrying it to (:func:`~kerasaudit.evaluation.forced_label`; one
    that forces no label is unlearnt, not measured); the result reports each
    (:class:`AlsoMeasured`). ``rank_known``: the ``known_also`` triggers rank the channels too
    (as ``rank_with``). ``auto_ratios``: the ratios ``"auto"`` tries; a 0 among them is one
    more candidate that prunes nothing (fine-tuning, with unlearning, alone), measured like the
    others — it is kept when pruning buys no lower held-out ASR for its accuracy.
    ``choose_epochs`` (measured candidates with fine-tuning): each candidate is also measured
    after a quarter and half of the fine-tune's epochs (:func:`checkpoints`), every
    measurement is a candidate, and the chosen one's epochs are the final fine-tune's (unless
    ``final_epochs`` says otherwise) — the epochs chosen, like the layer and ratio, by the
    held-out part of the defender's data. ``extend_to`` (the same): the kept candidate is
    fine-tuned on, its epochs doubled up to at most ``extend_to``, for as long as the held-out
    measurement is the better one by the same rule (:func:`_best`); the final fine-tune then
    runs the epochs kept. ``auto_fractions`` (the same, unlearning): every (layer, ratio)
    candidate is fine-tuned once per share of each batch stamped (instead of
    ``fine_tuning.unlearn_fraction``), each measured like the others; the kept candidate's
    share is the extension's and the final fine-tune's. On the development separable nets a
    quarter stamped cost less accuracy than half, on LeNets it left a higher ASR (JOURNAL,
    twenty-ninth session): the held-out part of the defender's data chooses. ``verify`` (with
    a held-out part): the kept recipe is run once more with a second quarter held out and
    measured there (:class:`Verification`; the model returned is not changed by it);
    ``verify_later``: not yet — the result carries it as ``pending`` and
    :meth:`PruneResult.verified` runs it (``defend``'s rounds: only the removal kept is
    verified).
    """
    tuning = fine_tuning or FineTuneSettings()
    auto = ratio == "auto"
    if auto and (trigger is None or criterion is not Criterion.LINF_TRIGGER):
        raise BadInputError("--ratio auto needs --criterion linf-trigger and a trigger")
    if not auto and not (isinstance(ratio, float | int) and 0.0 < ratio < 1.0):
        raise BadInputError(f"--ratio must be between 0 and 1 (exclusive) or auto, got {ratio}")
    ratios: tuple[float, ...] = tuple(auto_ratios) if auto else (float(ratio),)
    if auto and (not ratios or any(not 0.0 <= r < 1.0 for r in ratios)):
        raise BadInputError(f"automatic ratios must be in [0, 1), got {list(ratios)}")
    if extend_to is not None and extend_to < 1:
        raise BadInputError(f"the epochs can be extended to 1 or more, got {extend_to}")
    fractions: tuple[float | None, ...] = tuple(sorted(set(auto_fractions))) or (None,)
    if auto_fractions and not (auto and tuning.epochs and tuning.unlearn):
        raise BadInputError(
            "automatic shares stamped need --ratio auto, --fine-tune-epochs and --unlearn"
        )
    if any(f is not None and not 0.0 < f < 1.0 for f in fractions):
        raise BadInputError(f"shares stamped must be in (0, 1), got {list(auto_fractions)}")
    if auto and 0.0 in ratios and not tuning.epochs:
        raise BadInputError("an automatic ratio of 0 (nothing pruned) needs --fine-tune-epochs")
    if tuning.unlearn and trigger is None:
        raise BadInputError("--unlearn needs --trigger (a known or reversed trigger)")
    if tuning.epochs and dataset is None:
        raise BadInputError("--fine-tune-epochs needs --data (clean, labelled)")
    if criterion.needs_trigger and trigger is None:
        raise BadInputError(
            f"--criterion {criterion} needs --trigger (a known or reversed trigger)"
        )
    evaluation_data = eval_dataset or dataset
    can_evaluate = evaluation_data is not None and evaluation_data.info.has_labels
    attack = trigger if (trigger is not None and can_evaluate) else None

    def measure(
        candidate: Any, on: Dataset | None = evaluation_data, with_trigger: Any = attack
    ) -> EvaluationResult | None:
        if on is None or not on.info.has_labels:
            return None
        return evaluate(candidate, on, with_trigger, target if with_trigger else None)

    # The first trigger ranks the channels (with ``rank_with``, and ``known_also`` when
    # ``rank_known``); it and every ``known_also`` trigger measure the candidates; all of them
    # and every trigger in ``unlearn_with`` are unlearnt (e.g. all the triggers `reverse` found).
    known = [t for t in known_also if t is not trigger]
    extra = [
        t for t in (unlearn_with or []) if t is not trigger and all(t is not k for k in known)
    ] + known
    # (target, share) per known_also trigger; without labelled data nothing is measured
    also_targets = (
        [_known_target(model, dataset, t) for t in known]
        if can_evaluate
        else [(None, None)] * len(known)
    )

    def tune(
        pruned: Any,
        mask: Any,
        on: Dataset | None,
        with_trigger: Any,
        unlearn: bool = True,
        epochs: int | None = None,
        extras: Sequence[Any] | None = None,
        on_epoch: Callable[[int], None] | None = None,
        fraction: float | None = None,
    ) -> FineTuneResult | None:
        if not tuning.epochs:
            return None
        assert on is not None
        settings = tuning if unlearn else replace(tuning, unlearn=False)
        if fraction is not None:
            settings = replace(settings, unlearn_fraction=fraction)
        return fine_tune_with(
            pruned,
            on,
            settings if epochs is None else replace(settings, epochs=epochs),
            mask=mask,
            trigger=[with_trigger, *(extra if extras is None else extras)],
            teacher=teacher if teacher is not None else model,
            target=target,
            on_epoch=on_epoch,
        )

    convs = conv_layers(model)
    candidates = resolve_layers(model, layers) if layers else convs
    if not candidates and auto and tuning.epochs and tuning.unlearn:
        # Convolutions a custom layer computes itself: the one candidate is fine-tuning with
        # unlearning.
        ratios = (0.0,)
    elif not candidates:
        raise BadInputError("the model has no convolutional layers to prune" + NO_CONV_HINT)
    nothing_pruned = auto and 0.0 in ratios  # a candidate that prunes nothing, on purpose
    if (
        strict_ratio
        and not nothing_pruned
        and all(round(max(ratios) * i.channels) == 0 for i in candidates)
    ):
        smallest = min(i.channels for i in candidates)
        raise BadInputError(
            f"--ratio {ratios[0]:g} prunes no channel (the layers have {smallest}+ channels): "
            f"use at least {1 / smallest:.3g}"
        )

    def by(t: Any) -> dict[str, ChannelRanking]:
        if not candidates:
            return {}
        return rank_channels(
            model, candidates, criterion, dataset, trigger=t, batch_size=batch_size,
            clean_stats=clean_stats,
        )  # fmt: skip

    rankings = by(trigger)
    more = [t for t in [*rank_with, *(known if rank_known else ())] if t is not trigger]
    union = bool(more) and criterion is Criterion.LINF_TRIGGER
    if union:
        rankings = _union(rankings, [by(t) for t in more])
    if auto and not layers:
        candidates = _strongest_layers(candidates, rankings, AUTO_LAYERS)

    # With fine-tuning, candidates are fine-tuned on part of --data and measured on the rest,
    # which the fine-tune never saw; the chosen layer is then fine-tuned on all of --data.
    # Triggered images (--trigger-data, --also-unlearn-data) are split the same way.
    holding_out = bool(tuning.epochs and dataset is not None and (auto or not layers))
    fit, held = (
        dataset.split(HOLDOUT, seed=tuning.seed)
        if holding_out and dataset is not None
        else (dataset, dataset)
    )

    def halves(t: Any, fold: int = 0) -> tuple[Any, Any]:
        """(fit, held-out) parts of a trigger: triggered images are split (a stamped copy of
        a --data image with its source), specs are not."""
        if holding_out and dataset is not None and isinstance(t, TriggerData):
            return t.split_along(dataset, HOLDOUT, seed=tuning.seed, fold=fold)
        return t, t

    trigger_fit, trigger_held = halves(trigger)
    held_attack = trigger_held if attack is not None else None
    parts = [halves(t) for t in extra]
    extra_fit = [fit_part for fit_part, _ in parts]

    def measured_of(split: Sequence[tuple[Any, Any]]) -> list[tuple[Any, int]]:
        """(held-out part, target) of each known_also trigger that forces a label, from the
        (fit, held-out) parts of ``extra`` (``known`` ends it: its parts are the last ones)."""
        return [
            (held_part, target_of)
            for (_, held_part), (target_of, _) in zip(
                split[len(extra) - len(known) :], also_targets, strict=True
            )
            if target_of is not None
        ]

    measured = measured_of(parts)

    def others(
        candidate: Any, on: Dataset | None, triggers: Sequence[tuple[Any, int]] | None = None
    ) -> tuple[float | None, ...]:
        if on is None:
            return ()
        return tuple(
            candidate_asr(evaluate(candidate, on, t, k).attack)
            for t, k in (measured if triggers is None else triggers)
        )

    stops = checkpoints(tuning.epochs) if choose_epochs and tuning.epochs else ()

    def candidate_result(
        info: AuditableLayer | None, r: float, fraction: float | None = None
    ) -> list[tuple[int | None, EvaluationResult | None, tuple[float | None, ...]]]:
        """(epochs, held-out result, further triggers' ASRs) per measurement of a candidate."""
        selection = [] if info is None else [(info, rankings[info.path].top(r))]
        clone, _, mask = _prune_clone(model, selection)
        seen = []

        def on_epoch(epoch: int) -> None:
            if epoch in stops and epoch != tuning.epochs:
                seen.append((epoch, measure(clone, held, held_attack), others(clone, held)))

        tune(clone, mask, fit, trigger_fit, candidates_unlearn, extras=extra_fit,
             on_epoch=on_epoch if stops else None, fraction=fraction)  # fmt: skip
        final = measure(clone, held, held_attack), others(clone, held)
        return [*seen, (tuning.epochs or None, *final)]

    if spread > 0 and auto and not layers:
        reason = (
            f"the {len(candidates)} layers the trigger drives hardest, {100 * spread:g} % of "
            "each (not measured)"
        )
        choice = LayerChoice(tuple(i.path for i in candidates), reason, ())
        chosen, chosen_ratio = candidates, spread
    else:
        choice, chosen, chosen_ratio = _choose_layers(
            model,
            criterion,
            ratios,
            layers,
            candidates,
            rankings,
            measure(model, held, held_attack),
            candidate_result,
            max_acc_drop,
            tuned=bool(tuning.epochs),
            unlearnt=candidates_unlearn or not tuning.unlearn,
            fractions=fractions,
        )

    def extended(choice: LayerChoice) -> LayerChoice:
        """``choice`` with its kept candidate fine-tuned on while that measures better."""
        kept = choice.chosen
        assert kept is not None and kept.epochs is not None and choice.held_accuracy is not None
        layers_kept = [i for i in candidates if (i.path,) == kept.layers]
        clone, _, mask = _prune_clone(
            model, [(i, rankings[i.path].top(kept.ratio)) for i in layers_kept]
        )
        done, share = kept.epochs, kept.fraction
        tune(clone, mask, fit, trigger_fit, candidates_unlearn, epochs=done, extras=extra_fit,
             fraction=share)  # fmt: skip
        current, added = kept, []
        while extend_to is not None and done * 2 <= extend_to:
            tune(clone, mask, fit, trigger_fit, candidates_unlearn, epochs=done, extras=extra_fit,
                 fraction=share)  # fmt: skip
            done *= 2
            result = measure(clone, held, held_attack)
            assert result is not None
            attack = result.attack
            new = replace(kept, accuracy=result.accuracy, asr=candidate_asr(attack),
                          ra=attack.ra if attack else None, others=others(clone, held),
                          epochs=done)  # fmt: skip
            added.append(new)
            better, _, _ = _best([current, new], choice.held_accuracy, max_acc_drop)
            if better is not new:
                break
            current = new
        reason = (
            f"{choice.reason}; then fine-tuned on (epochs doubled, up to {extend_to}) while the "
            f"held-out numbers improved: {current.epochs} epochs"
        )
        return replace(choice, candidates=(*choice.candidates, *added), epochs=current.epochs,
                       reason=reason)  # fmt: skip

    extending = extend_to is not None and choice.epochs is not None and extend_to > choice.epochs
    if extending and holding_out and choice.chosen is not None:
        choice = extended(choice)
    before = measure(model)
    selections = [(info, rankings[info.path].top(chosen_ratio)) for info in chosen]
    pruned_model, done, mask = _prune_clone(model, selections)
    after_prune = measure(pruned_model)
    also_before = _also_attacks(model, evaluation_data, known, also_targets)
    also_pruned = _also_attacks(pruned_model, evaluation_data, known, also_targets)
    if final_epochs is None and choice.epochs is not None:
        final_epochs = choice.epochs  # chosen with the layer and ratio
    tuned = tune(pruned_model, mask, dataset, trigger, epochs=final_epochs,
                 fraction=choice.fraction)  # fmt: skip
    after_tune = measure(pruned_model) if tuned is not None else None
    also_tuned = (
        _also_attacks(pruned_model, evaluation_data, known, also_targets)
        if tuned is not None
        else [None] * len(also_targets)
    )
    verification = None
    pending: Callable[[], Verification] | None = None
    if verify and holding_out and tuned is not None and dataset is not None:

        def verified() -> Verification:
            """The recipe kept, from the original, with fold 1 of --data held out."""
            started = time.perf_counter()
            fit2, held2 = dataset.split(HOLDOUT, seed=tuning.seed, fold=1)
            main_fit, main_held = halves(trigger, fold=1)
            parts2 = [halves(t, fold=1) for t in extra]
            clone, _, mask2 = _prune_clone(model, selections)
            tune(clone, mask2, fit2, main_fit, epochs=final_epochs,
                 extras=[fit_part for fit_part, _ in parts2], fraction=choice.fraction)  # fmt: skip
            result = measure(clone, held2, main_held if attack is not None else None)
            assert result is not None
            asrs = [candidate_asr(result.attack), *others(clone, held2, measured_of(parts2))]
            values = [a for a in asrs if a is not None]
            was_right, now_right = (_right(m, held2) for m in (model, clone))
            return Verification(
                images=held2.info.count,
                original_accuracy=float(np.mean(was_right)),
                accuracy=result.accuracy,
                worst_asr=max(values) if values else None,
                seconds=time.perf_counter() - started,
                lost=int(np.sum(was_right & ~now_right)),
                gained=int(np.sum(~was_right & now_right)),
            )

        if verify_later:
            pending = verified
        else:
            verification = verified()
    evaluated_on = (
        "none (no labelled data)"
        if not can_evaluate
        else ("--eval-data" if eval_dataset is not None else "--data (the same data used to prune)")
    )
    result = PruneResult(
        criterion=criterion,
        ratio=chosen_ratio,
        choice=choice,
        pruned=tuple(done),
        rankings=tuple(rankings[info.path] for info in chosen),
        before=before,
        after_prune=after_prune,
        fine_tune=tuned,
        after_fine_tune=after_tune,
        evaluated_on=evaluated_on,
        ranked_by=(1 + len(more) if union else 1) if criterion.needs_trigger else 0,
        verification=verification,
        pending=pending,
        also=tuple(
            AlsoMeasured(t.describe(), k, share, b, p, f)
            for t, (k, share), b, p, f in zip(
                known, also_targets, also_before, also_pruned, also_tuned, strict=True
            )
        ),
    )
    return pruned_model, result


def _best(
    tried: Sequence[LayerCandidate], before_accuracy: float, max_acc_drop: float
) -> tuple[LayerCandidate, float, list[LayerCandidate]]:
    """The layer choice's rule: among the candidates within the accuracy budget (all, when
    none is), every one whose worst held-out ASR is at most the goal or within a few images
    of the lowest counts as having removed the backdoor, and the most accurate of those is
    kept (ties: fewer channels pruned, then more epochs and a larger share stamped — more
    unlearnt at the same measured cost). Returns it, the ASR bar and the candidates within the
    budget."""
    within = [c for c in tried if before_accuracy - c.accuracy <= max_acc_drop]
    pool = within or list(tried)
    lowest = min(np.inf if c.worst_asr is None else c.worst_asr for c in pool)
    bar = max(ASR_GOAL, lowest + ASR_TIE)
    tied = [c for c in pool if c.worst_asr is not None and c.worst_asr <= bar] or pool
    best = max(tied, key=lambda c: (c.accuracy, -c.ratio, c.epochs or 0, c.fraction or 0.0))
    return best, bar, within


def checkpoints(epochs: int) -> tuple[int, ...]:
    """The epochs a candidate is measured after with ``choose_epochs``: a quarter, half and
    all of ``epochs`` (20 → 5, 10, 20)."""
    return tuple(sorted({max(1, epochs // 4), max(1, epochs // 2), epochs}))


def _known_target(
    model: Any, dataset: Dataset | None, trigger: Any
) -> tuple[int | None, float | None]:
    """(target, share) of a further known trigger: its own target when it has one (a
    ``--trigger-data``'s), else the label the original model sends it to (None: no label)."""
    own = getattr(trigger, "target", None)
    if own is not None:
        return int(own), None
    return forced_label(model, dataset, trigger)


def _also_attacks(
    model: Any,
    on: Dataset | None,
    triggers: Sequence[Any],
    targets: Sequence[tuple[int | None, float | None]],
) -> list[AttackResult | None]:
    """Each further known trigger's attack on ``model`` (None: not measured)."""
    if on is None or not on.info.has_labels:
        return [None] * len(targets)
    return [
        None if k is None else evaluate(model, on, t, k).attack
        for t, (k, _) in zip(triggers, targets, strict=True)
    ]


def _union(
    first: dict[str, ChannelRanking], others: Sequence[dict[str, ChannelRanking]]
) -> dict[str, ChannelRanking]:
    """Per layer, each channel's largest robust z (of triggered − clean ℓ∞) over triggers."""
    from kerasaudit.flags import robust_z

    out = {}
    for path, ranking in first.items():
        zs = [robust_z(r[path].scores) for r in [first, *others]]
        stacked = np.nan_to_num(np.stack(zs), nan=-np.inf)
        out[path] = replace(ranking, scores=stacked.max(axis=0))
    return out


def _strongest_layers(
    candidates: list[AuditableLayer], rankings: dict[str, ChannelRanking], count: int
) -> list[AuditableLayer]:
    """The ``count`` layers whose most trigger-driven channel stands out most from its siblings
    (robust z of triggered − clean ℓ∞), in network order."""
    from kerasaudit.flags import robust_z

    def strength(info: AuditableLayer) -> float:
        z = robust_z(rankings[info.path].scores)
        finite = z[np.isfinite(z)]
        return float(finite.max()) if finite.size else -np.inf

    strongest = sorted(candidates, key=strength, reverse=True)[:count]
    return [i for i in candidates if i in strongest]


def candidate_asr(attack: AttackResult | None) -> float | None:
    """What a layer candidate's held-out ASR is judged by: a targeted trigger's ASR; for an
    untargeted one (all-to-all), the share the trigger moves off a class the model got right
    unstamped — its plain ASR (moved off the class at all) counts the model's own errors too
    (about 12 % on Fashion-MNIST), so every candidate ties near that floor."""
    if attack is None:
        return None
    if attack.target == OFF_CLASS and attack.flip_rate is not None:
        return attack.flip_rate
    return attack.asr


def _choose_layers(
    model: Any,
    criterion: Criterion,
    ratios: Sequence[float],
    named: Sequence[str],
    candidates: list[AuditableLayer],
    rankings: dict[str, ChannelRanking],
    before: EvaluationResult | None,
    candidate_result: Any,
    max_acc_drop: float,
    *,
    tuned: bool,
    unlearnt: bool = True,
    fractions: Sequence[float | None] = (None,),
) -> tuple[LayerChoice, list[AuditableLayer], float]:
    ratio = ratios[0]
    if named and len(ratios) == 1:
        return LayerChoice(tuple(named), "named with --layer", ()), candidates, ratio
    if criterion is Criterion.CLP:
        reason = "CLP is data-free and prunes across the network: every conv layer"
        return LayerChoice(tuple(i.path for i in candidates), reason, ()), candidates, ratio
    if before is None or before.attack is None:
        last = candidates[-1]
        reason = (
            "no trigger and labels to measure ASR with: the last conv layer "
            "(the Fine-Pruning convention)"
        )
        return LayerChoice((last.path,), reason, ()), [last], ratio
    tried: list[LayerCandidate] = []
    # (layer, ratio) pairs; a ratio of 0 is one candidate that prunes nothing
    pairs: list[tuple[AuditableLayer | None, float]] = [(None, 0.0)] if 0.0 in ratios else []
    pairs += [(i, r) for i in candidates for r in ratios if round(r * i.channels) > 0]
    for (info, r), fraction in itertools.product(pairs, fractions):
        for epochs, result, other_asrs in candidate_result(info, r, fraction):
            attack = result.attack
            tried.append(
                LayerCandidate(
                    NO_LAYER if info is None else info.path,
                    0 if info is None else rankings[info.path].count_for(r),
                    result.accuracy,
                    candidate_asr(attack),
                    attack.ra if attack else None,
                    r,
                    tuple(other_asrs),
                    epochs,
                    fraction,
                )
            )
    if not tried:
        raise BadInputError("no candidate layer has enough channels for the ratio")
    best, bar, within = _best(tried, before.accuracy, max_acc_drop)
    how = (
        f"after pruning and fine-tuning{'' if unlearnt else ' without unlearning'} "
        "(on 75 % of --data, measured on the other 25 %)"
        if tuned
        else "after pruning (measured on --data)"
    )
    varied = [
        name
        for name, many in (
            ("ratio", len(ratios) > 1),
            ("share stamped", len(fractions) > 1),
            ("epochs", len({c.epochs for c in tried}) > 1),
        )
        if many
    ]
    what = f"(layer, {', '.join(varied)})" if varied else "layer"
    at = f" at ratio {ratio:g}" if len(ratios) == 1 else ""
    asr = "ASR" if before.attack.target != OFF_CLASS else "share moved off a class (flips)"
    if any(c.others for c in tried):
        asr = f"worst ASR over the {1 + max(len(c.others) for c in tried)} known triggers"
    if within:
        reason = (
            f"most accurate {how} among {what} candidates whose {asr} is at most "
            f"{100 * bar:.1f} % (the goal {100 * ASR_GOAL:g} %, or the lowest + "
            f"{100 * ASR_TIE:g} points) and whose accuracy loss{at} stays within "
            f"{max_acc_drop * 100:.1f} points ({len(within)} of {len(tried)} within the budget)"
        )
    else:
        reason = (
            f"no {what} candidate keeps the accuracy loss {how} within "
            f"{max_acc_drop * 100:.1f} points{at}; lowest {asr} overall"
        )
    chosen = [i for i in candidates if (i.path,) == best.layers]
    choice = LayerChoice(
        best.layers, reason, tuple(tried), before.accuracy, before.total, tuned, best.ratio,
        budget=max_acc_drop, epochs=best.epochs, fraction=best.fraction,
    )  # fmt: skip
    return choice, chosen, best.ratio
