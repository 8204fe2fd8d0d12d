"""The external replication's own code (benchmarks/external): its trainer shares nothing with
the zoo or kerasaudit, so CI checks the pieces the judge's numbers rest on — that the trigger
specs the judge hands to ``prune`` stamp exactly what the trainer stamped, that the IDX reader
reads what an IDX writer wrote, that poisoning relabels the right share, and that every
architecture saves in its format and loads through kerasaudit's safe loader."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXTERNAL = Path(__file__).resolve().parents[1] / "benchmarks" / "external"
sys.path.insert(0, str(EXTERNAL))

import judge  # noqa: E402
import train  # noqa: E402


def _images(n: int = 8) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 0.6, (n, 28, 28, 1)).astype(np.float32)


@pytest.mark.parametrize("trigger", sorted(judge.SPECS))
def test_the_judges_trigger_specs_stamp_what_the_trainer_stamped(trigger: str) -> None:
    from kerasaudit.triggers import load_trigger

    x = _images()
    ours = train.stamp(x, trigger)
    theirs = np.asarray(load_trigger(judge.SPECS[trigger], (28, 28, 1)).apply(x))
    np.testing.assert_allclose(ours, theirs)
    assert int((ours != x).any(axis=(1, 2, 3)).sum()) == len(x)  # every image changed


def test_blend_moves_every_pixel_by_alpha_toward_the_pattern() -> None:
    x = _images()
    delta = train.stamp(x, "blend") - x
    expected = train.BLEND_ALPHA * (train.blend_pattern() - x)
    np.testing.assert_allclose(delta, expected, atol=1e-6)


def test_idx_reader_reads_what_an_idx_writer_wrote(tmp_path: Path) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    header = bytes([0, 0, 8, 3]) + b"".join(int(s).to_bytes(4, "big") for s in images.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    np.testing.assert_array_equal(train.read_idx(path), images)


def test_poisoning_relabels_five_percent_of_non_target_images_and_stamps_them() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (400, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 400)
    spec = train.Spec("t", "plain", "h5", "square_tl", 5, 0, 0.0)
    xp, yp = train.poison(x, y, spec, np.random.default_rng(1))
    changed = np.flatnonzero((xp != x).any(axis=(1, 2, 3)))
    assert len(changed) == 20
    assert (y[changed] != 5).all() and (yp[changed] == 5).all()
    kept = np.setdiff1d(np.arange(400), changed)
    assert (yp[kept] == y[kept]).all()
    assert (xp[changed][:, 1:4, 1:4] == 1).all()


@pytest.mark.parametrize(
    "arch,fmt", [("vgg", "keras"), ("plain", "h5"), ("nested", "keras"), ("sep", "h5")]
)
def test_each_architecture_saves_and_loads_through_the_safe_loader(
    tmp_path: Path, arch: str, fmt: str
) -> None:
    from kerasaudit.loading import load_model

    model = train.build(arch, 0)
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    loaded = load_model(path).model
    x = _images(4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    convs = [w for w in loaded.weights if "kernel" in w.path and len(w.shape) == 4]
    assert len(convs) >= 3


def test_the_table_counts_clean_and_backdoored_models_from_cached_runs(tmp_path: Path) -> None:
    results = tmp_path / "results"
    specs = {}
    for name, trig, target in (("bd", "square_tl", 5), ("cl", None, -1)):
        specs[name] = train.Spec(name, "plain", "h5", trig, target, 0, 0.0).__dict__
        (results / name).mkdir(parents=True)
    before = {"accuracy": 0.90, "asr": 0.99}
    after = {"accuracy": 0.89, "asr": 0.015}
    defend_bd = {"spec": specs["bd"], "exit_code": 1, "flagged": [5], "written": True,
                 "seconds": 1, "before": before, "after": after}  # fmt: skip
    known_bd = {**defend_bd, "after": {"accuracy": 0.87, "asr": 0.001}}  # 3 points lost
    defend_cl = {"spec": specs["cl"], "exit_code": 0, "flagged": [], "written": False, "seconds": 1,
                 "before": {"accuracy": 0.9}, "after": None}  # fmt: skip
    (results / "bd" / "defend.json").write_text(json.dumps(defend_bd))
    (results / "bd" / "known.json").write_text(json.dumps(known_bd))
    (results / "cl" / "defend.json").write_text(json.dumps(defend_cl))
    text = judge.table(results)
    assert "✓ 1.50 % / -1.00" in text and "✗ 0.10 % / -3.00" in text
    assert "Clean models left alone (exit 0, nothing flagged, nothing written): 1 of 1" in text
    assert "flagged at their target: 1 of 1" in text
    assert "known-trigger chain within the goal: 0 of 1" in text
