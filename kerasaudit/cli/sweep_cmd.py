"""``kerasaudit sweep MODEL --data D --trigger T --target K``: accuracy/ASR against ratio."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kerasaudit.cli.common import (
    Consoles,
    CustomObjectsOpt,
    ForceOpt,
    FormatOpt,
    ModelArg,
    ModelOutputOpt,
    OutputFormat,
    OutputOpt,
    QuietOpt,
    UnsafeOpt,
    emit,
    handle_errors,
    prepare_output,
)
from kerasaudit.cli.context import load, open_inputs, require_paths
from kerasaudit.cli.data_options import (
    DEFAULT_BATCH_SIZE,
    BatchSizeOpt,
    ChannelsFirstOpt,
    DataArgs,
    DataOpt,
    LimitOpt,
    ResizeOpt,
    ScaleOpt,
    XKeyOpt,
    YKeyOpt,
)
from kerasaudit.cli.finetune_options import (
    AdversarialOpt,
    DistillOpt,
    DistillPairedOpt,
    DistillStampedOpt,
    FineTuneEpochsOpt,
    FreezeBnOpt,
    LearningRateOpt,
    OptimizerOpt,
    UnlearnFractionOpt,
    UnlearnOpt,
    fine_tune_settings,
)
from kerasaudit.cli.prune_cmd import CriterionChoice
from kerasaudit.cli.trigger_options import (
    TargetOpt,
    TriggerDataOpt,
    TriggerOpt,
    check_max_asr,
    trigger_request,
)
from kerasaudit.errors import BadInputError, ExitCode

DEFAULT_RATIOS = "0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5,0.6,0.7"


def _parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise BadInputError(f"--ratios: expected comma-separated numbers, got {text!r}") from exc
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise BadInputError(f"--ratios must lie strictly between 0 and 1, got {text!r}")
    return ratios


@handle_errors
def sweep(
    model: ModelArg,
    data: DataOpt,
    trigger: TriggerOpt = None,
    trigger_data: TriggerDataOpt = None,
    target: TargetOpt = None,
    criterion: Annotated[
        list[CriterionChoice] | None,
        typer.Option("--criterion", "-c", help="Criteria to compare (repeatable; default: all)."),
    ] = None,
    layer: Annotated[
        list[str] | None,
        typer.Option(
            "--layer", "-l", help="Layers to sweep (repeatable; default: every conv layer)."
        ),
    ] = None,
    ratios: Annotated[
        str, typer.Option("--ratios", help="Comma-separated pruning ratios.")
    ] = DEFAULT_RATIOS,
    max_acc_drop: Annotated[
        float, typer.Option("--max-acc-drop", help="Accuracy loss budget, in points.")
    ] = 1.5,
    fine_tune_epochs: FineTuneEpochsOpt = 0,
    unlearn: UnlearnOpt = False,
    unlearn_fraction: UnlearnFractionOpt = 0.5,
    learning_rate: LearningRateOpt = None,
    optimizer: OptimizerOpt = None,
    freeze_bn: FreezeBnOpt = False,
    distill: DistillOpt = 0.0,
    distill_stamped: DistillStampedOpt = True,
    distill_paired: DistillPairedOpt = False,
    adversarial: AdversarialOpt = False,
    max_asr: Annotated[
        float,
        typer.Option(
            "--max-asr",
            metavar="PCT",
            help="The model's own ASR above this percentage is a finding (exit 1): the "
            "trigger works. Also reported: whether the recommendation gets below it.",
        ),
    ] = 5.0,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write every point as CSV.")
    ] = None,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot.")] = None,
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    channels_first: ChannelsFirstOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    resize: ResizeOpt = False,
    fmt: FormatOpt = OutputFormat.TABLE,
    output: OutputOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    unsafe: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
    model_output: ModelOutputOpt = None,
) -> None:
    """Accuracy, ASR and RA against pruning ratio for criteria × layers; recommends the
    smallest ratio with the lowest ASR whose accuracy loss stays within --max-acc-drop."""
    require_paths(("model", model), ("--data", data))
    from kerasaudit._io import write_atomic, write_text_atomic
    from kerasaudit.cli.progress import progress_bar
    from kerasaudit.formats import sweep_fmt
    from kerasaudit.plots import sweep_plot
    from kerasaudit.ranking import Criterion
    from kerasaudit.stages.sweep import sweep as run_sweep

    consoles = Consoles(quiet)
    request = trigger_request(trigger, trigger_data, target)
    if request is None:
        raise BadInputError(
            "sweep needs --trigger or --trigger-data (a known trigger, or a file from `reverse`)"
        )
    if not 0.0 <= max_acc_drop <= 100.0:
        raise BadInputError(f"--max-acc-drop is in points (0..100), got {max_acc_drop:g}")
    ratio_list = _parse_ratios(ratios)
    check_max_asr(max_asr)
    tuning = fine_tune_settings(
        fine_tune_epochs,
        unlearn,
        unlearn_fraction,
        learning_rate,
        freeze_bn,
        has_trigger=True,
        distill=distill,
        adversarial=adversarial,
        optimizer=optimizer,
        distill_stamped=distill_stamped,
        distill_paired=distill_paired,
    )
    for path in (output, csv_path, plot_path):
        prepare_output(path, force)
    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise BadInputError(f"--plot {plot_path}: the plot is a PNG; name it *.png")
    criteria = [Criterion(c.value) for c in (criterion or list(CriterionChoice))]
    data_args = DataArgs(x_key, y_key, scale, channels_first, limit, batch_size, resize)
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    inputs = open_inputs(consoles, loaded, data_args, data, trigger=request)
    with progress_bar(consoles, "sweeping layers") as update:
        result = run_sweep(
            loaded.model,
            inputs.dataset,
            trigger=inputs.trigger,
            target=target,
            criteria=criteria,
            layers=layer or (),
            ratios=ratio_list,
            max_acc_drop=max_acc_drop / 100,
            batch_size=batch_size,
            progress=update,
            fine_tuning=tuning if tuning.epochs else None,
        )
    if csv_path is not None:
        write_text_atomic(csv_path, sweep_fmt.to_csv(result), force=force)
    if plot_path is not None:
        write_atomic(plot_path, lambda tmp: sweep_plot(result, tmp), force=force)
    emit(
        fmt,
        lambda: sweep_fmt.to_json(result),
        lambda c: sweep_fmt.render(result, c),
        consoles,
        output,
        force,
    )
    consoles.info(sweep_fmt.summary_line(result))
    best = result.best
    if best is not None and best.asr is not None and best.asr > max_asr / 100:
        consoles.info(
            f"warning: no point within the accuracy budget gets the ASR below --max-asr "
            f"{max_asr:g} % (best {100 * best.asr:.2f} %): the backdoor survives pruning alone"
        )
    if result.baseline_asr is not None and result.baseline_asr > max_asr / 100:
        raise typer.Exit(int(ExitCode.FINDINGS))
