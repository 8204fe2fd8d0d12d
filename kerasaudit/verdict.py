"""The model-level verdict: which labels are backdoor targets, from every engine's evidence.

Evidence per label (:class:`LabelEvidence`, numbers only, so a verdict can be recomputed from a
saved ``reverse.json``): Neural Cleanse's smallest mask (``mask_l1``), the smallest universal
additive perturbation (``additive_l2``), the largest reachable logit margin (``margin``,
MM-BD) and how far the recovered trigger drives a conv channel beyond its clean range
(``linf_excess``, Cheng et al.'s ℓ∞ signal), the smallest smooth warp field that sends images to
the label (``warp_rms``, root-mean-square displacement in pixels: WaNet-style triggers); per
model, the smallest *untargeted* universal mask (``untargeted_l1``: all-to-all backdoors).

Scores (:func:`score`): each signal is compared with the model's own other labels, robustly —
``index = (median − value) / σ``, σ = 1.4826·MAD but at least :data:`MIN_SIGMA` — on log
values for the two trigger sizes (sizes are multiplicative: a 9-pixel mask against a median of
60 is the same news as 90 against 600)
and for the warp (a warp that did not reach the attack threshold scores at most 0),
and on raw values for the margin (larger = more suspicious); the ℓ∞ excess on log values
(larger = more suspicious: a backdoor's trigger drives its channels far beyond anything clean
data does, while the other labels' triggers mostly do not). The untargeted mask is compared
with the median targeted mask: ``untargeted_ratio = untargeted_l1 / median(mask_l1)``.
With a task :class:`Baseline` (``kerasaudit.baselines`` chooses one for the data), each label's
mask, additive, margin and warp values are first divided by what that label usually shows in
clean models of the task, so a naturally easy label is not mistaken for a target. A baseline
may also ship clean *reference models* of the task: each label's Neural Cleanse trigger is
stamped on the other labels' images and given to them (``transfer``, their mean share sent to
the label). A mask drawn from the class's own features moves them too; a backdoor's trigger is
the suspect's alone (:attr:`Rule.transfer`); the same for each label's smallest warp field.

Decision (:data:`RULE`): a label is flagged when any of its indices exceeds that signal's
threshold, or when the indices, each as a fraction of its threshold, add up to more than
``combined`` — except that the mask or warp signal does not flag a label whose trigger moves the
reference models at least ``transfer`` of the way (it is the class, not a backdoor);
a model whose untargeted ratio is below its threshold has an all-to-all backdoor
when that mask's destinations are spread like a permutation (:func:`spread`): one that sends
the classes to one label is that label's trigger (or a clean model's natural sink).
The thresholds are calibrated on a zoo of clean and backdoored models and reported on held-out
parts of it (``benchmarks/zoo``); see the README for the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of σ for normal data
MIN_LABELS = 3  # a median and a MAD of fewer values say nothing
# The smallest σ of an index, in log units (the margin: this fraction of its median): labels
# that differ by less than ~5 % are not evidence. Without it a LeNet with tanh activations,
# whose recovered triggers all reach 0.914–0.917 of the clean ℓ∞ range, scored 12σ at label 0.
MIN_SIGMA = 0.05


@dataclass(frozen=True)
class LabelEvidence:
    label: int
    mask_l1: float  # NC's smallest mask reaching the attack threshold (NaN: not run)
    mask_reached: bool
    additive_l2: float = math.nan  # the smallest universal additive perturbation (NaN: not run)
    additive_reached: bool = False
    margin: float = math.nan  # MM-BD's largest logit margin (NaN: not run)
    linf_excess: float = math.nan  # of NC's trigger (NaN: no conv layer)
    warp_rms: float = math.nan  # the smallest warp field's RMS displacement, px (NaN: not run)
    warp_reached: bool = False
    # The share of the task's clean reference models' images (other labels) that NC's trigger
    # sends to the label, averaged over the references (NaN: no baseline with references).
    transfer: float = math.nan
    warp_transfer: float = math.nan  # ... and the same for its smallest warp field

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelEvidence:
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: (math.nan if v is None else v) for k, v in data.items() if k in names
        }
        return cls(**values)


@dataclass(frozen=True)
class ModelEvidence:
    labels: tuple[LabelEvidence, ...]
    untargeted_l1: float = math.nan  # smallest mask moving images off their class (NaN: not run)
    untargeted_reached: bool = False
    # Per true class: the label that mask sends most of its images to (-1: no images of the
    # class). Empty: not recorded (evidence saved before 2026-12-04's eighteenth session).
    untargeted_moves_to: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": [e.to_dict() for e in self.labels],
            "untargeted_l1": _json_number(self.untargeted_l1),
            "untargeted_reached": self.untargeted_reached,
            "untargeted_moves_to": list(self.untargeted_moves_to),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEvidence:
        untargeted = data.get("untargeted_l1")
        return cls(
            tuple(LabelEvidence.from_dict(e) for e in data["labels"]),
            math.nan if untargeted is None else float(untargeted),
            bool(data.get("untargeted_reached", False)),
            tuple(int(t) for t in data.get("untargeted_moves_to") or ()),
        )


def spread(moves_to: Sequence[int]) -> bool | None:
    """Whether an untargeted trigger's destinations look like an all-to-all map (None: not
    recorded): at least half of the classes go to labels no other class goes to — a permutation
    such as y → y + 1 sends every class somewhere else. A targeted backdoor's trigger sends
    them all to its target, and plain Neural Cleanse's untargeted mask on a clean model goes to
    one or two labels that are easy to reach from everywhere (Fashion-MNIST's Shirt, Bag: none
    of the zoo's 5 rebuilt clean models spread, JOURNAL.md "Eighteenth session"). The search's
    spread term (``ReverseConfig.untargeted_spread``) makes a clean model's mask spread more
    often, but much larger: the size rule does the separating, this guards what it lets by."""
    known = [t for t in moves_to if t >= 0]
    if not known:
        return None
    counts = np.bincount(known)
    alone = int((counts == 1).sum())
    return 2 * alone >= len(known)


@dataclass(frozen=True)
class LabelScores:
    label: int
    mask_index: float  # log-MAD index of mask_l1, positive = smaller than the median
    additive_index: float  # log-MAD index of additive_l2, positive = smaller
    margin_index: float  # MAD index of the margin, positive = larger
    linf_excess: float
    linf_index: float = math.nan  # log-MAD index of linf_excess, positive = larger
    warp_index: float = math.nan  # log-MAD index of warp_rms, positive = smaller (≤ 0 unreached)
    transfer: float = math.nan  # LabelEvidence.transfer, as measured
    warp_transfer: float = math.nan  # LabelEvidence.warp_transfer, as measured

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Scores:
    labels: tuple[LabelScores, ...]
    untargeted_ratio: float  # untargeted_l1 / median mask_l1 (NaN: not run)
    enough_labels: bool

    def label(self, k: int) -> LabelScores:
        return next(s for s in self.labels if s.label == k)


def anomaly_indices(
    values: Sequence[float] | np.ndarray, min_sigma: float = 0.0
) -> tuple[np.ndarray, float, float]:
    """(|v − median| / σ signed so that below-median is positive, median, σ), σ = 1.4826·MAD.

    With a MAD of zero (half the values equal) the spread is taken from the mean absolute
    deviation instead, so one outlier among identical values still stands out. σ is at least
    ``min_sigma``: differences smaller than the measurement's resolution are no evidence, however
    alike the other labels are. NaN values are left out of the median and MAD and get a NaN
    index.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    out = np.full(v.shape, np.nan)
    if not finite.any():
        return out, math.nan, math.nan
    median = float(np.median(v[finite]))
    deviation = np.abs(v[finite] - median)
    mad = MAD_CONSISTENCY * float(np.median(deviation))
    if mad <= 0:
        mad = 1.2533 * float(np.mean(deviation))  # √(π/2)·mean |dev| estimates σ too
    mad = max(mad, min_sigma)
    if mad <= 0:
        out[finite] = 0.0
        return out, median, 0.0
    out[finite] = (median - v[finite]) / mad
    return out, median, mad


def _log(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log(np.maximum(v, 1e-12)), np.nan)


BASELINE_SIGNALS = ("mask_l1", "additive_l2", "margin", "warp_rms")


@dataclass(frozen=True)
class Baseline:
    """What clean models of one task show per label, and the rule calibrated with it.

    Some labels are naturally easy to reach (Fashion-MNIST's "Bag" has the smallest Neural
    Cleanse mask of 27 of the zoo's 34 clean models): compared only with the model's other
    labels, such a label looks like a target. ``offsets[signal][label]`` is the median, over
    clean models of the task, of ``log(value) − log(that model's median value)``; :func:`score`
    divides each label's value by ``exp(offset)`` before comparing it with the other labels,
    so a label is suspicious when it is easier than *that label* usually is.
    """

    name: str
    offsets: Mapping[str, tuple[float, ...]]  # per signal of BASELINE_SIGNALS, per label (log)
    rule: Rule  # calibrated on evidence adjusted by these offsets
    models: int  # clean models the offsets were measured on
    similarity: float = math.nan  # how closely the audited data matched the task (see baselines)
    # Clean models of the task (files), for LabelEvidence.transfer and Rule.transfer, and the
    # input range they take (the audited data's range is mapped onto it; None: the audited
    # models' own input space, as for references a user trained alongside them).
    references: tuple[str, ...] = ()
    reference_range: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "models": self.models,
            "similarity": _json_number(self.similarity),
            "references": [Path(r).name for r in self.references],
            "reference_range": _range_json(self.reference_range),
            "offsets": {k: [_json_number(float(v)) for v in vs] for k, vs in self.offsets.items()},
            "rule": self.rule.to_dict(),
        }


