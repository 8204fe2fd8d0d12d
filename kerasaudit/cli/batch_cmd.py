"""``kerasaudit batch MODELS... -d D``: audit a fleet, one isolated worker per model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kerasaudit.cli.audit_cmd import DEFAULT_MAX_ASR_PCT
from kerasaudit.cli.common import (
    Consoles,
    ForceOpt,
    FormatOpt,
    OutputFormat,
    QuietOpt,
    emit,
    handle_errors,
    prepare_output,
)
from kerasaudit.cli.context import require_paths
from kerasaudit.cli.data_options import DataOpt, LimitOpt, ScaleOpt, XKeyOpt, YKeyOpt
from kerasaudit.cli.reverse_cmd import ImagesOpt, SeedOpt, StepsOpt
from kerasaudit.cli.trigger_options import TargetOpt, TriggerDataOpt, TriggerOpt, check_max_asr
from kerasaudit.errors import BadInputError


@handle_errors
def batch(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Model files, directories (searched recursively), glob patterns, or manifests "
            "(.txt/.lst, one path per line).",
            show_default=False,
        ),
    ],
    data: DataOpt,
    db: Annotated[
        Path,
        typer.Option("--db", help="The SQLite results database (created or added to)."),
    ] = Path("kerasaudit-results.sqlite"),
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip models already recorded for this data and these settings (by content "
            "hash); failed ones are audited again.",
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Models audited at once, each in a process.")
    ] = 1,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="Kill a model's worker after this long (it is retried once, then recorded "
            "as an error).",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run one Ray task per model on a cluster: 'auto' (the cluster this machine "
            "belongs to), 'host:port' or 'ray://host:10001'. Needs pip install "
            "'kerasaudit[ray]'; models and data must be at the same paths on every node.",
            show_default=False,
        ),
    ] = None,
    cpus_per_task: Annotated[
        float,
        typer.Option("--cpus-per-task", min=0.1, help="With --ray: CPUs Ray reserves per model."),
    ] = 1.0,
    sarif: Annotated[
        Path | None,
        typer.Option(
            "--sarif", help="Also write SARIF 2.1.0 (one result per finding).", show_default=False
        ),
    ] = None,
    jsonl: Annotated[
        Path | None,
        typer.Option("--jsonl", help="Also write one JSON line per model.", show_default=False),
    ] = None,
    trigger: TriggerOpt = None,
    trigger_data: TriggerDataOpt = None,
    target: TargetOpt = None,
    max_asr: Annotated[
        float,
        typer.Option(
            "--max-asr",
            metavar="PCT",
            help="With a known trigger: its ASR above this percentage is a finding.",
        ),
    ] = DEFAULT_MAX_ASR_PCT,
    steps: StepsOpt = 1000,
    images: ImagesOpt = 1000,
    seed: SeedOpt = 0,
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    limit: LimitOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Audit many models with the single-model audit's verdict, each in its own worker
    process (a hostile or broken model takes down nothing else), recording every result in a
    SQLite database. Exit 1 if any model has a backdoor, else 4 if any audit failed, else 3 if
    any model was refused, else 2 if any input was bad, else 0."""
    consoles = Consoles(quiet)
    require_paths(("--data", data), ("--trigger-data", trigger_data))
    if timeout is not None and not timeout > 0:
        raise BadInputError(f"--timeout must be positive, got {timeout:g}")
    check_max_asr(max_asr)
    for path in (sarif, jsonl):
        prepare_output(path, force)
    from kerasaudit.fleet import expand_models, jsonl_lines, run_fleet
    from kerasaudit.formats import batch_fmt

    found = expand_models(models)
    audit_args = ["-d", str(data.resolve()), "--max-asr", f"{max_asr:g}"]
    audit_args += ["--steps", str(steps), "--images", str(images), "--seed", str(seed)]
    audit_args += ["--scale", scale]
    for flag, value in (("--trigger", trigger), ("--target", target), ("--x-key", x_key),
                        ("--y-key", y_key), ("--limit", limit)):  # fmt: skip
        if value is not None:
            audit_args += [flag, str(value)]
    if trigger_data is not None:
        audit_args += ["--trigger-data", str(trigger_data.resolve())]
    where = f"on Ray ({ray})" if ray else f"{workers} worker(s)"
    consoles.info(f"batch: {len(found):,} model(s), {where}, results in {db}")
    result = run_fleet(
        found,
        data,
        audit_args,
        db=db,
        workers=workers,
        resume=resume,
        timeout=timeout,
        on_done=lambda o, i, n: consoles.info(batch_fmt.progress_line(o, i, n)),
        on_skip=lambda m: consoles.info(f"skip  {m} (already in {db})"),
        ray_address=ray,
        cpus_per_task=cpus_per_task,
    )
    from kerasaudit._io import write_text_atomic

    if sarif is not None:
        from kerasaudit.formats.sarif import to_sarif

        write_text_atomic(sarif, json.dumps(to_sarif(result), indent=2) + "\n", force=force)
    if jsonl is not None:
        write_text_atomic(jsonl, "".join(line + "\n" for line in jsonl_lines(result)), force=force)
    emit(
        fmt,
        result.to_dict,
        lambda console: batch_fmt.render(result, console),
        consoles,
        None,
        force,
    )
    consoles.info(batch_fmt.summary_line(result))
    if result.exit_code:
        raise typer.Exit(result.exit_code)
