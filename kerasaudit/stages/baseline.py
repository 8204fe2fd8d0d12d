"""Build a task baseline from the `reverse` reports of known-clean models (``kerasaudit baseline``).

kerasaudit ships a baseline for Fashion-MNIST only (``kerasaudit.baselines``). For another task,
run ``kerasaudit reverse`` (or ``audit``) with ``-f json`` on models of that task you trust to be
clean, then build one from those reports and the task's labelled data: per signal and label,
the median over the models of log(value) − log(the model's median value)
(:func:`kerasaudit.verdict.label_offsets`), and the class-mean fingerprint of the data, which
``--baseline auto`` would match. Pass the file to ``reverse``/``audit``/``defend`` with
``--baseline FILE``.

The thresholds come with the baseline: by default those calibrated with the shipped
Fashion-MNIST baseline (robust z-units, so they carry over in form; whether they fit another
task is what the leave-one-out check estimates). Each report is judged against a baseline built
from the *other* reports: a clean model flagged that way is a false alarm the baseline would
likely raise on a new clean model of the task. More models make both numbers better; 3 is the
minimum accepted, the shipped one has 34.

Reference models (``--reference MODEL``, clean models of the task, copied beside the file) keep
the shipped rule's veto: a label whose recovered trigger also sends at least ``transfer`` of the
references' images to it is a feature of the class, not a backdoor (``Rule.transfer``; 20 % was
chosen on Fashion-MNIST with three references, so on another task it is a starting point, not a
calibrated value). Without references the veto is off. The leave-one-out check uses the reports
as they are: their transfer was measured against whatever baseline their ``reverse`` ran with
(none for a new task), so it does not show the veto's effect.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kerasaudit.baselines import TaskBaseline, fingerprint, shipped
from kerasaudit.errors import BadInputError
from kerasaudit.verdict import RULE, Baseline, ModelEvidence, Rule, judge, label_offsets

MIN_MODELS = 3
TRANSFER = 0.2  # the veto's default share with reference models (the shipped baseline's)


@dataclass(frozen=True)
class CleanReport:
    """The evidence of one known-clean model, from a ``reverse``/``audit``/``defend`` report."""

    path: str
    model: str
    evidence: ModelEvidence
    num_classes: int
    shape: tuple[int, ...] | None  # the data's per-image shape, when the report says


@dataclass(frozen=True, eq=False)
class BaselineBuild:
    task: TaskBaseline
    reports: tuple[CleanReport, ...]
    rule_source: str  # where the thresholds come from
    # per report: what a baseline of the *other* reports flags (label list; -1: all-to-all)
    left_out: tuple[tuple[int, ...], ...]
    # per report: what the plain rule (no baseline) flags
    plain: tuple[tuple[int, ...], ...]
    data_path: str
    data_images: int

    @property
    def false_alarms(self) -> int:
        return sum(1 for flagged in self.left_out if flagged)

    @property
    def plain_false_alarms(self) -> int:
        return sum(1 for flagged in self.plain if flagged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.task.to_dict(),
            "rule_source": self.rule_source,
            "data": {"path": self.data_path, "images": self.data_images},
            "reports": [
                {
                    "path": r.path,
                    "model": r.model,
                    "left_out_flagged": list(lo),
                    "plain_flagged": list(p),
                }
                for r, lo, p in zip(self.reports, self.left_out, self.plain, strict=True)
            ],
            "left_out_false_alarms": self.false_alarms,
            "plain_false_alarms": self.plain_false_alarms,
        }


def read_report(path: Path) -> CleanReport:
    """The evidence in a JSON report of ``reverse``, ``audit`` or ``defend`` (``-f json``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read report {path}: {exc}") from exc
    section = data if isinstance(data, dict) and "evidence" in data else None
    if section is None and isinstance(data, dict) and isinstance(data.get("reverse"), dict):
        section = data["reverse"]
    if section is None or not isinstance(section.get("evidence"), dict):
        raise BadInputError(
            f"{path} has no trigger-recovery evidence: give JSON reports of `kerasaudit "
            "reverse` (or `audit`/`defend` without a known trigger) run with -f json"
        )
    try:
        evidence = ModelEvidence.from_dict(section["evidence"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{path}: malformed evidence ({exc!r})") from exc
    labels = [e.label for e in evidence.labels]
    k = section.get("num_classes")
    num_classes = int(k) if isinstance(k, int) else (max(labels) + 1 if labels else 0)
    info = section.get("data")
    shape = None
    if isinstance(info, dict) and isinstance(info.get("shape"), list):
        shape = tuple(int(d) for d in info["shape"])
    return CleanReport(str(path), str(section.get("model", path)), evidence, num_classes, shape)


def task_of(reports: Sequence[CleanReport]) -> tuple[int, tuple[int, ...] | None]:
    """The class count (and image shape, when a report has it) every report agrees on."""
    if len(reports) < MIN_MODELS:
        raise BadInputError(
            f"a baseline needs reports of at least {MIN_MODELS} clean models; got {len(reports)}"
        )
    counts = {r.num_classes for r in reports}
    if len(counts) != 1:
        raise BadInputError(f"the reports are of models with different class counts: {counts}")
    shapes = {r.shape for r in reports if r.shape is not None}
    if len(shapes) > 1:
        raise BadInputError(f"the reports were made on data of different shapes: {shapes}")
    return counts.pop(), (shapes.pop() if shapes else None)


REFERENCE_SUFFIXES = (".keras", ".h5")


def check_references(
    paths: Sequence[Path], output: Path, num_classes: int, shape: tuple[int, ...], *, force: bool
) -> tuple[str, ...]:
    """Check that each reference model loads safely (no code from the file) and classifies the
    task's images, and that its copy beside ``output`` may be written; the copies' paths."""
    if not paths:
        return ()
    from kerasaudit.evaluation import classifier_io
    from kerasaudit.loading import load_model

    names = [Path(p).name for p in paths]
    if len(set(names)) < len(names):
        raise BadInputError(f"two reference models have the same file name: {names}")
    out = []
    for path in map(Path, paths):
        if path.suffix.lower() not in REFERENCE_SUFFIXES:
            raise BadInputError(
                f"reference model {path}: a .keras or .h5 file is needed (it is copied beside "
                "the baseline and loaded on every audit that uses it)"
            )
        dest = output.parent / path.name
        if dest.exists() and not force and not _same_file(path, dest):
            raise BadInputError(f"{dest} exists; pass --force to overwrite it")
        io = classifier_io(load_model(path).model)
        if io.num_classes != num_classes or tuple(io.input_shape) != tuple(shape):
            raise BadInputError(
                f"reference model {path} takes {tuple(io.input_shape)} and outputs "
                f"{io.outputs} scores; the reports are of {num_classes} classes of {shape}"
            )
        out.append(str(dest))
    return tuple(out)


def copy_references(paths: Sequence[Path], copies: Sequence[str], *, force: bool) -> None:
    """Copy each reference model to its place beside the baseline (atomically)."""
    from kerasaudit._io import write_atomic

    for path, dest in zip(paths, copies, strict=True):
        if not _same_file(path, Path(dest)):  # one already beside the baseline stays as it is
            write_atomic(Path(dest), functools.partial(_copy, path), force=force)


def _same_file(a: Path, b: Path) -> bool:
    return b.exists() and Path(a).resolve() == b.resolve()


def _copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)


def default_rule() -> tuple[Rule, str]:
    """The thresholds calibrated with the shipped Fashion-MNIST baseline (the plain rule when
    none is shipped)."""
    for task in shipped():
        if task.baseline.name == "fashion-mnist":
            return task.baseline.rule, "the shipped fashion-mnist baseline's rule"
    return RULE, "the plain rule (kerasaudit.verdict.RULE)"


def _flagged(evidence: ModelEvidence, baseline: Baseline | None) -> tuple[int, ...]:
    verdict = judge(evidence, baseline=baseline)
    return (*verdict.flagged, *((-1,) if verdict.all_to_all else ()))


def build(
    reports: Sequence[CleanReport],
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    data_path: str,
    rule: tuple[Rule, str] | None = None,
    references: Sequence[str] = (),
    transfer: float = TRANSFER,
) -> BaselineBuild:
    """The baseline of ``reports`` (known-clean models of one task), fingerprinted with the
    task's labelled images ``x``/``y``, and its leave-one-out check. ``references``: the paths
    the baseline's reference models will have (beside its file); with none, the veto on
    triggers that move them (``Rule.transfer``) has nothing to measure and is left out."""
    num_classes, _ = task_of(reports)
    if references and not 0.0 < transfer <= 1.0:
        raise BadInputError(f"the reference share must be in (0, 1]; got {transfer}")
    chosen, source = rule or default_rule()
    chosen = replace(chosen, transfer=transfer if references else math.inf)
    evidence = [r.evidence for r in reports]
    offsets = label_offsets(evidence, num_classes)
    if not offsets:
        raise BadInputError("the reports measured too few labels for per-label offsets")
    left_out = []
    for i in range(len(evidence)):
        others = evidence[:i] + evidence[i + 1 :]
        partial = Baseline(name, label_offsets(others, num_classes), chosen, len(others))
        left_out.append(_flagged(evidence[i], partial))
    description = (
        f"built by `kerasaudit baseline` from {len(reports)} clean models' reports; "
        f"thresholds: {source}; fingerprint: {len(x):,} images of {data_path}"
    )
    if references:
        description += (
            f"; the mask and warp signals do not flag a label whose trigger sends >= "
            f"{transfer:.0%} of the {len(references)} reference models' images to it"
        )
    task = TaskBaseline(
        Baseline(name, offsets, chosen, len(reports), references=tuple(references)),
        num_classes=num_classes,
        image_shape=tuple(int(d) for d in x.shape[1:]),
        fingerprint=fingerprint(x, y, num_classes),
        description=description,
    )
    return BaselineBuild(
        task=task,
        reports=tuple(reports),
        rule_source=source,
        left_out=tuple(left_out),
        plain=tuple(_flagged(e, None) for e in evidence),
        data_path=data_path,
        data_images=len(x),
    )
