"""``kerasaudit defend MODEL --data D [--eval-data E] -o OUT``: reverse, prune, evaluate."""

from __future__ import annotations

from dataclasses import replace
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
    QuietOpt,
    UnsafeOpt,
    emit,
    emit_json,
    handle_errors,
    prepare_output,
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
from kerasaudit.cli.finetune_options import OptimizerOpt, optimizer_settings
from kerasaudit.cli.prune_cmd import parse_ratio
from kerasaudit.cli.reverse_cmd import (
    BaselineOpt,
    CompleteOpt,
    ImagesOpt,
    LabelBatchOpt,
    LabelsOpt,
    OptBatchOpt,
    RestartsOpt,
    SeedOpt,
    StepsOpt,
    ValueRangeOpt,
    parse_labels,
    reverse_config,
)
from kerasaudit.cli.trigger_options import TriggerRequest
from kerasaudit.errors import BadInputError, ExitCode


@handle_errors
def defend(
    model: ModelArg,
    data: DataOpt,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the defended model here (atomically; same format as the input unless "
            "--save-format). Nothing is written when no label is flagged.",
        ),
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval-data",
            help="Labelled held-out data for the before/after numbers (never used to defend; "
            "default: --data).",
        ),
    ] = None,
    artifacts: Annotated[
        Path | None,
        typer.Option(
            "--artifacts",
            help="Also write reverse's outputs (reverse.json, trigger files, PNGs) to this "
            "directory.",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report to this file.")
    ] = None,
    ratio: Annotated[
        str,
        typer.Option(
            "--ratio",
            "-r",
            metavar="R|auto|0",
            help="Share of the chosen layer's channels pruned; auto (as prune: ratios 0.05 "
            "and 0.2 in the three layers the recovered trigger drives hardest, measured on a "
            "held-out part of --data); 0: no pruning, unlearning only.",
        ),
    ] = "auto",
    layer: Annotated[
        list[str] | None,
        typer.Option(
            "--layer",
            "-l",
            help="Layer to prune (repeatable). Default: chosen by measurement on --data with "
            "the recovered trigger.",
        ),
    ] = None,
    fine_tune_epochs: Annotated[
        int,
        typer.Option(
            "--fine-tune-epochs",
            min=0,
            help="Epochs of fine-tuning with unlearning on --data after pruning, for each layer "
            "candidate measured on a held-back quarter of --data (0: prune only).",
        ),
    ] = 10,
    final_epochs: Annotated[
        int,
        typer.Option(
            "--final-epochs",
            min=1,
            help="Epochs of the final fine-tune with unlearning, of the chosen candidate on all "
            "of --data (longer than the candidates': distillation gives back the accuracy "
            "unlearning takes from the target class).",
        ),
    ] = 40,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Run the kept removal recipe again with a second quarter of --data held out "
            "and report its accuracy there: an estimate no choice has seen (one more "
            "fine-tune; skipped with --eval-data, whose numbers need none).",
        ),
    ] = True,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            min=1,
            help="2: after the removal, search each flagged label again on the defended "
            "model (Neural Cleanse) and unlearn what is still found, from the original model "
            "(a natural shortcut can stand in for the trigger the first time); 1: one search. "
            "Without unlearning (--fine-tune-epochs 0) there is one.",
        ),
    ] = 2,
    searches: Annotated[
        int,
        typer.Option(
            "--searches",
            min=0,
            help="Before the removal, search each flagged label again up to this many "
            "times on the original model (Neural Cleanse), each time with the triggers "
            "found so far forbidden, and unlearn what is still found under the --rounds "
            "rule: a net can answer the trigger's pattern in more places than one "
            "(0: none).",
        ),
    ] = 3,
    unlearn_fraction: Annotated[
        float | None,
        typer.Option(
            "--unlearn-fraction",
            help="Share of each fine-tuning batch stamped with the recovered trigger "
            "(default: prune's).",
            show_default=False,
        ),
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--learning-rate",
            help="Fine-tuning learning rate (default: the optimizer's, see --optimizer).",
            show_default=False,
        ),
    ] = None,
    optimizer: OptimizerOpt = None,
    max_acc_drop: Annotated[
        float,
        typer.Option(
            "--max-acc-drop", help="Accuracy budget, in points, for the automatic layer choice."
        ),
    ] = 1.5,
    adversarial: Annotated[
        bool,
        typer.Option(
            "--adversarial/--no-adversarial",
            help="Unlearn each recovered trigger also as a universal adversary that re-attacks "
            "the model before every fine-tuning step (a small patch also at random positions). "
            "On the zoo it helped position-free patches and hurt others (README).",
        ),
    ] = False,
    generalise: Annotated[
        str,
        typer.Option(
            "--generalise",
            help="diffuse: when the recovered trigger that ranks the channels is not a compact "
            "patch (a blend, a sinusoid or a warp is only approximated by Neural Cleanse), fit "
            "every recovered trigger also as an image-dependent change and unlearn it too; "
            "broken: also when it is a patch that sends under half of --data's other images "
            "to its label (an experiment); always; never (benchmarks/zoo/JOURNAL.md).",
        ),
    ] = "diffuse",
    eval_trigger: Annotated[
        str | None,
        typer.Option(
            "--eval-trigger",
            help="A known trigger to MEASURE the defence with (its ASR before/after on the "
            "evaluation data); the defence itself never sees it.",
            show_default=False,
        ),
    ] = None,
    eval_trigger_data: Annotated[
        Path | None,
        typer.Option(
            "--eval-trigger-data",
            help="Images that carry a known trigger (e.g. found in an incident; .npz/.npy as "
            "--data, labels optional) to MEASURE the defence with, instead of --eval-trigger: "
            "for blended, sinusoidal or warping triggers no spec expresses. Needs --eval-target.",
            show_default=False,
        ),
    ] = None,
    eval_target: Annotated[
        int | None,
        typer.Option(
            "--eval-target",
            help="The label --eval-trigger (or --eval-trigger-data) forces.",
            show_default=False,
        ),
    ] = None,
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
    save_format: Annotated[
        str, typer.Option("--save-format", help="auto (the input's), keras or h5.")
    ] = "auto",
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
    """Remove a backdoor without knowing its trigger: reverse (Neural Cleanse + ℓ∞ bias
    verdict); for each flagged label complete its recovered trigger, prune the channels it
    drives (linf-trigger) and fine-tune with unlearning; then evaluate before/after. Exit 1
    when a backdoor was flagged (and removed), 0 when none was found."""
    require_paths(
        ("model", model),
        ("--data", data),
        ("--eval-data", eval_data),
        ("--eval-trigger-data", eval_trigger_data),
    )
    from kerasaudit.cli.progress import progress_bar
    from kerasaudit.formats import defend_fmt, reverse_fmt
    from kerasaudit.saving import SaveFormat, resolve_save_format, save_model
    from kerasaudit.stages.defend import DefenceSettings
    from kerasaudit.stages.defend import defend as run_defend
    from kerasaudit.stages.reverse import check_artifact_dir, write_artifacts
    from kerasaudit.triggers import parse_trigger

    consoles = Consoles(quiet)
    if eval_trigger is not None and eval_trigger_data is not None:
        raise BadInputError("give --eval-trigger or --eval-trigger-data, not both")
    if eval_target is not None and eval_trigger is None and eval_trigger_data is None:
        raise BadInputError("--eval-target needs --eval-trigger or --eval-trigger-data")
    if eval_trigger_data is not None and eval_target is None:
        raise BadInputError("--eval-trigger-data needs --eval-target K (the label it forces)")
    if not 0.0 <= max_acc_drop <= 100.0:
        raise BadInputError(f"--max-acc-drop is in points (0..100), got {max_acc_drop:g}")
    try:
        requested_format = SaveFormat(save_format)
    except ValueError:
        raise BadInputError(
            f"--save-format must be auto, keras or h5, got {save_format!r}"
        ) from None
    tuning = DefenceSettings().fine_tuning
    changes: dict[str, Any] = {"epochs": fine_tune_epochs, "unlearn": fine_tune_epochs > 0}
    if unlearn_fraction is not None:
        changes["unlearn_fraction"] = unlearn_fraction
    if optimizer is not None or learning_rate is not None:  # else defend's own defaults
        changes["optimizer"], changes["learning_rate"] = optimizer_settings(
            optimizer, learning_rate, tuning.optimizer
        )
    if adversarial and not fine_tune_epochs:
        raise BadInputError("--adversarial works while fine-tuning: --fine-tune-epochs must be > 0")
    changes["adversarial"] = adversarial
    settings = DefenceSettings(
        ratio=parse_ratio(ratio, allow_zero=True),
        layers=tuple(layer or ()),
        max_acc_drop=max_acc_drop / 100,
        fine_tuning=replace(tuning, seed=seed, **changes),
        rounds=rounds,
        searches=searches,
        generalise=generalise,
        final_epochs=final_epochs,
        verify=verify and eval_data is None,
    )
    settings.check()
    config = reverse_config(
        steps, opt_batch, images, label_batch, value_range, seed, complete, restarts, baseline
    )
    chosen = parse_labels(labels)
    prepare_output(output, force)
    prepare_output(report, force)
    if artifacts is not None:
        check_artifact_dir(artifacts, force=force)
    known_spec = None if eval_trigger is None else parse_trigger(eval_trigger)
    data_args = DataArgs(x_key, y_key, scale, channels_first, limit, DEFAULT_BATCH_SIZE, resize)
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    chosen_format = None
    if output is not None:
        chosen_format = resolve_save_format(requested_format, loaded.format, output)
    known = None if known_spec is None else TriggerRequest(known_spec, None, eval_target)
    if eval_trigger_data is not None:
        known = TriggerRequest(None, eval_trigger_data, eval_target)
    inputs = open_inputs(consoles, loaded, data_args, data, eval_data, known)
    with progress_bar(consoles, "reverse (label-steps)") as update:
        defended, result = run_defend(
            loaded.model,
            inputs.dataset,
            eval_dataset=inputs.held_out,
            labels=chosen,
            reverse_config=config,
            settings=settings,
            known_trigger=inputs.trigger,
            known_target=eval_target,
            progress=update,
            on_step=lambda name: consoles.info(f"step: {name}"),
        )
    if artifacts is not None:
        write_artifacts(
            result.reverse,
            artifacts,
            force=force,
            source_model=str(model),
            report=lambda names: reverse_fmt.to_json(result.reverse, names),
        )
    written = None
    if defended is not None and output is not None and chosen_format is not None:
        save_model(defended, output, chosen_format, force=force)
        written = str(output)
    if report is not None:
        emit_json(defend_fmt.to_json(result, written), report, force)
    emit(
        fmt,
        lambda: defend_fmt.to_json(result, written),
        lambda console: defend_fmt.render(result, console, written),
        consoles,
        None,
        force,
    )
    consoles.info(defend_fmt.summary_line(result, written))
    warnings = [defend_fmt.comes_back_warning(result.checks)]
    if result.prunes:
        warnings.append(defend_fmt.cost_warning(result.prunes[-1].choice, "--data",
                                                result.verification))  # fmt: skip
    data_name = "--data" if result.on_defence_data else "--eval-data"
    warnings.extend(defend_fmt.lost_class_warnings(result.lost_classes, data_name))
    for warning in warnings:
        if warning is not None:
            consoles.info(warning)
    if result.reverse.verdict.backdoor:
        raise typer.Exit(int(ExitCode.FINDINGS))
