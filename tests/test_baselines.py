"""Task baselines (kerasaudit.baselines, kerasaudit.verdict.Baseline): per-label offsets measured
on clean models, which data they apply to, and how the verdict uses them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

from kerasaudit import baselines
from kerasaudit.errors import BadInputError
from kerasaudit.verdict import (
    RULE,
    Baseline,
    LabelEvidence,
    ModelEvidence,
    Rule,
    adjust,
    judge,
    label_offsets,
    score,
)


def _evidence(masks: list[float], additive: list[float] | None = None) -> ModelEvidence:
    additive = additive or [2.0 + 0.05 * k for k in range(len(masks))]
    return ModelEvidence(
        tuple(
            LabelEvidence(k, m, True, additive_l2=a, additive_reached=True, margin=30.0)
            for k, (m, a) in enumerate(zip(masks, additive, strict=True))
        ),
        60.0,
        True,
    )


def _clean_masks(seed: int) -> list[float]:
    masks = list(60.0 * np.exp(np.random.default_rng(seed).normal(0.0, 0.1, 10)))
    masks[8] = masks[8] / 20  # label 8 is naturally easy: 20× smaller than its model's others
    return masks


@pytest.fixture(scope="module")
def sample_data() -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLES / "fmnist_val.npz") as f:
        x, y = f["x"], f["y"]
    return x.reshape(len(x), 28, 28, 1).astype(np.float32), y


def test_offsets_are_each_labels_usual_distance_from_its_models_median() -> None:
    clean = [_evidence(_clean_masks(i)) for i in range(5)]
    offsets = label_offsets(clean, 10)
    assert set(offsets) == {"mask_l1", "additive_l2", "margin", "warp_rms"} - {"warp_rms"}
    mask = np.asarray(offsets["mask_l1"])
    assert mask[8] == pytest.approx(np.median([
        math.log(m[8]) - np.median(np.log(m)) for m in map(_clean_masks, range(5))
    ]))  # fmt: skip
    assert mask[8] < -1.5 and np.all(np.abs(np.delete(mask, 8)) < 0.6)
    assert np.allclose(offsets["margin"], 0.0)  # every label's margin is the same
    adjusted = adjust(clean[0], offsets)
    expected = clean[0].labels[8].mask_l1 / math.exp(mask[8])
    assert adjusted.labels[8].mask_l1 == pytest.approx(expected)
    assert adjusted.labels[8].mask_reached and adjusted.untargeted_l1 == 60.0


def test_a_naturally_easy_label_is_not_a_target_but_an_unusually_easy_one_is() -> None:
    clean = [_evidence(_clean_masks(i)) for i in range(5)]
    baseline = Baseline("toy", label_offsets(clean, 10), RULE, len(clean))
    usual = _evidence(_clean_masks(7))
    assert judge(usual).flagged == (8,)  # compared with its own labels only: a false alarm
    assert judge(usual, baseline=baseline).flagged == ()
    backdoored = _clean_masks(7)
    backdoored[3] = 1.0  # a one-pixel trigger for label 3
    verdict = judge(_evidence(backdoored), baseline=baseline)
    assert verdict.flagged == (3,) and verdict.baseline is baseline
    assert verdict.to_dict()["baseline"]["name"] == "toy"
    strict = replace(RULE, mask_index=1e6)
    assert judge(_evidence(backdoored), strict, baseline).flagged == ()  # an explicit rule wins


def test_rule_round_trips_through_json() -> None:
    assert Rule.from_dict(json.loads(json.dumps(RULE.to_dict()))) == RULE
    never = Rule.from_dict({"mask_index": 3.0})
    assert never.mask_index == 3.0 and math.isinf(never.additive_index)
    assert never.untargeted_ratio == 0.0


def test_the_shipped_baseline_matches_fashion_mnist_in_any_scale(
    sample_data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = sample_data
    (shipped,) = baselines.shipped()
    assert shipped.baseline.name == "fashion-mnist" and shipped.baseline.models >= 20
    for data in (x, 255 * x, (x - 0.5) / 0.3):
        choice = baselines.choose("auto", data, y, 10)
        assert choice.baseline is not None and choice.baseline.name == "fashion-mnist"
        assert choice.baseline.similarity >= baselines.MATCH
        assert "fashion-mnist" in choice.reason
    few = y < 5  # data of five classes only: they are compared, the others are not
    assert baselines.choose("auto", x[few], y[few], 10).baseline is not None
    # The shipped rule is the one calibrated with the baseline, not the plain one.
    assert shipped.baseline.rule != RULE


def test_few_images_per_class_still_match_and_other_data_still_does_not(
    sample_data: tuple[np.ndarray, np.ndarray],
) -> None:
    # A mean of 20 images is noisy: uncorrected, the smallest class correlation falls below
    # MATCH for some draws; corrected for the noise measured in the data, all draws match.
    x, y = sample_data
    rng = np.random.default_rng(1)
    (shipped,) = baselines.shipped()
    raw = []
    for _ in range(5):
        take = np.concatenate([rng.choice(np.flatnonzero(y == k), 20, replace=False)
                               for k in range(10)])  # fmt: skip
        xs, ys = x[take], y[take]
        raw.append(baselines.similarity(shipped.fingerprint, baselines.fingerprint(xs, ys, 10)))
        choice = baselines.choose("auto", xs, ys, 10)
        assert choice.baseline is not None, choice.reason
        for other_x, other_y in ((xs, rng.permutation(ys)), (xs[:, ::-1], ys)):
            assert baselines.choose("auto", other_x, other_y, 10).baseline is None
    assert min(raw) < 0.95  # the correction is doing the work (uncorrected: 0.87-0.94 here)
    reliability = baselines.reliability(xs, ys, 10)
    assert np.all((reliability > 0.5) & (reliability < 1.0))
    assert np.all(baselines.reliability(x, y, 10) > reliability)  # more images, less noise
    assert np.isnan(baselines.reliability(x[:1], y[:1], 10)).all()  # one image: no estimate


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("shuffled labels", "matches at"),
        ("flipped images", "matches at"),
        ("no labels", "no labels"),
        ("other shape", "shape and classes"),
        ("other classes", "shape and classes"),
        ("labels not per image", "classes of the data to compare"),
    ],
)
def test_other_data_gets_no_baseline(
    sample_data: tuple[np.ndarray, np.ndarray], change: str, reason: str
) -> None:
    x, y = sample_data
    k = 10
    if change == "shuffled labels":
        y = np.random.default_rng(0).permutation(y)
    elif change == "flipped images":
        x = x[:, ::-1]
    elif change == "other shape":
        x = np.repeat(x, 3, axis=-1)
    elif change == "other classes":
        k = 11
    elif change == "labels not per image":
        y = np.eye(10)[y]  # one-hot (kerasaudit.data turns these into indices before this)
    choice = baselines.choose("auto", x, None if change == "no labels" else y, k)
    assert choice.baseline is None
    assert reason in choice.reason
    # ... and the user is told what the plain rule that decides instead rests on
    assert "calibrated on Fashion-MNIST models only" in choice.reason
    assert "kerasaudit baseline" in choice.reason
    off = baselines.choose("none", x, y, k)
    assert off.baseline is None and "Fashion-MNIST models only" in off.reason


def test_baseline_files_round_trip_and_bad_ones_are_refused(
    tmp_path: Path, sample_data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = sample_data
    (shipped,) = baselines.shipped()
    path = tmp_path / "mine.json"
    baselines.save(shipped, path)
    with pytest.raises(BadInputError, match="exists"):
        baselines.save(shipped, path)
    # the reference models it names are files beside it, and loading needs them
    assert shipped.baseline.references
    with pytest.raises(BadInputError, match=r"reference model .* is missing"):
        baselines.load(path)
    for reference in shipped.baseline.references:
        (tmp_path / Path(reference).name).write_bytes(Path(reference).read_bytes())
    loaded = baselines.load(path)
    assert [Path(r).parent for r in loaded.baseline.references] == [tmp_path] * len(
        shipped.baseline.references
    )
    assert loaded.baseline.rule == shipped.baseline.rule
    # the shipped references were trained on images in [0, 1]; the file says so
    assert loaded.baseline.reference_range == shipped.baseline.reference_range == (0.0, 1.0)
    assert np.allclose(loaded.fingerprint, shipped.fingerprint, atol=1e-5)
    choice = baselines.choose(str(path), x, y, 10)
    assert choice.baseline is not None and str(path) in choice.reason
    assert baselines.choose("none", x, y, 10).baseline is None
    with pytest.raises(BadInputError, match="10 classes"):
        baselines.choose(str(path), x, y, 12)
    broken = tmp_path / "broken.json"
    for text, message in (
        ("{", "cannot read"),
        ('{"format": "other"}', "not a kerasaudit baseline"),
        (json.dumps({**shipped.to_dict(), "num_classes": 3}), "do not match"),
        (json.dumps({k: v for k, v in shipped.to_dict().items() if k != "rule"}), "malformed"),
        (json.dumps({**shipped.to_dict(), "references": ["../mine.json"]}), "beside it"),
        (json.dumps({**shipped.to_dict(), "references": [7]}), "beside it"),
        (json.dumps({**shipped.to_dict(), "reference_range": [1, 0]}), "LO < HI"),
    ):
        broken.write_text(text)
        with pytest.raises(BadInputError, match=message):
            baselines.load(broken)


@pytest.mark.parametrize(
    ("transfer", "flagged"), [(math.nan, (3,)), (0.05, (3,)), (0.15, ()), (0.6, ())]
)
def test_a_small_mask_whose_trigger_moves_clean_reference_models_is_the_class_not_a_backdoor(
    transfer: float, flagged: tuple[int, ...]
) -> None:
    masks = list(60.0 * np.exp(np.random.default_rng(0).normal(0.0, 0.1, 10)))
    masks[3] = masks[3] / 30  # label 3: far smaller than any other, the mask signal alone
    evidence = _evidence(masks)
    labels = list(evidence.labels)
    labels[3] = replace(labels[3], transfer=transfer)
    evidence = replace(evidence, labels=tuple(labels))
    rule = replace(RULE, transfer=0.15)
    verdict = judge(evidence, rule)
    assert verdict.flagged == flagged
    (reasons,) = [d.reasons for d in verdict.decisions if d.label == 3]
    assert any("feature of the class" in r for r in reasons) == (not flagged)
    # the same evidence without the veto in the rule: flagged whatever the transfer
    assert judge(evidence, RULE).flagged == (3,)
    # a vetoed mask adds nothing to the several-signals score either
    index = score(evidence).labels[3].mask_index
    with_combined = replace(rule, mask_index=index * 1.05, combined=0.9)
    assert judge(evidence, with_combined).flagged == flagged
    # the transfer is evidence kept with the rest: it survives a JSON round trip
    again = ModelEvidence.from_dict(json.loads(json.dumps(evidence.to_dict())))
    assert again.labels[3].transfer == transfer or math.isnan(transfer)


def test_a_warp_that_moves_clean_reference_models_is_the_class_not_a_backdoor() -> None:
    masks = list(60.0 * np.exp(np.random.default_rng(1).normal(0.0, 0.1, 10)))
    evidence = _evidence(masks)
    warps = list(3.0 * np.exp(np.random.default_rng(2).normal(0.0, 0.1, 10)))
    warps[5] = 0.3  # label 5: a tenth of the others' warp, the warp signal alone
    labels = [
        replace(e, warp_rms=w, warp_reached=True, transfer=0.01)
        for e, w in zip(evidence.labels, warps, strict=True)
    ]
    rule = replace(RULE, transfer=0.15)
    for moved, flagged in ((0.01, (5,)), (0.75, ())):
        labels[5] = replace(labels[5], warp_transfer=moved)
        verdict = judge(replace(evidence, labels=tuple(labels)), rule)
        assert verdict.flagged == flagged
        (decision,) = [d for d in verdict.decisions if d.label == 5]
        assert ("warp" in decision.signals) == bool(flagged)
        assert any("75% of clean reference" in r for r in decision.reasons) == (not flagged)


def test_reference_models_see_the_audited_images_in_the_range_they_were_trained_on(
    sample_data: tuple[np.ndarray, np.ndarray],
) -> None:
    """The shipped references take [0, 1]: data audited in [0, 255] is mapped onto it, so the
    same trigger moves them as much; without a reference range they take the data as it is."""
    from kerasaudit.stages.reverse import LabelResult, reference_transfer

    x, y = sample_data
    x, y = x[:300], y[:300]
    (shipped,) = baselines.shipped()
    refs = shipped.baseline.references[:1]
    mask = np.full((28, 28), 0.6, np.float32)  # a strong full-image blend toward white
    pattern = np.ones((28, 28, 1), np.float32)

    def result(label: int, scale: float) -> LabelResult:
        return LabelResult(
            label, None, mask, pattern * scale, float(mask.sum()), 0.0, 0, False, 0, False,
            0.0, 0.0, float("nan"), None, None, (), False, (),
        )  # fmt: skip

    labels = (0, 8)
    in01 = reference_transfer(refs, [result(k, 1.0) for k in labels], x, y, (0.0, 1.0), (0, 1))
    in255 = reference_transfer(
        refs, [result(k, 255.0) for k in labels], x * 255, y, (0.0, 255.0), (0.0, 1.0)
    )
    as_is = reference_transfer(refs, [result(k, 1.0) for k in labels], x, y, (0.0, 1.0), None)
    assert [t for t, _ in in255] == pytest.approx([t for t, _ in in01], abs=1e-6)
    assert [t for t, _ in as_is] == pytest.approx([t for t, _ in in01], abs=1e-6)
    assert max(t for t, _ in in01) > 0.05  # the test would show a wrong mapping
    raw = reference_transfer(
        refs, [result(k, 255.0) for k in labels], x * 255, y, (0.0, 255.0), None
    )
    assert [t for t, _ in raw] != pytest.approx([t for t, _ in in01], abs=1e-3)
