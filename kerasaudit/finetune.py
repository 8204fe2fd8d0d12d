"""Fine-tuning after pruning, with pruned channels held at exactly zero.

Two modes, because they differ where it matters (measured on a BN-CNN of the sample kind):
plain fine-tuning restores clean accuracy but also much of the backdoor; "unlearning" (Neural
Cleanse, Wang et al. 2019) stamps a share of the clean images with the known or recovered
trigger while keeping their true labels, which teaches the model to ignore the trigger.

BatchNormalization runs in training mode by default (batch statistics, moving averages
updated). Measured on the shipped backdoored sample (BN momentum 0.9, 2,000 clean images, conv5
20 % pruned, 5 epochs, unlearning 50 %): 89.78 % accuracy / 1.93 % ASR with BN in training mode
against 87.86 % / 1.89 % (10 epochs) with BN frozen. ``train_batchnorm=False`` freezes it, for
BN layers with momentum 0.99 whose moving averages would lag far behind a short fine-tune.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from kerasaudit import _tf
from kerasaudit.adversary import AdversarySettings, GeneratorAdversary, UniversalAdversary
from kerasaudit.data import Dataset
from kerasaudit.errors import BadInputError
from kerasaudit.evaluation import (
    dense_pre_activation,
    logits_function,
    output_operation,
    outputs_probabilities,
    penultimate,
)
from kerasaudit.inventory import walk_layers
from kerasaudit.pruning import PruneMask
from kerasaudit.triggers import Trigger, TriggerData, twin_sources

BATCHNORM_MODES = ("train", "frozen", "clean")  # see fine_tune
OPTIMIZERS = ("adam", "sgd")  # see fine_tune
DEFAULT_LEARNING_RATES = {"adam": 1e-4, "sgd": 3e-3}
PGD_STEPS = 5  # signed-gradient steps of fine_tune's per-image adversarial examples
MAX_FINE_TUNE_EXAMPLES = 100_000  # held in memory for shuffling; more is not a "clean subset"


class FineTuneMode(StrEnum):
    PLAIN = "plain"
    UNLEARN = "unlearn"


@dataclass(frozen=True)
class FineTuneSettings:
    """What ``prune``/``sweep`` pass on to :func:`fine_tune` (epochs=0: no fine-tuning)."""

    epochs: int = 0
    unlearn: bool = False
    unlearn_fraction: float = 0.5
    learning_rate: float = 1e-4
    train_batchnorm: bool = True
    seed: int = 0
    distill: float = 0.0  # weight of distillation from the original model on clean images
    adversarial: bool = False  # unlearn each trigger also as a universal adversary (adversary.py)
    optimizer: str = "adam"  # or "sgd" (momentum 0.9, cosine decay): see fine_tune
    # ℓ∞ radius of per-image adversarial examples toward the backdoor's target, unlearnt in
    # stamped slots beside the triggers (0: none; a share of the value range; "auto":
    # pgd_radius): see fine_tune. An experiment (benchmarks/zoo/removal.py), not a CLI option
    pgd: float | str = 0.0
    # adaptive SAM's radius ρ (0: plain steps): see fine_tune. An experiment, not a CLI option
    sam: float = 0.0
    # data augmentation of the clean images before stamping: random shifts of up to this many
    # pixels (edges repeated) and, with flip, random horizontal flips: see fine_tune
    shift: int = 0
    flip: bool = False
    # each stampable trigger also fitted as an image-dependent change (GeneratorAdversary:
    # GENERATOR_FIT's passes over the clean data against the model being fine-tuned, then
    # fixed) and unlearnt beside it; instead of ``adversarial``'s universal adversaries
    generator: bool = False
    # what a stamped (triggered) image learns besides its hard label when there is a teacher
    # (distill > 0): "off" none; "masked" the teacher's outputs on the triggered image with
    # its top class removed (unless that is the true one); "source" the teacher's outputs on
    # the clean image before stamping, where there is one (--trigger-data images have none:
    # hard label only): prune's and sweep's --distill-stamped (their default, JOURNAL.md "Ninth
    # session"); "away" the same outputs with the trigger's target removed (unless it is the
    # true class), so that a stamped image goes anywhere but the target; "paired" as
    # "source", and a --trigger-data image that is a stamped copy of a fine-tuning image
    # (triggers.twin_sources) learns the teacher's outputs on that image (prune's and sweep's
    # --distill-paired); "masked" is an experiment (benchmarks/zoo/removal_variants.py KM):
    # see fine_tune
    trigger_teacher: str = "off"
    # the final weights are the mean of the weights at the end of each of the last
    # ``average`` share of the epochs (tail averaging, as in SWA; 0: the last epoch's): see
    # fine_tune. An experiment, not a CLI option: on the zoo's development half (removal.py
    # ``dswa``, two seeds, JOURNAL.md "Thirty-third session") 15 → 13 of 28 runs within the goal
    average: float = 0.0
    # weight of the clean-feature anchor (0: none): on clean images, the squared distance of
    # the penultimate features (the final Dense layer's input) from the teacher's, over the
    # teacher's mean square: see fine_tune. An experiment, not a CLI option: on the zoo's
    # development half (removal.py ``danc``, two seeds, JOURNAL.md "Thirty-fourth session") it
    # halved the accuracy defend lost and raised the residual ASR, 15 → 9 of 28 runs in the goal
    anchor: float = 0.0


TRIGGER_TEACHERS = ("off", "masked", "source", "paired", "away")

# GeneratorAdversary as FineTuneSettings.generator fits it: 5 passes, then a fixed trigger
# (re-attacking every step, benchmarks/zoo/removal.py `gen`, cost 2.5-5 points of accuracy)
GENERATOR_FIT = AdversarySettings(form="generator", warmup=5, refresh=False)


@dataclass(frozen=True)
class FineTuneResult:
    mode: FineTuneMode
    epochs: int
    steps: int
    examples: int
    learning_rate: float
    batch_size: int
    stamped_fraction: float  # share of each batch stamped with the trigger (unlearn mode)
    final_loss: float
    triggers: int = 0  # triggers unlearnt
    distill: float = 0.0  # distillation weight on clean images (0: none)
    batchnorm: str = "train"
    adversaries: int = 0  # triggers also unlearnt as universal adversaries
    adversary_success: tuple[float, ...] = ()  # each adversary's success on the last epoch
    optimizer: str = "adam"
    pgd: float = 0.0
    sam: float = 0.0
    shift: int = 0
    flip: bool = False
    generators: int = 0  # of the adversaries, fitted image-dependent changes (generator)
    trigger_teacher: str = "off"  # what triggered images distil (off without a teacher)
    # --trigger-data images paired with a fine-tuning image they are a stamped copy of
    # (trigger_teacher "paired"): they learn the teacher's outputs on it
    paired: int = 0
    averaged: int = 0  # epochs whose end-of-epoch weights were averaged (0: none)
    anchor: float = 0.0  # weight of the clean-feature anchor (0: none)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode),
            "epochs": self.epochs,
            "steps": self.steps,
            "examples": self.examples,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "stamped_fraction": self.stamped_fraction,
            "final_loss": self.final_loss,
            "triggers": self.triggers,
            "distill": self.distill,
            "batchnorm": self.batchnorm,
            "adversaries": self.adversaries,
            "adversary_success": list(self.adversary_success),
            "optimizer": self.optimizer,
            "pgd": self.pgd,
            "sam": self.sam,
            "shift": self.shift,
            "flip": self.flip,
            "generators": self.generators,
            "trigger_teacher": self.trigger_teacher,
            "paired": self.paired,
            "averaged": self.averaged,
            "anchor": self.anchor,
        }


def fine_tune(
    model: Any,
    dataset: Dataset,
    *,
    epochs: int,
    mask: PruneMask | None = None,
    trigger: Any | None = None,
    unlearn_fraction: float = 0.5,
    learning_rate: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    train_batchnorm: bool = True,
    teacher: Any | None = None,
    distill: float = 0.0,
    batchnorm: str | None = None,
    adversarial: AdversarySettings | None = None,
    target: int | None = None,
    on_epoch: Callable[[int], None] | None = None,
    optimizer: str = "adam",
    pgd: float | str = 0.0,
    sam: float = 0.0,
    shift: int = 0,
    flip: bool = False,
    trigger_teacher: str = "off",
    average: float = 0.0,
    anchor: float = 0.0,
) -> FineTuneResult:
    """Fine-tune ``model`` in place on the clean data (labels needed).

    ``trigger``: one trigger or a sequence of them (unlearning); each stamped slot of a batch
    uses one of them at random. ``teacher`` with ``distill`` > 0: on *clean* images the loss is
    ``(1 − distill)·CE(label) + distill·KL(teacher ‖ model)`` — the original model's outputs
    on clean images carry no backdoor and say far more than 1,000 hard labels do — while
    triggered images always learn their true class.

    ``adversarial``: each stampable trigger is also unlearnt as a
    :class:`~kerasaudit.adversary.UniversalAdversary` that re-attacks the model before every
    step (its target: the trigger's own, else ``target`` when there is one trigger; None:
    untargeted); stamped slots pick among the triggers and the adversaries alike.
    ``optimizer``: ``"adam"`` (constant ``learning_rate``) or ``"sgd"`` (momentum 0.9, the
    rate decayed to 0 along a cosine over all steps). On the zoo (README, `defend` from the
    recovered triggers, no pruning) SGD at 0.003 unlearnt what Adam at 1e-4 did not — a
    position-free patch recovered at one position (randpos_c4_vgg 9.9 → 1.4 %), all-to-all
    (14.1 → 0.5 %, 8.4 → 1.0 %) — but cost more accuracy on 9 of 12 models (1.0-3.8 points),
    so it met the goal on 2 of 4 development models and 0 of 9 test models (Adam: 0 and 3).
    ``pgd`` > 0 (unlearning only): stamped slots pick among the triggers and one more source,
    each image's own adversarial example toward the triggers' target(s) (untargeted when none
    is known: away from its class) — projected gradient ascent, :data:`PGD_STEPS` signed steps
    within ℓ∞ ``pgd`` × the value range (``"auto"``: :func:`pgd_radius`), the model in
    inference mode — learnt as a clean image, from the teacher's outputs on its source
    (per-image and targeted, in the spirit of SAU, Wei et al. 2023: a backdoor makes its target
    the cheapest place to send an image, wherever the recovered trigger missed). Measured on
    the zoo (JOURNAL.md, "Three removal ideas"): it lowered the residual ASR at 2-4 points of
    accuracy (adversarial training on 1,000 images), so it is an experiment, not an option.
    ``sam`` > 0: every step's gradient is taken at the weights moved by adaptive SAM's ascent
    step of radius ``sam``, two passes a step (FT-SAM, Zhu et al. 2023, ρ = 2: a flat minimum
    near the clean task shrinks the weights a backdoor rests on). On the zoo (JOURNAL.md, "Sixth
    session") it cost more accuracy than it removed, so it is an experiment, not an option.
    ``shift``/``flip``: every batch's clean images are augmented (:func:`augment`) before a
    share is stamped, so a stamped trigger stays where the attack puts it. On the zoo's
    development half (JOURNAL.md, "Seventh session") moves of 2 px with flips lowered the ASR on
    5 of 12 models and cost more accuracy on 9 (the models never saw mirrored images); 1-px
    moves changed little: an experiment, not an option.
    ``trigger_teacher`` (with a teacher): a triggered image with its true class learns
    ``(1 − distill)·CE(label) + distill·KL(q ‖ model)`` like a clean one, where q is the
    teacher's outputs on the clean image it was stamped on (``"source"``, when stamped here),
    or on the triggered image itself with the teacher's top class removed unless it is the
    true class (``"masked"``: the original model's view of the image among the other
    classes, without the backdoor's vote). ``"away"``: as ``"source"``, with the trigger's
    target class removed from q (unless it is the true class) and q renormalised — an image
    the original model already confused with the target learns its next most likely class
    once stamped (each trigger's own target: a trigger file's, else ``target`` for the first
    trigger; none for an untargeted one or a further spec). ``--trigger-data`` images have
    no clean twin here: under ``"source"`` and ``"away"`` they learn their hard label only;
    ``"paired"`` is ``"source"`` where a ``--trigger-data`` image that is a stamped copy of one
    of ``dataset``'s images (:func:`~kerasaudit.triggers.twin_sources`: a defender who stamped
    their own data) learns, with its true class, the teacher's outputs on that image.
    ``average`` > 0: the model ends with the mean of its weights at the end of each of the
    last ceil(``average`` × ``epochs``) epochs — every float variable, BatchNorm's moving
    statistics included; pruned channels stay zero — instead of the last step's (tail
    averaging: Polyak–Ruppert, SWA, Izmailov et al. 2018; on 1,000 images one fine-tune's end
    point moves with its seed by several points of ASR). ``on_epoch`` sees the running model.
    ``anchor`` > 0 (with a teacher): each clean image's loss also has ``anchor`` × the mean
    squared distance of its penultimate features (the final Dense layer's input) from the
    teacher's on the same image, divided by the teacher's mean square on the fine-tuning
    images — the clean images' representation held where the original model had it (on 1,000
    images the accuracy a fine-tune loses is lost at the boundaries of confusable classes),
    while stamped images are free to move. Needs a Dense head (two or more units). The
    student's features are taken in the fine-tune's BatchNorm mode, the teacher's in inference
    mode (as for distillation): on a net whose moving statistics are far from its batch
    statistics the anchor pulls the wrong function.
    ``on_epoch(n)`` is called after each epoch n (1, 2, …), e.g. to measure the model.
    """
    if epochs < 1:
        raise BadInputError("--fine-tune-epochs must be at least 1")
    triggers = _as_list(trigger)
    mode = FineTuneMode.UNLEARN if triggers else FineTuneMode.PLAIN
    if mode is FineTuneMode.UNLEARN and not 0.0 < unlearn_fraction < 1.0:
        raise BadInputError("--unlearn-fraction must be between 0 and 1")
    if not 0.0 <= distill <= 1.0:
        raise BadInputError(f"distillation weight must be in [0, 1], got {distill:g}")
    mode_bn = batchnorm or ("train" if train_batchnorm else "frozen")
    if mode_bn not in BATCHNORM_MODES:
        raise BadInputError(f"batchnorm mode must be one of {', '.join(BATCHNORM_MODES)}")
    if optimizer not in OPTIMIZERS:
        raise BadInputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
    if sam < 0:
        raise BadInputError(f"the SAM radius must be ≥ 0, got {sam:g}")
    if shift < 0:
        raise BadInputError(f"the augmentation shift must be ≥ 0 pixels, got {shift}")
    if trigger_teacher not in TRIGGER_TEACHERS:
        raise BadInputError(f"trigger teacher must be one of {', '.join(TRIGGER_TEACHERS)}")
    if not 0.0 <= average <= 1.0:
        raise BadInputError(f"the averaged share of epochs must be in [0, 1], got {average:g}")
    if anchor < 0:
        raise BadInputError(f"the feature anchor's weight must be ≥ 0, got {anchor:g}")
    bn_training = mode_bn != "frozen"
    split = mode_bn == "clean"
    x, y = dataset.take_array(min(dataset.info.count, MAX_FINE_TUNE_EXAMPLES))
    if y is None:
        raise BadInputError("fine-tuning needs labelled clean data (no labels in --data)")
    tf = _tf.tf()
    keras = _tf.keras()
    seed_random_layers(model, seed)
    if optimizer == "sgd":
        total = epochs * -(-len(x) // batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, total)
        stepper = keras.optimizers.SGD(schedule, momentum=0.9)
    else:
        stepper = keras.optimizers.Adam(learning_rate)
    masked = [(variable, tf.constant(m)) for variable, m in (mask.pairs if mask else [])]
    trainable = model.trainable_variables
    # The optimizer's slots made now, not on the first step: a tf.function that creates
    # variables is traced twice (TensorFlow traces it again once they exist).
    stepper.build(trainable)
    targets = [t.target for t in triggers if isinstance(t, TriggerData)]
    away_target = int(targets[0]) if targets and targets[0] is not None else 0
    use_teacher = teacher is not None and distill > 0
    scores = _log_scores(model)
    teacher_scores = _log_scores(teacher) if use_teacher and teacher is not None else None
    anchored: Callable[[Any, bool], Any] | None = None
    teacher_h: Any = None  # the teacher up to its penultimate features (with anchored)
    if anchor > 0 and teacher_scores is not None and teacher is not None:
        anchored = _features_and_scores(model)
        teacher_h = penultimate(teacher)
        if anchored is None or teacher_h is None:
            raise BadInputError("the feature anchor needs a Dense head with two or more units")
        energy = float(np.mean(np.square(teacher_h.predict(x, batch_size=256, verbose=0))))
        anchor_scale = anchor / max(energy, 1e-12)

    def per_example(xb: Any, yb: Any, kind: Any, training: bool, xs: Any, aim: Any) -> Any:
        # kind per example: 0 clean, 1 triggered with its true class, 2 triggered with an
        # unknown class (--trigger-data without labels): pushed away from the target instead,
        # −log Σ_{j≠t} p_j (from logits: a confident backdoor saturates probabilities); 3 an
        # adversarial example toward the target: as a clean image, the teacher's outputs on
        # its clean source (``xs``: the batch before stamping); 4 triggered with its true
        # class and the teacher's outputs on its source; 5 the same with the teacher's
        # outputs on the triggered image, its top class removed; 6 as 4 with the class
        # ``aim`` (the trigger's target, −1 none) removed from the teacher's outputs unless it
        # is the true class (trigger_teacher).
        if anchored is None:
            logp = scores(xb, training)  # (n, K) log-probabilities
        else:
            h, logp = anchored(xb, training)
        ce = -tf.gather(logp, yb, batch_dims=1)
        classes = tf.shape(logp)[-1]
        others = logp - 1e9 * tf.one_hot(away_target, classes)
        push = -tf.reduce_logsumexp(others, axis=-1)
        clean_loss = ce
        trig_loss = ce
        if teacher_scores is not None:
            logpt = teacher_scores(xs, False)
            kl = tf.reduce_sum(tf.exp(logpt) * (logpt - logp), axis=-1)
            clean_loss = (1.0 - distill) * ce + distill * kl
            if anchored is not None:
                ht = tf.cast(teacher_h(xs, training=False), tf.float32)
                clean_loss += anchor_scale * tf.reduce_mean(tf.square(h - ht), axis=-1)
            if trigger_teacher == "masked":
                logtt = teacher_scores(xb, False)
                top = tf.argmax(logtt, axis=-1, output_type=yb.dtype)
                drop = tf.one_hot(top, classes) * tf.cast(top != yb, logtt.dtype)[:, None]
                logq = tf.nn.log_softmax(logtt - 1e9 * drop, axis=-1)
                kl_masked = tf.reduce_sum(tf.exp(logq) * (logq - logp), axis=-1)
                trig_loss = tf.where(kind == 5, (1.0 - distill) * ce + distill * kl_masked, ce)
            elif trigger_teacher in ("source", "paired"):
                trig_loss = tf.where(kind == 4, clean_loss, ce)
            elif trigger_teacher == "away":
                aim = tf.cast(aim, yb.dtype)
                drop = tf.one_hot(aim, classes) * tf.cast(aim != yb, logpt.dtype)[:, None]
                logq = tf.nn.log_softmax(logpt - 1e9 * drop, axis=-1)
                kl_away = tf.reduce_sum(tf.exp(logq) * (logq - logp), axis=-1)
                trig_loss = tf.where(kind == 6, (1.0 - distill) * ce + distill * kl_away, ce)
        as_clean = tf.logical_or(kind == 0, kind == 3)
        return tf.where(as_clean, clean_loss, tf.where(kind == 2, push, trig_loss))

    def gradients(loss_fn: Callable[[], Any]) -> tuple[Any, list[Any]]:
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, trainable)
        if sam <= 0:
            return loss, grads
        # Adaptive SAM (ASAM, Kwon et al. 2021, as FT-SAM uses it, Zhu et al. 2023): the
        # gradient is taken at w + ρ·w²·g / ‖|w|·g‖ — the nearby weights where the loss rises
        # most, each weight moved in proportion to its size — and applied at w.
        pairs = [(w, g) for w, g in zip(trainable, grads, strict=True) if g is not None]
        norm = tf.linalg.global_norm([tf.abs(w) * g for w, g in pairs]) + 1e-12
        moves = [sam * tf.square(w) * g / norm for w, g in pairs]
        for (w, _), e in zip(pairs, moves, strict=True):
            w.assign_add(e)
        with tf.GradientTape() as tape:
            sharp = loss_fn()
        grads = tape.gradient(sharp, trainable)
        for (w, _), e in zip(pairs, moves, strict=True):
            w.assign_sub(e)
        return loss, grads

    def apply(loss_fn: Callable[[], Any]) -> Any:
        loss, grads = gradients(loss_fn)
        stepper.apply_gradients(zip(grads, trainable, strict=True))
        for variable, m in masked:  # pruned channels stay exactly zero after every step
            variable.assign(variable * m)
        return loss

    @tf.function(reduce_retracing=True)
    def step(xb: Any, yb: Any, kind: Any, training: bool, xs: Any, aim: Any) -> Any:
        return apply(lambda: tf.reduce_mean(per_example(xb, yb, kind, training, xs, aim)))

    @tf.function(reduce_retracing=True)
    def split_step(xc: Any, yc: Any, xt: Any, yt: Any, kt: Any, st: Any, at: Any) -> Any:
        # BatchNorm statistics from the clean images only; triggered images pass in inference
        # mode, as at test time (see module doc: otherwise "unlearning" mostly shifts BN
        # statistics, which costs clean accuracy and comes back once they are re-estimated).
        def loss() -> Any:
            clean = per_example(xc, yc, tf.zeros_like(yc, tf.int32), True, xc, -tf.ones_like(yc))
            trig = per_example(xt, yt, kt, False, st, at)
            return tf.reduce_mean(tf.concat([clean, trig], axis=0))

        return apply(loss)

    adversaries = _adversaries(triggers, target, scores, x, y, adversarial)
    pool: list[Any] = [*triggers, *adversaries]
    perturb = None
    aims: list[int] = []
    radius = 0.0
    if pgd and triggers:
        aims = sorted({int(t.target) for t in triggers if getattr(t, "target", None) is not None})
        if target is not None and not aims:
            aims = [int(target)]
        value_range = (float(x.min()), float(x.max()))
        # "auto": measured on the original model (the teacher) when there is one: pruning
        # may already have cut what made the target reachable
        probe = _log_scores(teacher) if teacher is not None else scores
        radius = pgd_radius(probe, x, y, aims, value_range) if pgd == "auto" else float(pgd)
    if radius > 0:
        perturb = _pgd_attack(scores, radius, value_range, seed)
        pool.append(_PGD)
    # the kind a stamped slot learns as (per_example): None = hard label only
    taught = (
        {"masked": 5, "source": 4, "paired": 4, "away": 6}.get(trigger_teacher)
        if use_teacher
        else None
    )
    # per --trigger-data source in the pool ("paired"): each image's twin among x, or -1
    twins = {
        i: twin_sources(t.x, x)
        for i, t in enumerate(pool)
        if use_teacher and trigger_teacher == "paired" and isinstance(t, TriggerData)
    }
    # each source's target for "away" (-1: none): its own (a trigger file's, an adversary's),
    # else ``target`` for the first trigger
    aims_of = [_own_target(t, i == 0, target) for i, t in enumerate(pool)]
    rng = np.random.default_rng(seed)
    steps = 0
    loss_value = float("nan")
    success = [0.0] * len(adversaries)
    averaged = math.ceil(round(average * epochs, 9))  # 0.3 × 10 is 3 epochs, not 4
    floats = [v for v in model.weights if "float" in str(v.dtype)] if averaged else []
    sums: list[np.ndarray] = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        hits = np.zeros(len(adversaries))
        batches = 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            if shift or flip:
                xb = augment(xb, rng, shift, flip)
            kind = np.zeros(len(idx), np.int32)
            aim = np.full(len(idx), -1, np.int32)
            source = xb_clean = xb
            for a, adversary in enumerate(adversaries):
                hits[a] += adversary.update(xb, yb)
            batches += 1
            if pool:
                stamp = np.flatnonzero(rng.random(len(idx)) < unlearn_fraction)
                if stamp.size:
                    xb, yb = xb.copy(), yb.copy()
                    which = rng.integers(0, len(pool), stamp.size)
                    for t_index, trig in enumerate(pool):
                        slots = stamp[which == t_index]
                        if not slots.size:
                            continue
                        kind[slots] = 1
                        aim[slots] = aims_of[t_index]
                        if isinstance(trig, TriggerData):  # replace with triggered images
                            pick = trig.draw(rng, int(slots.size))
                            xb[slots] = trig.x[pick]
                            if trig.y is None:
                                kind[slots] = 2
                            else:
                                yb[slots] = trig.y[pick]
                                kind[slots] = 5 if taught == 5 else 1  # no clean twin
                                if t_index in twins:  # ... unless paired with one of x
                                    twin = twins[t_index][pick]
                                    has = twin >= 0
                                    source = source.copy() if source is xb_clean else source
                                    source[slots[has]] = x[twin[has]]
                                    kind[slots[has]] = 4
                        elif isinstance(trig, (UniversalAdversary, GeneratorAdversary)):
                            xb[slots] = trig.apply(xb[slots], rng)
                            kind[slots] = 1 if taught is None else taught
                        elif trig is _PGD:
                            assert perturb is not None
                            aim = rng.choice(aims, slots.size) if aims else np.full(slots.size, -1)
                            moved, hit = perturb(xb[slots], yb[slots], aim)
                            xb[slots] = moved
                            learnt = 3 if PGD_TEACHER else 1
                            kind[slots] = np.where(hit | (not PGD_HITS_ONLY), learnt, 0)
                        else:
                            xb[slots] = trig.apply(xb[slots])
                            kind[slots] = 1 if taught is None else taught
            clean = kind == 0
            if split and clean.any() and not clean.all():
                loss_value = float(
                    split_step(
                        tf.constant(xb[clean]),
                        tf.constant(yb[clean]),
                        tf.constant(xb[~clean]),
                        tf.constant(yb[~clean]),
                        tf.constant(kind[~clean]),
                        tf.constant(source[~clean]),
                        tf.constant(aim[~clean]),
                    )
                )
            else:
                # All clean, or (split mode) all triggered: then in inference mode.
                training = bn_training and not (split and not clean.any())
                loss_value = float(
                    step(
                        tf.constant(xb),
                        tf.constant(yb),
                        tf.constant(kind),
                        training,
                        tf.constant(source),
                        tf.constant(aim),
                    )
                )
            steps += 1
        success = [float(h / max(1, batches)) for h in hits]
        if epoch > epochs - averaged:
            now = [np.asarray(v.numpy(), np.float64) for v in floats]
            sums = now if not sums else [a + b for a, b in zip(sums, now, strict=True)]
        if on_epoch is not None:
            on_epoch(epoch)
    for variable, summed in zip(floats, sums, strict=True):
        variable.assign((summed / averaged).astype(str(variable.dtype)))
    return FineTuneResult(
        mode=mode,
        epochs=epochs,
        steps=steps,
        examples=len(x),
        learning_rate=learning_rate,
        batch_size=batch_size,
        stamped_fraction=unlearn_fraction if mode is FineTuneMode.UNLEARN else 0.0,
        final_loss=loss_value,
        triggers=len(triggers),
        distill=distill if use_teacher else 0.0,
        batchnorm=mode_bn,
        adversaries=len(adversaries),
        adversary_success=tuple(success),
        optimizer=optimizer,
        pgd=radius,
        sam=sam,
        shift=shift,
        flip=flip,
        generators=sum(isinstance(a, GeneratorAdversary) for a in adversaries),
        trigger_teacher=trigger_teacher if taught is not None else "off",
        paired=sum(int(np.count_nonzero(t >= 0)) for t in twins.values()),
        averaged=averaged,
        anchor=anchor if anchored is not None else 0.0,
    )


_PGD = object()  # fine_tune's pool entry for per-image adversarial examples
# Experiments (benchmarks/zoo/removal.py variants), not settings: an adversarial example is
# learnt as a clean image, from the teacher's outputs on its source (False: its hard label);
# only those that reached their aim are (the others go back to clean images).
PGD_TEACHER = True
PGD_HITS_ONLY = False
PGD_RADII = (0.01, 0.02, 0.03, 0.05, 0.1)  # tried by pgd_radius, in this order
PGD_PROBE = 200  # images per label pgd_radius attacks with


def pgd_radius(
    scores: Any,
    x: np.ndarray,
    y: np.ndarray,
    aims: list[int],
    value_range: tuple[float, float],
) -> float:
    """The smallest radius of :data:`PGD_RADII` at which per-image attacks reach a backdoor
    target specifically: toward each aim on ≥ half of the images of other classes, and at
    least twice as often as toward the median other label; 0 when none does (a patch or a
    warp is not within a small ℓ∞ ball; unlearning generic adversarial examples would only
    cost accuracy)."""
    if not aims:
        return 0.0
    labels = sorted(int(v) for v in np.unique(y))
    for radius in PGD_RADII:
        attack = _pgd_attack(scores, radius, value_range)
        rate = {}
        for label in labels:
            keep = np.flatnonzero(y != label)[:PGD_PROBE]
            _, hit = attack(x[keep], y[keep], np.full(keep.size, label))
            rate[label] = float(np.mean(hit))
        others = [rate[v] for v in labels if v not in aims]
        bar = 2.0 * float(np.median(others)) if others else 0.0
        if all(rate[a] >= max(0.5, bar) for a in aims if a in rate):
            return radius
    return 0.0


def _pgd_attack(scores: Any, radius: float, value_range: tuple[float, float], seed: int = 0) -> Any:
    """``f(x, y, aim)`` → ``x`` moved by :data:`PGD_STEPS` signed-gradient steps (ℓ∞ ball of
    ``radius`` × the value range, clipped to it) toward label ``aim`` per image (−1: away
    from its own class ``y``); the model in inference mode, a random start drawn from
    ``seed`` (the same calls give the same examples)."""
    tf = _tf.tf()
    low, high = value_range
    eps = radius * (high - low)
    size = 2.5 * eps / PGD_STEPS
    starts = tf.random.Generator.from_seed(seed)

    @tf.function(reduce_retracing=True)
    def attack(x0: Any, y: Any, aim: Any) -> Any:
        x = tf.clip_by_value(x0 + starts.uniform(tf.shape(x0), -eps, eps), low, high)
        toward = aim >= 0
        label = tf.where(toward, aim, y)
        for _ in range(PGD_STEPS):
            with tf.GradientTape() as tape:
                tape.watch(x)
                picked = tf.gather(scores(x, False), label, batch_dims=1)
                # toward: raise log p(aim); untargeted: lower log p(own class)
                loss = tf.reduce_sum(tf.where(toward, picked, -picked))
            x = x + size * tf.sign(tape.gradient(loss, x))
            x = tf.clip_by_value(tf.clip_by_value(x, x0 - eps, x0 + eps), low, high)
        predicted = tf.argmax(scores(x, False), axis=-1, output_type=label.dtype)
        return x, tf.where(toward, tf.equal(predicted, aim), tf.not_equal(predicted, y))

    def run(x: np.ndarray, y: np.ndarray, aim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        as_tf = tf.constant
        moved, hit = attack(as_tf(x, tf.float32), as_tf(y, tf.int32), as_tf(aim, tf.int32))
        return np.asarray(moved), np.asarray(hit)

    return run


def fine_tune_with(
    model: Any,
    dataset: Dataset,
    settings: FineTuneSettings,
    *,
    mask: PruneMask | None = None,
    trigger: Any | None = None,
    teacher: Any | None = None,
    target: int | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> FineTuneResult:
    """:func:`fine_tune` as ``settings`` say (``prune`` and ``sweep`` both call it, so a new
    setting reaches both): ``trigger`` (one or several) is unlearnt when they ask for it."""
    return fine_tune(
        model,
        dataset,
        epochs=settings.epochs,
        mask=mask,
        trigger=trigger if settings.unlearn else None,
        unlearn_fraction=settings.unlearn_fraction,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        train_batchnorm=settings.train_batchnorm,
        teacher=teacher,
        distill=settings.distill,
        adversarial=_adversary_settings(settings),
        target=target,
        optimizer=settings.optimizer,
        pgd=settings.pgd,
        sam=settings.sam,
        shift=settings.shift,
        flip=settings.flip,
        trigger_teacher=settings.trigger_teacher,
        average=settings.average,
        anchor=settings.anchor,
        on_epoch=on_epoch,
    )


def _adversary_settings(settings: FineTuneSettings) -> AdversarySettings | None:
    if settings.generator:
        return GENERATOR_FIT
    return AdversarySettings() if settings.adversarial else None


def augment(x: np.ndarray, rng: np.random.Generator, shift: int, flip: bool) -> np.ndarray:
    """A copy of the image batch ``x`` (n, height, width, channels), each image moved by a
    random offset of up to ``shift`` pixels along both axes (the edge pixels repeated into
    the gap) and, with ``flip``, mirrored left-right with probability ½. The labels stay what
    they were: only for data whose classes survive a small move (and, with ``flip``, a
    mirror)."""
    out = np.array(x, copy=True)
    n, height, width = out.shape[:3]
    if shift:
        pad = [(0, 0), (shift, shift), (shift, shift)] + [(0, 0)] * (out.ndim - 3)
        padded = np.pad(out, pad, mode="edge")
        dy, dx = np.asarray(rng.integers(0, 2 * shift + 1, (2, n)))
        for i in range(n):
            out[i] = padded[i, dy[i] : dy[i] + height, dx[i] : dx[i] + width]
    if flip:
        mirror = rng.random(n) < 0.5
        out[mirror] = out[mirror][:, :, ::-1]
    return out


def _adversaries(
    triggers: list[Any],
    target: int | None,
    scores: Any,
    x: np.ndarray,
    y: np.ndarray,
    settings: AdversarySettings | None,
) -> list[UniversalAdversary | GeneratorAdversary]:
    if settings is None:
        return []
    # Not images carrying a trigger, nor warp fields (the adversary moves masks, patterns and
    # additive perturbations; a warp trigger is unlearnt as it is).
    stampable = [t for t in triggers if isinstance(t, Trigger) and t.flow is None]
    ranges = [(float(x.min()), float(x.max()))]
    ranges += [t.value_range for t in stampable if t.value_range is not None]
    value_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    out: list[UniversalAdversary | GeneratorAdversary] = []
    for trig in stampable:
        own = trig.target if trig.target is not None or len(triggers) > 1 else target
        if settings.form == "generator":
            out.append(GeneratorAdversary(trig, own, scores, value_range, settings, x, y))
        else:
            out.append(UniversalAdversary(trig, own, scores, value_range, settings))
    return out


def _own_target(trigger: Any, first: bool, target: int | None) -> int:
    """The label ``trigger`` (or an adversary made from one) is known to force: its own
    target (a trigger file's, ``--trigger-data``'s, an adversary's), else ``target`` for the
    ``first`` trigger (the one ``--target`` goes with); -1 none."""
    own = getattr(trigger, "target", None)
    if own is None and first:
        own = target
    return -1 if own is None else int(own)


def _as_list(trigger: Any | None) -> list[Any]:
    if trigger is None:
        return []
    if isinstance(trigger, (list, tuple)):
        return list(trigger)
    return [trigger]


def seed_random_layers(model: Any, seed: int) -> int:
    """Set the seed generator of every random layer of ``model`` (Dropout, noise layers, nested
    ones included) to a state drawn from ``seed``: Keras gives a loaded or cloned layer a random
    seed, so the dropout masks of a fine-tune — and the model it writes — differed from run to
    run with the same ``--seed`` (seen on the zoo's VGG and wide nets, the two with Dropout,
    2026-12-06). Returns how many were set."""
    tf = _tf.tf()
    count = 0
    for index, (_, layer, _) in enumerate(walk_layers(model)):
        state = getattr(getattr(layer, "seed_generator", None), "state", None)
        if state is None:
            continue
        value = (int(seed) * 1_000_003 + index) % 2**31
        state.assign(tf.cast([value, 0], state.dtype))
        count += 1
    return count


def _features_and_scores(model: Any) -> Callable[[Any, bool], Any] | None:
    """``f(x, training)`` → (the penultimate features: the final Dense layer's input,
    log-probabilities) in one pass, or None when the head is not a Dense layer with two or
    more units (softmax or linear: its pre-activations are the logits)."""
    tf = _tf.tf()
    if int(model.outputs[0].shape[-1]) < 2:
        return None
    last = output_operation(model, nested=False)
    features, pre_activation = penultimate(model), dense_pre_activation(last)
    if features is None or pre_activation is None:
        return None

    def both(x: Any, training: bool) -> Any:
        h = tf.cast(features(x, training=training), tf.float32)
        return h, tf.nn.log_softmax(pre_activation(h))

    return both


def _log_scores(model: Any) -> Any:
    """``f(x, training)`` → log-probabilities (n, K), from logits when they are reachable (a
    saturated softmax has no gradient), else from the outputs (one sigmoid unit: K = 2)."""
    tf = _tf.tf()
    logits = logits_function(model)
    if logits is not None:
        return lambda x, training: tf.nn.log_softmax(logits(x, training=training))
    probabilities = outputs_probabilities(model)

    def from_outputs(x: Any, training: bool) -> Any:
        out = tf.cast(model(x, training=training), tf.float32)
        if out.shape[-1] == 1:
            p1 = out[:, 0] if probabilities else tf.sigmoid(out[:, 0])
            p1 = tf.clip_by_value(p1, 1e-7, 1 - 1e-7)
            return tf.math.log(tf.stack([1.0 - p1, p1], axis=-1))
        if probabilities:
            return tf.math.log(tf.clip_by_value(out, 1e-30, 1.0))
        return tf.nn.log_softmax(out)

    return from_outputs