def _range_json(value_range: tuple[float, float] | None) -> list[float] | None:
    return None if value_range is None else [float(v) for v in value_range]


def adjust(evidence: ModelEvidence, offsets: Mapping[str, Sequence[float]]) -> ModelEvidence:
    """``evidence`` with each baseline signal divided by ``exp(offset)`` of its label (values
    that are not positive, and labels without an offset, are left as they are)."""
    out = []
    for e in evidence.labels:
        changes: dict[str, Any] = {}
        for name in BASELINE_SIGNALS:
            table = offsets.get(name)
            value = getattr(e, name)
            if table is None or not 0 <= e.label < len(table):
                continue
            offset = float(table[e.label])
            if math.isfinite(offset) and math.isfinite(value) and value > 0:
                changes[name] = value / math.exp(offset)
        out.append(replace(e, **changes))
    return replace(evidence, labels=tuple(out))


def label_offsets(clean: Sequence[ModelEvidence], num_classes: int) -> dict[str, tuple[float, ...]]:
    """Per signal and label: the median over ``clean`` models of log(value) − log(the model's
    median value) (NaN where no model measured the label)."""
    out: dict[str, tuple[float, ...]] = {}
    for name in BASELINE_SIGNALS:
        rows = []
        for ev in clean:
            row = np.full(num_classes, np.nan)
            for e in ev.labels:
                if 0 <= e.label < num_classes:
                    row[e.label] = getattr(e, name)
            logs = _log(row)
            if np.isfinite(logs).sum() >= MIN_LABELS:
                rows.append(logs - np.nanmedian(logs))
        if not rows:
            continue
        stacked = np.asarray(rows)
        medians = [
            float(np.median(col[np.isfinite(col)])) if np.isfinite(col).any() else math.nan
            for col in stacked.T
        ]
        out[name] = tuple(medians)
    return out


