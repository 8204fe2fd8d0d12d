"""Task baselines: what clean models of one task show per label, and when one applies.

The verdict compares each label's evidence with the model's other labels. On a real task some
labels are naturally easy to reach — Fashion-MNIST's "Bag" had the smallest Neural Cleanse mask
in 27 of the zoo's 34 clean models, "Shirt" the smallest additive perturbation in 23 — so a clean
model's easiest label and a backdoor's target look alike, and the thresholds had to sit above
the clean tail (45 % of the zoo's backdoors detected). A *baseline* removes that tail: the
per-label offsets of :class:`kerasaudit.verdict.Baseline`, measured on clean models of the same
task, and the rule calibrated with them.

Neither could be measured from the defender's 1,000 images alone: reference models trained on
them from scratch (81–82 % accuracy) did not show the tail ("Bag" mask offset +0.19 against
−0.93 over the zoo's clean models), and the suspect with its last layer retrained on them kept
the backdoor (mask offset of a BadNets target −1.81 against −2.46 before). So a baseline is
built from clean models of the task (``benchmarks/zoo``: ``zoo.py baseline``) and shipped.

Offsets cannot tell a clean model whose "Bag" is unusually easy from a backdoor aimed at "Bag"
(clean rebuilds' Bag masks vary 5× more between models than other labels'). A baseline file can
therefore name *reference models* — clean models of the task, files beside it — on which each
label's recovered trigger is tried (``kerasaudit.stages.reverse.reference_transfer``); the
rule's ``transfer`` says how much of their images a trigger may move before its label is
taken for the class's own features (:mod:`kerasaudit.verdict`). The shipped Fashion-MNIST
baseline names three (1.2 MB); they are loaded like any audited model (safe mode).

Which baseline applies (:func:`choose`): ``auto`` compares the audited data with each shipped
baseline's *fingerprint* — each class's mean image, standardised (zero mean, unit norm), so the
scale and offset of the pixel values do not matter — and takes the best one whose every class
correlates at ≥ :data:`MATCH`, with the same image shape and number of classes. A class mean of
a few images is noisy, which lowers its correlation with any true mean; each correlation is
therefore corrected for the noise measured in the data itself (:func:`reliability`), so 20
images per class match as well as 100 (measured on Fashion-MNIST, 20 draws each: the smallest
class correlation, uncorrected, fell to 0.87 at 20 images per class and 0.78 at 10; corrected,
≥ 0.94 and ≥ 0.90, while shuffled labels and flipped images stayed ≤ 0.69 from 10 images per
class up). Data of another task, or data without labels, gets no baseline and the plain rule
(:data:`kerasaudit.verdict.RULE`). ``none`` turns baselines off; a path loads that file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kerasaudit._io import write_text_atomic
from kerasaudit.errors import BadInputError
from kerasaudit.verdict import BASELINE_SIGNALS, Baseline, Rule

FORMAT = "kerasaudit-baseline/1"
MATCH = 0.9  # the smallest per-class correlation of mean images for a baseline to apply
MIN_CLASSES = 3  # classes present in both fingerprints for a similarity to mean anything
SHIPPED = Path(__file__).parent / "baseline_files"


@dataclass(frozen=True)
class TaskBaseline:
    """A baseline with what identifies its task."""

    baseline: Baseline
    num_classes: int
    image_shape: tuple[int, ...]
    fingerprint: np.ndarray  # (classes, pixels): standardised class means (NaN row: unseen)
    description: str = ""
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        baseline = self.baseline.to_dict()
        return {
            "format": FORMAT,
            "name": self.baseline.name,
            "description": self.description,
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "models": self.baseline.models,
            "offsets": {
                k: [None if not math.isfinite(v) else round(float(v), 4) for v in vs]
                for k, vs in self.baseline.offsets.items()
            },
            "rule": self.baseline.rule.to_dict(),
            # as the verdict's JSON names them (file names beside the file; their input range)
            **{k: baseline[k] for k in ("references", "reference_range")},
            "fingerprint": [
                [None if not math.isfinite(v) else round(float(v), 5) for v in row]
                for row in self.fingerprint
            ],
        }


@dataclass(frozen=True)
class Choice:
    """The baseline a verdict is taken against (None: the plain rule), and why."""

    baseline: Baseline | None
    reason: str


def _classes(
    x: np.ndarray, y: np.ndarray, num_classes: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(class, its images flattened, their mean image less its own mean) for each class present
    in ``y``; nothing when ``y`` is not one class index per image."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    labels = np.asarray(y).reshape(-1)
    if labels.shape[0] != flat.shape[0]:
        return
    for k in range(num_classes):
        rows = flat[labels == k]
        if len(rows):
            mean = rows.mean(axis=0)
            yield k, rows, mean - mean.mean()


def fingerprint(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Each class's mean image, flattened and standardised (zero mean, unit norm); NaN rows for
    classes absent from ``y`` or whose mean image is flat."""
    out = np.full((num_classes, math.prod(x.shape[1:])), np.nan)
    for k, _, centred in _classes(x, y, num_classes):
        norm = float(np.linalg.norm(centred))
        if norm > 0:
            out[k] = centred / norm
    return out


