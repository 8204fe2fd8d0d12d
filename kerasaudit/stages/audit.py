"""The audit: everything needed to decide whether a model carries a backdoor, in one stage.

1. inventory (format, Keras version, auditable layers);
2. clean statistics (one fused pass: per-channel ℓ1/ℓ2/ℓ∞; leads, not a verdict — a backdoor's
   channels stay quiet on clean data);
3. the trigger: recovered for every label (``kerasaudit.stages.reverse``: Neural Cleanse, additive
   and warp inversion, maximum margin, an untargeted row for all-to-all backdoors) — or a known one
   (``--trigger`` / ``--trigger-data``), measured on the data;
4. the verdict: a backdoor when the recovery flags a target (or an all-to-all trigger), or when
   the known trigger's attack success rate exceeds ``max_asr``;
5. the paper's flagged neurons under each trigger (triggered − clean ℓ∞, per layer);
6. optionally the fix (``kerasaudit.stages.defend.remove``; blind: ``remove_recovered``, as
   ``defend`` does): prune the channels the first trigger drives, fine-tune while unlearning
   every trigger.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasaudit.batchnorm import COMES_BACK, comes_back
from kerasaudit.batchnorm import reestimated as reestimated_model
from kerasaudit.data import Dataset
from kerasaudit.evaluation import EvaluationResult, evaluate
from kerasaudit.inventory import ModelInventory, build_inventory
from kerasaudit.neurons import TriggerNeurons, trigger_neurons
from kerasaudit.stages.defend import (
    DefenceSettings,
    LostClass,
    SecondLook,
    lost_classes,
    recovered_trigger,
    remove,
    remove_recovered,
)
from kerasaudit.stages.prune import PruneResult, Verification
from kerasaudit.stages.reverse import ReverseConfig, ReverseResult, reverse_engineer
from kerasaudit.stages.scan import Scanner, ScanResult, analyse, scan
from kerasaudit.triggers import AnyTrigger

# A known trigger whose ASR is above this is a finding. Clean zoo models send at most a few
# per cent of stamped images to any one label by themselves (README: "the natural floor");
# a working backdoor sends > 90 %.
DEFAULT_MAX_ASR = 0.05
NEURON_IMAGES = 1000  # clean images stamped to find a trigger's neurons

StepFn = Callable[[str], None]


@dataclass(frozen=True)
class AuditSettings:
    reverse: ReverseConfig = field(default_factory=ReverseConfig)
    max_asr: float = DEFAULT_MAX_ASR
    neuron_threshold: float = 3.5
    fix: DefenceSettings | None = None  # None: no fix

    def to_dict(self) -> dict[str, Any]:
        return {
            "reverse": self.reverse.to_dict(),
            "max_asr": self.max_asr,
            "neuron_threshold": self.neuron_threshold,
            "fix": None if self.fix is None else self.fix.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class Fix:
    """What --fix did, measured on the audit data with every trigger the audit used."""

    prune: PruneResult
    before: EvaluationResult
    after: EvaluationResult
    asr: tuple[tuple[str, float | None, float | None], ...]  # (trigger, before, after)
    # The fixed model with its BatchNorm statistics re-estimated on the audit data
    # (kerasaudit.batchnorm): its accuracy, and each trigger's ASR in the order of ``asr``
    # (None throughout when the model has no BatchNorm).
    reestimated: EvaluationResult | None
    asr_reestimated: tuple[float | None, ...]
    # Blind fixes search again on the fixed model (DefenceSettings.rounds; defend --rounds):
    # each look, and its trigger among ``asr`` when it was used.
    second_looks: tuple[SecondLook, ...] = ()
    # no trigger was known: every ASR above is of a recovered trigger the fix unlearnt, on the
    # same data (see defend_fmt.RECOVERED_ONLY)
    blind: bool = False
    targets: tuple[int, ...] = ()  # the labels the unlearnt triggers aim at

    @property
    def lost_classes(self) -> tuple[LostClass, ...]:
        """Target classes the fixed model stopped recognising (defend's :func:`lost_classes`)."""
        return lost_classes(self.before, self.after, self.targets)

    @property
    def held_out_drop(self) -> float | None:
        """What the kept (layer, ratio) candidate lost on the part of the audit data held out
        from its fine-tuning (:attr:`LayerChoice.held_out_drop`; the accuracy after is on
        the data the fix fine-tuned on, so optimistic)."""
        return self.prune.choice.held_out_drop

    @property
    def held_images(self) -> int:
        return self.prune.choice.held_images if self.held_out_drop is not None else 0

    @property
    def verification(self) -> Verification | None:
        """The kept recipe measured on a second quarter of the audit data no choice saw
        (``DefenceSettings.verify``; :class:`Verification`)."""
        return self.prune.verification

    @property
    def worst_asr_after(self) -> float | None:
        values = [after for _, _, after in self.asr if after is not None]
        return max(values) if values else None

    @property
    def comes_back(self) -> tuple[str, ...]:
        """The triggers whose ASR rises by COMES_BACK or more after re-estimation."""
        return tuple(
            t
            for (t, _, after), again in zip(self.asr, self.asr_reestimated, strict=True)
            if comes_back(after, again)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy_before": self.before.accuracy,
            "accuracy_after": self.after.accuracy,
            "accuracy_reestimated": None if self.reestimated is None else self.reestimated.accuracy,
            "held_out_drop": self.held_out_drop,
            "held_images": self.held_images,
            "verification": None if self.verification is None else self.verification.to_dict(),
            "lost_classes": [c.to_dict() for c in self.lost_classes],
            "asr": [
                {"trigger": t, "before": b, "after": a, "reestimated": r}
                for (t, b, a), r in zip(self.asr, self.asr_reestimated, strict=True)
            ],
            "comes_back": list(self.comes_back),
            "blind": self.blind,
            "second_looks": [look.to_dict() for look in self.second_looks],
            "prune": self.prune.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class AuditResult:
    model: str
    inventory: ModelInventory
    clean_scan: ScanResult | None  # None: no auditable layer (convolutions in custom layers)
    reverse: ReverseResult | None  # None when a known trigger was given
    known: EvaluationResult | None  # the known trigger measured on the data
    neurons: tuple[TriggerNeurons, ...]  # per trigger (found or known)
    fix: Fix | None
    settings: AuditSettings
    seconds: dict[str, float]

    @property
    def backdoor(self) -> bool:
        if self.reverse is not None:
            return self.reverse.verdict.backdoor
        return self.known_exceeds

    @property
    def known_exceeds(self) -> bool:
        asr = None if self.known is None else self.known.asr
        return asr is not None and asr > self.settings.max_asr

    @property
    def targets(self) -> tuple[int, ...]:
        if self.reverse is not None:
            return self.reverse.verdict.flagged
        attack = None if self.known is None else self.known.attack
        return () if attack is None or attack.target < 0 else (attack.target,)

    @property
    def fix_left_backdoor(self) -> bool:
        """The fix ran and a trigger still works (ASR above max_asr on the audit data)."""
        worst = None if self.fix is None else self.fix.worst_asr_after
        return worst is not None and worst > self.settings.max_asr

    def findings(self) -> list[str]:
        """Why the verdict is what it is, one sentence each."""
        out = []
        if self.reverse is not None:
            v = self.reverse.verdict
            for k in v.flagged:
                r = self.reverse.label(k)
                out.append(f"label {k}: " + "; ".join(r.reasons))
            if v.all_to_all:
                out.append(
                    f"one untargeted trigger {v.scores.untargeted_ratio:.2f} × the median mask "
                    "moves images off their own class (all-to-all)"
                )
        elif self.known is not None and self.known.asr is not None:
            relation = "above" if self.known_exceeds else "within"
            out.append(
                f"the known trigger's ASR is {100 * self.known.asr:.2f} % on the data, "
                f"{relation} --max-asr {100 * self.settings.max_asr:g} %"
            )
        if self.fix is not None and self.fix_left_backdoor:
            worst = 100 * (self.fix.worst_asr_after or 0.0)
            out.append(
                f"after the fix a trigger still works: ASR {worst:.2f} % > "
                f"{100 * self.settings.max_asr:g} %"
            )
        if self.fix is not None and self.fix.comes_back:
            out.append(
                "the fix may be superficial: once BatchNorm statistics are re-estimated on the "
                f"clean data, {', '.join(self.fix.comes_back)} works again (+"
                f"{100 * COMES_BACK:g} points or more)"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "backdoor": self.backdoor,
            "targets": list(self.targets),
            "all_to_all": bool(self.reverse is not None and self.reverse.verdict.all_to_all),
            "findings": self.findings(),
            "fix_left_backdoor": self.fix_left_backdoor,
            "inventory": self.inventory.to_dict(),
            "clean_scan": None
            if self.clean_scan is None
            else {
                "verdict": None,
                "note": "clean-data statistics are leads, not a verdict",
                "channels": self.clean_scan.channel_count,
                "flagged": self.clean_scan.flagged_count,
            },
            "reverse": None if self.reverse is None else self.reverse.to_dict(),
            "known_trigger": None if self.known is None else self.known.to_dict(),
            "neurons": [n.to_dict() for n in self.neurons],
            "fix": None if self.fix is None else self.fix.to_dict(),
            "settings": self.settings.to_dict(),
            "seconds": dict(self.seconds),
        }


def audit(
    loaded: Any,
    dataset: Dataset,
    *,
    settings: AuditSettings | None = None,
    known: AnyTrigger | None = None,
    known_target: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_step: StepFn | None = None,
    clean_stats: Any | None = None,
) -> tuple[Any | None, AuditResult]:
    """Run the audit (module doc); return (the fixed model or None, the result).
    ``clean_stats``: saved (e.g. merged) clean statistics of ``model`` replace step 2's pass."""
    settings = settings or AuditSettings()
    model = loaded.model
    seconds: dict[str, float] = {}

    def step(name: str) -> float:
        if on_step is not None:
            on_step(name)
        return time.perf_counter()

    started = step("inventory")
    inventory = build_inventory(loaded)
    seconds["inventory"] = time.perf_counter() - started

    started = step("clean statistics")
    clean_scan: ScanResult | None = None
    if not inventory.auditable:
        pass  # nothing to measure (convolutions a custom layer computes itself): search anyway
    elif clean_stats is None:
        clean_scan = scan(model, dataset, source=str(dataset.info.path))
    else:
        from kerasaudit.ranking import checked_stats

        clean_scan = analyse(checked_stats(model, clean_stats, inventory.auditable))
    seconds["clean statistics"] = time.perf_counter() - started

    reversed_ = None
    known_eval = None
    triggers: list[tuple[int | None, AnyTrigger]] = []
    if known is None:
        started = step("trigger recovery")
        reversed_ = reverse_engineer(model, dataset, config=settings.reverse, progress=progress)
        seconds["trigger recovery"] = time.perf_counter() - started
        shape = dataset.info.shape
        triggers = [
            (f.label, recovered_trigger(f, shape, reversed_.value_range))
            for f in reversed_.found_triggers()
        ]
    else:
        started = step("known trigger")
        known_eval = evaluate(model, dataset, known, known_target, settings.max_asr)
        seconds["known trigger"] = time.perf_counter() - started
        attack = known_eval.attack
        target = None if attack is None or attack.target < 0 else attack.target
        triggers = [(target, known)]

    neurons: tuple[TriggerNeurons, ...] = ()
    if clean_scan is not None:
        started = step("flagged neurons")
        clean_x, _ = dataset.take_array(min(dataset.info.count, NEURON_IMAGES))
        scanner = Scanner(model, layers=[s.layer for s in clean_scan.stats.layers])
        neurons = tuple(
            trigger_neurons(
                model,
                clean_x,
                trigger,
                label=label,
                threshold=settings.neuron_threshold,
                scanner=scanner,
            )
            for label, trigger in triggers
        )
        seconds["flagged neurons"] = time.perf_counter() - started

    fixed = None
    fix = None
    backdoor = (
        reversed_.verdict.backdoor
        if reversed_ is not None
        else bool(known_eval is not None and known_eval.asr_exceeded)
    )
    if settings.fix is not None and backdoor and triggers:
        started = step("fix (prune + unlearn)")
        looks: list[SecondLook] = []
        if reversed_ is None:
            fixed, pruned = remove(model, dataset, triggers, settings.fix)
        else:  # as defend does: a further round on the fixed model (DefenceSettings.rounds)
            fixed, found_pruned, every, looks = remove_recovered(
                model, dataset, reversed_, settings.fix, on_step
            )
            assert fixed is not None and found_pruned is not None  # triggers is not empty
            pruned = found_pruned
            value_range = reversed_.value_range
            triggers = [
                (f.label, recovered_trigger(f, dataset.info.shape, value_range)) for f in every
            ]
        before = evaluate(model, dataset)
        after = evaluate(fixed, dataset)
        asr = tuple(
            (
                trigger.describe(),
                evaluate(model, dataset, trigger, label).asr,
                evaluate(fixed, dataset, trigger, label).asr,
            )
            for label, trigger in triggers
        )
        recal = reestimated_model(fixed, dataset)
        again = tuple(
            None if recal is None else evaluate(recal, dataset, t, label).asr
            for label, t in triggers
        )
        reestimated = evaluate(recal, dataset) if recal is not None else None
        targets = tuple(sorted({label for label, _ in triggers if label is not None}))
        fix = Fix(pruned, before, after, asr, reestimated, again, tuple(looks),
                  blind=reversed_ is not None, targets=targets)  # fmt: skip
        seconds["fix"] = time.perf_counter() - started
    result = AuditResult(
        model=str(loaded.path),
        inventory=inventory,
        clean_scan=clean_scan,
        reverse=reversed_,
        known=known_eval,
        neurons=neurons,
        fix=fix,
        settings=settings,
        seconds=seconds,
    )
    return fixed, result


def estimate_seconds(model: Any, input_shape: tuple[int, ...], config: ReverseConfig) -> float:
    """A rough wall-time estimate of trigger recovery on this machine: one timed forward and
    backward pass of a step's images, times the steps every engine may take (early stopping
    usually makes it shorter)."""
    from kerasaudit import _tf

    tf = _tf.tf()
    outputs = int(model.outputs[0].shape[-1])
    labels = max(2, outputs)
    batch = labels * config.batch_size
    x = tf.constant(np.random.default_rng(0).random((batch, *input_shape), dtype=np.float32))

    @tf.function
    def one(x: Any) -> Any:
        # A loss like Neural Cleanse's (the gradient of a sum of softmax outputs is zero and
        # can be optimised away, which made an earlier probe 50× too optimistic).
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(model(x, training=False), tf.float32)
            loss = -tf.reduce_mean(tf.math.log(y[:, 0] + 1e-7))
        return tape.gradient(loss, x)

    one(x)  # trace
    started = time.perf_counter()
    for _ in range(3):
        one(x)
    per_step = (time.perf_counter() - started) / 3
    steps = config.steps * (labels + 1) / labels  # NC rows and the untargeted row
    if config.additive:
        steps += config.additive_steps
    if config.warp:
        steps += config.warp_steps
    if config.margin:
        steps += config.margin_steps * config.margin_starts / config.batch_size
    return per_step * steps
