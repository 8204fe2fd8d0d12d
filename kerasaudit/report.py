"""The report stage: run the audit stages on one model and gather their results (and pictures)
into a typed :class:`ReportData`, which ``kerasaudit.formats.report_html`` turns into one
self-contained HTML page.

Stages, in order: inventory → scan (clean data) → reverse engineering (``--reverse``, when the
``kerasaudit.stages.reverse`` stage is installed) → sweep of pruning ratios and the prune it
recommends (needs a trigger and its target: given, or recovered by reverse) → Grad-CAM of the
model and of the pruned model on the same images. A stage that cannot run is recorded as
:class:`Skipped` with the reason, and the page says so.
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kerasaudit import __version__
from kerasaudit.data import DataInfo, Dataset
from kerasaudit.errors import BadInputError
from kerasaudit.inventory import ModelInventory, build_inventory
from kerasaudit.loading import LoadedModel
from kerasaudit.ranking import Criterion
from kerasaudit.stages.gradcam import CamMethod, GradcamResult, gradcam
from kerasaudit.stages.prune import FineTuneSettings, PruneResult, prune
from kerasaudit.stages.scan import ScanResult, scan
from kerasaudit.stages.sweep import SweepResult, sweep
from kerasaudit.triggers import AnyTrigger, Trigger

SCHEMA = "kerasaudit.report/1"
DEFAULT_SWEEP_RATIOS = (0.05, 0.1, 0.2, 0.3)
DEFAULT_CRITERIA = (Criterion.LINF_TRIGGER,)
DEFAULT_CAM_IMAGES = 8
REVERSE_MODULE = "kerasaudit.stages.reverse"
_MAX_REVERSE_LABELS_SHOWN = 12
StageFn = Callable[[str], None]  # called with the name of each stage as it starts


@dataclass(frozen=True)
class Skipped:
    """A stage that did not run, and why (said on the page)."""

    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"ran": False, "reason": self.reason}


@dataclass(frozen=True, eq=False)
class Figure:
    png: bytes
    alt: str  # what the picture shows, for people who cannot see it


@dataclass(frozen=True, eq=False)
class ReverseSection:
    result: Any  # kerasaudit.stages.reverse.ReverseResult
    figure: Figure | None
    trigger_label: int | None  # the recovered trigger used by the later stages, if any

    @property
    def flagged(self) -> tuple[int, ...]:
        return tuple(self.result.verdict.flagged)

    def to_dict(self) -> dict[str, Any]:
        verdict = self.result.verdict
        return {
            "ran": True,
            "backdoor": verdict.backdoor,
            "flagged": [int(k) for k in verdict.flagged],
            "all_to_all": verdict.all_to_all,
            "rule": verdict.rule.describe(),
            "baseline": self.result.baseline_choice,
            "trigger_used_for_pruning": self.trigger_label,
            "seconds": self.result.seconds,
        }


@dataclass(frozen=True, eq=False)
class ReportData:
    title: str
    model_path: str
    data: DataInfo
    eval_data: DataInfo | None  # held-out data for before/after numbers and Grad-CAM images
    generated: str  # UTC, ISO 8601
    version: str
    command: str | None
    inventory: ModelInventory
    scan: ScanResult
    reverse: ReverseSection | Skipped
    trigger: dict[str, Any] | None  # Trigger.to_dict() of the trigger the later stages used
    trigger_source: str | None  # "--trigger" or "recovered by reverse (label K)"
    target: int | None
    sweep: SweepResult | Skipped
    sweep_figure: Figure | None
    prune: PruneResult | Skipped
    gradcam: GradcamResult | Skipped
    gradcam_figure: Figure | None
    seconds: float
    stage_seconds: tuple[tuple[str, float], ...]
    notes: tuple[str, ...] = field(default=())
    max_asr: float = 0.05  # a trigger working above this is a finding

    @property
    def trigger_asr(self) -> tuple[float | None, float | None]:
        """(ASR of the trigger the later stages used on the model, after the recommended
        prune): from the prune section, else the sweep's baseline."""
        if isinstance(self.prune, PruneResult):
            before = self.prune.before.asr if self.prune.before is not None else None
            after = self.prune.final.asr if self.prune.final is not None else None
            return before, after
        if isinstance(self.sweep, SweepResult):
            return self.sweep.baseline_asr, None
        return None, None

    @property
    def findings(self) -> tuple[str, ...]:
        """What makes the command exit with 1: a backdoor verdict, or a trigger that works
        (its ASR above max_asr) — before or after the recommended prune. Channels that stand
        out on clean data are leads (see the scan section), not findings."""
        found = []
        if isinstance(self.reverse, ReverseSection) and self.reverse.result.verdict.backdoor:
            labels = ", ".join(str(k) for k in self.reverse.flagged)
            what = f"label(s) {labels} flagged as backdoor target" if labels else "a backdoor"
            if self.reverse.result.verdict.all_to_all:
                what += " (all-to-all)"
            found.append(f"trigger recovery: {what}")
        before, after = self.trigger_asr
        if before is not None and before > self.max_asr:
            found.append(f"the trigger works: ASR {100 * before:.2f} % > {100 * self.max_asr:g} %")
        if after is not None and after > self.max_asr:
            found.append(
                f"the backdoor survives the recommended prune: ASR {100 * after:.2f} % > "
                f"{100 * self.max_asr:g} %"
            )
        return tuple(found)

    @property
    def has_findings(self) -> bool:
        return bool(self.findings)

    def to_dict(self) -> dict[str, Any]:
        def stage(value: Any) -> dict[str, Any] | None:
            if value is None:
                return None
            if isinstance(value, Skipped):
                return value.to_dict()
            return {"ran": True, **value.to_dict()}

        prune_summary: dict[str, Any] | None
        if isinstance(self.prune, Skipped):
            prune_summary = self.prune.to_dict()
        else:
            before, final = self.prune.before, self.prune.final
            prune_summary = {
                "ran": True,
                "criterion": str(self.prune.criterion),
                "ratio": self.prune.ratio,
                "layers": [p.layer for p in self.prune.pruned],
                "channels": sum(len(p.channels) for p in self.prune.pruned),
                "fine_tuned": self.prune.fine_tune is not None,
                "evaluated_on": self.prune.evaluated_on,
                "before": None if before is None else _headline(before),
                "after": None if final is None else _headline(final),
            }
        cam_summary: dict[str, Any] | None
        if isinstance(self.gradcam, Skipped):
            cam_summary = self.gradcam.to_dict()
        else:
            cam_summary = {
                "ran": True,
                "method": str(self.gradcam.method),
                "images": self.gradcam.count,
                "models": [m.to_dict() for m in self.gradcam.models],
            }
        sweep_summary: dict[str, Any] | None
        if isinstance(self.sweep, Skipped):
            sweep_summary = self.sweep.to_dict()
        else:
            best = self.sweep.best
            sweep_summary = {
                "ran": True,
                "ratios": list(self.sweep.ratios),
                "criteria": sorted({str(p.criterion) for p in self.sweep.points}),
                "max_acc_drop": self.sweep.max_acc_drop,
                "baseline": {
                    "accuracy": self.sweep.baseline_accuracy,
                    "asr": self.sweep.baseline_asr,
                },
                "recommended": None if best is None else best.to_dict(),
            }
        return {
            "schema": SCHEMA,
            "title": self.title,
            "model": self.model_path,
            "data": self.data.path,
            "eval_data": None if self.eval_data is None else self.eval_data.path,
            "generated": self.generated,
            "kerasaudit_version": self.version,
            "findings": list(self.findings),
            "has_findings": self.has_findings,
            "trigger": self.trigger,
            "trigger_source": self.trigger_source,
            "target": self.target,
            "sections": {
                "inventory": {
                    "ran": True,
                    "auditable_layers": len(self.inventory.auditable),
                    "params": self.inventory.params_total,
                },
                "scan": {
                    "ran": True,
                    "images": self.scan.stats.images,
                    "channels": self.scan.channel_count,
                    "flagged": self.scan.flagged_count,
                    "threshold": self.scan.threshold,
                },
                "reverse": stage(self.reverse),
                "sweep": sweep_summary,
                "prune": prune_summary,
                "gradcam": cam_summary,
            },
            "seconds": self.seconds,
            "stage_seconds": dict(self.stage_seconds),
            "notes": list(self.notes),
        }