def reliability(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Per class, the share of its mean image's (centred) energy that is signal rather than
    sampling noise: ``s / (s + v/n)``, with ``v`` the summed per-pixel variance of the class's
    ``n`` images and ``s`` the mean's energy less its expected noise ``v/n``. A correlation
    with a noise-free mean is attenuated by ``√reliability``; :func:`similarity` undoes that.
    NaN for classes with fewer than two images."""
    out = np.full(num_classes, np.nan)
    for k, rows, centred in _classes(x, y, num_classes):
        if len(rows) < 2:
            continue
        noise = float(rows.var(axis=0, ddof=1).sum()) / len(rows)
        signal = max(float(centred @ centred) - noise, 0.0)
        out[k] = signal / (signal + noise) if signal + noise > 0 else math.nan
    return out


def similarity(a: np.ndarray, b: np.ndarray, reliable: np.ndarray | None = None) -> float:
    """The smallest correlation between the two fingerprints' rows, over the classes both have
    (NaN: fewer than :data:`MIN_CLASSES` in common, or different shapes). With ``reliable``
    (the :func:`reliability` of ``b``'s classes) each correlation is divided by its square
    root (at most 1): what it would be with a noise-free class mean."""
    if a.shape != b.shape:
        return math.nan
    both = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if reliable is not None:
        both &= np.isfinite(reliable) & (np.nan_to_num(reliable) > 0)
    if both.sum() < MIN_CLASSES:
        return math.nan
    r = np.sum(a[both] * b[both], axis=1)
    if reliable is not None:
        r = np.minimum(1.0, r / np.sqrt(reliable[both]))
    return float(np.min(r))


def load(path: Path) -> TaskBaseline:
    """A baseline file (see :meth:`TaskBaseline.to_dict`); :class:`BadInputError` if it is not."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read baseline {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInputError(f"{path} is not a kerasaudit baseline (format {FORMAT!r})")
    try:
        k = int(data["num_classes"])
        shape = tuple(int(d) for d in data["image_shape"])
        offsets = {
            name: tuple(math.nan if v is None else float(v) for v in data["offsets"][name])
            for name in BASELINE_SIGNALS
            if name in data["offsets"]
        }
        prints = np.asarray(
            [[math.nan if v is None else float(v) for v in row] for row in data["fingerprint"]],
            np.float64,
        )
        rule = Rule.from_dict(data["rule"])
        references = _references(Path(path), data.get("references") or [])
        reference_range = _reference_range(Path(path), data.get("reference_range"))
        baseline = Baseline(
            str(data["name"]),
            offsets,
            rule,
            int(data["models"]),
            references=references,
            reference_range=reference_range,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{path}: malformed baseline ({exc!r})") from exc
    if any(len(v) != k for v in offsets.values()) or prints.shape != (k, math.prod(shape)):
        raise BadInputError(f"{path}: offsets or fingerprint do not match {k} classes of {shape}")
    return TaskBaseline(baseline, k, shape, prints, str(data.get("description", "")), str(path))


def _references(path: Path, names: Sequence[Any]) -> tuple[str, ...]:
    """The reference model files a baseline file names: plain file names beside it."""
    out = []
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise BadInputError(
                f"{path}: a reference model must be a file name beside it: {name!r}"
            )
        file = path.parent / name
        if not file.is_file():
            raise BadInputError(f"{path}: its reference model {name} is missing")
        out.append(str(file))
    return tuple(out)


def _reference_range(path: Path, value: Any) -> tuple[float, float] | None:
    """The input range the reference models take ([LO, HI]; null: the audited models' own)."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and value[0] < value[1]):
        raise BadInputError(f"{path}: reference_range must be [LO, HI] with LO < HI: {value!r}")
    return float(value[0]), float(value[1])


def save(task: TaskBaseline, path: Path, *, force: bool = False) -> None:
    write_text_atomic(Path(path), json.dumps(task.to_dict()) + "\n", force=force)


def shipped() -> list[TaskBaseline]:
    return [load(p) for p in sorted(SHIPPED.glob("*.json"))]


def choose(
    spec: str,
    x: np.ndarray,
    y: np.ndarray | None,
    num_classes: int,
    candidates: Sequence[TaskBaseline] | None = None,
) -> Choice:
    """The baseline for data ``x``/``y`` of a ``num_classes`` model: ``spec`` is ``auto``
    (the best-matching of ``candidates``, default :func:`shipped`), ``none`` or a file."""
    if spec == "none":
        return _plain("baselines turned off (--baseline none)")
    shape = tuple(int(d) for d in x.shape[1:])
    if spec != "auto":
        task = load(Path(spec))
        if task.num_classes != num_classes or task.image_shape != shape:
            raise BadInputError(
                f"baseline {spec} is for {task.num_classes} classes of {task.image_shape}; "
                f"the model has {num_classes} and the data is {shape}"
            )
        match = math.nan
        if y is not None:
            match = similarity(
                task.fingerprint, fingerprint(x, y, num_classes), reliability(x, y, num_classes)
            )
        return Choice(
            replace(task.baseline, similarity=match),
            f"baseline {task.baseline.name} from {spec}" + _match_words(match),
        )
    if y is None:
        return _plain("no task baseline: the data has no labels to match one")
    mine = fingerprint(x, y, num_classes)
    reliable = reliability(x, y, num_classes)
    fitting = [
        task
        for task in (shipped() if candidates is None else candidates)
        if task.num_classes == num_classes and task.image_shape == shape
    ]
    if not fitting:
        return _plain("no task baseline for this data's shape and classes")
    scored = [(similarity(t.fingerprint, mine, reliable), t) for t in fitting]
    scored = [(match, t) for match, t in scored if math.isfinite(match)]
    if not scored:
        return _plain(f"no task baseline: fewer than {MIN_CLASSES} classes of the data to compare")
    match, task = max(scored, key=lambda t: t[0])
    if match < MATCH:
        return _plain(
            f"no task baseline: the closest, {task.baseline.name}, matches at {match:.2f} "
            f"(< {MATCH})"
        )
    return Choice(
        replace(task.baseline, similarity=match),
        f"task baseline {task.baseline.name} ({task.baseline.models} clean models)"
        + _match_words(match),
    )


# Said wherever the plain rule decides: what its thresholds rest on, and what to do instead.
PLAIN_RULE_CAVEAT = (
    "the plain rule decides, with thresholds calibrated on Fashion-MNIST models only (on a "
    "colour 32×32 task it missed a patch backdoor and flagged a clean model: "
    "benchmarks/external/colour.py); `kerasaudit baseline` builds one from clean models of "
    "your task"
)


def _plain(reason: str) -> Choice:
    return Choice(None, f"{reason}; {PLAIN_RULE_CAVEAT}")


def _match_words(match: float) -> str:
    if not math.isfinite(match):
        return ""
    return f"; the data's class means match it at r ≥ {match:.2f}"