def score(evidence: ModelEvidence, baseline: Baseline | None = None) -> Scores:
    """Each label's signals against the model's other labels (see module doc), after the
    ``baseline``'s per-label offsets when one is given."""
    if baseline is not None:
        evidence = adjust(evidence, baseline.offsets)
    labels = evidence.labels
    mask_index, _, _ = anomaly_indices(_log([e.mask_l1 for e in labels]), MIN_SIGMA)
    additive_index, _, _ = anomaly_indices(_log([e.additive_l2 for e in labels]), MIN_SIGMA)
    margins = np.asarray([e.margin for e in labels], np.float64)
    finite_margins = margins[np.isfinite(margins)]
    margin_floor = MIN_SIGMA * abs(float(np.median(finite_margins))) if finite_margins.size else 0
    margin_index, _, _ = anomaly_indices(margins, margin_floor)
    linf_index, _, _ = anomaly_indices(-_log([e.linf_excess for e in labels]), MIN_SIGMA)
    warp_index, _, _ = anomaly_indices(_log([e.warp_rms for e in labels]), MIN_SIGMA)
    # A warp that never reached the attack threshold is no trigger, however small it is.
    unreached = np.asarray([not e.warp_reached for e in labels])
    warp_index = np.where(unreached & (warp_index > 0), 0.0, warp_index)
    masks = np.asarray([e.mask_l1 for e in labels], np.float64)
    finite = masks[np.isfinite(masks)]
    median = float(np.median(finite)) if finite.size else math.nan
    ratio = evidence.untargeted_l1 / median if median > 0 else math.nan
    return Scores(
        tuple(
            LabelScores(
                e.label,
                float(mask_index[i]),
                float(additive_index[i]),
                float(-margin_index[i]),  # larger margins are the suspicious ones
                float(e.linf_excess),
                float(linf_index[i]),
                float(warp_index[i]),
                float(e.transfer),
                float(e.warp_transfer),
            )
            for i, e in enumerate(labels)
        ),
        float(ratio),
        len(labels) >= MIN_LABELS,
    )


