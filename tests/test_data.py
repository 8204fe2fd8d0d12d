"""kerasaudit.data: every input format, scaling, layout, labels, and every refusal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from numpy.lib import format as npy_format
from PIL import Image

from kerasaudit.data import Dataset, DataSpec, open_data
from kerasaudit.errors import BadInputError, ExitCode

REPO = Path(__file__).resolve().parents[1]
MNIST_LIKE = (8, 8, 1)


# --- helpers -------------------------------------------------------------------------------


def images_u8(count: int, shape: tuple[int, ...] = (8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def class_labels(count: int, classes: int = 5) -> np.ndarray:
    return (np.arange(count) * 7 % classes).astype(np.int64)


def collect(dataset: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    parts = list(dataset.batches())
    x = np.concatenate([x for x, _ in parts])
    labels = [y for _, y in parts if y is not None]
    return x, (np.concatenate(labels) if labels else None)


def save_npz(path: Path, *, compressed: bool, **arrays: Any) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def bad_input(spec: DataSpec, input_shape: tuple[int | None, ...] = MNIST_LIKE, **kw: int) -> str:
    """Open (and fully read) the data; return the BadInputError message."""
    with pytest.raises(BadInputError) as caught:
        collect(open_data(spec, input_shape, **kw))
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    return message


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


# --- .npz ----------------------------------------------------------------------------------

DEFAULT_PAIRS = [
    ("x", "y"),
    ("x_test", "y_test"),
    ("x_val", "y_val"),
    ("data", "label"),
    ("data", "labels"),
    ("images", "labels"),
]


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
@pytest.mark.parametrize(("x_key", "y_key"), DEFAULT_PAIRS)
def test_npz_default_keys_stream_every_example(
    tmp_path: Path, compressed: bool, x_key: str, y_key: str
) -> None:
    x, y = images_u8(37), class_labels(37)
    # A distractor array that is not a default key must not confuse the search.
    path = save_npz(tmp_path / "d.npz", compressed=compressed, **{x_key: x, y_key: y, "z": y})

    dataset = open_data(DataSpec(path, batch_size=10), MNIST_LIKE, num_classes=5)

    info = dataset.info
    assert (info.kind, info.x_key, info.y_key, info.count) == ("npz", x_key, y_key, 37)
    assert (info.source_shape, info.shape, info.source_dtype) == ((8, 8), (8, 8, 1), "uint8")
    assert info.has_labels and info.num_classes_seen == 5 and not info.channels_first
    batches = list(dataset.batches())
    assert [len(bx) for bx, _ in batches] == [10, 10, 10, 7]
    for bx, by in batches:
        assert bx.dtype == np.float32 and bx.flags.c_contiguous
        assert by is not None and by.dtype == np.int64
    served_x, served_y = collect(dataset)
    with np.load(path) as reference:
        expected = reference[x_key].astype(np.float32)[..., np.newaxis] / 255
        np.testing.assert_allclose(served_x, expected, rtol=1e-6)
        np.testing.assert_array_equal(served_y, reference[y_key])
    np.testing.assert_array_equal(dataset.labels(), y)


def test_npz_default_pairs_are_tried_in_order(tmp_path: Path) -> None:
    x, y = images_u8(4), class_labels(4)
    path = save_npz(
        tmp_path / "d.npz", compressed=False, x_val=x, y_val=y, x_test=x[:3], y_test=y[:3]
    )
    info = open_data(DataSpec(path), MNIST_LIKE).info
    assert (info.x_key, info.y_key, info.count) == ("x_test", "y_test", 3)


def test_npz_single_array_is_used_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images_u8(5))  # stored as arr_0
    dataset = open_data(DataSpec(path), MNIST_LIKE)
    assert (dataset.info.x_key, dataset.info.y_key, dataset.info.has_labels) == (
        "arr_0",
        None,
        False,
    )
    assert dataset.labels() is None
    assert all(y is None for _, y in dataset.batches())


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_custom_keys(tmp_path: Path, compressed: bool) -> None:
    x, y = images_u8(6), class_labels(6)
    path = save_npz(tmp_path / "d.npz", compressed=compressed, inputs=x, targets=y, x=x[:1])
    dataset = open_data(DataSpec(path, x_key="inputs", y_key="targets"), MNIST_LIKE, 5)
    served_x, served_y = collect(dataset)
    np.testing.assert_allclose(served_x[..., 0], x / 255, rtol=1e-6)
    np.testing.assert_array_equal(served_y, y)


def test_npz_x_key_alone_takes_its_default_label_partner(tmp_path: Path) -> None:
    x, y = images_u8(6), class_labels(6)
    path = save_npz(tmp_path / "d.npz", compressed=False, x=x, y=y, x_val=x[:2], y_val=y[:2])
    info = open_data(DataSpec(path, x_key="x_val"), MNIST_LIKE).info
    assert (info.x_key, info.y_key, info.count) == ("x_val", "y_val", 2)


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_is_streamed_in_either_order_and_sharded(tmp_path: Path, order: str) -> None:
    """C-order .npy rows are read with file reads (no memory map in the RSS), Fortran-order
    through the memory map; both serve the same examples, also as shards."""
    x = images_u8(11)
    path = tmp_path / "d.npy"
    np.save(path, np.asfortranarray(x) if order == "F" else x)
    dataset = open_data(DataSpec(path, batch_size=4), MNIST_LIKE)
    served_x, _ = collect(dataset)
    np.testing.assert_allclose(served_x[..., 0], x / 255, rtol=1e-6)
    parts = [collect(dataset.shard(i, 3))[0] for i in range(3)]
    assert [len(p) for p in parts] == [3, 4, 4]
    np.testing.assert_array_equal(np.concatenate(parts), served_x)


def test_npz_fortran_order_array(tmp_path: Path) -> None:
    x = np.asfortranarray(images_u8(9))
    path = save_npz(tmp_path / "d.npz", compressed=False, x=x)
    with zipfile.ZipFile(path) as archive, archive.open("x.npy") as member:
        npy_format.read_magic(member)
        assert npy_format.read_array_header_1_0(member)[1]  # really stored Fortran-order
    served_x, _ = collect(open_data(DataSpec(path, batch_size=4), MNIST_LIKE))
    np.testing.assert_allclose(served_x[..., 0], x / 255, rtol=1e-6)


# --- .npy and HDF5 -------------------------------------------------------------------------


def test_npy_is_memory_mapped_floats_unscaled(tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((23, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "d.npy", x)
    dataset = open_data(DataSpec(tmp_path / "d.npy", batch_size=5), MNIST_LIKE)
    info = dataset.info
    assert (info.kind, info.scale, info.has_labels, info.source_dtype) == (
        "npy",
        None,
        False,
        "float32",
    )
    np.testing.assert_array_equal(collect(dataset)[0], np.load(tmp_path / "d.npy"))


def test_hdf5_default_keys_detected_by_signature(tmp_path: Path) -> None:
    x, y = images_u8(30, (8, 8, 1)), class_labels(30)
    path = tmp_path / "data.bin"  # not an HDF5 extension: detected by signature
    with h5py.File(path, "w") as file:
        file["x_test"], file["y_test"] = x, y
    dataset = open_data(DataSpec(path, batch_size=8), MNIST_LIKE, 5)
    assert (dataset.info.kind, dataset.info.x_key, dataset.info.y_key) == (
        "hdf5",
        "x_test",
        "y_test",
    )
    served_x, served_y = collect(dataset)
    np.testing.assert_allclose(served_x, x / 255, rtol=1e-6)
    np.testing.assert_array_equal(served_y, y)


def test_hdf5_channels_first_is_detected_and_transposed(tmp_path: Path) -> None:
    x = images_u8(11, (3, 8, 6))
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("data", data=x, chunks=(4, 3, 8, 6), compression="gzip")
        file["labels"] = np.eye(4)[np.arange(11) % 4]  # one-hot
    dataset = open_data(DataSpec(path, batch_size=4), (8, 6, 3), num_classes=4)
    info = dataset.info
    assert info.channels_first and (info.source_shape, info.shape) == ((3, 8, 6), (8, 6, 3))
    served_x, served_y = collect(dataset)
    np.testing.assert_allclose(served_x, x.transpose(0, 2, 3, 1) / 255, rtol=1e-6)
    np.testing.assert_array_equal(served_y, np.arange(11) % 4)


def test_channels_first_can_be_forced_either_way(tmp_path: Path) -> None:
    x = images_u8(4, (3, 5, 3))  # ambiguous-looking; as stored it already fits (3, 5, 3)
    np.save(tmp_path / "d.npy", x)
    as_stored = open_data(DataSpec(tmp_path / "d.npy"), (3, 5, 3)).info
    assert not as_stored.channels_first
    forced = open_data(DataSpec(tmp_path / "d.npy", channels_first=True), (5, 3, 3))
    assert forced.info.channels_first
    np.testing.assert_allclose(collect(forced)[0], x.transpose(0, 2, 3, 1) / 255, rtol=1e-6)
    message = bad_input(DataSpec(tmp_path / "d.npy", channels_first=False), (5, 3, 3))
    assert "data shape (3, 5, 3) does not fit the model input (5, 3, 3)" in message


def test_hdf5_dataset_inside_a_group(tmp_path: Path) -> None:
    x = images_u8(5, (8, 8, 1))
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as file:
        file["split/inputs"] = x
        file["alias"] = h5py.SoftLink("/split/inputs")
    for key in ("split/inputs", "alias"):
        served_x, _ = collect(open_data(DataSpec(path, x_key=key), MNIST_LIKE))
        np.testing.assert_allclose(served_x, x / 255, rtol=1e-6)


# --- image folders -------------------------------------------------------------------------


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    pixels = images_u8(6, (8, 8, 3))
    for index, (name, suffix) in enumerate(
        [("cat", "png"), ("cat", "bmp"), ("dog", "png"), ("dog", "png"), ("emu", "png")]
    ):
        write_png(tmp_path / name / f"{index}.{suffix}", pixels[index])
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "zebra").mkdir()  # a class with no images keeps its index

    dataset = open_data(DataSpec(tmp_path, batch_size=2), (8, 8, 3), num_classes=4)

    info = dataset.info
    assert (info.kind, info.count, info.class_names) == (
        "folder",
        5,
        ("cat", "dog", "emu", "zebra"),
    )
    assert (info.source_shape, info.shape, info.source_dtype) == ((8, 8, 3), (8, 8, 3), "uint8")
    served_x, served_y = collect(dataset)
    np.testing.assert_array_equal(served_y, [0, 0, 1, 1, 2])
    np.testing.assert_allclose(served_x, pixels[:5] / 255, rtol=1e-6)  # PNG/BMP are lossless


def test_flat_folder_converts_to_grayscale_and_jpeg(tmp_path: Path) -> None:
    pixels = images_u8(3, (8, 8, 3))
    for index in range(3):
        write_png(tmp_path / f"{index}.png", pixels[index])
    Image.fromarray(pixels[0]).save(tmp_path / "3.JPG", format="JPEG")

    dataset = open_data(DataSpec(tmp_path), MNIST_LIKE)

    assert not dataset.info.has_labels and dataset.info.class_names is None
    served_x, served_y = collect(dataset)
    assert served_y is None and served_x.shape == (4, 8, 8, 1)
    gray = np.asarray(Image.fromarray(pixels[1]).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(served_x[1, ..., 0], gray, rtol=1e-6)


def test_folder_resize_with_pillow(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", images_u8(1, (12, 10))[0])
    write_png(tmp_path / "b.png", images_u8(1, (8, 8), seed=3)[0])
    message = bad_input(DataSpec(tmp_path), MNIST_LIKE)
    assert (
        message
        == "data shape (12, 10, 1) does not fit the model input (8, 8, 1); pass --resize to resize"
    )
    dataset = open_data(DataSpec(tmp_path, resize=True), MNIST_LIKE)
    assert dataset.info.resized and collect(dataset)[0].shape == (2, 8, 8, 1)


def test_folder_image_of_another_size_midway(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", images_u8(1)[0])
    write_png(tmp_path / "b.png", images_u8(1, (9, 8))[0])
    message = bad_input(DataSpec(tmp_path), MNIST_LIKE)
    assert "b.png is 8×9 pixels, the model input is 8×8; pass --resize" in message


# --- scaling, limit, labels ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "factor"),
    [("auto", 1 / 255), ("none", None), ("1/255", 1 / 255), ("0.00392", 0.00392), (" 2 ", 2.0)],
)
def test_scale_forms_on_uint8(tmp_path: Path, scale: str, factor: float | None) -> None:
    x = images_u8(5)
    np.save(tmp_path / "d.npy", x)
    dataset = open_data(DataSpec(tmp_path / "d.npy", scale=scale), MNIST_LIKE)
    assert dataset.info.scale == pytest.approx(factor)
    expected = x.astype(np.float32) * (1.0 if factor is None else factor)
    np.testing.assert_allclose(collect(dataset)[0][..., 0], expected, rtol=1e-6)


def test_auto_scale_leaves_floats_alone_but_explicit_scale_applies(tmp_path: Path) -> None:
    x = np.linspace(0, 255, 5 * 64, dtype=np.float64).reshape(5, 8, 8)
    np.save(tmp_path / "d.npy", x)
    assert open_data(DataSpec(tmp_path / "d.npy"), MNIST_LIKE).info.scale is None
    scaled = open_data(DataSpec(tmp_path / "d.npy", scale="1/255"), MNIST_LIKE)
    np.testing.assert_allclose(collect(scaled)[0][..., 0], x / 255, rtol=1e-6)


@pytest.mark.parametrize("scale", ["abc", "0", "-1", "1/0", "nan", "inf", "1/x"])
def test_bad_scale(tmp_path: Path, scale: str) -> None:
    np.save(tmp_path / "d.npy", images_u8(2))
    assert "--scale must be" in bad_input(DataSpec(tmp_path / "d.npy", scale=scale))


def test_limit_caps_examples_and_labels(tmp_path: Path) -> None:
    x, y = images_u8(50), class_labels(50)
    path = save_npz(tmp_path / "d.npz", compressed=True, x=x, y=y)
    dataset = open_data(DataSpec(path, limit=13, batch_size=5), MNIST_LIKE, 5)
    served_x, served_y = collect(dataset)
    assert dataset.info.count == 13 and len(served_x) == 13
    np.testing.assert_array_equal(served_y, y[:13])
    np.testing.assert_array_equal(dataset.labels(), y[:13])
    assert open_data(DataSpec(path, limit=500), MNIST_LIKE).info.count == 50


def test_label_forms(tmp_path: Path) -> None:
    x, y = images_u8(12), class_labels(12, classes=3)
    forms = {
        "one_hot": np.eye(3, dtype=np.float32)[y],
        "column": y[:, np.newaxis].astype(np.uint8),  # CIFAR-style (N, 1)
        "floats": y.astype(np.float64),
        "flat": y.astype(np.int32),
    }
    path = save_npz(tmp_path / "d.npz", compressed=False, x=x, **forms)
    for key in forms:
        dataset = open_data(DataSpec(path, y_key=key), MNIST_LIKE, num_classes=3)
        labels = dataset.labels()
        assert labels is not None and labels.dtype == np.int64
        np.testing.assert_array_equal(labels, y, err_msg=key)


def test_binary_sigmoid_model_accepts_labels_0_and_1(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", compressed=False, x=images_u8(4), y=np.array([0, 1, 1, 0]))
    assert open_data(DataSpec(path), MNIST_LIKE, num_classes=1).info.num_classes_seen == 2


# --- the Dataset object --------------------------------------------------------------------


def test_batches_are_reiterable_and_take_array(tmp_path: Path) -> None:
    x, y = images_u8(25), class_labels(25)
    path = save_npz(tmp_path / "d.npz", compressed=True, x=x, y=y)
    dataset = open_data(DataSpec(path, batch_size=7), MNIST_LIKE, 5)
    first, second = collect(dataset), collect(dataset)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    taken_x, taken_y = dataset.take_array(10)
    np.testing.assert_array_equal(taken_x, first[0][:10])
    np.testing.assert_array_equal(taken_y, y[:10])
    assert len(dataset.take_array(1000)[0]) == 25
    with pytest.raises(BadInputError):
        dataset.take_array(0)


def test_as_tf_dataset_yields_the_same_numbers(tmp_path: Path) -> None:
    x, y = images_u8(21), class_labels(21)
    path = save_npz(tmp_path / "d.npz", compressed=False, x=x, y=y, only=x)
    labelled = open_data(DataSpec(path, batch_size=8), MNIST_LIKE, 5)
    pairs = list(labelled.as_tf_dataset().as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([bx for bx, _ in pairs]), collect(labelled)[0])
    np.testing.assert_array_equal(np.concatenate([by for _, by in pairs]), y)
    unlabelled = open_data(DataSpec(path, x_key="only", batch_size=8), MNIST_LIKE)
    tf_x = np.concatenate(list(unlabelled.as_tf_dataset().as_numpy_iterator()))
    assert tf_x.dtype == np.float32
    np.testing.assert_array_equal(tf_x, collect(unlabelled)[0])


def test_resize_arrays_bilinear(tmp_path: Path) -> None:
    import tensorflow as tf

    x = images_u8(5, (16, 12, 3))
    np.save(tmp_path / "d.npy", x)
    message = bad_input(DataSpec(tmp_path / "d.npy"), (8, 6, 3))
    assert (
        message
        == "data shape (16, 12, 3) does not fit the model input (8, 6, 3); pass --resize to resize"
    )
    dataset = open_data(DataSpec(tmp_path / "d.npy", resize=True, batch_size=2), (8, 6, 3))
    assert dataset.info.resized and dataset.info.shape == (8, 6, 3)
    expected = tf.image.resize(x.astype(np.float32) / 255, (8, 6), method="bilinear").numpy()
    np.testing.assert_allclose(collect(dataset)[0], expected, rtol=1e-5, atol=1e-6)


def test_grey_images_feed_a_colour_model_as_three_equal_channels(tmp_path: Path) -> None:
    """As an image folder's greyscale files are read for a colour model: (N, H, W) or
    (N, H, W, 1) arrays for a (H', W', 3) input, with --resize when the size differs too."""
    import tensorflow as tf

    x = images_u8(4, (8, 6))
    np.save(tmp_path / "grey.npy", x)
    np.save(tmp_path / "grey1.npy", x[..., None])
    for name in ("grey.npy", "grey1.npy"):
        dataset = open_data(DataSpec(tmp_path / name, batch_size=3), (8, 6, 3))
        assert dataset.info.shape == (8, 6, 3) and not dataset.info.resized
        expected = np.repeat(x[..., None].astype(np.float32) / 255, 3, axis=-1)
        np.testing.assert_allclose(collect(dataset)[0], expected, rtol=1e-6)
    message = bad_input(DataSpec(tmp_path / "grey1.npy"), (16, 12, 3))
    assert message.endswith("; pass --resize to resize")
    dataset = open_data(DataSpec(tmp_path / "grey1.npy", resize=True), (16, 12, 3))
    grey = tf.image.resize(x[..., None].astype(np.float32) / 255, (16, 12)).numpy()
    np.testing.assert_allclose(collect(dataset)[0], np.repeat(grey, 3, axis=-1), atol=1e-6)
    # Colour images are not turned grey: which weights would be a guess.
    np.save(tmp_path / "rgb.npy", images_u8(2, (8, 6, 3)))
    assert "does not fit" in bad_input(DataSpec(tmp_path / "rgb.npy"), (8, 6, 1))


def test_flat_images_are_reshaped_row_major_for_an_image_model(tmp_path: Path) -> None:
    """(N, H·W·C) arrays, as ``x.reshape(len(x), -1)`` writes them, for a (H, W, C) input;
    another length, or a model with an unknown size, is refused."""
    for shape in ((8, 6, 1), (8, 6, 3)):
        x = images_u8(5, shape)
        np.save(tmp_path / "flat.npy", x.reshape(len(x), -1))
        dataset = open_data(DataSpec(tmp_path / "flat.npy", batch_size=2), shape)
        assert dataset.info.shape == shape
        np.testing.assert_allclose(collect(dataset)[0], x.astype(np.float32) / 255, rtol=1e-6)
    np.save(tmp_path / "short.npy", images_u8(2, (47,)))
    assert "does not fit" in bad_input(DataSpec(tmp_path / "short.npy"), (8, 6, 1))
    assert "does not fit" in bad_input(DataSpec(tmp_path / "flat.npy"), (None, None, 3))


def test_unknown_model_dims_accept_any_size(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", images_u8(3, (10, 7, 3)))
    info = open_data(DataSpec(tmp_path / "d.npy"), (None, None, 3)).info
    assert info.shape == (10, 7, 3) and not info.resized


# --- refusals ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in bad_input(DataSpec(tmp_path / "nope.npz"))


@pytest.mark.parametrize(
    ("content", "detected"),
    [
        (b"a,b\n1,2\n", "text"),
        (b"", "an empty file"),
        (b"\x89PNG\r\n\x1a\n....", "a PNG image"),
        (b"\x80\x04\x95....", "a Python pickle"),
        (b"\x00\x01\x02\xff", "unrecognised binary data starting 00 01 02 ff"),
    ],
)
def test_unknown_format_says_what_was_detected(
    tmp_path: Path, content: bytes, detected: str
) -> None:
    (tmp_path / "d.npz").write_bytes(content)
    message = bad_input(DataSpec(tmp_path / "d.npz"))
    assert "is not a .npz, .npy, HDF5 file or image folder" in message and detected in message


def test_npz_named_key_missing_lists_available_keys(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", compressed=False, a=images_u8(2), b=np.zeros(2))
    message = bad_input(DataSpec(path, x_key="x_train"))
    assert "has no array 'x_train' (--x-key); available: a, b" in message
    assert "'lbl' (--y-key); available: a, b" in bad_input(DataSpec(path, x_key="a", y_key="lbl"))
    assert "cannot tell which array holds the inputs (found a, b); pass --x-key" in bad_input(
        DataSpec(path)
    )


def test_zip_without_arrays(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    message = bad_input(DataSpec(tmp_path / "model.keras"))
    assert "is a zip file but holds no .npy arrays (found config.json)" in message


def test_keys_do_not_apply_to_npy_or_folders(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", images_u8(2))
    assert "--x-key/--y-key do not apply to a .npy file" in bad_input(
        DataSpec(tmp_path / "d.npy", y_key="labels")
    )
    assert "do not apply to an image folder" in bad_input(DataSpec(tmp_path, x_key="x"))


@pytest.mark.parametrize("compressed", [False, True])
def test_empty_data(tmp_path: Path, compressed: bool) -> None:
    path = save_npz(tmp_path / "d.npz", compressed=compressed, x=np.zeros((0, 8, 8), np.uint8))
    assert "holds no examples" in bad_input(DataSpec(path))
    assert "--limit 0 leaves no examples" in bad_input(DataSpec(path, limit=0))
    assert "--limit must be positive" in bad_input(DataSpec(path, limit=-3))
    assert "--batch-size must be at least 1" in bad_input(DataSpec(path, batch_size=0))
    (tmp_path / "folder").mkdir()
    assert "holds no PNG, JPEG or BMP images" in bad_input(DataSpec(tmp_path / "folder"))


def test_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", images_u8(2, (32, 32, 3)))
    message = bad_input(DataSpec(tmp_path / "d.npy"), (28, 28, 1))
    assert message == "data shape (32, 32, 3) does not fit the model input (28, 28, 1)"
    np.save(tmp_path / "v.npy", np.zeros((2, 10), np.float32))
    message = bad_input(DataSpec(tmp_path / "v.npy", resize=True), (28, 28, 1))
    assert message == "data shape (10,) does not fit the model input (28, 28, 1)"
    np.save(tmp_path / "scalar.npy", np.float32(3))
    assert "is a single value, not an array of examples" in bad_input(
        DataSpec(tmp_path / "scalar.npy")
    )
    message = bad_input(DataSpec(tmp_path / "v.npy", channels_first=True), (28, 28, 1))
    assert "--channels-first needs examples shaped (C, H, W); they are (10,)" in message


def test_labels_out_of_range_name_value_and_index(tmp_path: Path) -> None:
    y = class_labels(20)
    y[13], y[17] = 10, -1
    path = save_npz(tmp_path / "d.npz", compressed=False, x=images_u8(20), y=y)
    message = bad_input(DataSpec(path), MNIST_LIKE, num_classes=10)
    assert "label 10 at index 13 is outside [0, 10) for a model with 10 outputs" in message
    assert "label -1 at index 17 must not be negative" in bad_input(DataSpec(path))
    # --limit stops before the bad labels: only served labels are checked.
    assert open_data(DataSpec(path, limit=13), MNIST_LIKE, num_classes=10).info.count == 13


def test_folder_with_more_classes_than_the_model(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_png(tmp_path / name / "0.png", images_u8(1)[0])
    message = bad_input(DataSpec(tmp_path), MNIST_LIKE, num_classes=2)
    assert "class sub-folders: label 2 at index 2 is outside [0, 2)" in message


def test_bad_label_arrays(tmp_path: Path) -> None:
    x = images_u8(6)
    path = save_npz(
        tmp_path / "d.npz",
        compressed=False,
        x=x,
        short=np.arange(5),
        halves=np.full(6, 0.5),
        one_hot4=np.eye(4)[np.arange(6) % 4],
        cube=np.zeros((6, 2, 2)),
        words=np.array(["cat"] * 6),
    )
    assert "['short'] has 5 entries but there are 6 examples" in bad_input(
        DataSpec(path, y_key="short")
    )
    assert "must be whole class numbers; found 0.5 at index 0" in bad_input(
        DataSpec(path, y_key="halves")
    )
    assert "one-hot with 4 columns but the model has 10 outputs" in bad_input(
        DataSpec(path, y_key="one_hot4"), MNIST_LIKE, num_classes=10
    )
    assert "must be class indices (N,) or one-hot (N, K); got shape (6, 2, 2)" in bad_input(
        DataSpec(path, y_key="cube")
    )
    assert "['words'] has dtype <U3; kerasaudit needs numbers" in bad_input(
        DataSpec(path, y_key="words")
    )


def test_non_numeric_inputs(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", compressed=False, x=np.array(["a", "b"]))
    assert "['x'] has dtype <U1; kerasaudit needs numbers" in bad_input(DataSpec(path))
    np.save(tmp_path / "objects.npy", np.array([{}, None], dtype=object), allow_pickle=True)
    assert "has dtype object; kerasaudit needs numbers" in bad_input(
        DataSpec(tmp_path / "objects.npy")
    )
    np.save(tmp_path / "complex.npy", np.ones((2, 8, 8), np.complex64))
    assert "has dtype complex64" in bad_input(DataSpec(tmp_path / "complex.npy"))


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_npz(tmp_path: Path, compressed: bool) -> None:
    path = save_npz(tmp_path / "d.npz", compressed=compressed, x=images_u8(40, (16, 16)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = bad_input(DataSpec(path))
    assert "corrupt or truncated" in message


def test_npz_member_shorter_than_its_header(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
        header = {"descr": "|u1", "fortran_order": False, "shape": (100, 8, 8)}
        npy_format.write_array_header_1_0(member, header)
        member.write(bytes(64 * 10))
    assert (
        "is truncated: its header promises 6400 bytes of data, the member holds 640"
        in bad_input(DataSpec(path))
    )


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_corrupt_member_fails_while_reading(tmp_path: Path, compressed: bool) -> None:
    x = (np.arange(2000 * 64) % 7 * 30).astype(np.uint8).reshape(2000, 8, 8)  # compressible
    path = save_npz(tmp_path / "d.npz", compressed=compressed, x=x)
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 40):  # well past the .npy header
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    dataset = open_data(DataSpec(path, batch_size=64), MNIST_LIKE)  # the header is intact
    with pytest.raises(BadInputError, match=r"d\.npz\['x'\]: corrupt or truncated"):
        collect(dataset)


def test_truncated_and_corrupt_npy_and_hdf5(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", images_u8(40))
    data = (tmp_path / "d.npy").read_bytes()
    (tmp_path / "d.npy").write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in bad_input(DataSpec(tmp_path / "d.npy"))
    (tmp_path / "header.npy").write_bytes(data[:40])
    assert "is not a valid .npy array" in bad_input(DataSpec(tmp_path / "header.npy"))

    with h5py.File(tmp_path / "d.h5", "w") as file:
        file["x"] = images_u8(400)
    data = (tmp_path / "d.h5").read_bytes()
    (tmp_path / "d.h5").write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in bad_input(DataSpec(tmp_path / "d.h5"))


def test_corrupt_image_in_folder(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", images_u8(1)[0])
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    assert "cannot read image" in bad_input(DataSpec(tmp_path), MNIST_LIKE)
    (tmp_path / "b.png").unlink()
    Image.new("L", (8, 8)).save(tmp_path / "c.png", format="GIF")  # GIF named .png: refused
    assert "cannot read image" in bad_input(DataSpec(tmp_path), MNIST_LIKE)


def test_folder_layout_errors(tmp_path: Path) -> None:
    write_png(tmp_path / "cls" / "a.png", images_u8(1)[0])
    write_png(tmp_path / "stray.png", images_u8(1)[0])
    assert "mixes images and sub-folders" in bad_input(DataSpec(tmp_path), MNIST_LIKE)
    (tmp_path / "stray.png").unlink()
    assert "cannot feed the model input (8, 8, 2)" in bad_input(DataSpec(tmp_path), (8, 8, 2))
    assert "does not apply to an image folder" in bad_input(DataSpec(tmp_path, channels_first=True))


def test_hdf5_external_link_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["x"] = images_u8(3)
    with h5py.File(tmp_path / "d.h5", "w") as file:
        file["x"] = h5py.ExternalLink("other.h5", "/x")
        file["via_soft"] = h5py.SoftLink("/x")
    assert "external link to other.h5:/x; refused" in bad_input(DataSpec(tmp_path / "d.h5"))
    assert "external link" in bad_input(DataSpec(tmp_path / "d.h5", x_key="via_soft"))


def test_hdf5_virtual_dataset_and_external_storage_are_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["x"] = images_u8(3)
    raw = tmp_path / "pixels.raw"
    raw.write_bytes(images_u8(3).tobytes())
    layout = h5py.VirtualLayout(shape=(3, 8, 8), dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "x", shape=(3, 8, 8))
    with h5py.File(tmp_path / "d.h5", "w") as file:
        file.create_virtual_dataset("x", layout)
        file.create_dataset("y", shape=(3, 8, 8), dtype=np.uint8, external=[(str(raw), 0, 192)])
    assert "virtual dataset" in bad_input(DataSpec(tmp_path / "d.h5", x_key="x"))
    assert "external files; refused" in bad_input(DataSpec(tmp_path / "d.h5", x_key="y"))


def test_hdf5_group_is_not_a_dataset(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "d.h5", "w") as file:
        file["x/inner"] = images_u8(2)
    assert "is an HDF5 group, not a dataset" in bad_input(DataSpec(tmp_path / "d.h5"))


# --- memory --------------------------------------------------------------------------------

_MEMORY_PROBE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from kerasaudit.data import DataSpec, open_data

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    dataset = open_data(DataSpec(Path(sys.argv[1]), batch_size=256), (32, 32, 3))
    next(dataset.batches())  # warm up allocator and imports
    before = peak_mib()
    served = checksum = 0
    for x, _ in dataset.batches():
        served += len(x)
        checksum += float(x[:, 0, 0, 0].sum())
    print(served, round(checksum * 255), peak_mib() - before)
    """
)


