"""Fuzzing the loader with hypothesis: mutated ``.keras`` archives (bytes, members, member
names, compression, config values, the weights' HDF5 attributes and datasets) and mutated
``.h5`` files (bytes, attributes, datasets).

Every example must end as a loaded model, ``BadInputError`` (exit 2) or ``UnsafeModelError``
(exit 3). The test fails on anything else (the CLI's exit 4), on a hang (60 s per example),
and on a file written outside kerasaudit's temporary directory (which must also be empty
afterwards).

The default run is small and derandomized so CI stays fast and reproducible;
``KERASAUDIT_FUZZ_EXAMPLES=N`` (``nox -s fuzz``) runs N random examples per format.
"""

from __future__ import annotations

import io
import json
import os
import signal
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import hostile_files as hf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from kerasaudit.errors import BadInputError, UnsafeModelError
from kerasaudit.loading import load_model

# Hypothesis' own files (failure patches) go to the temporary directory, not the work tree.
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "kerasaudit-hypothesis"))
EXAMPLES = int(os.environ.get("KERASAUDIT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 30,
    derandomize=not EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
ESCAPE = "kerasaudit-fuzz-escape"
HANG_SECONDS = 60

NAMES = [
    "config.json",
    "metadata.json",
    "model.weights.h5",
    "model.weights.npz",
    "assets/vocab.txt",
    f"../{ESCAPE}",
    f"../../../{ESCAPE}",
    f"assets/../../{ESCAPE}",
    f"/tmp/{ESCAPE}",
    "C:\\evil",
    "assets\\..\\evil",
    "",
]
VALUES = st.one_of(
    st.integers(-(2**40), 2**40),
    st.sampled_from(
        [
            10**8,
            40_000,
            2**31,
            -1,
            0,
            "Lambda",
            "TFSMLayer",
            "/etc/passwd",
            "http://169.254.169.254/",
            "keras.config",
            "set_floatx",
            "channels_first",
            "same",
            [None, 1200, 1200, 1],
            [10**6],
            {"class_name": "Lambda", "config": {}},
            {"module": "os", "class_name": "function", "config": "system"},
        ]
    ),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-5, 100_000), max_size=5),
)


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory: pytest.TempPathFactory) -> hf.Base:
    return hf.build_base(tmp_path_factory.mktemp("fuzz-base"))


@pytest.fixture()
def sandbox_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "tmproot"
    root.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = saved


def _escaped(tmp_path: Path) -> list[Path]:
    places = {Path.cwd(), Path("/tmp"), tmp_path, *tmp_path.parents}
    return [p / ESCAPE for p in places if (p / ESCAPE).exists()]


def _on_hang(signum: int, frame: Any) -> None:
    raise TimeoutError(f"no answer within {HANG_SECONDS} s")


def _load_and_judge(path: Path, root: Path, tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGALRM, _on_hang)
    signal.alarm(HANG_SECONDS)
    try:
        load_model(path)
    except (BadInputError, UnsafeModelError):
        pass  # exit 2 / exit 3: the contract for bad and hostile input
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert list(root.iterdir()) == [], "kerasaudit left temporary files behind"
    assert _escaped(tmp_path) == [], "a file was written outside the temporary directory"


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------


def _json_slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON tree, iteratively."""
    slots: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                slots.append((item, key))
                stack.append(child)
        elif isinstance(item, list):
            for index, child in enumerate(item):
                slots.append((item, index))
                stack.append(child)
    return slots


def _edit_json(raw: bytes, picks: list[tuple[int, Any]]) -> bytes:
    document = json.loads(raw)
    for pick, value in picks:
        slots = _json_slots(document)
        if not slots:
            break
        container, key = slots[pick % len(slots)]
        if value == "__delete__":
            del container[key]
        else:
            container[key] = value
    return json.dumps(document).encode()


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    if not data:
        return data
    mutable = bytearray(data)
    for position, byte in flips:
        mutable[position % len(mutable)] = byte
    return bytes(mutable)


def _edit_h5(data: bytes, edits: list[tuple[str, Any]]) -> bytes:
    """Attribute and dataset edits through h5py (what a careful attacker writes)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.h5"
        path.write_bytes(data)
        with h5py.File(path, "r+") as h5file:
            datasets: list[str] = []
            h5file.visititems(
                lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None
            )
            for kind, value in edits:
                if kind == "attr" and isinstance(value, tuple):
                    name, content = value
                    h5file.attrs[name] = content
                elif kind == "reshape" and datasets and isinstance(value, tuple):
                    index, shape = value
                    target = datasets[index % len(datasets)]
                    if target in h5file:
                        del h5file[target]
                    h5file.create_dataset(target, shape=shape, dtype="float32")
                elif kind == "drop" and datasets and isinstance(value, int):
                    del h5file[datasets.pop(value % len(datasets))]
        return path.read_bytes()


ATTRIBUTES = st.tuples(
    st.sampled_from(["model_config", "training_config", "keras_version", "backend", "other"]),
    st.one_of(
        st.text(st.characters(exclude_characters="\x00"), max_size=30),  # h5py: no NUL
        st.sampled_from(["{}", "[]", "null", '{"class_name": "Lambda"}', "x" * 100_000]),
        st.binary(min_size=1, max_size=30).map(np.void),
        st.integers(-5, 5),
    ),
)
H5_EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("attr"), ATTRIBUTES),
        st.tuples(
            st.just("reshape"),
            st.tuples(
                st.integers(0, 100),
                st.lists(st.integers(0, 70_000), min_size=1, max_size=3).map(tuple),
            ),
        ),
        st.tuples(st.just("drop"), st.integers(0, 100)),
    ),
    max_size=3,
)
FLIPS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=6)
FEW_FLIPS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=2)
EDITS = VALUES | st.just("__delete__")


