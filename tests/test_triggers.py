"""Triggers: parsing, exact stamping arithmetic for every kind, TF parity, trigger files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasaudit.data import DataInfo
from kerasaudit.errors import BadInputError
from kerasaudit.triggers import (
    BlendSpec,
    Corner,
    FileSpec,
    ImageSpec,
    PatchPattern,
    PatchSpec,
    load_trigger,
    parse_trigger,
    pixel_value_scale,
    read_trigger_file,
    save_trigger_file,
)

RNG = np.random.default_rng(7)


def _batch(shape: tuple[int, ...], n: int = 3) -> np.ndarray:
    return RNG.random((n, *shape), dtype=np.float32)


def _png(path: Path, pixels: np.ndarray) -> Path:
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]] if pixels.ndim == 3 else "L"
    Image.fromarray(pixels.astype(np.uint8), mode=mode).save(path)
    return path


# --- parsing -------------------------------------------------------------------------------


def test_parse_patch_defaults_and_positions() -> None:
    spec = parse_trigger("patch:size=4,pos=br,value=1")
    assert spec == PatchSpec(text="patch:size=4,pos=br,value=1", size=4, corner=Corner("br"))
    assert parse_trigger("patch:size=2") == PatchSpec(text="patch:size=2", size=2)
    placed = parse_trigger(" PATCH: size=3 , pos=5,1 , value=0.5 , pattern=checker ")
    assert isinstance(placed, PatchSpec)
    assert (placed.corner, placed.x, placed.y) == (None, 5, 1)
    assert placed.value == 0.5 and placed.pattern is PatchPattern.CHECKER
    assert parse_trigger("patch:size=1,value=1/2").value == 0.5  # type: ignore[attr-defined]


def test_parse_picture_and_file_specs(tmp_path: Path) -> None:
    png = _png(tmp_path / "a,b.png", np.zeros((2, 2, 4)))
    image = parse_trigger(f"image:{png},x=3,y=4,scale=1")
    assert image == ImageSpec(text=f"image:{png},x=3,y=4,scale=1", path=png, x=3, y=4, scale=1.0)
    blend = parse_trigger(f"blend:{png},alpha=0.25")
    assert isinstance(blend, BlendSpec) and blend.alpha == 0.25 and blend.path == png
    npz = tmp_path / "t.npz"
    save_trigger_file(npz, np.zeros((2, 2)), np.zeros((2, 2, 1)))
    assert parse_trigger(str(npz)) == FileSpec(text=str(npz), path=npz)
    assert parse_trigger(f"file:{npz}") == FileSpec(text=f"file:{npz}", path=npz)


# --- patch ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pos", "rows", "cols"),
    [
        ("br", (5, 8), (5, 8)),
        ("bl", (5, 8), (0, 3)),
        ("tr", (0, 3), (5, 8)),
        ("tl", (0, 3), (0, 3)),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_patch_corners_stamp_exactly(
    pos: str, rows: tuple[int, int], cols: tuple[int, int], channels: int
) -> None:
    trigger = load_trigger(f"patch:size=3,pos={pos},value=0.75", (8, 8, channels))
    x = _batch((8, 8, channels))
    before = x.copy()
    out = trigger.apply(x)
    np.testing.assert_array_equal(x, before)  # input untouched
    expected = x.copy()
    expected[:, rows[0] : rows[1], cols[0] : cols[1], :] = 0.75
    np.testing.assert_array_equal(out, expected)  # bit-exact: patch pixels = V, others = x
    region = np.zeros((8, 8), bool)
    region[rows[0] : rows[1], cols[0] : cols[1]] = True
    np.testing.assert_array_equal(trigger.region_mask(8, 8), region)


def test_patch_at_column_row_and_checkerboard() -> None:
    trigger = load_trigger("patch:size=3,pos=2,5,value=0.5,pattern=checker", (8, 8, 1))
    out = trigger.apply(np.ones((1, 8, 8, 1), np.float32))[0, ..., 0]
    expected = np.ones((8, 8), np.float32)
    expected[5:8, 2:5] = [[0.5, 0, 0.5], [0, 0.5, 0], [0.5, 0, 0.5]]  # rows 5-7, columns 2-4
    np.testing.assert_array_equal(out, expected)
    assert "rows 5-7, columns 2-4" in trigger.describe()
    assert trigger.to_dict()["region_box"] == {"x": 2, "y": 5, "width": 3, "height": 3}
    # The region covers the whole checkerboard, zeros included.
    assert trigger.region_mask().sum() == 9


def test_patch_on_channelless_input_and_single_example() -> None:
    trigger = load_trigger("patch:size=2", (6, 6))
    x = _batch((6, 6), n=2)
    out = trigger.apply(x)
    assert out.shape == (2, 6, 6)
    assert (out[:, 4:, 4:] == 1).all() and (out[:, :4] == x[:, :4]).all()
    single = trigger.apply(x[0])  # one example, no batch axis
    np.testing.assert_array_equal(single, out[0])


def test_region_mask_resamples_for_coarser_maps() -> None:
    trigger = load_trigger("patch:size=4,pos=br", (28, 28, 1))
    coarse = trigger.region_mask(7, 7)
    expected = np.zeros((7, 7), bool)
    expected[6, 6] = True
    np.testing.assert_array_equal(coarse, expected)
    assert trigger.region_mask(28, 28).sum() == 16


def test_apply_promotes_integer_input_and_keeps_float64() -> None:
    trigger = load_trigger("patch:size=1,pos=tl,value=2", (2, 2, 1))
    as_int = trigger.apply(np.zeros((1, 2, 2, 1), np.uint8))
    assert as_int.dtype == np.float32 and as_int[0, 0, 0, 0] == 2
    assert trigger.apply(np.zeros((1, 2, 2, 1), np.float64)).dtype == np.float64
    with pytest.raises(ValueError, match="fitted to inputs"):
        trigger.apply(np.zeros((1, 3, 3, 1), np.float32))


# --- pictures ------------------------------------------------------------------------------


def test_image_pasted_with_alpha_exact_arithmetic(tmp_path: Path) -> None:
    rgba = np.array(
        [
            [[255, 0, 0, 255], [0, 255, 0, 0]],
            [[0, 0, 255, 128], [10, 20, 30, 255]],
        ],
        np.uint8,
    )
    png = _png(tmp_path / "sunglasses.png", rgba)
    trigger = load_trigger(f"image:{png},x=3,y=1", (5, 6, 3))  # default value scale 1/255
    x = _batch((5, 6, 3), n=2)
    out = trigger.apply(x)
    alpha = rgba[..., 3].astype(np.float32) / np.float32(255)
    colour = rgba[..., :3].astype(np.float32) * np.float32(1 / 255)
    expected = x.copy()
    patch = expected[:, 1:3, 3:5, :]
    expected[:, 1:3, 3:5, :] = (1 - alpha[..., None]) * patch + alpha[..., None] * colour
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(out[:, 1, 3], np.broadcast_to([1.0, 0.0, 0.0], (2, 3)))
    np.testing.assert_array_equal(out[:, 1, 4], x[:, 1, 4])  # alpha 0: untouched
    out[:, 1:3, 3:5] = x[:, 1:3, 3:5]
    np.testing.assert_array_equal(out, x)  # nothing outside the pasted rectangle changes
    region = trigger.region_mask()
    assert region.sum() == 3 and region[1, 3] and not region[1, 4]
    assert trigger.to_dict()["image_size"] == [2, 2]


def test_rgb_image_on_grayscale_model_uses_luminance(tmp_path: Path) -> None:
    png = _png(tmp_path / "rgb.png", np.array([[[200, 100, 50]]], np.uint8))  # RGB, no alpha
    trigger = load_trigger(f"image:{png},x=1,y=0", (2, 2, 1), value_scale=1.0)
    out = trigger.apply(np.zeros((1, 2, 2, 1), np.float32))
    luminance = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert out[0, 0, 1, 0] == pytest.approx(luminance, rel=1e-6)
    assert out[0, 0, 0, 0] == 0 and out[0, 1, 1, 0] == 0
    assert "luminance" in trigger.describe() and trigger.to_dict()["note"]


def test_grayscale_image_on_rgb_model_is_repeated(tmp_path: Path) -> None:
    png = tmp_path / "gray.png"
    Image.fromarray(np.array([[51]], np.uint8), mode="L").save(png)
    trigger = load_trigger(f"image:{png}", (3, 3, 3))
    out = trigger.apply(np.zeros((1, 3, 3, 3), np.float32))
    np.testing.assert_allclose(out[0, 0, 0], [0.2, 0.2, 0.2], rtol=1e-6)
    assert "repeated" in trigger.describe()


def test_blend_same_size_is_exact_formula(tmp_path: Path) -> None:
    img = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    png = _png(tmp_path / "kitty.png", img)
    trigger = load_trigger(f"blend:{png},alpha=0.2", (4, 5, 3))
    x = _batch((4, 5, 3))
    expected = (np.float32(1) - np.float32(0.2)) * x + np.float32(0.2) * (
        img.astype(np.float32) * np.float32(1 / 255)
    )
    np.testing.assert_allclose(trigger.apply(x), expected, rtol=0, atol=1e-6)
    assert trigger.region_mask().all()


def test_blend_resizes_to_input(tmp_path: Path) -> None:
    png = _png(tmp_path / "flat.png", np.full((10, 12, 3), 102, np.uint8))
    trigger = load_trigger(f"blend:{png},alpha=0.5,scale=1/102", (4, 4, 1))
    out = trigger.apply(np.zeros((2, 4, 4, 1), np.float32))
    np.testing.assert_allclose(out, 0.5, rtol=1e-6)  # 102 × (1/102) blended at 0.5
    assert "resized" in trigger.describe() and "luminance" in trigger.describe()


def test_pixel_value_scale_follows_the_data() -> None:
    def info(scale: float | None, dtype: str) -> DataInfo:
        return DataInfo(
            "d", "npz", "x", "y", 1, (2, 2, 1), (2, 2, 1), dtype, scale, False, False, True, 1
        )

    assert pixel_value_scale(info(1 / 255, "uint8")) == 1 / 255
    assert pixel_value_scale(info(None, "uint8")) == 1.0  # --scale none: raw pixels
    assert pixel_value_scale(info(None, "float32")) == 1 / 255  # float data taken as [0, 1]
    spec = parse_trigger("patch:size=1")
    assert spec.for_data(info(None, "uint8")).input_shape == (2, 2, 1)


# --- TensorFlow parity ---------------------------------------------------------------------


def test_apply_tf_matches_apply_for_every_kind(tmp_path: Path) -> None:
    from kerasaudit import _tf

    tf = _tf.tf()
    png = _png(tmp_path / "t.png", RNG.integers(0, 256, (3, 3, 4), dtype=np.uint8))
    npz = tmp_path / "t.npz"
    save_trigger_file(npz, RNG.random((8, 8), dtype=np.float32), _batch((8, 8, 3), 1)[0], 1)
    specs = [
        "patch:size=3,pos=1,2,value=0.9,pattern=checker",
        f"image:{png},x=4,y=4",
        f"blend:{png},alpha=0.3",
        str(npz),
    ]
    x = _batch((8, 8, 3), n=4)
    for text in specs:
        trigger = load_trigger(text, (8, 8, 3))
        stamp = tf.function(trigger.apply_tf)
        np.testing.assert_allclose(stamp(tf.constant(x)).numpy(), trigger.apply(x), atol=1e-6)


# --- trigger files -------------------------------------------------------------------------


def test_trigger_file_round_trip_and_stamping(tmp_path: Path) -> None:
    mask = np.zeros((6, 6), np.float32)
    mask[0, 0], mask[0, 1], mask[5, 5] = 1.0, 0.25, 0.6
    pattern = RNG.random((6, 6, 1), dtype=np.float32)
    path = tmp_path / "reversed.npz"
    save_trigger_file(path, mask, pattern, target=3, meta={"kind": "neural-cleanse", "model": "m"})
    content = read_trigger_file(path)
    np.testing.assert_array_equal(content.mask, mask)
    np.testing.assert_array_equal(content.pattern, pattern)
    assert content.target == 3
    assert content.meta["kind"] == "neural-cleanse" and content.meta["format"] == (
        "kerasaudit.trigger/1"
    )
    assert "created" in content.meta
    with np.load(path, allow_pickle=False) as raw:  # the documented, pickle-free layout
        assert set(raw.files) == {"mask", "pattern", "target", "meta"}
        assert raw["mask"].dtype == np.float32 and raw["target"].shape == ()
        assert json.loads(str(raw["meta"]))["model"] == "m"

    trigger = load_trigger(str(path), (6, 6, 1))
    assert trigger.target == 3
    x = _batch((6, 6, 1))
    m = mask[..., None]
    np.testing.assert_allclose(trigger.apply(x), (1 - m) * x + m * pattern, atol=1e-7)
    region = trigger.region_mask()
    assert region.sum() == 2 and region[0, 0] and region[5, 5]  # ≥ half the peak
    json.dumps(trigger.to_dict())  # JSON-ready
    assert trigger.to_dict()["target"] == 3


def test_trigger_file_without_target_and_overwrite_rules(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    save_trigger_file(path, np.ones((2, 2)), np.zeros((2, 2, 3)))
    assert read_trigger_file(path).target is None
    with pytest.raises(BadInputError, match="--force"):
        save_trigger_file(path, np.ones((2, 2)), np.zeros((2, 2, 3)))
    save_trigger_file(path, np.ones((2, 2)), np.ones((2, 2, 3)), target=0, force=True)
    assert read_trigger_file(path).target == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]  # no temporary left
    with pytest.raises(BadInputError, match=r"\.npz"):
        save_trigger_file(tmp_path / "t.bin", np.ones((2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        save_trigger_file(tmp_path / "u.npz", np.full((2, 2), 2.0), np.zeros((2, 2, 3)))
    assert not (tmp_path / "u.npz").exists()


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty trigger"),
        ("star:size=3", "unknown trigger kind 'star'"),
        ("sunglasses.png", "did you mean image:sunglasses.png"),
        ("patch:pos=br", "needs size=S"),
        ("patch:size=0", "size must be a positive whole number"),
        ("patch:size=2.5", "size must be a positive whole number"),
        ("patch:size=2,pos=middle", "pos must be br, bl, tr, tl or X,Y"),
        ("patch:size=2,pos=1,2,3", "pos must be"),
        ("patch:size=2,pos=-1,2", "pos X must be a non-negative"),
        ("patch:size=2,colour=red", "unknown key 'colour'"),
        ("patch:size=2,size=3", "size given twice"),
        ("patch:size=2,value=", "value has no value"),
        ("patch:size=2,value=nan", "value must be a number"),
        ("patch:size=2,pattern=stripes", "pattern must be solid or checker"),
        ("patch:3", "expected key=value"),
        ("image:", "needs a file name"),
    ],
)
def test_malformed_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message) as err:
        parse_trigger(spec)
    assert "\n" not in str(err.value)


def test_picture_spec_errors(tmp_path: Path) -> None:
    png = _png(tmp_path / "t.png", np.zeros((2, 2, 4)))
    with pytest.raises(BadInputError, match=r"trigger image .*missing\.png does not exist"):
        parse_trigger(f"image:{tmp_path / 'missing.png'},x=1,y=1")
    with pytest.raises(BadInputError, match="blend needs alpha"):
        parse_trigger(f"blend:{png}")
    with pytest.raises(BadInputError, match=r"alpha must be in \(0, 1\]"):
        parse_trigger(f"blend:{png},alpha=0")
    with pytest.raises(BadInputError, match="unknown key 'alpha'"):
        parse_trigger(f"image:{png},alpha=0.5")
    with pytest.raises(BadInputError, match="x must be a non-negative"):
        parse_trigger(f"image:{png},x=-2")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    with pytest.raises(BadInputError, match="cannot read image"):
        load_trigger(f"image:{not_image}", (4, 4, 1))
    with pytest.raises(BadInputError, match="1 or 3 channels"):
        load_trigger(f"image:{png}", (4, 4, 2))


@pytest.mark.parametrize(
    ("spec", "shape", "message"),
    [
        ("patch:size=9", (8, 8, 1), "9×9 patch is larger than the 8×8 input"),
        ("patch:size=3,pos=6,0", (8, 8, 1), "extends past the 8×8 input"),
        ("patch:size=3,pos=0,6", (8, 8, 1), "extends past"),
        ("patch:size=2", (784,), r"need image inputs .* the input is \(784\)"),
        ("patch:size=2", (None, None, 3), "known size"),
    ],
)
def test_trigger_that_does_not_fit_the_input(
    spec: str, shape: tuple[int | None, ...], message: str
) -> None:
    with pytest.raises(BadInputError, match=message):
        load_trigger(spec, shape)


def test_image_larger_than_or_outside_the_input(tmp_path: Path) -> None:
    big = _png(tmp_path / "big.png", np.zeros((10, 9, 4)))
    with pytest.raises(BadInputError, match="9×10 image is larger than the 8×8 input"):
        load_trigger(f"image:{big}", (8, 8, 3))
    small = _png(tmp_path / "small.png", np.zeros((3, 3, 4)))
    with pytest.raises(BadInputError, match="at x=6,y=0 extends past the 8×8 input"):
        load_trigger(f"image:{small},x=6", (8, 8, 3))


def test_trigger_file_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"trigger file .*absent\.npz does not exist"):
        parse_trigger(str(tmp_path / "absent.npz"))
    good = tmp_path / "good.npz"
    save_trigger_file(good, np.ones((8, 8)), np.zeros((8, 8, 3)), target=1)
    with pytest.raises(BadInputError, match=r"do not fit the model input \(10, 10, 3\)"):
        load_trigger(str(good), (10, 10, 3))
    with pytest.raises(BadInputError, match=r"expected mask \(8, 8\) and pattern \(8, 8, 1\)"):
        load_trigger(str(good), (8, 8, 1))
    no_mask = tmp_path / "no_mask.npz"
    np.savez(no_mask, pattern=np.zeros((8, 8, 3)))
    with pytest.raises(BadInputError, match="has no 'mask' array"):
        load_trigger(str(no_mask), (8, 8, 3))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(BadInputError, match="cannot read trigger file"):
        load_trigger(str(corrupt), (8, 8, 3))
    out_of_range = tmp_path / "range.npz"
    np.savez(out_of_range, mask=np.full((8, 8), 1.5), pattern=np.zeros((8, 8, 3)))
    with pytest.raises(BadInputError, match=r"mask values must be in \[0, 1\]"):
        load_trigger(str(out_of_range), (8, 8, 3))
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled,
        mask=np.ones((8, 8)),
        pattern=np.zeros((8, 8, 3)),
        meta=np.array([{"a": 1}], dtype=object),
    )
    with pytest.raises(BadInputError, match="Python objects"):
        load_trigger(str(pickled), (8, 8, 3))
    bad_target = tmp_path / "bad_target.npz"
    np.savez(bad_target, mask=np.ones((8, 8)), pattern=np.zeros((8, 8, 3)), target=np.array(1.5))
    with pytest.raises(BadInputError, match="target must be one integer"):
        load_trigger(str(bad_target), (8, 8, 3))
    not_npz = tmp_path / "t.txt"
    not_npz.write_text("x")
    with pytest.raises(BadInputError, match=r"must be a \.npz"):
        parse_trigger(f"file:{not_npz}")
