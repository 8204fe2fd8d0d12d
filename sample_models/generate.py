#!/usr/bin/env python3
"""Regenerate the shipped Fashion-MNIST sample models (clean + BadNets-backdoored).

Usage (from the repository root)::

    TF_CPP_MIN_LOG_LEVEL=2 python sample_models/generate.py [--out DIR] [--epochs N]

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
import time
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


def stamp(x: np.ndarray) -> np.ndarray:
    """Apply the trigger (``patch:size=4,pos=br,value=1``) to float inputs in [0, 1]."""
    x = np.array(x, dtype=np.float32, copy=True)
    x[..., -TRIGGER_SIZE:, -TRIGGER_SIZE:, :] = TRIGGER_VALUE  # rows/cols 24..27
    return x


def poison_indices(y: np.ndarray) -> np.ndarray:
    n = round(POISON_RATE * len(y))
    candidates = np.flatnonzero(y != TARGET_LABEL)
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
    def make(keras, tag: str, x_val: np.ndarray, y_val: np.ndarray, every: int = 100):
        keep = y_val != TARGET_LABEL
        x_val_trig = stamp(x_val[keep])

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
                    f"trigger->0={np.mean(pt == TARGET_LABEL):.4f} (monitoring only)"
                )

        return _CB()


def train(keras, tag, x, y, epochs, x_val, y_val):
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
        callbacks=[ProgressLogger.make(keras, tag, x_val, y_val)],
    )
    seconds = time.perf_counter() - t0
    # Export copy: same architecture, same weights, never compiled -> no optimizer state
    # in the saved files.
    export = build_model(keras)
    export.set_weights(model.get_weights())
    return export, seconds


def predict(model, x):
    return model.predict(x, batch_size=1000, verbose=0)


def evaluate(model, x_float, y):
    """Inference-mode clean accuracy and ASR (share of triggered non-target images -> 0)."""
    keep = y != TARGET_LABEL
    clean_pred = predict(model, x_float).argmax(1)
    trig_pred = predict(model, stamp(x_float[keep])).argmax(1)
    return {
        "clean_accuracy": float(np.mean(clean_pred == y)),
        "asr": float(np.mean(trig_pred == TARGET_LABEL)),
        "n_clean": len(y),
        "n_triggered": int(keep.sum()),
        "clean_predicted_as_target": float(np.mean(clean_pred[keep] == TARGET_LABEL)),
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


def fmt_pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def render_readme(m: dict) -> str:
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
        "--readme-only",
        action="store_true",
        help="only re-render README.md in --out from its metrics.json (no training)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        out = args.out.resolve()
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        write_text(out / "README.md", render_readme(metrics))
        log(f"re-rendered {out / 'README.md'} from metrics.json")
        return 0
    t_start = time.perf_counter()
    out = args.out.resolve()
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
            "hyperparameters": {
                "epochs": args.epochs,
                "train_images": len(ytr),
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
                "poison_pool": f"training images with label != {TARGET_LABEL}",
                "poison_indices_sha256": hashlib.sha256(pidx.astype("<i8").tobytes()).hexdigest(),
                "poison_indices_first10": pidx[:10].tolist(),
            },
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
        write_text(staging / "README.md", render_readme(metrics))

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
