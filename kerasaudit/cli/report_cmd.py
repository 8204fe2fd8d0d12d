"""``kerasaudit report MODEL --data D -o report.html``: every stage, one self-contained page."""

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
    QuietOpt,
    UnsafeOpt,
    command_line,
    emit,
    handle_errors,
    prepare_output,
)
from kerasaudit.cli.context import load, open_inputs, require_paths, warn_if_unsafe
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
from kerasaudit.cli.gradcam_cmd import MethodChoice
from kerasaudit.cli.prune_cmd import CriterionChoice
from kerasaudit.cli.sweep_cmd import _parse_ratios
from kerasaudit.cli.trigger_options import (
    TargetOpt,
    TriggerDataOpt,
    TriggerOpt,
    trigger_request,
)
from kerasaudit.errors import BadInputError, ExitCode

DEFAULT_SWEEP_RATIOS = "0.05,0.1,0.2,0.3"  # kerasaudit.report.DEFAULT_SWEEP_RATIOS
DEFAULT_CRITERIA = "linf-trigger"


def _parse_criteria(text: str) -> list[CriterionChoice]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = {c.value: c for c in CriterionChoice}
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise BadInputError(
            f"--criteria: expected a comma-separated list of {', '.join(known)}; got {text!r}"
        )
    return [known[n] for n in dict.fromkeys(names)]


@handle_errors
def report(
    model: ModelArg,
    data: DataOpt,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The HTML page to write (atomically).", show_default=False
        ),
    ],
    trigger: TriggerOpt = None,
    trigger_data: TriggerDataOpt = None,
    max_asr: Annotated[
        float,
        typer.Option(
            "--max-asr",
            metavar="PCT",
            help="A trigger whose ASR is above this percentage, before or after the "
            "recommended prune, is a finding (exit 1).",
        ),
    ] = 5.0,
    target: TargetOpt = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval-data",
            help="Labelled held-out data for the before/after numbers and the Grad-CAM images "
            "(default: --data).",
            show_default=False,
        ),
    ] = None,
    reverse: Annotated[
        bool,
        typer.Option(
            "--reverse",
            help="Also reverse-engineer a trigger per label (Neural Cleanse; slow). Without "
            "--trigger, a flagged label's recovered trigger drives the sweep and prune.",
        ),
    ] = False,
    reverse_steps: Annotated[
        int | None,
        typer.Option("--reverse-steps", min=1, help="Most optimisation steps per label."),
    ] = None,
    criteria: Annotated[
        str,
        typer.Option(
            "--criteria",
            help="Comma-separated pruning criteria to sweep: linf-trigger, linf, mean, l1, l2, "
            "clp.",
        ),
    ] = DEFAULT_CRITERIA,
    sweep_ratios: Annotated[
        str, typer.Option("--sweep-ratios", help="Comma-separated pruning ratios to sweep.")
    ] = DEFAULT_SWEEP_RATIOS,
    max_acc_drop: Annotated[
        float,
        typer.Option(
            "--max-acc-drop", help="Accuracy loss budget of the recommended prune, in points."
        ),
    ] = 1.5,
    fine_tune_epochs: Annotated[
        int,
        typer.Option(
            "--fine-tune-epochs", min=0, help="Fine-tune the pruned model on --data (epochs)."
        ),
    ] = 0,
    unlearn: Annotated[
        bool,
        typer.Option("--unlearn", help="While fine-tuning, stamp some images with the trigger."),
    ] = False,
    cam_method: Annotated[
        MethodChoice, typer.Option("--cam-method", help="Grad-CAM method.")
    ] = MethodChoice.GRADCAM,
    cam_layer: Annotated[
        str | None,
        typer.Option(
            "--cam-layer",
            help="Layer to explain (default: the last conv layer).",
            show_default=False,
        ),
    ] = None,
    cam_images: Annotated[
        int, typer.Option("--cam-images", min=1, help="Images in the Grad-CAM grid.")
    ] = 8,
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    channels_first: ChannelsFirstOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    resize: ResizeOpt = False,
    fmt: FormatOpt = OutputFormat.TABLE,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    unsafe: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
    model_output: ModelOutputOpt = None,
) -> None:
    """Audit a model end to end and write one self-contained HTML page: inventory, scan,
    reverse engineering (--reverse), pruning sweep and the recommended prune (with --trigger
    and --target), and Grad-CAM before/after. Exit code 1 when the scan flags channels or
    reverse engineering flags a label."""
    require_paths(("model", model), ("--data", data), ("--eval-data", eval_data))
    from kerasaudit._io import write_text_atomic
    from kerasaudit.formats import report_html
    from kerasaudit.ranking import Criterion
    from kerasaudit.report import build_report
    from kerasaudit.stages.gradcam import CamMethod

    consoles = Consoles(quiet)
    if target is not None and trigger is None and trigger_data is None:
        raise BadInputError("--target needs --trigger (the target is the label it forces)")
    request = trigger_request(trigger, trigger_data, target)
    if not 0.0 <= max_acc_drop <= 100.0:
        raise BadInputError(f"--max-acc-drop is in points (0..100), got {max_acc_drop:g}")
    if unlearn and not fine_tune_epochs:
        raise BadInputError("--unlearn works while fine-tuning: add --fine-tune-epochs N")
    ratios = _parse_ratios(sweep_ratios)
    chosen = [Criterion(c.value) for c in _parse_criteria(criteria)]
    if output.suffix.lower() not in (".html", ".htm"):
        raise BadInputError(f"-o {output}: the report is an HTML page; name it *.html")
    prepare_output(output, force)
    data_args = DataArgs(x_key, y_key, scale, channels_first, limit, batch_size, resize)
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    warn_if_unsafe(consoles, loaded)
    inputs = open_inputs(consoles, loaded, data_args, data, eval_data, request)
    status = consoles.err.status("report")
    with status:
        result = build_report(
            loaded,
            inputs.dataset,
            eval_dataset=inputs.held_out,
            trigger=inputs.trigger,
            target=target,
            criteria=chosen,
            sweep_ratios=ratios,
            max_acc_drop=max_acc_drop / 100,
            fine_tune_epochs=fine_tune_epochs,
            unlearn=unlearn,
            cam_method=CamMethod(cam_method.value),
            cam_images=cam_images,
            cam_layer=cam_layer,
            run_reverse=reverse,
            reverse_steps=reverse_steps,
            batch_size=batch_size,
            command=command_line(),
            stage=lambda name: status.update(f"report: {name}"),
            max_asr=max_asr / 100,
        )
    write_text_atomic(output, report_html.render(result), force=force)
    for note in result.notes:
        consoles.info(f"note: {note}")
    emit(
        fmt,
        lambda: report_html.to_json(result, output=str(output)),
        lambda console: report_html.render_summary(result, console, output=str(output)),
        consoles,
        None,
        force,
    )
    consoles.info(report_html.summary_line(result, str(output)))
    if result.has_findings:
        raise typer.Exit(int(ExitCode.FINDINGS))
