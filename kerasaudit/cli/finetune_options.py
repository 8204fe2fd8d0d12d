"""Fine-tuning options, shared by prune and sweep (and defend)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kerasaudit.errors import BadInputError

if TYPE_CHECKING:
    from kerasaudit.finetune import FineTuneSettings

FineTuneEpochsOpt = Annotated[
    int,
    typer.Option(
        "--fine-tune-epochs",
        min=0,
        help="Fine-tune on --data after pruning, pruned channels held at zero.",
    ),
]
UnlearnOpt = Annotated[
    bool,
    typer.Option(
        "--unlearn",
        help="While fine-tuning, stamp a share of images with the trigger (or mix in the "
        "--trigger-data images), true labels kept.",
    ),
]
UnlearnFractionOpt = Annotated[
    float,
    typer.Option("--unlearn-fraction", help="Share of each batch stamped when unlearning."),
]
LearningRateOpt = Annotated[
    float | None,
    typer.Option(
        "--learning-rate",
        help="Fine-tuning learning rate (default: 1e-4 for adam, 0.003 for sgd).",
        show_default=False,
    ),
]
OptimizerOpt = Annotated[
    str | None,
    typer.Option(
        "--optimizer",
        metavar="adam|sgd",
        help="Fine-tuning optimizer: adam (constant rate; default) or sgd (momentum 0.9, "
        "cosine decay). On the zoo sgd removed more of the backdoors but cost more accuracy "
        "(README).",
        show_default=False,
    ),
]
DistillOpt = Annotated[
    float,
    typer.Option(
        "--distill",
        help="While fine-tuning, weight (0-1) of matching the original model's outputs on clean "
        "images instead of their hard labels; triggered images learn their true class (and, "
        "see --distill-stamped, the outputs on their unstamped twin). Keeps clean accuracy "
        "with little data.",
    ),
]
DistillStampedOpt = Annotated[
    bool,
    typer.Option(
        "--distill-stamped/--no-distill-stamped",
        help="With --distill, images stamped with a trigger while unlearning also match the "
        "original model's outputs on the same image unstamped, with the --distill weight "
        "(--trigger-data images learn their true class only, unless --distill-paired). "
        "On the zoo it cost less accuracy (README).",
    ),
]
DistillPairedOpt = Annotated[
    bool,
    typer.Option(
        "--distill-paired/--no-distill-paired",
        help="With --distill-stamped: a --trigger-data image that is a stamped copy of a "
        "--data image (found by pixel distance: you stamped your own data) also matches the "
        "original model's outputs on that image. Off by default (an experiment, README).",
    ),
]
AdversarialOpt = Annotated[
    bool,
    typer.Option(
        "--adversarial/--no-adversarial",
        help="While unlearning, also let each trigger re-attack the model before every step "
        "(a universal adversary within 1.5× its size; a small patch also at random "
        "positions). On the zoo it helped position-free patches and hurt others (README).",
    ),
]
FreezeBnOpt = Annotated[
    bool,
    typer.Option(
        "--freeze-bn",
        help="Keep BatchNormalization in inference mode while fine-tuning (default: train "
        "mode, which restored more accuracy on the sample model; freeze it for BN layers "
        "with momentum 0.99 and little data).",
    ),
]


def fine_tune_settings(
    epochs: int,
    unlearn: bool,
    unlearn_fraction: float,
    learning_rate: float | None,
    freeze_bn: bool,
    seed: int = 0,
    *,
    has_trigger: bool = True,
    distill: float = 0.0,
    adversarial: bool = False,
    optimizer: str | None = None,
    distill_stamped: bool = True,
    distill_paired: bool = False,
) -> FineTuneSettings:
    from kerasaudit.finetune import FineTuneSettings

    optimizer, learning_rate = optimizer_settings(optimizer, learning_rate, "adam")

    if unlearn and not has_trigger:
        raise BadInputError("--unlearn needs --trigger (a known or reversed trigger)")
    if unlearn and not epochs:
        raise BadInputError("--unlearn works while fine-tuning: add --fine-tune-epochs N")
    if not 0.0 < unlearn_fraction < 1.0:
        raise BadInputError(f"--unlearn-fraction must be between 0 and 1, got {unlearn_fraction:g}")
    if not 0.0 <= distill <= 1.0:
        raise BadInputError(f"--distill is a weight between 0 and 1, got {distill:g}")
    if adversarial and not unlearn:
        raise BadInputError("--adversarial works while unlearning: add --unlearn")
    if distill and not epochs:
        raise BadInputError("--distill works while fine-tuning: add --fine-tune-epochs N")
    if distill_paired and not (distill_stamped and distill and unlearn):
        raise BadInputError("--distill-paired needs --unlearn, --distill and --distill-stamped")
    stamped = "paired" if distill_paired else "source"
    return FineTuneSettings(
        epochs=epochs,
        unlearn=unlearn,
        unlearn_fraction=unlearn_fraction,
        learning_rate=learning_rate,
        train_batchnorm=not freeze_bn,
        seed=seed,
        distill=distill,
        adversarial=adversarial,
        optimizer=optimizer,
        trigger_teacher=stamped if distill_stamped and distill and unlearn else "off",
    )


def optimizer_settings(
    optimizer: str | None, learning_rate: float | None, default: str
) -> tuple[str, float]:
    """(optimizer, learning rate) from the options: the command's default optimizer, and that
    optimizer's default rate, where they are not given."""
    from kerasaudit.finetune import DEFAULT_LEARNING_RATES, OPTIMIZERS

    chosen = (optimizer or default).lower()
    if chosen not in OPTIMIZERS:
        raise BadInputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer}")
    rate = DEFAULT_LEARNING_RATES[chosen] if learning_rate is None else learning_rate
    if rate <= 0:
        raise BadInputError(f"--learning-rate must be positive, got {rate:g}")
    return chosen, rate
