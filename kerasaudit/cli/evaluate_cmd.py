"""``kerasaudit evaluate MODEL --data D [--trigger T --target K] [--max-asr PCT]``."""

from __future__ import annotations

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
from kerasaudit.cli.trigger_options import (
    TargetOpt,
    TriggerDataOpt,
    TriggerOpt,
    check_max_asr,
    trigger_request,
)
from kerasaudit.errors import ExitCode

MaxAsrOpt = Annotated[
    float | None,
    typer.Option(
        "--max-asr",
        metavar="PCT",
        help="Exit 1 when the ASR is above this percentage (a CI gate).",
        show_default=False,
    ),
]


@handle_errors
def evaluate(
    model: ModelArg,
    data: DataOpt,
    trigger: TriggerOpt = None,
    trigger_data: TriggerDataOpt = None,
    target: TargetOpt = None,
    max_asr: MaxAsrOpt = None,
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
    """Clean accuracy; with a trigger, attack success rate (triggered non-target images
    classified as the target) and robust accuracy (those still classified correctly).
    Exit 1 when --max-asr is exceeded."""
    require_paths(("model", model), ("--data", data))
    from kerasaudit.cli.progress import progress_bar
    from kerasaudit.evaluation import evaluate as run_evaluation
    from kerasaudit.formats import evaluate_fmt

    consoles = Consoles(quiet)
    prepare_output(output, force)
    check_max_asr(max_asr)
    # Parsed before the model loads, so a typo fails in a moment.
    request = trigger_request(trigger, trigger_data, target)
    data_args = DataArgs(x_key, y_key, scale, channels_first, limit, batch_size, resize)
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    inputs = open_inputs(consoles, loaded, data_args, data, trigger=request)
    with progress_bar(consoles, "evaluating") as update:
        result = run_evaluation(
            loaded.model,
            inputs.dataset,
            inputs.trigger,
            target,
            None if max_asr is None else max_asr / 100,
            progress=update,
        )
    emit(
        fmt,
        lambda: evaluate_fmt.to_json(result),
        lambda console: evaluate_fmt.render(result, console),
        consoles,
        output,
        force,
    )
    consoles.info(evaluate_fmt.summary_line(result))
    if result.asr_exceeded:
        raise typer.Exit(int(ExitCode.FINDINGS))
