"""``kerasaudit reverse MODEL --data D [--labels 0,3,5] [--steps N] [-o DIR]``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kerasaudit.cli.common import (
    Consoles,
    CustomObjectsOpt,
    ForceOpt,
    FormatOpt,
    ModelArg,
    ModelOutputOpt,
    OutputFormat,
    QuietOpt,
    UnsafeOpt,
    emit,
    handle_errors,
)
from kerasaudit.cli.context import load, open_inputs, require_paths
from kerasaudit.cli.data_options import (
    DEFAULT_BATCH_SIZE,
    ChannelsFirstOpt,
    DataArgs,
    DataOpt,
    LimitOpt,
    ResizeOpt,
    ScaleOpt,
    XKeyOpt,
    YKeyOpt,
)
from kerasaudit.errors import BadInputError, ExitCode

if TYPE_CHECKING:
    from kerasaudit.stages.reverse import ReverseConfig

LabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help="Only these labels, e.g. 0,3,5 (default: all). The verdict needs at least 3.",
        show_default=False,
    ),
]
StepsOpt = Annotated[
    int,
    typer.Option(
        "--steps",
        min=1,
        help="Most optimisation steps per label (each: --opt-batch images through the model "
        "forward and backward). Labels stop early once their mask stops shrinking.",
    ),
]
OptBatchOpt = Annotated[
    int,
    typer.Option("--opt-batch", min=1, help="Clean images per optimisation step (NC: 32)."),
]
ImagesOpt = Annotated[
    int,
    typer.Option(
        "--images", min=1, help="Clean images for the optimisation (the first N of --data)."
    ),
]
LabelBatchOpt = Annotated[
    int | None,
    typer.Option(
        "--label-batch",
        min=1,
        help="Labels optimised at once (default: all). Memory per step grows with "
        "label-batch × opt-batch images.",
        show_default=False,
    ),
]
CompleteOpt = Annotated[
    bool,
    typer.Option(
        "--complete/--no-complete",
        help="Complete each flagged label's trigger: NC restarts voted into a core, grown by one "
        "pixel to the backdoor's footprint (the trigger file and defend use it). "
        "Measured: the real trigger's ASR after defend fell from 2.2-2.5 % to 1.6-1.7 %.",
    ),
]
RestartsOpt = Annotated[
    int,
    typer.Option(
        "--restarts",
        min=1,
        help="NC runs per flagged label for the completion's majority vote (this one included).",
    ),
]
ValueRangeOpt = Annotated[
    str | None,
    typer.Option(
        "--value-range",
        metavar="LO,HI",
        help="Range of the pattern in model input space (default: [0,1] or [0,255] when the "
        "data lies there, else the data's min..max).",
        show_default=False,
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for initialisation and batches.")]
BaselineOpt = Annotated[
    str,
    typer.Option(
        "--baseline",
        metavar="auto|none|FILE",
        help="Judge each label against what clean models of the task usually show for it "
        "(some labels are naturally easy to reach). auto: a shipped baseline whose class "
        "means match the data's (Fashion-MNIST); none: the plain rule; FILE: that baseline.",
    ),
]


def parse_labels(text: str | None) -> list[int] | None:
    if text is None:
        return None
    labels = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise BadInputError(f"--labels takes label numbers such as 0,3,5; got {part!r}")
        labels.append(int(part))
    if not labels:
        raise BadInputError("--labels names no label")
    return labels


def parse_value_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise BadInputError(f"--value-range takes LO,HI, e.g. 0,1; got {text!r}") from None
    if not low < high:
        raise BadInputError(f"--value-range needs LO < HI, got {text!r}")
    return low, high


def reverse_config(
    steps: int,
    opt_batch: int,
    images: int,
    label_batch: int | None,
    value_range: str | None,
    seed: int,
    complete: bool,
    restarts: int,
    baseline: str = "auto",
) -> ReverseConfig:
    """The checked ``ReverseConfig`` of the options above (in their order; defend shares them)."""
    from kerasaudit.stages.reverse import ReverseConfig

    config = ReverseConfig(
        steps=steps,
        batch_size=opt_batch,
        images=images,
        label_batch=label_batch,
        value_range=parse_value_range(value_range),
        seed=seed,
        complete=complete,
        restarts=restarts,
        baseline=baseline,
    )
    config.check()
    return config


@handle_errors
def reverse(
    model: ModelArg,
    data: DataOpt,
    labels: LabelsOpt = None,
    steps: StepsOpt = 1000,
    opt_batch: OptBatchOpt = 32,
    images: ImagesOpt = 1000,
    label_batch: LabelBatchOpt = None,
    value_range: ValueRangeOpt = None,
    seed: SeedOpt = 0,
    complete: CompleteOpt = True,
    restarts: RestartsOpt = 3,
    baseline: BaselineOpt = "auto",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Directory for reverse.json, trigger_label{K}.npz and mask/pattern PNGs of "
            "each flagged label (created if missing; existing files need --force).",
        ),
    ] = None,
    all_images: Annotated[
        bool, typer.Option("--all-images", help="With -o: PNGs for every label, not only flagged.")
    ] = False,
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    channels_first: ChannelsFirstOpt = None,
    limit: LimitOpt = None,
    resize: ResizeOpt = False,
    fmt: FormatOpt = OutputFormat.TABLE,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    unsafe: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
    model_output: ModelOutputOpt = None,
) -> None:
    """Neural Cleanse: recover the smallest trigger that sends clean images to each label, with
    the other engines' evidence per label (smallest additive perturbation, smallest warp field,
    largest reachable margin, the recovered trigger's ℓ∞ lift), then flag the labels whose
    evidence stands out against the other labels (thresholds calibrated on the zoo). Exit 1
    when a label is flagged. Each flagged label's trigger is then completed (--restarts NC runs
    voted into a core, grown to the backdoor's footprint).

    Cost per label: at most --steps optimisation steps of --opt-batch stamped images, forward
    and backward (labels stop early once their mask stops shrinking). All labels run batched;
    measured ~18 ms per label-step on 2 CPU cores for the 28×28 sample CNN, i.e. ~18 s per
    label at 1,000 steps (about 3 min for 10 labels); --labels and --steps bound it. The
    additive and warp searches (500 steps each) and the margin search add about as much again
    (measured 47 + 58 + 22 s for the sample CNN's 10 labels).

    Trigger-free defence, step by step (or all at once with `kerasaudit defend`):
    reverse M --data D -o rev/ ; prune M --data D --trigger rev/trigger_labelK.npz
    --criterion linf-trigger --ratio 0.25 --fine-tune-epochs 10 --unlearn -o pruned.keras ;
    evaluate pruned.keras --data HELD_OUT --trigger rev/trigger_labelK.npz"""
    require_paths(("model", model), ("--data", data))
    from kerasaudit.cli.progress import progress_bar
    from kerasaudit.formats import reverse_fmt
    from kerasaudit.stages.reverse import check_artifact_dir, reverse_engineer, write_artifacts

    consoles = Consoles(quiet)
    chosen = parse_labels(labels)
    config = reverse_config(
        steps, opt_batch, images, label_batch, value_range, seed, complete, restarts, baseline
    )
    if output is not None:
        check_artifact_dir(output, force=force)
    data_args = DataArgs(x_key, y_key, scale, channels_first, limit, DEFAULT_BATCH_SIZE, resize)
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    dataset = open_inputs(consoles, loaded, data_args, data).dataset
    with progress_bar(consoles, "reversing (label-steps)") as update:
        result = reverse_engineer(
            loaded.model, dataset, labels=chosen, config=config, progress=update
        )
    files: list[str] = []
    if output is not None:
        written = write_artifacts(
            result,
            output,
            all_images=all_images,
            force=force,
            source_model=str(model),
            report=lambda names: reverse_fmt.to_json(result, names),
        )
        files = [str(p) for p in written]
    emit(
        fmt,
        lambda: reverse_fmt.to_json(result, files),
        lambda console: reverse_fmt.render(result, console, files),
        consoles,
        None,
        force,
    )
    consoles.info(reverse_fmt.summary_line(result))
    if result.verdict.backdoor:
        raise typer.Exit(int(ExitCode.FINDINGS))
