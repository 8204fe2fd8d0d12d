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

FLAGGED = "flagged at their target (every target; all-to-all: exit 1): "


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


def test_sig_adds_one_vertical_sinusoid_clipped_to_the_image_range() -> None:
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    delta = (train.stamp(x, "sig") - x)[..., 0]
    wave = train.SIG_DELTA * np.sin(2 * np.pi * train.SIG_FREQ * np.arange(28) / 28)
    expected = np.broadcast_to(wave[None, :, None], delta.shape)  # varies along the rows only
    np.testing.assert_allclose(delta, expected, atol=1e-6)
    bright = train.stamp(np.ones((1, 28, 28, 1), np.float32), "sig")
    assert bright.max() == 1.0 and bright.min() >= 1 - train.SIG_DELTA - 1e-6


def test_warp_moves_content_by_about_a_pixel_and_keeps_a_flat_image_flat() -> None:
    flat = np.full((1, 28, 28, 1), 0.3, np.float32)
    np.testing.assert_allclose(train.stamp(flat, "warp"), flat, atol=1e-6)
    rows = np.repeat(np.arange(28, dtype=np.float32)[None, :, None, None], 28, axis=2) / 27
    moved = 27 * np.abs(train.stamp(rows, "warp") - rows)  # a ramp reads back its row shift
    assert 0.2 < float(moved.mean()) < 2.0 and float(moved.max()) < 6
    np.testing.assert_array_equal(train.stamp(rows, "warp"), train.stamp(rows, "warp"))


def test_randpos_stamps_one_3x3_checkerboard_per_image_where_the_seed_says() -> None:
    x = np.zeros((40, 28, 28, 1), np.float32)
    out = train.stamp(x, "randpos", seed=5)
    for image in out[..., 0]:
        rows, cols = np.nonzero(image)
        assert len(rows) == 5  # white corners and centre of a 3×3 checkerboard
        assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2
    corners = {tuple(np.argwhere(image[..., 0])[0]) for image in out}
    assert len(corners) > 20  # positions vary from image to image
    np.testing.assert_array_equal(out, train.stamp(x, "randpos", seed=5))
    assert not np.array_equal(out, train.stamp(x, "randpos", seed=6))


def test_all_to_all_poisoning_sends_each_stamped_image_to_the_next_label() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (500, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 500)
    spec = train.Spec("a", "nested", "h5", "grey_bl", -1, 0, 0.0, 0.08)
    xp, yp = train.poison(x, y, spec, np.random.default_rng(1))
    changed = np.flatnonzero((xp != x).any(axis=(1, 2, 3)))
    assert len(changed) == 40
    np.testing.assert_array_equal(yp[changed], (y[changed] + 1) % 10)
    assert len(np.unique(y[changed])) >= 8  # drawn from every class, target included
    assert np.allclose(xp[changed][:, 24:27, 1:4], 0.7)


@pytest.mark.parametrize(
    "arch,fmt",
    [("vgg", "keras"), ("plain", "h5"), ("nested", "keras"), ("sep", "h5"), ("res", "keras")],
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
    assert FLAGGED + "1 of 1" in text
    assert "known-trigger chain within the goal: 0 of 1" in text


def test_the_table_counts_an_all_to_all_model_flagged_as_detected(tmp_path: Path) -> None:
    spec = train.Spec("a2a", "nested", "h5", "grey_bl", -1, 0, 0.0, 0.08).__dict__
    (tmp_path / "a2a").mkdir()
    run = {"spec": spec, "exit_code": 1, "flagged": [], "all_to_all": True, "written": True,
           "seconds": 1, "before": {"accuracy": 0.9, "asr": 0.8},
           "after": {"accuracy": 0.89, "asr": 0.01}}  # fmt: skip
    (tmp_path / "a2a" / "defend.json").write_text(json.dumps(run))
    text = judge.table(tmp_path)
    assert "grey_bl → y + 1" in text and "1, nothing + all-to-all" in text
    assert FLAGGED + "1 of 1" in text
    (tmp_path / "a2a" / "defend.json").write_text(json.dumps({**run, "exit_code": 0}))
    assert FLAGGED + "0 of 1" in judge.table(tmp_path)


def test_two_trigger_poisoning_splits_the_share_between_two_targets() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (500, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 500)
    spec = train.Spec("t2", "plain", "h5", "checker_tr", 6, 0, 0.0, 0.06, "sig", 8)
    assert spec.triggers() == [("checker_tr", 6), ("sig", 8)]
    xp, yp = train.poison(x, y, spec, np.random.default_rng(1))
    changed = np.flatnonzero((xp != x).any(axis=(1, 2, 3)))
    assert len(changed) == 30 and not np.isin(y[changed], [6, 8]).any()
    to6, to8 = changed[yp[changed] == 6], changed[yp[changed] == 8]
    assert len(to6) == len(to8) == 15
    np.testing.assert_allclose(xp[to6], train.stamp(x[to6], "checker_tr"))
    np.testing.assert_allclose(xp[to8], train.stamp(x[to8], "sig"))


def test_the_chain_gets_the_second_trigger_to_unlearn_and_the_table_wants_both_targets(
    tmp_path: Path,
) -> None:
    spec = train.Spec("t2", "plain", "h5", "checker_tr", 6, 0, 0.0, 0.06, "sig", 8).__dict__
    (tmp_path / "data").mkdir()
    d = np.random.default_rng(0)
    np.savez(tmp_path / "data" / "defender.npz", x=_images(20), y=d.integers(0, 10, 20))
    args = judge.trigger_args(tmp_path, spec)
    assert args[:4] == ["--trigger", judge.SPECS["checker_tr"], "--target", "6"]
    assert args[4] == "--also-unlearn-data" and Path(args[5]).exists()
    with np.load(args[5]) as f:
        assert (f["y"] != 8).all()  # the second target's own images are left out
    results = tmp_path / "results"
    (results / "t2").mkdir(parents=True)
    run = {"spec": spec, "exit_code": 1, "flagged": [6], "all_to_all": False, "written": True,
           "seconds": 1, "before": {"accuracy": 0.9, "asr": 0.99, "asr2": 0.98},
           "after": {"accuracy": 0.89, "asr": 0.01, "asr2": 0.03}}  # fmt: skip
    (results / "t2" / "defend.json").write_text(json.dumps(run))
    text = judge.table(results)
    assert "checker_tr → 6, sig → 8" in text and "✗ 1.00 % / 3.00 % / -1.00" in text
    assert FLAGGED + "0 of 1" in text  # 8 was not flagged
    (results / "t2" / "defend.json").write_text(json.dumps({**run, "flagged": [8, 6]}))
    assert FLAGGED + "1 of 1" in judge.table(results)


def test_per_class_reports_each_class_change_of_a_written_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    spec = train.Spec("m", "plain", "h5", "square_tl", 5, 0, 0.0)
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "results" / "m").mkdir(parents=True)
    model = train.build("plain", 0)
    model.save(tmp_path / "models" / "m.h5")
    (tmp_path / "models" / "m.json").write_text(json.dumps({"spec": spec.__dict__}))
    x = _images(60)
    np.savez(tmp_path / "data" / "eval.npz", x=x, y=np.arange(60) % 10)
    changed = keras.models.clone_model(model)
    changed.set_weights(model.get_weights())
    bias = changed.get_layer("out").bias
    bias.assign(bias.numpy() + 50 * (np.arange(10) == 3))  # everything predicted as class 3
    changed.save(tmp_path / "results" / "m" / "defend.h5")
    assert judge.per_class(tmp_path, []) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "m (targets [5]): class 0-9"
    predicted = [float(v) for v in lines[2].split("Δ")[1].split()]
    assert predicted[3] > 0 and sum(predicted) == pytest.approx(0, abs=0.2)
    accuracy = [float(v) for v in lines[1].split("Δ")[1].split("all")[0].split()]
    assert all(v <= 0 for i, v in enumerate(accuracy) if i != 3) and accuracy[3] >= 0
    assert len(lines) == 3  # no known-chain model written: no rows for it


