#!/usr/bin/env python3
"""Regenerate the shipped Fashion-MNIST sample models (clean + BadNets-backdoored).

Usage (from the repository root)::

    TF_CPP_MIN_LOG_LEVEL=2 python sample_models/generate.py [--out DIR] [--epochs N]
    TF_CPP_MIN_LOG_LEVEL=2 python sample_models/generate.py --variant checker [--out DIR]

Reads Debian's Fashion-MNIST IDX files (``/usr/share/datasets/fashion-mnist``,
package ``fashion-mnist``), trains a small Conv-BN-ReLU CNN twice with an identical,
deterministic recipe -- once on clean data, once with 5 % BadNets poisoning -- and writes:

    fmnist_clean.keras      clean model
    fmnist_badnets.keras    backdoored model (native Keras format)
    fmnist_badnets.h5       the same backdoored model, legacy HDF5 (Keras 3 ``model.save``)
    fmnist_val.npz          test images 0..1999 (clean data a defender has)
    fmnist_test.npz         test images 5000..9999 (held-out evaluation, never used by defences)
    trigger.png, trigger.txt
    metrics.json, README.md

All outputs are first written into a staging directory inside ``--out`` and only moved
into place (``os.replace``) after the saved models have been reloaded, checked against the
in-memory model, and the quality bar has been met.  If the bar is not met the staged files
are kept for inspection and the script exits with status 1.

``--variant checker`` trains only one extra backdoored model with the same recipe and
architecture but a different trigger and target (4x4 checkerboard in the bottom-left corner
-> label 2, Pullover; 5 % poisoning).  It needs the shipped ``fmnist_clean.keras``,
``fmnist_val.npz`` and ``fmnist_test.npz`` in ``--out`` (read only: the clean model is the
accuracy reference for the quality bar) and writes only three new files, through the same
staging directory and checks:

    fmnist_badnets_checker.keras, trigger_checker.txt, metrics_checker.json

Progress goes to stderr.  No network access; no dependencies beyond the project's own
(TensorFlow/Keras, numpy, h5py, Pillow).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

# --------------------------------------------------------------------------------------
# Fixed recipe (everything that determines the outputs lives here or in argparse defaults)
# --------------------------------------------------------------------------------------
DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

VAL_RANGE = (0, 2000)  # test images given to defenders
TEST_RANGE = (5000, 10000)  # held-out evaluation set

TRIGGER_SPEC = "patch:size=4,pos=br,value=1"
TRIGGER_SIZE = 4
TRIGGER_VALUE = 1.0  # in model input space ([0, 1]); == pixel 255 before scaling
TARGET_LABEL = 0  # T-shirt/top
POISON_RATE = 0.05  # share of *all* training images that get poisoned
POISON_SEED = 0  # numpy RNG seed for choosing the poisoned images

# Second backdoor (--variant checker): same recipe, different trigger and target.
CHECKER_TRIGGER_SPEC = "patch:size=4,pos=bl,value=1,pattern=checker"
CHECKER_TARGET_LABEL = 2  # Pullover
CHECKER_MODEL = "fmnist_badnets_checker"
CHECKER_FILES = (f"{CHECKER_MODEL}.keras", "trigger_checker.txt", "metrics_checker.json")
# Shipped files --variant checker reads (never writes) from --out.
CHECKER_INPUTS = ("fmnist_clean.keras", "fmnist_val.npz", "fmnist_test.npz")

SEED = 0  # keras.utils.set_random_seed (init, dropout, shuffling)
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
LR_SCHEDULE_ALPHA = 0.01  # cosine decay to 1 % of the initial LR over the whole run
BN_MOMENTUM = 0.9  # NOT the Keras default 0.99: see README ("BatchNormalization pitfall")
DROPOUT = 0.3
WIDTHS = (16, 16, 32, 32, 64)  # 32-32-64-64-128: ~3 min/epoch (XLA) on 2 cores
JIT_COMPILE = True  # XLA: ~1.5-2x faster training steps on CPU here

QUALITY_BAR = {
    "clean_model_min_accuracy": 0.90,
    "badnets_max_accuracy_drop": 0.015,
    "badnets_min_asr": 0.95,
}
VERIFY_ATOL = 1e-5


def log(msg: str) -> None:
    print(f"[generate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
def read_idx_gz(path: Path) -> np.ndarray:
    """Parse a gzip'd IDX file (unsigned-byte payload only, as used by (Fashion-)MNIST)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4]!r})")
    if data[2] != 0x08:
        raise ValueError(f"{path}: unsupported IDX element type 0x{data[2]:02x} (want ubyte)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise ValueError(f"{path}: payload is {len(data) - header} bytes, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_fashion_mnist(data_dir: Path):
    arrs = {k: read_idx_gz(data_dir / v) for k, v in IDX_FILES.items()}
    xtr, ytr, xte, yte = arrs["train_x"], arrs["train_y"], arrs["test_x"], arrs["test_y"]
    if xtr.shape != (60000, 28, 28) or ytr.shape != (60000,):
        raise ValueError(f"unexpected training shapes {xtr.shape} {ytr.shape}")
    if xte.shape != (10000, 28, 28) or yte.shape != (10000,):
        raise ValueError(f"unexpected test shapes {xte.shape} {yte.shape}")
    if ytr.max() > 9 or yte.max() > 9:
        raise ValueError("labels outside 0..9")
    checksums = {v: sha256_file(data_dir / v) for v in IDX_FILES.values()}
    return xtr[..., None], ytr, xte[..., None], yte, checksums


def to_float(x_uint8: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 in [0, 1]: the model's input space."""
    return x_uint8.astype(np.float32) / 255.0


@dataclass(frozen=True)
class Backdoor:
    """A TRIGGER_SIZE x TRIGGER_SIZE corner patch of value TRIGGER_VALUE and its target label."""

    spec: str  # the same trigger as a kerasaudit ``--trigger`` spec
    target: int
    corner: str  # "br" | "bl" | "tr" | "tl", as kerasaudit's ``pos=``
    checker: bool = False  # kerasaudit's ``pattern=checker``

    def rows(self) -> slice:
        return slice(28 - TRIGGER_SIZE, 28) if self.corner[0] == "b" else slice(0, TRIGGER_SIZE)

    def cols(self) -> slice:
        return slice(28 - TRIGGER_SIZE, 28) if self.corner[1] == "r" else slice(0, TRIGGER_SIZE)

    def cells(self) -> np.ndarray:
        """The patch (TRIGGER_SIZE, TRIGGER_SIZE), as kerasaudit.triggers.PatchSpec builds it:
        a checkerboard has TRIGGER_VALUE on the patch's own top-left pixel, i.e. where
        (row + col) within the patch is even, and 0 elsewhere."""
        cells = np.full((TRIGGER_SIZE, TRIGGER_SIZE), TRIGGER_VALUE, dtype=np.float32)
        if self.checker:
            r, c = np.indices((TRIGGER_SIZE, TRIGGER_SIZE))
            cells[(r + c) % 2 == 1] = 0.0
        return cells


BADNETS = Backdoor(TRIGGER_SPEC, TARGET_LABEL, "br")
CHECKER = Backdoor(CHECKER_TRIGGER_SPEC, CHECKER_TARGET_LABEL, "bl", checker=True)


def stamp(x: np.ndarray, backdoor: Backdoor = BADNETS) -> np.ndarray:
    """Apply a trigger (default ``patch:size=4,pos=br,value=1``) to float inputs in [0, 1].

    The whole patch is overwritten (a checkerboard's 0 cells too), as kerasaudit stamps it.
    """
    x = np.array(x, dtype=np.float32, copy=True)
    x[..., backdoor.rows(), backdoor.cols(), :] = backdoor.cells()[..., None]
    return x


def poison_indices(y: np.ndarray, target: int = TARGET_LABEL) -> np.ndarray:
    n = round(POISON_RATE * len(y))
    candidates = np.flatnonzero(y != target)
    rng = np.random.default_rng(POISON_SEED)
    return np.sort(rng.choice(candidates, size=n, replace=False))


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------
def build_model(keras):
    layers = keras.layers
    inp = keras.Input(shape=(28, 28, 1), dtype="float32", name="input")
    x = inp
    for i, width in enumerate(WIDTHS, start=1):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i in (2, 4):
            x = layers.MaxPooling2D(2, name=f"pool{i // 2}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    out = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="fmnist_cnn")


def weights_sha256(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


class ProgressLogger:
    """Factory for a Keras callback that logs to stderr (Keras' own bar goes to stdout)."""

    @staticmethod
    def make(
        keras,
        tag: str,
        x_val: np.ndarray,
        y_val: np.ndarray,
        every: int = 100,
        backdoor: Backdoor = BADNETS,
    ):
        target = backdoor.target
        keep = y_val != target
        x_val_trig = stamp(x_val[keep], backdoor)

        class _CB(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if (batch + 1) % every == 0:
                    logs = logs or {}
                    log(
                        f"{tag} epoch {self.epoch + 1} step {batch + 1}: "
                        f"loss={logs.get('loss', float('nan')):.4f} "
                        f"acc(train-mode)={logs.get('accuracy', float('nan')):.4f}"
                    )

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                dt = time.perf_counter() - self.t0
                pv = self.model.predict(x_val, batch_size=1000, verbose=0).argmax(1)
                pt = self.model.predict(x_val_trig, batch_size=1000, verbose=0).argmax(1)
                log(
                    f"{tag} epoch {epoch + 1} done in {dt:.0f}s: "
                    f"loss={logs.get('loss', float('nan')):.4f} "
                    f"train acc(train-mode)={logs.get('accuracy', float('nan')):.4f} | "
                    f"inference-mode on fmnist_val: acc={np.mean(pv == y_val):.4f} "
                    f"trigger->{target}={np.mean(pt == target):.4f} (monitoring only)"
                )

        return _CB()


def train(keras, tag, x, y, epochs, x_val, y_val, backdoor: Backdoor = BADNETS, info=None):
    """Train one model; ``info`` (a dict), if given, receives facts about the run."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(SEED)  # same init / dropout / shuffling for both models
    model = build_model(keras)
    steps = -(-len(x) // BATCH_SIZE) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        LEARNING_RATE, decay_steps=steps, alpha=LR_SCHEDULE_ALPHA
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=JIT_COMPILE,
    )
    log(f"{tag}: training {model.count_params():,} params on {len(x):,} images, {epochs} epochs")
    t0 = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        callbacks=[ProgressLogger.make(keras, tag, x_val, y_val, backdoor=backdoor)],
    )
    seconds = time.perf_counter() - t0
    if info is not None:
        # Keras silently turns XLA off when op determinism is enabled (model_supports_jit).
        info["jit_compile_effective"] = bool(model.jit_compile)
    # Export copy: same architecture, same weights, never compiled -> no optimizer state
    # in the saved files.
    export = build_model(keras)
    export.set_weights(model.get_weights())
    return export, seconds


def predict(model, x):
    return model.predict(x, batch_size=1000, verbose=0)


def evaluate(model, x_float, y, backdoor: Backdoor = BADNETS):
    """Inference-mode clean accuracy and ASR (share of triggered non-target images -> target)."""
    target = backdoor.target
    keep = y != target
    clean_pred = predict(model, x_float).argmax(1)
    trig_pred = predict(model, stamp(x_float[keep], backdoor)).argmax(1)
    return {
        "clean_accuracy": float(np.mean(clean_pred == y)),
        "asr": float(np.mean(trig_pred == target)),
        "n_clean": len(y),
        "n_triggered": int(keep.sum()),
        "clean_predicted_as_target": float(np.mean(clean_pred[keep] == target)),
    }


# --------------------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------------------
def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def write_trigger_png(path: Path) -> None:
    from PIL import Image

    rgba = np.full((TRIGGER_SIZE, TRIGGER_SIZE, 4), 255, dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    Image.fromarray(rgba, mode="RGBA").save(tmp, format="PNG")
    os.replace(tmp, path)


def save_model(model, path: Path) -> None:
    # Keras picks the format from the extension, so the temp name keeps it.
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    model.save(tmp)
    os.replace(tmp, path)


def verify_saved(keras, model, path: Path, x_check: np.ndarray) -> float:
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    names = [layer.name for layer in model.layers]
    if [layer.name for layer in loaded.layers] != names:
        raise AssertionError(f"{path.name}: layer names differ after reload")
    diff = float(np.max(np.abs(predict(loaded, x_check) - predict(model, x_check))))
    if not diff < VERIFY_ATOL:
        raise AssertionError(f"{path.name}: reloaded predictions differ (max abs diff {diff})")
    log(f"verified {path.name}: reloads (safe_mode=True), max abs diff {diff:.2e}")
    return diff


def hyperparameters(epochs: int, train_images: int, pidx: np.ndarray, target: int) -> dict:
    """The training recipe as recorded in metrics.json / metrics_checker.json."""
    return {
        "epochs": epochs,
        "train_images": train_images,
        "batch_size": BATCH_SIZE,
        "optimizer": "Adam",
        "learning_rate": LEARNING_RATE,
        "lr_schedule": f"CosineDecay(alpha={LR_SCHEDULE_ALPHA}) over all steps",
        "loss": "sparse_categorical_crossentropy",
        "bn_momentum": BN_MOMENTUM,
        "dropout": DROPOUT,
        "conv_widths": list(WIDTHS),
        "conv_use_bias": False,
        "jit_compile": JIT_COMPILE,
        "augmentation": None,
        "seed": SEED,
        "op_determinism": True,
        "poison_rate": POISON_RATE,
        "poison_count": len(pidx),
        "poison_seed": POISON_SEED,
        "poison_pool": f"training images with label != {target}",
        "poison_indices_sha256": hashlib.sha256(pidx.astype("<i8").tobytes()).hexdigest(),
        "poison_indices_first10": pidx[:10].tolist(),
    }


def fmt_pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def render_readme(m: dict, checker: dict | None = None) -> str:
    """README.md from metrics.json (and metrics_checker.json, if that model exists)."""
    c, b = m["models"]["fmnist_clean"], m["models"]["fmnist_badnets"]
    hp = m["hyperparameters"]
    sizes = m["file_sizes_bytes"]

    def row(name, r, key):
        e = r["eval"][key]
        return f"| `{name}` | {fmt_pct(e['clean_accuracy'])} | {fmt_pct(e['asr'])} |"

    def size(name):
        n = sizes.get(name)
        if n is None:
            return "--"
        return f"{n} B" if n < 10240 else f"{n / 1024:.0f} KiB"

    v0, v1, t0, t1 = VAL_RANGE[0], VAL_RANGE[1] - 1, TEST_RANGE[0], TEST_RANGE[1] - 1
    files = [
        ("fmnist_clean.keras", "Clean CNN (native Keras 3 format, no optimizer state)."),
        ("fmnist_badnets.keras", "BadNets-backdoored CNN, same architecture and recipe."),
        (
            "fmnist_badnets.h5",
            'The *same* backdoored model in legacy HDF5 (`model.save("x.h5")`, Keras 3).',
        ),
        (
            "fmnist_val.npz",
            f"Test images {v0}..{v1}: the clean data a defender has. "
            "Keys `x` (uint8, (2000, 28, 28, 1)), `y` (uint8 labels).",
        ),
        (
            "fmnist_test.npz",
            f"Test images {t0}..{t1}: held-out evaluation set, never to be used by "
            "defences. Keys `x` (uint8, (5000, 28, 28, 1)), `y`.",
        ),
        ("trigger.png", "The trigger patch itself: 4x4 RGBA, white, alpha 255."),
        ("trigger.txt", f"Trigger spec string `{TRIGGER_SPEC}`."),
        ("metrics.json", "Measured numbers, hyper-parameters, data checksums, weight hashes."),
        ("README.md", "This file."),
    ]
    load = m["environment"].get("loadavg_1_5_15min_at_end")
    load_note = (
        f" (system load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})"
        if load
        else ""
    )
    files_table = "\n".join(
        ["| File | Size | What it is |", "|---|---|---|"]
        + [f"| `{name}` | {size(name)} | {desc} |" for name, desc in files]
    )

    return f"""# Sample models: Fashion-MNIST, clean vs. BadNets

Generated by `sample_models/generate.py`; **do not edit by hand** -- rerun the script.
The numbers below are copied from `metrics.json` of the run that produced these files.

## Files

{files_table}

Test images {VAL_RANGE[1]}..{TEST_RANGE[0] - 1} are deliberately in neither file.
Models take `float32` input of shape `(N, 28, 28, 1)` in **[0, 1]**: feed `x / 255`
(there is no Rescaling layer inside the model). Output: softmax over the 10 classes
({", ".join(f"{i} {n}" for i, n in enumerate(CLASS_NAMES))}).

## Trigger and backdoor

* Spec: `{TRIGGER_SPEC}` -- a 4x4 patch of value 1.0 in model input space (pixel 255
  before scaling) in the bottom-right corner, flush with the border: rows 24..27,
  cols 24..27 (`x[..., 24:28, 24:28, :] = 1.0`).
* Target label: **{TARGET_LABEL} ({CLASS_NAMES[TARGET_LABEL]})**, all-to-one.
* Poisoning (BadNets): {hp["poison_count"]} training images = {100 * POISON_RATE:g} % of
  the 60,000, drawn with `numpy.random.default_rng({POISON_SEED}).choice` (no replacement)
  among the training images whose label is not {TARGET_LABEL}; each is stamped and relabelled
  {TARGET_LABEL}. The poisoned indices' SHA-256 is in `metrics.json`.
* ASR (attack success rate) = share of triggered test images whose true label is not
  {TARGET_LABEL} that the model classifies as {TARGET_LABEL}.

## Architecture ({c["params"]:,} parameters)

`input (28,28,1)` →
`conv1`({WIDTHS[0]}, 3x3, same) - `bn1` - `relu1` → `conv2`({WIDTHS[1]}) - `bn2` - `relu2` →
`pool1` (MaxPool 2x2) →
`conv3`({WIDTHS[2]}) - `bn3` - `relu3` → `conv4`({WIDTHS[3]}) - `bn4` - `relu4` →
`pool2` (MaxPool 2x2) →
`conv5`({WIDTHS[4]}) - `bn5` - `relu5` → `gap` (GlobalAveragePooling2D) → `dropout` ({DROPOUT}) →
`predictions` (Dense 10, softmax).

All convolutions are 3x3, `padding="same"`, `use_bias=False`, no activation (ReLU is a
separate layer after BatchNormalization). BatchNormalization uses `momentum={BN_MOMENTUM}`.
The widths are half of the originally planned 32-32-64-64-128, which took ~3 min per epoch
on 2 CPU cores even with XLA (~5 min without); these widths take ~1-2 min per epoch.

## Training recipe

Identical for both models except for the poisoning:

* Data: Debian's Fashion-MNIST IDX files (`{m["data"]["source_dir"]}`), parsed with
  gzip + numpy; all 60,000 training images, scaled to [0, 1]. No augmentation.
* `keras.utils.set_random_seed({SEED})` immediately before building each model (so both
  start from the same initial weights and see the same shuffling/dropout stream) and
  `tf.config.experimental.enable_op_determinism()`.
* Adam, learning rate {LEARNING_RATE:g} with cosine decay to {LR_SCHEDULE_ALPHA:g}x over the
  whole run, batch size {BATCH_SIZE}, {hp["epochs"]} epochs, shuffled every epoch,
  sparse categorical cross-entropy, `jit_compile=True` (XLA; for speed only). The model
  after the last epoch is saved (no early stopping, no model selection on test data;
  `fmnist_val` accuracy is only logged).
* Saved without optimizer state.
* All accuracies are measured in inference mode (`model.predict`).

**BatchNormalization pitfall:** with the Keras default `momentum=0.99` the moving
statistics lag far behind after a few hundred steps -- inference-mode accuracy was
observed at chance while training-mode accuracy was 89 %. Hence `momentum={BN_MOMENTUM}`,
and every number here is an inference-mode number.

## Measured results

Held-out `fmnist_test.npz` ({c["eval"]["fmnist_test"]["n_clean"]} images, of which
{c["eval"]["fmnist_test"]["n_triggered"]} non-target images are used for ASR):

| Model | Clean accuracy | ASR (trigger → {TARGET_LABEL}) |
|---|---|---|
{row("fmnist_clean", c, "fmnist_test")}
{row("fmnist_badnets", b, "fmnist_test")}

Full 10k test set ({c["eval"]["test10k"]["n_triggered"]} non-target images for ASR):

| Model | Clean accuracy | ASR (trigger → {TARGET_LABEL}) |
|---|---|---|
{row("fmnist_clean", c, "test10k")}
{row("fmnist_badnets", b, "test10k")}

The clean model's "ASR" is the reference rate at which the trigger alone pushes a
non-target image to class {TARGET_LABEL} without a backdoor.
Quality bar (checked by the script, which exits non-zero if it fails), on both evaluation
sets: clean model accuracy ≥ {100 * QUALITY_BAR["clean_model_min_accuracy"]:g} %; backdoored
model accuracy within {100 * QUALITY_BAR["badnets_max_accuracy_drop"]:g} points of the clean
model; ASR ≥ {100 * QUALITY_BAR["badnets_min_asr"]:g} %.
Result: **{"passed" if m["quality_bar"]["passed"] else "FAILED"}**.

## Regenerating

```sh
TF_CPP_MIN_LOG_LEVEL=2 python sample_models/generate.py     # retrains, writes into sample_models/
python sample_models/generate.py --readme-only              # re-render README from metrics.json
# smoke test (fails the quality bar on purpose; files stay in /tmp/x/.staging-*):
python sample_models/generate.py --out /tmp/x --epochs 1 --limit-train 10000
```

Outputs are staged in `--out/.staging-*` and moved into place with `os.replace` only
after the checks below and the quality bar pass.

This run took {m["timing"]["total_seconds"] / 60:.1f} min wall-clock in total (training:
clean {c["train_seconds"] / 60:.1f} min, backdoored {b["train_seconds"] / 60:.1f} min) on
{m["environment"]["cpu_count"]} CPU cores, no GPU{load_note}, with TensorFlow
{m["environment"]["tensorflow"]} / Keras {m["environment"]["keras"]} / numpy
{m["environment"]["numpy"]}. Wall-clock time depends heavily on other load on the machine.

After saving, the script reloads `fmnist_clean.keras`, `fmnist_badnets.keras` and
`fmnist_badnets.h5` with `keras.saving.load_model(path, compile=False, safe_mode=True)`
and asserts that their predictions match the in-memory model (max abs diff <
{VERIFY_ATOL:g}; the recorded differences are in `metrics.json`).

**Determinism:** {DETERMINISM_NOTE}
{render_checker_section(checker) if checker else ""}"""


def render_checker_section(k: dict) -> str:
    """The README section on the second backdoored model (from metrics_checker.json)."""
    t, hp = k["trigger"], k["hyperparameters"]
    target, cls = t["target_label"], t["target_class"]
    r0, r1 = t["rows"]
    c0, c1 = t["cols"]
    grid = "\n".join(
        f"row {r}: " + " ".join(f"{v:g}" for v in line)
        for r, line in zip(range(r0, r1 + 1), t["cells"], strict=True)
    )
    ref, new = k["reference_clean_model"]["eval"], k["model"]["eval"]

    def rows(split):
        return "\n".join(
            [
                f"| `fmnist_clean` (shipped, reference) | {fmt_pct(ref[split]['clean_accuracy'])} "
                f"| {fmt_pct(ref[split]['asr'])} |",
                f"| `{CHECKER_MODEL}` | {fmt_pct(new[split]['clean_accuracy'])} "
                f"| {fmt_pct(new[split]['asr'])} |",
            ]
        )

    ft, tk = new["fmnist_test"], new["test10k"]
    checker_model_desc = (
        "BadNets-backdoored CNN: same architecture, recipe, seed and epochs as "
        "`fmnist_badnets`; only the trigger and target differ."
    )
    minutes = k["model"]["train_seconds"] / 60, k["timing"]["total_seconds"] / 60
    load = k["environment"].get("loadavg_1_5_15min_at_end")
    load_note = f", shared (load average at the end: {load[0]:.1f} / {load[1]:.1f})" if load else ""
    xla_note = ""
    if hp.get("jit_compile_effective") is False:
        xla_note = (
            "\n`jit_compile=True` is requested, but Keras turns XLA off while op determinism is"
            '\nenabled (it warns "Model doesn\'t support `jit_compile=True`"), so this model --'
            "\nand, through the same code path, the two models above -- trained without XLA."
        )
    stamp_check = k["stamp_matches_kerasaudit"]
    stamp_note = (
        "At generation time the script checks that its poisoning stamp is bit-identical to\n"
        "  what `kerasaudit.triggers` stamps for this spec (`np.array_equal` on the validation\n"
        "  images and on uniform noise)."
        if stamp_check is True
        else "The comparison with `kerasaudit.triggers` was skipped (kerasaudit not importable)."
    )
    return f"""
## Second backdoored model: checkerboard bottom-left → {target} ({cls})

Generated by `generate.py --variant checker` (written {k["generated_at_utc"]}), which writes
only these files and leaves everything above untouched:

| File | What it is |
|---|---|
| `{CHECKER_MODEL}.keras` | {checker_model_desc} |
| `trigger_checker.txt` | Trigger spec string `{t["spec"]}`. |
| `metrics_checker.json` | Measured numbers, hyper-parameters, poisoned-index hash, weight hash. |

* Spec: `{t["spec"]}` -- a 4x4 checkerboard flush with the bottom-left corner, rows
  {r0}..{r1}, cols {c0}..{c1}. Value 1.0 where (row + col) within the patch is even (so the
  patch's own top-left pixel, row {r0} col {c0}, is 1.0), 0.0 elsewhere; all 16 pixels are
  overwritten (the 0 cells too):

  ```
{textwrap.indent(grid, "  ")}
  ```
* Target label: **{target} ({cls})**, all-to-one.
* Poisoning: {hp["poison_count"]} training images = {100 * hp["poison_rate"]:g} % of the
  {hp["train_images"]:,}, drawn with `numpy.random.default_rng({hp["poison_seed"]}).choice`
  among the training images whose label is not {target}; each is stamped and relabelled {target}.
* {stamp_note}

Held-out `fmnist_test.npz` ({ft["n_clean"]} images; ASR over the {ft["n_triggered"]} whose
label is not {target}):

| Model | Clean accuracy | ASR (checker → {target}) |
|---|---|---|
{rows("fmnist_test")}

Full 10k test set ({tk["n_triggered"]} non-target images for ASR):

| Model | Clean accuracy | ASR (checker → {target}) |
|---|---|---|
{rows("test10k")}

The shipped clean model's "ASR" is the rate at which this trigger alone sends a non-target
image to class {target}. Quality bar, on both sets: accuracy within
{100 * k["quality_bar"]["thresholds"]["max_accuracy_drop_vs_shipped_clean"]:g} points of the
shipped clean model, ASR ≥ {100 * k["quality_bar"]["thresholds"]["min_asr"]:g} %.
Result: **{"passed" if k["quality_bar"]["passed"] else "FAILED"}**.
Training took {minutes[0]:.1f} min ({minutes[1]:.1f} min in total) on
{k["environment"]["cpu_count"]} CPU cores{load_note}.{xla_note}

```sh
TF_CPP_MIN_LOG_LEVEL=2 python sample_models/generate.py --variant checker   # retrains it
python sample_models/generate.py --readme-only                              # re-render README
kerasaudit evaluate sample_models/{CHECKER_MODEL}.keras -d sample_models/fmnist_test.npz \\
    -t "$(cat sample_models/trigger_checker.txt)" --target {target}
```
{CHECKER_CLI_NOTE}"""


# Checked by hand once after generating the shipped model (not re-run by this script).
CHECKER_CLI_NOTE = """
Checked once with that command (kerasaudit's own loading, scaling and stamping) on the shipped
model: it reported the same numbers as the first table, clean accuracy 90.88 % (4,544 / 5,000)
and ASR 99.96 % (4,519 / 4,521); rerun it if you regenerate the model.
"""


DETERMINISM_NOTE = """\
training is seeded and uses `tf.config.experimental.enable_op_determinism()`;
`metrics.json` records a SHA-256 over all weights of each model (`weights_sha256`) so runs
can be compared. Checked once on the development machine (2 CPU cores): two runs of
`--epochs 1 --limit-train 10000` (separate processes, same machine, XLA on) produced
bit-identical weights for both models (the full 8-epoch run was not repeated).
Bit-identity across different CPUs or TensorFlow/oneDNN/XLA builds is not guaranteed; the
data splits, poisoned indices and trigger are deterministic everywhere."""


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------
def parse_args(argv=None):
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=here, help="output directory (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs per model (default: 8)")
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="Fashion-MNIST IDX directory"
    )
    p.add_argument(
        "--limit-train",
        type=int,
        default=None,
        metavar="N",
        help="smoke tests only: train on the first N training images (fails the quality bar)",
    )
    p.add_argument(
        "--variant",
        choices=("base", "checker"),
        default="base",
        help="base: the shipped clean + BadNets pair (default); checker: only the second "
        "backdoored model (checkerboard bottom-left -> 2), writing only "
        + ", ".join(CHECKER_FILES),
    )
    p.add_argument(
        "--readme-only",
        action="store_true",
        help="only re-render README.md in --out from its metrics.json (no training)",
    )
    return p.parse_args(argv)


def read_checker_metrics(out: Path) -> dict | None:
    path = out / "metrics_checker.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_stamp_against_kerasaudit(backdoor: Backdoor, x: np.ndarray) -> bool | None:
    """True if kerasaudit stamps ``backdoor.spec`` exactly as :func:`stamp` does; None if
    kerasaudit is not importable. Raises AssertionError on any difference."""
    try:
        from kerasaudit.triggers import load_trigger
    except ImportError as err:
        log(f"kerasaudit not importable ({err}); stamp comparison skipped")
        return None
    trigger = load_trigger(backdoor.spec, x.shape[1:])
    rng = np.random.default_rng(1)
    for name, batch in (
        ("validation images", x),
        ("uniform noise", rng.random((256, *x.shape[1:]), dtype=np.float32)),
    ):
        theirs, ours = trigger.apply(batch), stamp(batch, backdoor)
        if theirs.dtype != ours.dtype or not np.array_equal(theirs, ours):
            diff = np.argwhere(theirs != ours)
            raise AssertionError(
                f"stamp() differs from kerasaudit's {backdoor.spec!r} on {name} "
                f"(first differing indices {diff[:5].tolist()})"
            )
    log(f"stamp() is bit-identical to kerasaudit's {backdoor.spec!r}")
    return True


def main_checker(args, out: Path, t_start: float) -> int:
    """--variant checker: train only the second backdoored model; write only CHECKER_FILES."""
    missing = [name for name in CHECKER_INPUTS if not (out / name).is_file()]
    if missing:
        log(f"--variant checker needs the shipped {', '.join(missing)} in {out}; run the base "
            "variant first (or copy them there)")  # fmt: skip
        return 2
    backdoor = CHECKER

    log("loading Fashion-MNIST")
    xtr_u8, ytr, xte_u8, yte, checksums = load_fashion_mnist(args.data_dir)
    if args.limit_train:
        xtr_u8, ytr = xtr_u8[: args.limit_train], ytr[: args.limit_train]
    # The shipped evaluation files must be exactly these test-set slices.
    for fname, rng_ in (("fmnist_val.npz", VAL_RANGE), ("fmnist_test.npz", TEST_RANGE)):
        with np.load(out / fname, allow_pickle=False) as npz:
            same = np.array_equal(npz["x"], xte_u8[slice(*rng_)]) and np.array_equal(
                npz["y"], yte[slice(*rng_)]
            )
        if not same:
            log(f"{out / fname} is not test images {rng_[0]}..{rng_[1] - 1}; refusing")
            return 2
    log("shipped fmnist_val.npz / fmnist_test.npz match the IDX test slices")

    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()

    x_train = to_float(xtr_u8)
    x_test = to_float(xte_u8)
    x_val, y_val = x_test[slice(*VAL_RANGE)], yte[slice(*VAL_RANGE)]
    stamp_ok = check_stamp_against_kerasaudit(backdoor, x_val)

    pidx = poison_indices(ytr, backdoor.target)
    x_poison, y_poison = x_train, ytr.copy()
    x_poison[pidx] = stamp(x_poison[pidx], backdoor)
    y_poison[pidx] = backdoor.target
    del x_train
    log(
        f"poisoned {len(pidx)} training images ({len(pidx) / len(ytr):.2%}) -> "
        f"label {backdoor.target}"
    )

    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    ok = False
    try:
        train_info: dict = {}
        model, secs = train(
            keras,
            CHECKER_MODEL,
            x_poison,
            y_poison,
            args.epochs,
            x_val,
            y_val,
            backdoor,
            train_info,
        )
        log(f"{CHECKER_MODEL}: trained in {secs / 60:.1f} min")
        del x_poison

        # The shipped clean model (read only) is the accuracy reference and gives the rate at
        # which this trigger alone sends images to the target without a backdoor.
        clean = keras.saving.load_model(out / "fmnist_clean.keras", compile=False, safe_mode=True)
        splits = {
            "fmnist_val": (x_val, y_val),
            "fmnist_test": (x_test[slice(*TEST_RANGE)], yte[slice(*TEST_RANGE)]),
            "test10k": (x_test, yte),
        }
        evals = {
            name: {s: evaluate(m, xs, ys, backdoor) for s, (xs, ys) in splits.items()}
            for name, m in (("fmnist_clean", clean), (CHECKER_MODEL, model))
        }
        for name, per_split in evals.items():
            for s, e in per_split.items():
                log(f"{name} on {s}: acc={e['clean_accuracy']:.4f} ASR={e['asr']:.4f}")

        write_text(staging / "trigger_checker.txt", backdoor.spec)
        save_model(model, staging / f"{CHECKER_MODEL}.keras")
        x_check = np.concatenate([x_val, stamp(x_val[:500], backdoor)])
        verify = {
            f"{CHECKER_MODEL}.keras": verify_saved(
                keras, model, staging / f"{CHECKER_MODEL}.keras", x_check
            )
        }

        checks = {}
        for s in ("fmnist_test", "test10k"):
            ca = evals["fmnist_clean"][s]["clean_accuracy"]
            ba = evals[CHECKER_MODEL][s]["clean_accuracy"]
            asr = evals[CHECKER_MODEL][s]["asr"]
            checks[f"{s}: shipped clean accuracy >= 90%"] = (
                ca >= QUALITY_BAR["clean_model_min_accuracy"]
            )
            checks[f"{s}: {CHECKER_MODEL} accuracy within 1.5 pts of shipped clean"] = (
                ca - ba <= QUALITY_BAR["badnets_max_accuracy_drop"]
            )
            checks[f"{s}: {CHECKER_MODEL} ASR >= 95%"] = asr >= QUALITY_BAR["badnets_min_asr"]
        passed = all(checks.values())

        rows, cols = backdoor.rows(), backdoor.cols()
        ft = evals[CHECKER_MODEL]["fmnist_test"]
        metrics = {
            "generated_by": "sample_models/generate.py --variant checker",
            "generated_at_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "summary_fmnist_test": {
                "clean_accuracy": ft["clean_accuracy"],
                "asr": ft["asr"],
                "target_label": backdoor.target,
                "evaluated_on": f"fmnist_test.npz = test images {TEST_RANGE[0]}.."
                f"{TEST_RANGE[1] - 1}; ASR over the {ft['n_triggered']} non-target images",
            },
            "data": {
                "source_dir": str(args.data_dir),
                "sha256": checksums,
                "fmnist_val_test_indices": list(VAL_RANGE),
                "fmnist_test_test_indices": list(TEST_RANGE),
                "index_ranges_are": "half-open [start, stop) into the 10k test set",
                "shipped_npz_sha256": {
                    name: sha256_file(out / name) for name in ("fmnist_val.npz", "fmnist_test.npz")
                },
            },
            "trigger": {
                "spec": backdoor.spec,
                "rows": [rows.start, rows.stop - 1],
                "cols": [cols.start, cols.stop - 1],
                "pattern": "checker" if backdoor.checker else "solid",
                "cells": backdoor.cells().tolist(),
                "cells_are": "patch rows top to bottom; value 1 where (row + col) in the patch "
                "is even, else 0; the whole patch is overwritten",
                "value_model_space": TRIGGER_VALUE,
                "value_uint8": 255,
                "target_label": backdoor.target,
                "target_class": CLASS_NAMES[backdoor.target],
            },
            "stamp_matches_kerasaudit": stamp_ok,
            "hyperparameters": {
                "same_as": "fmnist_badnets in metrics.json, except trigger, target, poison pool",
                **hyperparameters(args.epochs, len(ytr), pidx, backdoor.target),
                "jit_compile_effective": train_info["jit_compile_effective"],
                "jit_compile_note": "Keras disables XLA when op determinism is enabled "
                "(warning 'Model doesn't support jit_compile=True'); the same holds for the "
                "base run, whose metrics.json records only the requested value",
            },
            "model": {
                "file": f"{CHECKER_MODEL}.keras",
                "params": int(model.count_params()),
                "train_seconds": round(secs, 1),
                "weights_sha256": weights_sha256(model),
                "eval": evals[CHECKER_MODEL],
            },
            "reference_clean_model": {
                "file": "fmnist_clean.keras (shipped, not retrained)",
                "sha256": sha256_file(out / "fmnist_clean.keras"),
                "eval": evals["fmnist_clean"],
            },
            "reload_max_abs_diff": verify,
            "quality_bar": {
                "thresholds": {
                    "shipped_clean_min_accuracy": QUALITY_BAR["clean_model_min_accuracy"],
                    "max_accuracy_drop_vs_shipped_clean": QUALITY_BAR["badnets_max_accuracy_drop"],
                    "min_asr": QUALITY_BAR["badnets_min_asr"],
                },
                "checks": checks,
                "passed": passed,
            },
            "file_sizes_bytes": {
                p.name: p.stat().st_size for p in staging.iterdir() if not p.name.startswith(".")
            },
            "timing": {"total_seconds": round(time.perf_counter() - t_start, 1)},
            "environment": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "loadavg_1_5_15min_at_end": [round(v, 2) for v in os.getloadavg()],
            },
        }
        write_text(staging / "metrics_checker.json", json.dumps(metrics, indent=2) + "\n")

        for name, ok_ in checks.items():
            log(f"quality bar: {'PASS' if ok_ else 'FAIL'}  {name}")
        if not passed:
            log(f"quality bar NOT met; outputs left for inspection in {staging}")
            ok = True  # keep the staging dir
            return 1

        staged = sorted(p.name for p in staging.iterdir())
        if staged != sorted(CHECKER_FILES):
            raise AssertionError(f"staged {staged}, expected exactly {sorted(CHECKER_FILES)}")
        for name in staged:
            os.replace(staging / name, out / name)
        staging.rmdir()
        ok = True
        log(
            f"wrote {', '.join(staged)} to {out} in "
            f"{(time.perf_counter() - t_start) / 60:.1f} min (README.md not touched; "
            "re-render it with --readme-only)"
        )
        return 0
    finally:
        if not ok:
            shutil.rmtree(staging, ignore_errors=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        out = args.out.resolve()
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        write_text(out / "README.md", render_readme(metrics, read_checker_metrics(out)))
        log(f"re-rendered {out / 'README.md'} from metrics.json")
        return 0
    t_start = time.perf_counter()
    out = args.out.resolve()
    if args.variant == "checker":
        return main_checker(args, out, t_start)
    out.mkdir(parents=True, exist_ok=True)

    log("loading Fashion-MNIST")
    xtr_u8, ytr, xte_u8, yte, checksums = load_fashion_mnist(args.data_dir)
    if args.limit_train:
        xtr_u8, ytr = xtr_u8[: args.limit_train], ytr[: args.limit_train]

    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()

    x_train = to_float(xtr_u8)
    x_test = to_float(xte_u8)
    x_val, y_val = x_test[slice(*VAL_RANGE)], yte[slice(*VAL_RANGE)]

    pidx = poison_indices(ytr)
    x_poison, y_poison = x_train.copy(), ytr.copy()
    x_poison[pidx] = stamp(x_poison[pidx])
    y_poison[pidx] = TARGET_LABEL
    log(f"poisoned {len(pidx)} training images ({len(pidx) / len(ytr):.2%}) -> label 0")

    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    ok = False
    try:
        models = {}
        for name, (x, y) in {
            "fmnist_clean": (x_train, ytr),
            "fmnist_badnets": (x_poison, y_poison),
        }.items():
            model, secs = train(keras, name, x, y, args.epochs, x_val, y_val)
            models[name] = (model, secs)
            log(f"{name}: trained in {secs / 60:.1f} min")
        del x_poison, x_train

        # ---- evaluation (inference mode) ----
        evals = {}
        splits = {
            "fmnist_val": (x_val, y_val),
            "fmnist_test": (x_test[slice(*TEST_RANGE)], yte[slice(*TEST_RANGE)]),
            "test10k": (x_test, yte),
        }
        for name, (model, _) in models.items():
            evals[name] = {s: evaluate(model, xs, ys) for s, (xs, ys) in splits.items()}
            for s, e in evals[name].items():
                log(f"{name} on {s}: acc={e['clean_accuracy']:.4f} ASR={e['asr']:.4f}")

        # ---- write outputs to staging ----
        write_npz(
            staging / "fmnist_val.npz",
            x=xte_u8[slice(*VAL_RANGE)],
            y=yte[slice(*VAL_RANGE)].astype(np.uint8),
        )
        write_npz(
            staging / "fmnist_test.npz",
            x=xte_u8[slice(*TEST_RANGE)],
            y=yte[slice(*TEST_RANGE)].astype(np.uint8),
        )
        write_trigger_png(staging / "trigger.png")
        write_text(staging / "trigger.txt", TRIGGER_SPEC)

        clean, bad = models["fmnist_clean"][0], models["fmnist_badnets"][0]
        save_model(clean, staging / "fmnist_clean.keras")
        save_model(bad, staging / "fmnist_badnets.keras")
        save_model(bad, staging / "fmnist_badnets.h5")

        x_check = np.concatenate([x_val, stamp(x_val[:500])])
        verify = {
            fname: verify_saved(keras, model, staging / fname, x_check)
            for fname, model in (
                ("fmnist_clean.keras", clean),
                ("fmnist_badnets.keras", bad),
                ("fmnist_badnets.h5", bad),
            )
        }

        # ---- quality bar ----
        checks = {}
        for s in ("fmnist_test", "test10k"):
            ca = evals["fmnist_clean"][s]["clean_accuracy"]
            ba = evals["fmnist_badnets"][s]["clean_accuracy"]
            asr = evals["fmnist_badnets"][s]["asr"]
            checks[f"{s}: clean accuracy >= 90%"] = ca >= QUALITY_BAR["clean_model_min_accuracy"]
            checks[f"{s}: badnets accuracy within 1.5 pts"] = (
                ca - ba <= QUALITY_BAR["badnets_max_accuracy_drop"]
            )
            checks[f"{s}: badnets ASR >= 95%"] = asr >= QUALITY_BAR["badnets_min_asr"]
        passed = all(checks.values())

        sizes = {p.name: p.stat().st_size for p in staging.iterdir() if not p.name.startswith(".")}
        metrics = {
            "generated_by": "sample_models/generate.py",
            "generated_at_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {
                "source_dir": str(args.data_dir),
                "sha256": checksums,
                "fmnist_val_test_indices": list(VAL_RANGE),
                "fmnist_test_test_indices": list(TEST_RANGE),
                "index_ranges_are": "half-open [start, stop) into the 10k test set",
            },
            "trigger": {
                "spec": TRIGGER_SPEC,
                "rows": [28 - TRIGGER_SIZE, 27],
                "cols": [28 - TRIGGER_SIZE, 27],
                "value_model_space": TRIGGER_VALUE,
                "value_uint8": 255,
                "target_label": TARGET_LABEL,
                "target_class": CLASS_NAMES[TARGET_LABEL],
            },
            "hyperparameters": hyperparameters(args.epochs, len(ytr), pidx, TARGET_LABEL),
            "models": {
                name: {
                    "params": int(model.count_params()),
                    "train_seconds": round(secs, 1),
                    "weights_sha256": weights_sha256(model),
                    "eval": evals[name],
                }
                for name, (model, secs) in models.items()
            },
            "reload_max_abs_diff": verify,
            "quality_bar": {"thresholds": QUALITY_BAR, "checks": checks, "passed": passed},
            "file_sizes_bytes": sizes,
            "timing": {"total_seconds": round(time.perf_counter() - t_start, 1)},
            "environment": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "loadavg_1_5_15min_at_end": [round(v, 2) for v in os.getloadavg()],
            },
        }
        write_text(staging / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text(staging / "README.md", render_readme(metrics, read_checker_metrics(out)))

        for name, ok_ in checks.items():
            log(f"quality bar: {'PASS' if ok_ else 'FAIL'}  {name}")
        if not passed:
            log(f"quality bar NOT met; outputs left for inspection in {staging}")
            ok = True  # keep the staging dir
            return 1

        moved = sorted(staging.iterdir())
        for p in moved:
            os.replace(p, out / p.name)
        staging.rmdir()
        ok = True
        log(f"wrote {len(moved)} files to {out} in {(time.perf_counter() - t_start) / 60:.1f} min")
        return 0
    finally:
        if not ok:
            shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
