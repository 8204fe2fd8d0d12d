"""``kerasaudit prune MODEL --data D --ratio R [--criterion C] [--layer L] [-o OUT]``."""

from __future__ import annotations

from enum import StrEnum
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
    emit,
    handle_errors,
    prepare_output,
)
from kerasaudit.cli.context import load, open_extra_triggers, open_inputs, require_paths
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
from kerasaudit.cli.trigger_options import (
    TargetOpt,
    TriggerDataOpt,
    TriggerOpt,
    check_max_asr,
    trigger_request,
)
from kerasaudit.errors import BadInputError, ExitCode


class CriterionChoice(StrEnum):  # mirrors kerasaudit.ranking.Criterion without importing TF
    LINF = "linf"
    LINF_TRIGGER = "linf-trigger"
    MEAN = "mean"
    L1 = "l1"
    L2 = "l2"
    CLP = "clp"


class SaveFormatChoice(StrEnum):
    AUTO = "auto"
    KERAS = "keras"
    H5 = "h5"


def parse_ratio(text: str, *, allow_zero: bool = False) -> float | str:
    """``auto`` or a share of channels in (0, 1); with ``allow_zero`` (defend) also 0: prune
    nothing."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise BadInputError(f"--ratio takes a number in (0, 1) or auto, got {text!r}") from None
    if allow_zero and value == 0.0:
        return 0.0
    if not 0.0 < value < 1.0:
        raise BadInputError(f"--ratio must be between 0 and 1 (exclusive), got {value:g}")
    return value


AUTO_RATIOS_DEFAULT = (0.05, 0.2)  # kerasaudit.stages.prune.AUTO_RATIOS, without importing TF


def parse_shares(text: str, option: str, *, zero: bool, example: str) -> tuple[float, ...]:
    """Comma-separated shares in (0, 1) — in [0, 1) with ``zero`` — sorted, each once."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BadInputError(f"{option} takes numbers like {example}, got {text!r}") from None
    if not values or any(not 0.0 <= v < 1.0 or (v == 0.0 and not zero) for v in values):
        raise BadInputError(f"{option} must be in {'[' if zero else '('}0, 1), got {text!r}")
    return tuple(sorted(set(values)))


def parse_auto_ratios(text: str) -> tuple[float, ...]:
    """``--auto-ratios``: comma-separated shares in [0, 1) (0: a candidate that prunes
    nothing)."""
    return parse_shares(text, "--auto-ratios", zero=True, example="0,0.05,0.2")


def parse_auto_fractions(text: str | None) -> tuple[float, ...]:
    """``--auto-fractions``: comma-separated shares stamped, each in (0, 1)."""
    if text is None:
        return ()
    return parse_shares(text, "--auto-fractions", zero=False, example="0.25,0.5")