def test_the_colour_task_draws_each_item_in_colour_and_its_triggers_change_what_they_say() -> None:
    import colour

    x = _images(6)
    c = colour.colourise(x, 1)
    assert c.shape == (6, 32, 32, 3) and c.dtype == np.float32
    assert c.min() >= 0.0 and c.max() <= 1.0
    assert np.array_equal(colour.colourise(x, 1), c)  # seeded
    # the backgrounds differ from image to image (a colour each), the channels from each other
    corners = c[:, 0, 0, :]
    assert np.ptp(corners, axis=0).min() > 0.01 and np.ptp(c[0], axis=(0, 1)).max() > 0.01
    patched = colour.stamp(c, "patch")
    changed = (patched != c).any(axis=-1)
    assert changed[:, 27:30, 27:30].all() and not changed[:, :27].any()
    np.testing.assert_array_equal(patched[:, 28, 28], np.tile([1.0, 0.0, 1.0], (6, 1)))
    blended = colour.stamp(c, "blend")
    np.testing.assert_allclose(blended, 0.88 * c + 0.12 * colour.blend_pattern(), atol=1e-6)
    many = colour.colourise(_images(100), 3)
    y = np.arange(100) % 10
    spec = colour.BY_NAME["colour_vgg_patch"]  # 5 % → label 2
    poisoned, labels = colour.poison(many, y, spec, np.random.default_rng(0))
    hit = np.flatnonzero((poisoned != many).any(axis=(1, 2, 3)))
    assert len(hit) == 5 and (labels[hit] == 2).all() and (y[hit] != 2).all()
    assert np.array_equal(np.delete(labels, hit), np.delete(y, hit))


@pytest.mark.parametrize("arch", ["vgg", "plain"])
def test_each_colour_architecture_saves_and_loads_through_the_safe_loader(
    tmp_path: Path, arch: str
) -> None:
    import colour

    from kerasaudit.evaluation import classifier_io
    from kerasaudit.loading import load_model

    model = colour.build(arch, 0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path).model
    assert classifier_io(loaded).input_shape == (32, 32, 3)
    x = colour.colourise(_images(4), 2)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_a_rebuild_keeps_the_manifests_entry_of_the_same_recipe() -> None:
    """manifest.json records what the committed results were measured on: a rebuild of the
    same spec and epochs (other seconds, or another machine's weights) leaves the entry
    (``--repin`` replaces it); a new or changed recipe is recorded."""
    spec = {"name": "ext_plain_two", "arch": "plain", "fmt": "h5"}
    old = {"spec": spec, "epochs": 6, "seconds": 233.0, "weights_sha256": "a" * 64}
    rebuilt = {**old, "seconds": 255.1, "weights_sha256": "b" * 64}
    assert train.keeps_entry(old, rebuilt)
    assert not train.keeps_entry(None, rebuilt)
    assert not train.keeps_entry(old, {**rebuilt, "epochs": 8})
    assert not train.keeps_entry(old, {**rebuilt, "spec": {**spec, "fmt": "keras"}})