def _headline(ev: Any) -> dict[str, Any]:
    return {"accuracy": ev.accuracy, "asr": ev.asr, "ra": ev.ra}


def reverse_available() -> bool:
    """Whether this installation has the reverse-engineering (Neural Cleanse) stage."""
    try:
        return importlib.util.find_spec(REVERSE_MODULE) is not None
    except (ImportError, ValueError):
        return False


# --- pictures ------------------------------------------------------------------------------


def _sweep_figure(result: SweepResult) -> Figure:
    from kerasaudit.plots import sweep_plot

    with tempfile.TemporaryDirectory(prefix="kerasaudit-report-") as tmp:
        path = Path(tmp) / "sweep.png"
        sweep_plot(result, path)
        png = path.read_bytes()
    layers = len({p.layer for p in result.points})
    return Figure(
        png,
        f"Clean accuracy and attack success rate against pruning ratio for {layers} layer(s)",
    )


def _gradcam_figure(result: GradcamResult) -> Figure:
    from kerasaudit.formats.gradcam_fmt import grid_png, row_name

    rows = [
        f"{row_name(m)} {variant}"
        for m in result.models
        for variant in (("clean", "triggered") if m.triggered is not None else ("clean",))
    ]
    return Figure(
        grid_png(result),
        f"{result.method.label} overlays of {result.count} images; rows: {', '.join(rows)}",
    )