@handle_errors
def prune(
    model: ModelArg,
    data: DataOpt,
    ratio: Annotated[
        str,
        typer.Option(
            "--ratio",
            "-r",
            metavar="R|auto",
            help="Share of the chosen layer's channels to prune, in (0, 1); or auto (with "
            "linf-trigger, a trigger and --fine-tune-epochs): the --auto-ratios (0.05 and 0.2) "
            "tried in the three layers the trigger drives hardest, each fine-tuned on 75 % of "
            "--data and measured on the rest.",
        ),
    ] = "0.1",
    auto_ratios: Annotated[
        str,
        typer.Option(
            "--auto-ratios",
            metavar="R,R,...",
            help="The ratios --ratio auto tries in each candidate layer; a 0 adds one "
            "candidate that prunes nothing (fine-tuning alone), measured like the others.",
        ),
    ] = ",".join(f"{r:g}" for r in AUTO_RATIOS_DEFAULT),
    choose_epochs: Annotated[
        bool,
        typer.Option(
            "--choose-epochs/--fixed-epochs",
            help="With measured candidates (--ratio auto): also measure each after a quarter "
            "and half of --fine-tune-epochs, and fine-tune the kept one as long as its best "
            "measurement says.",
        ),
    ] = False,
    extend_to: Annotated[
        int | None,
        typer.Option(
            "--extend-to",
            metavar="N",
            min=1,
            help="With --ratio auto and --fine-tune-epochs: after the choice, fine-tune the "
            "kept candidate on, doubling its epochs up to N, while its held-out numbers "
            "improve; the result is fine-tuned that long.",
            show_default=False,
        ),
    ] = None,
    auto_fractions: Annotated[
        str | None,
        typer.Option(
            "--auto-fractions",
            metavar="F,F,...",
            help="With --ratio auto and --unlearn: each candidate is also tried with these "
            "shares of each batch stamped (instead of --unlearn-fraction), measured like the "
            "layer and ratio; the kept share fine-tunes the result.",
            show_default=False,
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="With --fine-tune-epochs and a measured choice (--ratio auto, or no --layer): "
            "run the kept recipe once more with a second quarter of --data held out and "
            "measure it there — an accuracy estimate no choice has seen (costs one more "
            "fine-tune).",
        ),
    ] = False,
    criterion: Annotated[
        CriterionChoice,
        typer.Option(
            "--criterion",
            "-c",
            help="Ranking: linf-trigger (the paper's; needs --trigger), linf (clean data), "
            "mean (Fine-Pruning), l1, l2, clp (data-free).",
        ),
    ] = CriterionChoice.LINF_TRIGGER,
    layer: Annotated[
        list[str] | None,
        typer.Option(
            "--layer",
            "-l",
            help="Layer path to prune (repeatable). Default: chosen by measurement and reported.",
        ),
    ] = None,
    trigger: TriggerOpt = None,
    trigger_data: TriggerDataOpt = None,
    target: TargetOpt = None,
    also_unlearn: Annotated[
        list[str] | None,
        typer.Option(
            "--also-unlearn",
            metavar="TRIGGER",
            help="Another known trigger, e.g. a second backdoor's (a spec or a `reverse` "
            "trigger file; repeatable): unlearnt while fine-tuning and measured like --trigger "
            "(layer candidates are judged by the worst ASR; its target is the label the "
            "original model sends it to). --trigger ranks the channels. Needs --unlearn.",
            show_default=False,
        ),
    ] = None,
    also_unlearn_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--also-unlearn-data",
            metavar="FILE",
            help="Images that carry another trigger, labelled with their true classes "
            "(repeatable): unlearnt like --also-unlearn.",
            show_default=False,
        ),
    ] = None,
    rank_also: Annotated[
        bool,
        typer.Option(
            "--rank-also/--no-rank-also",
            help="With --also-unlearn(-data) and -c linf-trigger: every known trigger ranks "
            "the channels (a channel's score is its largest robust z over the triggers); "
            "--no-rank-also: --trigger alone.",
        ),
    ] = True,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval-data",
            help="Labelled held-out data for the before/after numbers (default: --data).",
        ),
    ] = None,
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
            help="With a trigger: the backdoor counts as surviving (warning, exit 1) when the "
            "pruned model's ASR is above this percentage.",
        ),
    ] = 5.0,
    max_acc_drop: Annotated[
        float,
        typer.Option(
            "--max-acc-drop",
            help="Accuracy loss budget, in points, for the automatic layer choice.",
        ),
    ] = 1.5,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the pruned model here (atomically)."),
    ] = None,
    save_format: Annotated[
        SaveFormatChoice, typer.Option("--save-format", help="Format of -o (auto: the input's).")
    ] = SaveFormatChoice.AUTO,
    stats: Annotated[
        Path | None,
        typer.Option(
            "--stats",
            help="Rank channels by these clean statistics of the model (from `scan "
            "--save-stats`, or `merge-stats` of sharded scans) instead of a clean pass over "
            "--data; --data still serves evaluation and fine-tuning.",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report to this file.")
    ] = None,
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    channels_first: ChannelsFirstOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    resize: ResizeOpt = False,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for fine-tuning order and stamping.")
    ] = 0,
    fmt: FormatOpt = OutputFormat.TABLE,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    unsafe: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
    model_output: ModelOutputOpt = None,
) -> None:
    """Zero the kernels (and following BatchNorm γ/β) of the most suspicious channels, optionally
    fine-tune (with unlearning), and report accuracy and ASR before and after. Exit 1 when a
    given trigger still works on the pruned model (ASR above --max-asr)."""
    require_paths(
        ("model", model), ("--data", data), ("--eval-data", eval_data), ("--stats", stats)
    )
    consoles = Consoles(quiet)
    chosen_ratio = parse_ratio(ratio)
    tried_ratios = parse_auto_ratios(auto_ratios)
    if chosen_ratio != "auto" and tried_ratios != AUTO_RATIOS_DEFAULT:
        raise BadInputError("--auto-ratios needs --ratio auto")
    if choose_epochs and (chosen_ratio != "auto" or not fine_tune_epochs):
        raise BadInputError("--choose-epochs needs --ratio auto and --fine-tune-epochs")
    if extend_to is not None and (chosen_ratio != "auto" or not fine_tune_epochs):
        raise BadInputError("--extend-to needs --ratio auto and --fine-tune-epochs")
    tried_fractions = parse_auto_fractions(auto_fractions)
    if tried_fractions and (chosen_ratio != "auto" or not fine_tune_epochs or not unlearn):
        raise BadInputError("--auto-fractions needs --ratio auto, --fine-tune-epochs and --unlearn")
    if verify and (not fine_tune_epochs or (chosen_ratio != "auto" and layer)):
        raise BadInputError(
            "--verify needs --fine-tune-epochs and a measured choice (--ratio auto, or no --layer)"
        )
    if not 0.0 <= max_acc_drop <= 100.0:
        raise BadInputError(f"--max-acc-drop is in points (0..100), got {max_acc_drop:g}")
    check_max_asr(max_asr)
    request = trigger_request(trigger, trigger_data, target)
    from kerasaudit.triggers import parse_trigger

    extra_specs = [parse_trigger(text) for text in also_unlearn or []]
    for path in also_unlearn_data or []:
        require_paths(("--also-unlearn-data", path))
    if (extra_specs or also_unlearn_data) and not (unlearn and fine_tune_epochs):
        raise BadInputError(
            "--also-unlearn/--also-unlearn-data need --unlearn and --fine-tune-epochs"
        )
    if criterion is CriterionChoice.LINF_TRIGGER and request is None:
        raise BadInputError(
            "the default criterion linf-trigger (the paper's) ranks channels by what a trigger "
            "does to them: pass --trigger/--trigger-data, let `kerasaudit defend` recover one, "
            "or pick a trigger-free criterion with -c linf|mean|clp"
        )
    tuning = fine_tune_settings(
        fine_tune_epochs,
        unlearn,
        unlearn_fraction,
        learning_rate,
        freeze_bn,
        seed,
        has_trigger=request is not None,
        distill=distill,
        adversarial=adversarial,
        optimizer=optimizer,
        distill_stamped=distill_stamped,
        distill_paired=distill_paired,
    )
    prepare_output(output, force)
    prepare_output(report, force)
    data_args = DataArgs(x_key, y_key, scale, channels_first, limit, batch_size, resize)
    from kerasaudit.cli.common import emit_json
    from kerasaudit.formats import prune_fmt
    from kerasaudit.ranking import Criterion
    from kerasaudit.saving import SaveFormat, resolve_save_format, save_model
    from kerasaudit.stages.prune import prune as run_prune

    clean_stats = None
    if stats is not None:
        from kerasaudit.stages.scan import load_stats

        clean_stats = load_stats(stats)
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    chosen_format = None
    if output is not None:
        chosen_format = resolve_save_format(SaveFormat(save_format.value), loaded.format, output)
    inputs = open_inputs(consoles, loaded, data_args, data, eval_data, request)
    extra = open_extra_triggers(
        loaded, data_args, inputs.dataset, extra_specs, also_unlearn_data or []
    )
    with consoles.err.status("ranking channels, choosing layers, pruning"):
        pruned_model, result = run_prune(
            loaded.model,
            inputs.dataset,
            criterion=Criterion(criterion.value),
            ratio=chosen_ratio,
            layers=layer or (),
            trigger=inputs.trigger,
            target=target,
            eval_dataset=inputs.held_out,
            fine_tuning=tuning,
            max_acc_drop=max_acc_drop / 100,
            batch_size=batch_size,
            strict_ratio=True,
            clean_stats=clean_stats,
            known_also=extra,
            rank_known=rank_also,
            auto_ratios=tried_ratios,
            choose_epochs=choose_epochs,
            extend_to=extend_to,
            auto_fractions=tried_fractions,
            verify=verify,
        )
    if output is not None and chosen_format is not None:
        save_model(pruned_model, output, chosen_format, force=force)
    out_name = None if output is None else str(output)
    if report is not None:
        emit_json(prune_fmt.to_json(result, out_name), report, force)
    emit(
        fmt,
        lambda: prune_fmt.to_json(result, out_name),
        lambda console: prune_fmt.render(result, console),
        consoles,
        None,
        force,
    )
    consoles.info(prune_fmt.summary_line(result) + (f"; wrote {output}" if output else ""))
    if output is None:
        consoles.info("nothing written: pass -o FILE to save the pruned model")
    asr = result.worst_final_asr
    if asr is not None and asr > max_asr / 100:
        consoles.info(
            f"warning: the backdoor survives: ASR {100 * asr:.2f} % after pruning"
            f"{' (the worst known trigger)' if result.also else ''} is above "
            f"--max-asr {max_asr:g} % (more epochs with --unlearn, another --layer or ratio; "
            "`kerasaudit sweep` shows the trade-off)"
        )
        raise typer.Exit(int(ExitCode.FINDINGS))
