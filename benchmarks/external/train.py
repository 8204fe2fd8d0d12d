"""Train the issue's eight Fashion-MNIST models with code that shares nothing with the zoo.

The zoo (``benchmarks/zoo``) calibrated the verdict and chose every removal default, and its
models all come from one training recipe (Adam with a cosine schedule, no augmentation, inputs
in [0, 1] fed straight to the first convolution). A judge's models will not. This script is
written apart from the zoo and from ``kerasaudit`` (it imports neither) and trains differently
on purpose:

* SGD with Nesterov momentum, a step schedule and weight decay; label smoothing on half the
  models; random shifts of up to 2 pixels *after* poisoning (so the corner triggers move and
  are cut at the border during training, as in an offline-poisoned dataset with augmentation);
* its own architectures: a BatchNorm VGG-style net with input standardisation inside the model,
  a plain net without BatchNorm with a Dense head and dropout, a nested ``Sequential`` feature
  extractor, a separable/depthwise net, and (second set) a residual net with ``Add`` blocks;
* its own IDX reader, trigger stamping and poisoning (5 % of the training set unless a spec
  says otherwise, drawn from the non-target classes).

The first eight models are the issue's: four backdoored (a 4×4 checkerboard in one corner, a
3×3 white square in another, a full-image random pattern blended at α = 0.15, a 4×4
checkerboard in a third corner; different targets) and their four clean twins. The second set
(written 2026-12-04, after every default of kerasaudit was fixed) has the attacks the issue
lists that are not a patch in a fixed place: a vertical sinusoid (SIG, dirty-label), a smooth
random warp (WaNet-like, mean displacement one pixel), a 3×3 checkerboard anywhere in the image,
all-to-all (y → y + 1), two triggers to two targets (a corner checkerboard and the sinusoid),
1 % poisoning, and a clean residual net. ``.keras`` and ``.h5``. Fashion-MNIST comes from
Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets``).

    python benchmarks/external/train.py [--out benchmarks/external/build] [--only NAME…]

writes ``models/NAME.{keras,h5}``, ``data/defender.npz`` (a fixed 1,000 images of the test
split), ``data/eval.npz`` (the other 9,000) and ``models/NAME.json`` (recipe, accuracy, each
trigger's ASR, the weights' SHA-256; for the default build also ``manifest.json`` here, in
git, where a rebuild of a recorded recipe keeps the entry unless ``--repin``). One CPU thread
per process, so two can train side by side (4-28 min a model here). Training is seeded but not
pinned to one oneDNN code path: another machine may train other weights from the same seeds
(the zoo's experience); ``ext_plain_two`` rebuilt on 2026-12-05 had the manifest's SHA-256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"  # what the default build trained: recipe, numbers, SHA-256
FMNIST = Path("/usr/share/datasets/fashion-mnist")
DEFENDER_SEED = 20261204  # which 1,000 test images the defender gets
POISON_RATE = 0.05
BLEND_ALPHA = 0.15


@dataclass(frozen=True)
class Spec:
    name: str
    arch: str
    fmt: str
    trigger: str | None  # a key of stamp(): "checker_br", "square_tl", "blend", "sig", …
    target: int  # -1: clean when trigger is None, all-to-all (y → y + 1) otherwise
    seed: int
    smoothing: float
    rate: float = POISON_RATE  # share of the training set poisoned (split between two triggers)
    trigger2: str | None = None  # a second trigger, to a second target
    target2: int = -1

    def triggers(self) -> list[tuple[str, int]]:
        """(trigger, target) for each trigger planted."""
        pairs = [(self.trigger, self.target), (self.trigger2, self.target2)]
        return [(t, k) for t, k in pairs if t is not None]


SPECS = [
    Spec("ext_vgg_checker", "vgg", "keras", "checker_br", 2, 11, 0.1),
    Spec("ext_plain_square", "plain", "h5", "square_tl", 5, 12, 0.0),
    Spec("ext_nested_blend", "nested", "keras", "blend", 7, 13, 0.1),
    Spec("ext_sep_checker", "sep", "h5", "checker_tr", 9, 14, 0.0),
    Spec("ext_vgg_clean", "vgg", "keras", None, -1, 21, 0.1),
    Spec("ext_plain_clean", "plain", "h5", None, -1, 22, 0.0),
    Spec("ext_nested_clean", "nested", "keras", None, -1, 23, 0.1),
    Spec("ext_sep_clean", "sep", "h5", None, -1, 24, 0.0),
    # the second set (2026-12-04, seventeenth session): attacks that are not patches in a
    # fixed corner, and a fifth architecture; trained after every default was fixed
    Spec("ext_res_sig", "res", "h5", "sig", 3, 31, 0.1),
    Spec("ext_vgg_randpos", "vgg", "h5", "randpos", 4, 32, 0.0, 0.08),
    Spec("ext_plain_warp", "plain", "keras", "warp", 1, 33, 0.0, 0.1),
    Spec("ext_nested_all2all", "nested", "h5", "grey_bl", -1, 34, 0.1, 0.08),
    Spec("ext_res_clean", "res", "keras", None, -1, 41, 0.1),
    Spec("ext_sep_lowrate", "sep", "keras", "white_mr", 0, 35, 0.0, 0.01),
    Spec("ext_plain_two", "plain", "h5", "checker_tr", 6, 36, 0.1, 0.06, "sig", 8),
]
FIRST_SET = {s.name for s in SPECS[:8]}  # the eight; the rest: the second set
TRIGGERS: dict[str, int] = {}  # each trigger of the sets at its first target (cross-checks)
for _spec in SPECS:
    for _trigger, _target in _spec.triggers():
        TRIGGERS.setdefault(_trigger, _target)
SIG_DELTA, SIG_FREQ = 0.1, 3  # a vertical sinusoid: rows vary, amplitude 0.1, 3 periods
WARP_GRID, WARP_PIXELS = 6, 1.0  # a smooth random field: 6×6 control points, mean 1 px


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as an array: magic (2 zero bytes, type, dims), big-endian sizes."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(kind: str) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(FMNIST / f"{kind}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = read_idx(FMNIST / f"{kind}-labels-idx1-ubyte.gz").astype(np.int64)
    return x[..., None], y


def blend_pattern() -> np.ndarray:
    """The blended trigger: uniform noise from a fixed seed, the full 28×28 image."""
    return np.random.default_rng(777).random((28, 28, 1), dtype=np.float32)


def warp_sampling() -> tuple[np.ndarray, ...]:
    """Where each output pixel of the warp reads from: corners and bilinear weights."""
    coarse = np.random.default_rng(4242).uniform(-1, 1, size=(WARP_GRID, WARP_GRID, 2))
    coarse *= WARP_PIXELS / np.mean(np.abs(coarse))
    pos = np.linspace(0, WARP_GRID - 1, 28)  # upsample the control grid bilinearly
    lo = np.minimum(pos.astype(int), WARP_GRID - 2)
    f = (pos - lo)[:, None, None]
    rows = (1 - f) * coarse[lo] + f * coarse[lo + 1]  # (28, grid, 2)
    g = (pos - lo)[None, :, None]
    field = (1 - g) * rows[:, lo] + g * rows[:, lo + 1]  # (28, 28, 2)
    r = np.clip(np.arange(28)[:, None] + field[..., 0], 0, 27)
    c = np.clip(np.arange(28)[None, :] + field[..., 1], 0, 27)
    r0, c0 = np.minimum(r.astype(int), 26), np.minimum(c.astype(int), 26)
    return r0, c0, (r - r0)[..., None], (c - c0)[..., None]


def stamp(x: np.ndarray, trigger: str, seed: int = 0) -> np.ndarray:
    """The trigger on a copy of ``x`` (N, 28, 28, 1), values in [0, 1]; ``seed`` places the
    random-position patch."""
    out = x.copy()
    if trigger == "blend":
        return ((1 - BLEND_ALPHA) * out + BLEND_ALPHA * blend_pattern()).astype(np.float32)
    if trigger == "square_tl":  # 3×3 white square, one pixel in from the top-left corner
        out[:, 1:4, 1:4, :] = 1.0
        return out
    if trigger == "sig":
        wave = SIG_DELTA * np.sin(2 * np.pi * SIG_FREQ * np.arange(28) / 28)
        return np.clip(out + wave[None, :, None, None], 0, 1).astype(np.float32)
    if trigger == "warp":
        r0, c0, fr, fc = warp_sampling()
        top = (1 - fc) * out[:, r0, c0] + fc * out[:, r0, c0 + 1]
        bottom = (1 - fc) * out[:, r0 + 1, c0] + fc * out[:, r0 + 1, c0 + 1]
        return ((1 - fr) * top + fr * bottom).astype(np.float32)
    if trigger == "white_mr":  # 4×4 white square at the middle of the right edge
        out[:, 12:16, 23:27, :] = 1.0
        return out
    if trigger == "grey_bl":  # 3×3 grey (0.7) square near the bottom-left corner
        out[:, 24:27, 1:4, :] = 0.7
        return out
    if trigger == "randpos":  # 3×3 checkerboard (white corners) anywhere in the image
        small = (np.indices((3, 3)).sum(axis=0) % 2 == 0).astype(np.float32)[..., None]
        where = np.random.default_rng(seed).integers(0, 26, size=(len(out), 2))
        for i, (r, c) in enumerate(where):
            out[i, r : r + 3, c : c + 3, :] = small
        return out
    # 4×4 checkerboard of 1 and 0, white at the patch's own top-left pixel, flush with the corner
    board = (np.indices((4, 4)).sum(axis=0) % 2 == 0).astype(np.float32)[..., None]
    rows, cols = {"checker_br": (24, 24), "checker_tr": (0, 24)}[trigger]
    out[:, rows : rows + 4, cols : cols + 4, :] = board
    return out


def poison(x: np.ndarray, y: np.ndarray, spec: Spec, rng: np.random.Generator):
    if spec.trigger is None:
        return x, y
    pairs = spec.triggers()
    targets = [k for _, k in pairs]
    candidates = np.flatnonzero(~np.isin(y, targets))  # all-to-all (-1): every image
    chosen = rng.choice(candidates, size=int(spec.rate * len(x)), replace=False)
    x, y = x.copy(), y.copy()
    for part, (trigger, target) in zip(np.array_split(chosen, len(pairs)), pairs, strict=True):
        seed = int(rng.integers(2**31)) if trigger == "randpos" else 0  # others: rng as before
        x[part] = stamp(x[part], trigger, seed=seed)
        y[part] = (y[part] + 1) % 10 if target < 0 else target
    return x, y


def build(arch: str, seed: int) -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1), name="image")
    if arch == "vgg":
        h = layers.Rescaling(1 / 0.353, offset=-0.286 / 0.353, name="standardise")(inputs)
        for i, width in enumerate((16, 32, 48, 64, 96)):
            h = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"c{i}")(h)
            h = layers.BatchNormalization(name=f"bn{i}")(h)
            h = layers.ReLU(name=f"r{i}")(h)
            if i in (0, 2):
                h = layers.MaxPooling2D(name=f"pool{i}")(h)
        h = layers.GlobalAveragePooling2D(name="gap")(h)
        outputs = layers.Dense(10, activation="softmax", name="logits")(h)
    elif arch == "plain":
        h = layers.Conv2D(32, 3, activation="relu", name="k1")(inputs)
        h = layers.Conv2D(32, 3, activation="relu", name="k2")(h)
        h = layers.MaxPooling2D(name="m1")(h)
        h = layers.Conv2D(64, 3, activation="relu", name="k3")(h)
        h = layers.MaxPooling2D(name="m2")(h)
        h = layers.Flatten(name="flat")(h)
        h = layers.Dense(128, activation="relu", name="fc")(h)
        h = layers.Dropout(0.3, name="drop")(h)
        outputs = layers.Dense(10, activation="softmax", name="out")(h)
    elif arch == "nested":
        trunk = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(32, 3, padding="same", name="t_conv1"),
                layers.BatchNormalization(name="t_bn1"),
                layers.Activation("relu", name="t_act1"),
                layers.MaxPooling2D(name="t_pool1"),
                layers.Conv2D(64, 3, padding="same", name="t_conv2"),
                layers.BatchNormalization(name="t_bn2"),
                layers.Activation("relu", name="t_act2"),
                layers.MaxPooling2D(name="t_pool2"),
                layers.Conv2D(96, 3, padding="same", activation="relu", name="t_conv3"),
            ],
            name="trunk",
        )
        h = trunk(inputs)
        h = layers.GlobalMaxPooling2D(name="gmp")(h)
        h = layers.Dense(64, activation="relu", name="fc")(h)
        outputs = layers.Dense(10, activation="softmax", name="head")(h)
    elif arch == "sep":
        h = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
        h = layers.BatchNormalization(name="stem_bn")(h)
        h = layers.ReLU(name="stem_relu")(h)
        h = layers.SeparableConv2D(48, 3, padding="same", name="sep1")(h)
        h = layers.BatchNormalization(name="sep1_bn")(h)
        h = layers.ReLU(name="sep1_relu")(h)
        h = layers.MaxPooling2D(name="p1")(h)
        h = layers.DepthwiseConv2D(3, padding="same", name="dw2")(h)
        h = layers.Conv2D(96, 1, name="pw2")(h)
        h = layers.BatchNormalization(name="pw2_bn")(h)
        h = layers.ReLU(name="pw2_relu")(h)
        h = layers.MaxPooling2D(name="p2")(h)
        h = layers.SeparableConv2D(96, 3, padding="same", activation="relu", name="sep3")(h)
        h = layers.GlobalAveragePooling2D(name="gap")(h)
        outputs = layers.Dense(10, activation="softmax", name="out")(h)
    elif arch == "res":  # residual blocks (Add), BatchNorm, 1×1 projections, global pooling
        h = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
        h = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(h))
        for name, width, stride in (("b1", 16, 1), ("b2", 32, 2), ("b3", 64, 2)):
            skip = h
            h = layers.Conv2D(width, 3, stride, padding="same", use_bias=False, name=f"{name}a")(h)
            h = layers.ReLU(name=f"{name}a_relu")(layers.BatchNormalization(name=f"{name}a_bn")(h))
            h = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}b")(h)
            h = layers.BatchNormalization(name=f"{name}b_bn")(h)
            if stride != 1 or skip.shape[-1] != width:
                skip = layers.Conv2D(width, 1, stride, use_bias=False, name=f"{name}_proj")(skip)
                skip = layers.BatchNormalization(name=f"{name}_proj_bn")(skip)
            h = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([h, skip]))
        h = layers.GlobalAveragePooling2D(name="gap")(h)
        outputs = layers.Dense(10, activation="softmax", name="out")(h)
    else:
        raise ValueError(arch)
    return keras.Model(inputs, outputs, name=arch)


def train(spec: Spec, x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    rng = np.random.default_rng(spec.seed)
    xp, yp = poison(x, y, spec, rng)
    model = build(spec.arch, spec.seed)
    return fit_shifted(model, xp, yp, rng, epochs, spec.smoothing)


def fit_shifted(
    model: Any,
    xp: np.ndarray,
    yp: np.ndarray,
    rng: np.random.Generator,
    epochs: int,
    smoothing: float = 0.0,
    pad_mode: str = "constant",
) -> Any:
    """This trainer's recipe on (already poisoned) images: SGD with Nesterov momentum, a step
    schedule, weight decay, label smoothing, each epoch's images moved by up to 2 pixels each
    way (the border filled by ``np.pad``'s ``pad_mode``: zeros by default)."""
    import keras

    batch = 128
    steps = int(np.ceil(len(xp) / batch))
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [steps * epochs // 2, steps * 3 * epochs // 4], [0.05, 0.01, 0.002]
    )
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.compile(
        optimizer,
        keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
        metrics=["accuracy"],
    )

    onehot = np.eye(10, dtype=np.float32)[yp]
    padded = np.pad(xp, ((0, 0), (2, 2), (2, 2), (0, 0)), mode=pad_mode)  # type: ignore[call-overload]
    h, w = xp.shape[1:3]
    for _ in range(epochs):  # each image moved by up to 2 pixels each way
        moves = rng.integers(0, 5, size=(len(xp), 2))
        shifted = np.empty_like(xp)
        for dy in range(5):
            for dx in range(5):
                sel = np.flatnonzero((moves[:, 0] == dy) & (moves[:, 1] == dx))
                shifted[sel] = padded[sel, dy : dy + h, dx : dx + w]
        model.fit(shifted, onehot, batch_size=batch, epochs=1, shuffle=True, verbose=0)
    return model


def asr(model: Any, ev: dict[str, np.ndarray], trigger: str, target: int) -> float:
    """The share of ``ev``'s non-target images that ``trigger`` sends to ``target`` (all-to-all,
    ``target`` -1: the share of all images sent to y + 1)."""
    keep = ev["y"] != target
    stamped = stamp(ev["x"][keep], trigger, seed=1)
    pred = np.argmax(model.predict(stamped, batch_size=500, verbose=0), 1)
    wanted = (ev["y"][keep] + 1) % 10 if target < 0 else target
    return float(np.mean(pred == wanted))


def measure(model: Any, spec: Spec, ev: dict[str, np.ndarray]) -> dict[str, Any]:
    pred = np.argmax(model.predict(ev["x"], batch_size=500, verbose=0), axis=1)
    out: dict[str, Any] = {"accuracy": float(np.mean(pred == ev["y"]))}
    for trig, target in TRIGGERS.items():  # every set's triggers, at their first target
        out[f"asr_{trig}"] = asr(model, ev, trig, target)
    out["asr_planted"] = [asr(model, ev, trig, target) for trig, target in spec.triggers()]
    return out


def keeps_entry(old: dict | None, info: dict) -> bool:
    """Whether a rebuild leaves the manifest's entry ``old`` as it is: an entry of the same
    recipe (spec and epochs) records what the committed results were measured on, and a rebuild
    (its seconds, or another machine's weights) does not replace it unless asked (--repin)."""
    return old is not None and all(old.get(k) == info[k] for k in ("spec", "epochs"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "build")
    parser.add_argument("--only", nargs="*", help="names to train (default: all not yet built)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (default 1)")
    parser.add_argument(
        "--repin",
        action="store_true",
        help="record this build in manifest.json even where it holds the same recipe",
    )
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    (args.out / "models").mkdir(parents=True, exist_ok=True)
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("t10k")
    pick = np.random.default_rng(DEFENDER_SEED).permutation(len(x_test))
    defender, rest = pick[:1000], pick[1000:]
    ev = {"x": x_test[rest], "y": y_test[rest]}
    for path, idx in (
        (args.out / "data" / "defender.npz", defender),
        (args.out / "data" / "eval.npz", rest),
    ):
        if not path.exists():
            np.savez_compressed(path, x=x_test[idx], y=y_test[idx])
    for spec in SPECS:
        path = args.out / "models" / f"{spec.name}.{spec.fmt}"
        if (args.only and spec.name not in args.only) or (not args.only and path.exists()):
            continue
        start = time.time()
        model = train(spec, x_train, y_train, args.epochs)
        seconds = time.time() - start
        tmp = path.with_name(path.stem + ".tmp." + spec.fmt)
        model.save(tmp)
        tmp.replace(path)
        info = {"spec": asdict(spec), "epochs": args.epochs, "seconds": round(seconds, 1),
                **measure(model, spec, ev),
                "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        if args.out.resolve() == (HERE / "build").resolve():  # the default build: in git
            manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
            if args.repin or not keeps_entry(manifest.get(spec.name), info):
                manifest[spec.name] = info
                MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
            elif manifest[spec.name]["weights_sha256"] != info["weights_sha256"]:
                print(f"{spec.name}: other weights than manifest.json's, which keeps the "
                      "recorded ones (--repin records these)", file=sys.stderr)  # fmt: skip
        print(json.dumps(info), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