@st.composite
def keras_mutations(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "config": draw(
            st.lists(st.tuples(st.integers(0, 10**6), VALUES | st.just("__delete__")), max_size=3)
        ),
        "metadata": draw(st.lists(st.tuples(st.integers(0, 100), VALUES), max_size=1)),
        "weights": draw(H5_EDITS),
        "weight_flips": draw(
            st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=2)
        ),
        "rename": draw(st.lists(st.tuples(st.integers(0, 10), st.sampled_from(NAMES)), max_size=1)),
        "drop": draw(st.lists(st.integers(0, 10), max_size=1)),
        "duplicate": draw(st.lists(st.integers(0, 10), max_size=1)),
        "compression": draw(
            st.sampled_from(
                [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
            )
        ),
        "archive_flips": draw(
            st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=2)
        ),
        "truncate": draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
    }


def _mutated_keras(base: Path, mutation: dict[str, Any], out: Path) -> Path:
    items = hf.members(base)
    for index, (name, data) in enumerate(items):
        if name == "config.json":
            data = _edit_json(data, mutation["config"])
        elif name == "metadata.json":
            data = _edit_json(data, mutation["metadata"])
        elif name == "model.weights.h5":
            data = _flip(_edit_h5(data, mutation["weights"]), mutation["weight_flips"])
        items[index] = (name, data)
    for index, name in mutation["rename"]:
        old = items[index % len(items)]
        items[index % len(items)] = (name, old[1])
    for index in mutation["drop"]:
        if len(items) > 1:
            items.pop(index % len(items))
    for index in mutation["duplicate"]:
        items.append(items[index % len(items)])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", mutation["compression"]) as archive:
        for name, data in items:
            info = zipfile.ZipInfo(name or "unnamed")
            info.compress_type = mutation["compression"]
            with __import__("warnings").catch_warnings():
                __import__("warnings").simplefilter("ignore")
                archive.writestr(info, data)
    raw = _flip(buffer.getvalue(), mutation["archive_flips"])
    if mutation["truncate"] is not None:
        raw = raw[: max(4, int(len(raw) * mutation["truncate"]))]
    path = out / "fuzzed.keras"
    path.write_bytes(raw)
    return path


@st.composite
def h5_mutations(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "config": draw(st.lists(st.tuples(st.integers(0, 10**6), VALUES), max_size=3)),
        "edits": draw(H5_EDITS),
        "flips": draw(FLIPS),
        "truncate": draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
    }


def _mutated_h5(base: Path, mutation: dict[str, Any], out: Path) -> Path:
    data = base.read_bytes()
    if mutation["config"]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.h5"
            path.write_bytes(data)
            with h5py.File(path, "r+") as h5file:
                raw = h5file.attrs["model_config"]
                h5file.attrs["model_config"] = _edit_json(
                    raw.encode() if isinstance(raw, str) else bytes(raw), mutation["config"]
                ).decode()
            data = path.read_bytes()
    data = _flip(_edit_h5(data, mutation["edits"]), mutation["flips"])
    if mutation["truncate"] is not None:
        data = data[: max(8, int(len(data) * mutation["truncate"]))]
    path = out / "fuzzed.h5"
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# The properties
# --------------------------------------------------------------------------------------------


@FUZZ
@given(mutation=keras_mutations())
def test_mutated_keras_archives_end_in_exit_2_or_3_or_load(
    fuzz_base: hf.Base, sandbox_root: Path, tmp_path: Path, mutation: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        path = _mutated_keras(fuzz_base.keras, mutation, Path(work))
        _load_and_judge(path, sandbox_root, tmp_path)


@FUZZ
@given(mutation=h5_mutations())
def test_mutated_h5_files_end_in_exit_2_or_3_or_load(
    fuzz_base: hf.Base, sandbox_root: Path, tmp_path: Path, mutation: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        path = _mutated_h5(fuzz_base.h5, mutation, Path(work))
        _load_and_judge(path, sandbox_root, tmp_path)


CONFUSIONS: list[Any] = [1, -1, 10**12, "x", "", [], {}, None, True, 1.5, [1, 2], {"a": 1}]


def test_every_config_slot_of_every_type_is_checked_without_crashing(
    fuzz_base: hf.Base, model_files: dict[str, Path]
) -> None:
    """Exhaustive type confusion: each value of each shipped config replaced in turn by each
    JSON type. The checker, the shape inference and the Keras 2 repair must return, not
    raise (a raise here is the CLI's exit 4)."""
    import copy

    from kerasaudit.loading import repair_keras2_config
    from kerasaudit.safety import check_config

    configs = [hf.config_of(fuzz_base.keras), hf.config_of(model_files["keras_nested"])]
    with h5py.File(model_files["h5_keras2"]) as h5file:
        configs.append(json.loads(h5file.attrs["model_config"]))
    checked = 0
    for config in configs:
        for index in range(len(_json_slots(config))):
            for value in CONFUSIONS:
                mutated = copy.deepcopy(config)
                container, key = _json_slots(mutated)[index]
                container[key] = value
                check_config(mutated, custom={"tests>Scale"})
                repair_keras2_config(mutated)
                checked += 1
    assert checked > 1000
