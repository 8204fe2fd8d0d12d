"""``kerasaudit audit MODEL --data D``: the one command that says whether a model has a backdoor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    command_line,
    emit,
    emit_json,
    handle_errors,
    prepare_output,
)
from kerasaudit.cli.context import load, open_inputs, require_paths, warn_if_unsafe
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
from kerasaudit.cli.reverse_cmd import (
    BaselineOpt,
    ImagesOpt,
    SeedOpt,
    StepsOpt,
    reverse_config,
)
from kerasaudit.cli.trigger_options import (
    TargetOpt,
    TriggerDataOpt,
    TriggerOpt,
    check_max_asr,
    trigger_request,
)
from kerasaudit.errors import BadInputError, ExitCode

# kerasaudit.stages.audit.DEFAULT_MAX_ASR in per cent, repeated so that `--help` imports
# nothing heavy (tests/test_audit.py checks that the two agree).
DEFAULT_MAX_ASR_PCT = 5.0


@handle_errors
def audit(
    model: ModelArg,
    data: DataOpt,
    trigger: TriggerOpt = None,
    trigger_data: TriggerDataOpt = None,
    target: TargetOpt = None,
    max_asr: Annotated[
        float,
        typer.Option(
            "--max-asr",
            metavar="PCT",
            help="With a known trigger: its attack success rate above this percentage is a "
            "backdoor finding (exit 1); also the bar the fix must clear.",
        ),
    ] = DEFAULT_MAX_ASR_PCT,
    fix: Annotated[
        Path | None,
        typer.Option(
            "--fix",
            help="When a backdoor is found, remove it (prune the channels its trigger drives, "
            "fine-tune while unlearning every trigger; without --trigger, as `defend` does: "
            "search the fixed model once more and unlearn what is still found) and write the "
            "fixed model here (same format as the input). Nothing is written for a clean model.",
            show_default=False,
        ),
    ] = None,
    stats: Annotated[
        Path | None,
        typer.Option(
            "--stats",
            help="Clean statistics of the model (from `scan --save-stats` or `merge-stats`) "
            "instead of the audit's own clean pass.",
            show_default=False,
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the audit as one self-contained HTML page (no scripts, no requests).",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report to this file.")
    ] = None,
    steps: StepsOpt = 1000,
    images: ImagesOpt = 1000,
    seed: SeedOpt = 0,
    baseline: BaselineOpt = "auto",
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    channels_first: ChannelsFirstOpt = None,
    limit: LimitOpt = None,
    resize: ResizeOpt = False,
    fmt: FormatOpt = OutputFormat.TABLE,
    output: OutputOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    unsafe: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
    model_output: ModelOutputOpt = None,
) -> None:
    """Audit a model for backdoors: inventory, clean statistics, trigger recovery for every
    label (or a known --trigger / --trigger-data), a verdict, and the channels each trigger
    drives (triggered − clean ℓ∞). --fix OUT removes a found backdoor. Exit 1 when a
    backdoor is found, 0 when none is."""
    consoles = Consoles(quiet)
    check_max_asr(max_asr)
    require_paths(("model", model), ("--data", data), ("--stats", stats))
    request = trigger_request(trigger, trigger_data, target)
    config = reverse_config(steps, 32, images, None, None, seed, True, 3, baseline)
    prepare_output(output, force)
    prepare_output(fix, force)
    prepare_output(html, force)
    prepare_output(report, force)
    if html is not None and html.suffix.lower() not in (".html", ".htm"):
        raise BadInputError(f"--html {html}: the page is HTML; name it *.html")
    named = [(flag, p.resolve()) for flag, p in (("--fix", fix), ("--output", output),
             ("--html", html), ("--report", report)) if p is not None]  # fmt: skip
    for i, (flag, path) in enumerate(named):
        for other, other_path in named[i + 1 :]:
            if path == other_path:
                raise BadInputError(f"{flag} and {other} name the same file")

    from kerasaudit.cli.progress import progress_bar
    from kerasaudit.formats import audit_fmt
    from kerasaudit.saving import SaveFormat, resolve_save_format, save_model
    from kerasaudit.stages.audit import AuditSettings, estimate_seconds
    from kerasaudit.stages.audit import audit as run_audit
    from kerasaudit.stages.defend import DefenceSettings

    data_args = DataArgs(x_key, y_key, scale, channels_first, limit, DEFAULT_BATCH_SIZE, resize)
    clean_stats = None
    if stats is not None:
        from kerasaudit.stages.scan import load_stats

        clean_stats = load_stats(stats)
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    warn_if_unsafe(consoles, loaded)
    chosen_format = None
    if fix is not None:
        chosen_format = resolve_save_format(SaveFormat.AUTO, loaded.format, fix)
    inputs = open_inputs(consoles, loaded, data_args, data, trigger=request)
    settings = AuditSettings(
        reverse=config, max_asr=max_asr / 100, fix=DefenceSettings() if fix else None
    )
    if inputs.trigger is None:
        estimate = estimate_seconds(loaded.model, inputs.dataset.info.shape, config)
        consoles.info(
            f"trigger recovery, every label: about {_duration(estimate)} here "
            "(early stopping: often less)"
        )
    with progress_bar(consoles, "trigger recovery (steps)") as update:
        fixed, result = run_audit(
            loaded,
            inputs.dataset,
            settings=settings,
            known=inputs.trigger,
            known_target=target,
            progress=update,
            on_step=lambda name: consoles.info(f"step: {name}"),
            clean_stats=clean_stats,
        )
    written = None
    if fixed is not None and fix is not None and chosen_format is not None:
        save_model(fixed, fix, chosen_format, force=force)
        written = str(fix)
    if report is not None:
        emit_json(audit_fmt.to_json(result, written), report, force)
    emit(
        fmt,
        lambda: audit_fmt.to_json(result, written),
        lambda console: audit_fmt.render(result, console, written),
        consoles,
        output,
        force,
    )
    if html is not None:
        _write_html(result, html, written, force)
    consoles.info(audit_fmt.summary_line(result, written, None if html is None else str(html)))
    if result.fix is not None:
        from kerasaudit.formats import defend_fmt

        done = result.fix
        warning = defend_fmt.cost_warning(done.prune.choice, "the audit data", done.verification)
        lost = defend_fmt.lost_class_warnings(result.fix.lost_classes, "the audit data")
        for line in [warning, *lost]:
            if line is not None:
                consoles.info(line)
    if result.backdoor or result.fix_left_backdoor:
        raise typer.Exit(int(ExitCode.FINDINGS))


def _write_html(result: Any, html: Path, written: str | None, force: bool) -> None:
    from datetime import UTC, datetime

    from kerasaudit import __version__
    from kerasaudit._io import write_text_atomic
    from kerasaudit.formats import audit_html
    from kerasaudit.report import reverse_figure

    figure = None if result.reverse is None else reverse_figure(result.reverse)
    page = audit_html.render(
        result,
        figure,
        written=written,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        version=__version__,
        command=command_line(),
    )
    write_text_atomic(html, page, force=force)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.0f} min"