def test_streaming_a_large_npz_keeps_memory_flat(tmp_path: Path) -> None:
    # 60 000 × 32×32×3 uint8 ≈ 176 MiB, written chunk by chunk, never whole in memory.
    examples, example_shape = 60_000, (32, 32, 3)
    per_example = int(np.prod(example_shape))
    chunk_examples = 2_000
    chunk = (np.arange(chunk_examples * per_example) % 251).astype(np.uint8)
    path = tmp_path / "big.npz"
    with (
        zipfile.ZipFile(path, "w") as archive,
        archive.open("x.npy", "w", force_zip64=True) as member,
    ):
        header = {"descr": "|u1", "fortran_order": False, "shape": (examples, *example_shape)}
        npy_format.write_array_header_1_0(member, header)
        for _ in range(examples // chunk_examples):
            member.write(chunk.tobytes())
    array_mib = examples * per_example / 2**20

    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )

    served, checksum, growth_mib = result.stdout.split()
    assert int(served) == examples
    first_pixels = chunk.reshape(chunk_examples, per_example)[:, 0].astype(np.int64)
    assert int(checksum) == int(first_pixels.sum()) * (examples // chunk_examples)
    assert float(growth_mib) < array_mib / 10, (growth_mib, array_mib)
    print(f"streamed {array_mib:.0f} MiB; peak RSS grew {float(growth_mib):.1f} MiB")


def test_split_partitions_the_data_with_labels_aligned(tmp_path: Path) -> None:
    x = np.arange(50 * 4, dtype=np.uint8).reshape(50, 2, 2, 1)
    y = np.arange(50) % 3
    path = tmp_path / "split.npz"
    np.savez(path, x=x, y=y)
    dataset = open_data(DataSpec(path, batch_size=7), (2, 2, 1), 3)
    fit, held = dataset.split(0.25, seed=1)
    assert (fit.info.count, held.info.count) == (38, 12)
    fx, fy = fit.take_array(100)
    hx, hy = held.take_array(100)
    ids = np.concatenate([fx[:, 0, 0, 0], hx[:, 0, 0, 0]]) * 255 / 4  # first pixel = 4·index
    assert sorted(np.rint(ids).astype(int)) == list(range(50))
    assert fy is not None and hy is not None
    np.testing.assert_array_equal(np.rint(fx[:, 0, 0, 0] * 255 / 4).astype(int) % 3, fy)
    np.testing.assert_array_equal(np.rint(hx[:, 0, 0, 0] * 255 / 4).astype(int) % 3, hy)
    with pytest.raises(BadInputError):
        dataset.split(1.0)