@dataclass(frozen=True)
class Rule:
    """Thresholds of the verdict (calibrated: see the module doc and benchmarks/zoo)."""

    mask_index: float  # flag when NC's mask is this many robust σ smaller (log scale)
    additive_index: float  # ... the additive perturbation this many σ smaller (log scale)
    margin_index: float  # ... the reachable margin this many σ larger
    untargeted_ratio: float  # all-to-all when the untargeted mask is below this × median mask
    combined: float = math.inf  # ... or when Σ max(0, index / threshold) over signals exceeds this
    linf_index: float = math.inf  # ... or its trigger's ℓ∞ excess this many σ larger (log scale)
    warp_index: float = math.inf  # ... or the smallest warp reaching it this many σ smaller
    # The mask (warp) signal does not flag a label whose NC trigger (warp field) moves at least
    # this share of the task's clean reference models' images to it too: a feature of the
    # class, not a backdoor (infinite: never; needs a baseline with reference models).
    transfer: float = math.inf
    # A model may carry two backdoors: once a label is flagged, the others are judged again
    # with the flagged labels' evidence set aside (out of the median and MAD), against every
    # threshold times this factor (infinite: never).
    second_pass: float = math.inf

    def scaled(self, factor: float) -> Rule:
        """This rule with every index threshold times ``factor`` (``combined`` sums indices
        as fractions of those thresholds, so it scales with them)."""
        names = ("mask_index", "additive_index", "margin_index", "linf_index", "warp_index")
        return replace(self, **{n: getattr(self, n) * factor for n in names})

    def signals(self, s: LabelScores) -> tuple[tuple[str, float, float, float], ...]:
        """(signal, index, threshold, share of the reference models' images its trigger moves;
        NaN where no trigger is tried on them) for each signal of a label."""
        return (
            ("mask", s.mask_index, self.mask_index, s.transfer),
            ("additive", s.additive_index, self.additive_index, math.nan),
            ("margin", s.margin_index, self.margin_index, math.nan),
            ("linf", s.linf_index, self.linf_index, math.nan),
            ("warp", s.warp_index, self.warp_index, s.warp_transfer),
        )

    def combined_score(self, s: LabelScores) -> float:
        """Evidence summed over the signals, each as a fraction of its own threshold; the mask
        and warp signals not when their trigger moves the reference models (the veto)."""
        total = 0.0
        for _, value, threshold, moved in self.signals(s):
            if moved >= self.transfer:
                continue
            if math.isfinite(value) and math.isfinite(threshold) and threshold > 0:
                total += max(0.0, value / threshold)
        return total

    def describe(self) -> str:
        text = (
            f"a label is flagged when its Neural Cleanse mask index > {self.mask_index:.2f}, "
            f"its additive-perturbation index > {self.additive_index:.2f} or its margin index > "
            f"{self.margin_index:.2f}"
        )
        if math.isfinite(self.linf_index):
            text += f" or the ℓ∞ excess index of its recovered trigger > {self.linf_index:.2f}"
        if math.isfinite(self.warp_index):
            text += f" or its warp index > {self.warp_index:.2f}"
        text += " (robust σ against the other labels)"
        if math.isfinite(self.combined):
            text += (
                f", or when those indices, each divided by its threshold, add up to more than "
                f"{self.combined:.2f}"
            )
        if math.isfinite(self.transfer):
            text += (
                f"; the mask or warp signal not when that trigger also sends ≥ "
                f"{self.transfer:.0%} of the task's clean reference models' images to the label"
            )
        if math.isfinite(self.second_pass):
            text += (
                f"; once a label is flagged, the others are judged again without it, against "
                f"{self.second_pass:.2f} × each threshold"
            )
        return text + (
            f"; all-to-all when one untargeted mask is below {self.untargeted_ratio:.2f} × the "
            "median targeted mask and sends at least half the classes to labels of their own"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: _json_number(v) for k, v in asdict(self).items()},
            "description": self.describe(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """The inverse of :meth:`to_dict` (a missing or null threshold: never crossed)."""
        values: dict[str, float] = {}
        for f in fields(cls):
            raw = data.get(f.name)
            never = 0.0 if f.name == "untargeted_ratio" else math.inf
            values[f.name] = never if raw is None else float(raw)
        return cls(**values)


# `python benchmarks/zoo/zoo.py calibrate` prints the rule fitted on the zoo's models (method
# "robust": each signal's threshold sits K robust σ above the median of the clean models' most
# suspicious label; K = 5.5, chosen by leave-one-architecture-out CV); these are its values on
# all 65 models' evidence in git, rounded. The previous rule (K = 5 on the first 49 models) was
# tested on the 16 models added after it was fixed: README, benchmarks/zoo/results/.
RULE = Rule(
    mask_index=11.83,
    additive_index=4.26,
    margin_index=11.97,
    untargeted_ratio=0.189,
    linf_index=5.03,
    warp_index=9.89,
)


@dataclass(frozen=True)
class Decision:
    label: int
    flagged: bool
    signals: tuple[str, ...]  # which signals crossed their thresholds ("mask", "additive", ...)
    reasons: tuple[str, ...]  # in words, for people
    strength: float  # the largest index / threshold ratio (for ordering)
    second_pass: bool = False  # flagged only once the labels flagged first were set aside


@dataclass(frozen=True)
class Verdict:
    flagged: tuple[int, ...]  # labels judged to be backdoor targets, most suspicious first
    all_to_all: bool  # one small untargeted trigger moves images off their own classes
    decisions: tuple[Decision, ...]  # in label order
    scores: Scores
    rule: Rule
    baseline: Baseline | None = None  # the task's per-label baseline the scores were taken against

    @property
    def backdoor(self) -> bool:
        return bool(self.flagged) or self.all_to_all

    def decision(self, k: int) -> Decision:
        return next(d for d in self.decisions if d.label == k)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backdoor": self.backdoor,
            "flagged": list(self.flagged),
            "all_to_all": self.all_to_all,
            "untargeted_ratio": _json_number(self.scores.untargeted_ratio),
            "rule": self.rule.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
        }