def reverse_figure(result: Any) -> Figure | None:
    """Recovered masks (top) and mask × pattern (bottom) per label, flagged labels first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted(result.labels, key=lambda r: (not r.flagged, r.mask_l1))
    labels = sorted(labels[:_MAX_REVERSE_LABELS_SHOWN], key=lambda r: r.label)
    if not labels:
        return None
    low, high = result.value_range
    span = high - low if high > low else 1.0
    fig, axes = plt.subplots(2, len(labels), figsize=(1.25 * len(labels) + 1.0, 3.3), squeeze=False)
    for col, r in enumerate(labels):
        pattern = np.clip((np.asarray(r.pattern) - low) / span, 0, 1)
        mask = np.asarray(r.mask)
        fusion = pattern * mask[..., None]
        shown = fusion[..., 0] if fusion.shape[-1] == 1 else fusion[..., :3]
        axes[0][col].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1][col].imshow(
            shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1,
            interpolation="nearest",
        )  # fmt: skip
        flag = "\nFLAGGED" if r.flagged else "\n"
        axes[0][col].set_title(
            f"label {r.label}\nℓ1 {r.mask_l1:.1f}{flag}",
            fontsize=8,
            color="#b71c1c" if r.flagged else "black",
        )
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor("#b71c1c" if r.flagged else "#9e9e9e")
                spine.set_linewidth(1.5 if r.flagged else 0.6)
    axes[0][0].set_ylabel("mask", fontsize=8)
    axes[1][0].set_ylabel("mask × pattern", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")
    plt.close(fig)
    return Figure(
        buffer.getvalue(),
        "Smallest trigger (mask, and mask times pattern) recovered for each label",
    )


# --- the stage -----------------------------------------------------------------------------


def _run_reverse(
    model: Any, dataset: Dataset, steps: int | None, source: str
) -> tuple[Any, Trigger | None, int | None]:
    """Neural Cleanse via ``kerasaudit.stages.reverse``; with a flagged label, also its trigger."""
    import importlib

    reverse = importlib.import_module(REVERSE_MODULE)
    config = reverse.ReverseConfig() if steps is None else reverse.ReverseConfig(steps=steps)
    result = reverse.reverse_engineer(model, dataset, config=config)
    flagged = tuple(result.verdict.flagged)
    if not flagged:
        return result, None, None
    from kerasaudit.triggers import parse_trigger, save_trigger_file

    label = int(flagged[0])
    recovered = result.label(label)
    with tempfile.TemporaryDirectory(prefix="kerasaudit-report-") as tmp:
        path = Path(tmp) / f"trigger_label{label}.npz"
        save_trigger_file(
            path,
            recovered.mask,
            recovered.pattern,
            target=label,
            meta={"kind": "neural-cleanse", "source_model": source, "label": label},
        )
        trigger = parse_trigger(str(path)).for_data(dataset.info)
    return result, trigger, label


def build_report(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    eval_dataset: Dataset | None = None,
    trigger: AnyTrigger | None = None,
    target: int | None = None,
    criteria: Sequence[Criterion] = DEFAULT_CRITERIA,
    sweep_ratios: Sequence[float] = DEFAULT_SWEEP_RATIOS,
    max_acc_drop: float = 0.015,
    fine_tune_epochs: int = 0,
    unlearn: bool = False,
    cam_method: CamMethod = CamMethod.GRADCAM,
    cam_images: int = DEFAULT_CAM_IMAGES,
    cam_layer: str | None = None,
    run_reverse: bool = False,
    reverse_steps: int | None = None,
    batch_size: int = 128,
    command: str | None = None,
    stage: StageFn | None = None,
    max_asr: float = 0.05,
) -> ReportData:
    """Run every stage that can run on ``loaded.model`` and gather the results."""
    started = time.perf_counter()
    model = loaded.model
    source = str(loaded.path)
    timings: list[tuple[str, float]] = []
    notes: list[str] = []

    def begin(name: str) -> float:
        if stage is not None:
            stage(name)
        return time.perf_counter()

    def end(name: str, since: float) -> None:
        timings.append((name, time.perf_counter() - since))

    t = begin("inventory")
    inventory = build_inventory(loaded)
    end("inventory", t)

    t = begin("scan")
    scanned = scan(model, dataset, batch_size=batch_size, source=str(dataset.info.path))
    end("scan", t)

    reverse_section: ReverseSection | Skipped
    trigger_source = None if trigger is None else "--trigger"
    if not run_reverse:
        reverse_section = Skipped(
            "not run: pass --reverse to reverse-engineer a trigger for every label "
            "(Neural Cleanse; minutes per model)"
        )
    elif not reverse_available():
        reverse_section = Skipped(
            "not run: this installation has no reverse-engineering stage "
            f"({REVERSE_MODULE.replace('.', '/')}.py)"
        )
        notes.append("--reverse was given, but the reverse-engineering stage is not installed")
    else:
        t = begin("reverse engineering")
        result, recovered, label = _run_reverse(model, dataset, reverse_steps, source)
        used = None
        if trigger is None and recovered is not None:
            trigger, target, used = recovered, label, label
            trigger_source = f"recovered by reverse engineering (label {label})"
        reverse_section = ReverseSection(result, reverse_figure(result), used)
        end("reverse engineering", t)

    sweep_result: SweepResult | Skipped
    prune_result: PruneResult | Skipped
    pruned_model = None
    sweep_figure = None
    if trigger is None:
        why = (
            "not run: needs a trigger and its target (--trigger/--target, or a label flagged "
            "by --reverse) to measure the attack success rate"
        )
        sweep_result = Skipped(why)
        prune_result = Skipped(why)
    else:
        t = begin("sweep")
        sweep_result = sweep(
            model,
            dataset,
            trigger=trigger,
            target=target,
            criteria=criteria,
            ratios=sweep_ratios,
            max_acc_drop=max_acc_drop,
            batch_size=batch_size,
        )
        target = sweep_result.target
        sweep_figure = _sweep_figure(sweep_result)
        end("sweep", t)
        best = sweep_result.best
        if best is None:
            prune_result = Skipped(
                f"not run: no point of the sweep kept the accuracy loss within "
                f"{100 * max_acc_drop:.1f} points (raise --max-acc-drop, or sweep smaller "
                "--sweep-ratios)"
            )
        else:
            t = begin("prune")
            pruned_model, prune_result = prune(
                model,
                dataset,
                criterion=best.criterion,
                ratio=best.ratio,
                layers=(best.layer,),
                trigger=trigger,
                target=target,
                eval_dataset=eval_dataset,
                fine_tuning=(
                    FineTuneSettings(epochs=fine_tune_epochs, unlearn=unlearn)
                    if fine_tune_epochs
                    else None
                ),
                max_acc_drop=max_acc_drop,
                batch_size=batch_size,
            )
            end("prune", t)

    t = begin("grad-cam")
    cam_data = eval_dataset if eval_dataset is not None else dataset
    cams: GradcamResult | Skipped
    cam_figure = None
    try:
        cams = gradcam(
            model,
            cam_data,
            method=cam_method,
            layer=cam_layer,
            limit=cam_images,
            trigger=trigger,
            target=target,
            compare=pruned_model,
            model_source=Path(source).name,
            compare_source=None if pruned_model is None else "pruned",
        )
        cam_figure = _gradcam_figure(cams)
    except BadInputError as exc:  # e.g. no 2-D conv layer: the other sections still stand
        cams = Skipped(f"not run: {exc}")
    end("grad-cam", t)

    return ReportData(
        max_asr=max_asr,
        title=f"kerasaudit report: {Path(source).name}",
        model_path=source,
        data=dataset.info,
        eval_data=None if eval_dataset is None else eval_dataset.info,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        version=__version__,
        command=command,
        inventory=inventory,
        scan=scanned,
        reverse=reverse_section,
        trigger=None if trigger is None else trigger.to_dict(),
        trigger_source=trigger_source,
        target=target,
        sweep=sweep_result,
        sweep_figure=sweep_figure,
        prune=prune_result,
        gradcam=cams,
        gradcam_figure=cam_figure,
        seconds=time.perf_counter() - started,
        stage_seconds=tuple(timings),
        notes=tuple(notes),
    )