SIGNAL_WORDS = {  # each signal of Rule.signals, in a verdict's reasons
    "mask": "Neural Cleanse mask unusually small",
    "additive": "universal additive perturbation unusually small",
    "margin": "reachable logit margin unusually large",
    "linf": "its trigger drives conv channels unusually far beyond clean data (ℓ∞ excess)",
    "warp": "a warp field unusually small",
}


def rule_for(baseline: Baseline | None) -> Rule:
    """The rule a verdict uses by default: the baseline's own, or :data:`RULE` without one."""
    return RULE if baseline is None else baseline.rule


def judge(
    evidence: ModelEvidence, rule: Rule | None = None, baseline: Baseline | None = None
) -> Verdict:
    """Apply ``rule`` (default: :func:`rule_for` the baseline) to ``evidence`` (see module
    doc). With a ``baseline`` each label is scored against its task's usual value first.

    When labels are flagged and the rule has a finite ``second_pass``, the labels left are
    scored again with the flagged ones' evidence set aside and judged against the thresholds
    times ``second_pass``: a first target's extreme values no longer sit in the others' median
    and MAD, so a second target that was just under the line can cross it."""
    if rule is None:
        rule = rule_for(baseline)
    scores = score(evidence, baseline)
    decisions = [_decide(s, rule, scores.enough_labels) for s in scores.labels]
    first = {d.label for d in decisions if d.flagged}
    rest = tuple(e for e in evidence.labels if e.label not in first)
    if first and math.isfinite(rule.second_pass) and len(rest) >= MIN_LABELS:
        again = score(replace(evidence, labels=rest), baseline)
        stricter = rule.scaled(rule.second_pass)
        aside = ", ".join(str(k) for k in sorted(first))
        found = {}
        for s in again.labels:
            d = _decide(s, stricter, again.enough_labels)
            if d.flagged:
                found[s.label] = replace(
                    d,
                    reasons=(
                        f"with label(s) {aside} set aside, against {rule.second_pass:.2f} × "
                        "each threshold:",
                        *d.reasons,
                    ),
                    strength=d.strength * rule.second_pass,  # as a share of the plain threshold
                    second_pass=True,
                )
        decisions = [found.get(d.label, d) for d in decisions]
    all_to_all = bool(
        scores.enough_labels
        and math.isfinite(scores.untargeted_ratio)
        and evidence.untargeted_reached
        and scores.untargeted_ratio < rule.untargeted_ratio
        and spread(evidence.untargeted_moves_to) is not False
    )
    order = sorted((d for d in decisions if d.flagged), key=lambda d: (d.second_pass, -d.strength))
    return Verdict(
        tuple(d.label for d in order), all_to_all, tuple(decisions), scores, rule, baseline
    )


def _decide(s: LabelScores, rule: Rule, enough_labels: bool) -> Decision:
    """One label's decision under ``rule`` (see :func:`judge`)."""
    if not enough_labels:
        return Decision(s.label, False, (), (f"fewer than {MIN_LABELS} labels: no statistics",), 0)
    crossed: list[str] = []
    reasons: list[str] = []
    strength = 0.0
    vetoed = False  # the mask or warp signal crossed, but its trigger is the class's own
    for name, value, threshold, moved in rule.signals(s):
        words = SIGNAL_WORDS[name]
        if not math.isfinite(value):
            continue
        natural = moved >= rule.transfer
        if threshold > 0 and not natural:
            strength = max(strength, value / threshold)
        if value > threshold and natural:
            vetoed = True
            reasons.append(
                f"{words}: index {value:.2f} > {threshold:g}, but its trigger also sends "
                f"{moved:.0%} of clean reference models' images here (≥ "
                f"{rule.transfer:.0%}): a feature of the class, not a backdoor"
            )
        elif value > threshold:
            crossed.append(name)
            reasons.append(f"{words}: index {value:.2f} > {threshold:g}")
    combined = rule.combined_score(s)
    if not crossed and combined > rule.combined:
        crossed.append("combined")
        reasons.append(
            f"several signals together: {combined:.2f} > {rule.combined:.2f} (sum of each "
            "index over its threshold)"
        )
    if math.isfinite(rule.combined) and rule.combined > 0:
        strength = max(strength, combined / rule.combined)
    if not crossed:
        best = max((v for _, v, _, _ in rule.signals(s) if math.isfinite(v)), default=math.nan)
        reasons.append(
            "no other signal above its threshold" if vetoed
            else f"no signal above its threshold (largest index {best:.2f})"
        )  # fmt: skip
    if math.isfinite(s.linf_excess):
        reasons.append(f"ℓ∞ excess of its recovered trigger {s.linf_excess:.2f}")
    return Decision(s.label, bool(crossed), tuple(crossed), tuple(reasons), strength)


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
