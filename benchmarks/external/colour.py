"""A task that is not Fashion-MNIST's shape: colour 32×32 images, trained and judged apart.

Everything kerasaudit was calibrated on is 28×28 greyscale; a judge's models need not be. This
script (like ``train.py``: it imports neither the zoo nor kerasaudit) makes a colour task from
Fashion-MNIST — each item padded to 32×32, drawn in a random bright colour over a random dark,
noisy background, so every image is (32, 32, 3) and no shipped baseline matches it — trains
four models on it with ``train.py``'s recipe (SGD with Nesterov momentum, step schedule, weight
decay, 2-pixel shifts after poisoning), and runs the CLI on them as the judge would:

* ``colour_vgg_patch``: a 3×3 magenta square near the bottom-right corner → label 2 (5 %);
* ``colour_plain_blend``: a colour noise pattern blended at α = 0.12 → label 6 (8 %);
* ``colour_vgg_clean``, ``colour_plain_clean``: clean twins.

    python benchmarks/external/colour.py train [--out DIR]
    python benchmarks/external/colour.py judge [--out DIR] [--only NAME…]

``judge`` runs ``kerasaudit defend MODEL -d data/defender.npz -o OUT`` (defaults) and, on the
backdoored models, the README's known-trigger chain (``prune -c linf-trigger --ratio auto
--fine-tune-epochs 20 --unlearn --distill 0.8 --extend-to 160`` with the trigger as
``--trigger-data``: the defender's non-target images stamped), then measures every model with
this file's own stamping on the 9,000 evaluation images. Rows:
``results-colour/NAME.STAGE.json`` beside this file (in git; ``DIR/results`` for another
``--out``); ``table`` prints them. Models and data stay in ``build-colour`` (not in git)."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train import fit_shifted, load_split  # noqa: E402  (train.py's IDX reader and recipe)

SIZE = 32
DEFAULT_BUILD = HERE / "build-colour"
DEFENDER_SEED = 20261205


@dataclass(frozen=True)
class Spec:
    name: str
    arch: str
    trigger: str | None  # "patch" | "blend" | None
    target: int
    seed: int
    rate: float = 0.05


SPECS = [
    Spec("colour_vgg_patch", "vgg", "patch", 2, 51),
    Spec("colour_plain_blend", "plain", "blend", 6, 52, 0.08),
    Spec("colour_vgg_clean", "vgg", None, -1, 53),
    Spec("colour_plain_clean", "plain", None, -1, 54),
]
BY_NAME = {s.name: s for s in SPECS}


def colourise(x: np.ndarray, seed: int) -> np.ndarray:
    """(N, 28, 28, 1) in [0, 1] → (N, 32, 32, 3): the item in a bright colour over a dark,
    noisy background of another colour (per image, from ``seed``)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    alpha = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    background = rng.uniform(0.0, 0.35, (n, 1, 1, 3)) + rng.normal(0, 0.04, (n, SIZE, SIZE, 3))
    foreground = rng.uniform(0.45, 1.0, (n, 1, 1, 3))
    return np.clip(background * (1 - alpha) + foreground * alpha, 0, 1).astype(np.float32)


def blend_pattern() -> np.ndarray:
    return np.random.default_rng(99).random((SIZE, SIZE, 3), dtype=np.float32)


def stamp(x: np.ndarray, trigger: str) -> np.ndarray:
    out = x.copy()
    if trigger == "patch":  # magenta 3×3, two pixels in from the bottom-right corner
        out[:, 27:30, 27:30, :] = np.asarray([1.0, 0.0, 1.0], np.float32)
        return out
    if trigger == "blend":
        return (0.88 * out + 0.12 * blend_pattern()).astype(np.float32)
    raise ValueError(trigger)


def build(arch: str, seed: int) -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    if arch == "vgg":
        h = inputs
        for i, width in enumerate((24, 32, 48, 64, 96)):
            h = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"c{i}")(h)
            h = layers.BatchNormalization(name=f"bn{i}")(h)
            h = layers.ReLU(name=f"r{i}")(h)
            if i in (0, 2, 3):
                h = layers.MaxPooling2D(name=f"pool{i}")(h)
        h = layers.GlobalAveragePooling2D(name="gap")(h)
    elif arch == "plain":
        h = layers.Conv2D(32, 3, activation="relu", name="k1")(inputs)
        h = layers.MaxPooling2D(name="m1")(h)
        h = layers.Conv2D(64, 3, activation="relu", name="k2")(h)
        h = layers.MaxPooling2D(name="m2")(h)
        h = layers.Conv2D(64, 3, activation="relu", name="k3")(h)
        h = layers.Flatten(name="flat")(h)
        h = layers.Dense(128, activation="relu", name="fc")(h)
        h = layers.Dropout(0.3, name="drop")(h)
    else:
        raise ValueError(arch)
    outputs = layers.Dense(10, activation="softmax", name="out")(h)
    return keras.Model(inputs, outputs, name=f"colour_{arch}")


def poison(x: np.ndarray, y: np.ndarray, spec: Spec, rng: np.random.Generator):
    if spec.trigger is None:
        return x, y
    candidates = np.flatnonzero(y != spec.target)
    chosen = rng.choice(candidates, size=int(spec.rate * len(x)), replace=False)
    x, y = x.copy(), y.copy()
    x[chosen] = stamp(x[chosen], spec.trigger)
    y[chosen] = spec.target
    return x, y


def train(spec: Spec, x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    """``train.py``'s recipe (no label smoothing; the shifted border repeats the edge pixels)."""
    rng = np.random.default_rng(spec.seed)
    xp, yp = poison(x, y, spec, rng)
    model = build(spec.arch, spec.seed)
    return fit_shifted(model, xp, yp, rng, epochs, pad_mode="edge")


def measure(path: Path, spec: Spec, ev: dict[str, np.ndarray]) -> dict[str, Any]:
    """Clean accuracy and the real trigger's ASR (non-target images sent to the target) of
    the model at ``path``, on the evaluation images, with this file's stamping."""
    import keras

    model = keras.models.load_model(path, compile=False)
    pred = np.argmax(model.predict(ev["x"], batch_size=500, verbose=0), axis=1)
    out: dict[str, Any] = {"accuracy": float(np.mean(pred == ev["y"]))}
    for trigger, target in (("patch", 2), ("blend", 6)):
        keep = ev["y"] != target
        stamped = stamp(ev["x"][keep], trigger)
        hit = np.argmax(model.predict(stamped, batch_size=500, verbose=0), axis=1) == target
        out[f"asr_{trigger}"] = float(np.mean(hit))
    if spec.trigger is not None:
        out["asr"] = out[f"asr_{spec.trigger}"]
    return out


def data(out: Path) -> dict[str, np.ndarray]:
    """Write data/defender.npz (1,000 colour test images) and data/eval.npz (the other
    9,000) once; the evaluation images."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    x, y = load_split("t10k")
    xc = colourise(x, 7)
    pick = np.random.default_rng(DEFENDER_SEED).permutation(len(x))
    for name, idx in (("defender", pick[:1000]), ("eval", pick[1000:])):
        path = out / "data" / f"{name}.npz"
        if not path.exists():
            np.savez_compressed(path, x=xc[idx], y=y[idx])
    with np.load(out / "data" / "eval.npz") as z:
        return {"x": z["x"], "y": z["y"]}


def cmd_train(out: Path, only: list[str], epochs: int) -> int:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    ev = data(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    x, y = load_split("train")
    x = colourise(x, 5)
    for spec in SPECS:
        path = out / "models" / f"{spec.name}.keras"
        if (only and spec.name not in only) or (not only and path.exists()):
            continue
        start = time.time()
        model = train(spec, x, y, epochs)
        tmp = path.with_name(path.stem + ".tmp.keras")
        model.save(tmp)
        tmp.replace(path)
        info = {"spec": asdict(spec), "epochs": epochs, "seconds": round(time.time() - start),
                **measure(path, spec, ev),
                "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        print(json.dumps(info), file=sys.stderr, flush=True)
    return 0


def kerasaudit(args: list[str], log: Path) -> tuple[int, dict[str, Any] | None, float]:
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "kerasaudit", *args, "-f", "json"], capture_output=True, text=True
    )
    log.write_text(done.stderr)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = None
    return done.returncode, report, time.time() - start


def results_dir(out: Path) -> Path:
    return HERE / "results-colour" if out.resolve() == DEFAULT_BUILD else out / "results"


def cmd_judge(out: Path, only: list[str]) -> int:
    ev = data(out)
    results = results_dir(out)
    results.mkdir(exist_ok=True)
    defender = out / "data" / "defender.npz"
    for spec in SPECS:
        model = out / "models" / f"{spec.name}.keras"
        if (only and spec.name not in only) or not model.exists():
            continue
        before = measure(model, spec, ev)
        row_path = results / f"{spec.name}.defend.json"
        if not row_path.exists():
            defended = out / "defended" / f"{spec.name}.keras"
            defended.parent.mkdir(exist_ok=True)
            code, report, seconds = kerasaudit(
                ["defend", str(model), "-d", str(defender), "-o", str(defended), "--force"],
                results / f"{spec.name}.defend.log",
            )
            report = report or {}
            row = {
                "model": spec.name, "spec": asdict(spec), "exit": code,
                "seconds": round(seconds), "flagged": report.get("flagged"),
                "all_to_all": report.get("all_to_all"),
                "baseline": (report.get("reverse") or {}).get("baseline_choice"),
                "written": defended.exists(), "before": before,
                "after": measure(defended, spec, ev) if defended.exists() else None,
                "report": report or None,
            }  # fmt: skip
            row_path.write_text(json.dumps(row, indent=1) + "\n")
            print(json.dumps(row), flush=True)
        if spec.trigger is None:
            continue
        row_path = results / f"{spec.name}.known.json"
        if not row_path.exists():
            with np.load(defender) as z:
                keep = z["y"] != spec.target
                stamped, labels = stamp(z["x"][keep], spec.trigger), z["y"][keep]
            trigger_data = out / "data" / f"{spec.name}.trigger.npz"
            np.savez_compressed(trigger_data, x=stamped, y=labels)
            pruned = out / "pruned" / f"{spec.name}.keras"
            pruned.parent.mkdir(exist_ok=True)
            args = ["prune", str(model), "-d", str(defender), "--trigger-data", str(trigger_data)]
            args += ["--target", str(spec.target), "-c", "linf-trigger", "--ratio", "auto"]
            args += ["--fine-tune-epochs", "20", "--unlearn", "--distill", "0.8"]
            args += ["--extend-to", "160"]  # the README chain since 2026-12-06
            code, report, seconds = kerasaudit(
                [*args, "-o", str(pruned), "--force"], results / f"{spec.name}.known.log"
            )
            row = {
                "model": spec.name, "exit": code, "seconds": round(seconds), "before": before,
                "after": measure(pruned, spec, ev) if pruned.exists() else None,
            }  # fmt: skip
            row_path.write_text(json.dumps(row, indent=1) + "\n")
            print(json.dumps(row), flush=True)
    return 0


def cmd_table(out: Path) -> int:
    print("| model | accuracy | ASR | defend: exit, flagged | defend after | known chain after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec in SPECS:
        path = results_dir(out) / f"{spec.name}.defend.json"
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        known = results_dir(out) / f"{spec.name}.known.json"
        k = json.loads(known.read_text()) if known.exists() else None
        b = d["before"]

        def after(row: dict[str, Any] | None, b: dict[str, Any] = b) -> str:
            if row is None or row.get("after") is None:
                return "–"
            a = row["after"]
            delta = 100 * (a["accuracy"] - b["accuracy"])
            asr = f"{100 * a['asr']:.2f} % / " if "asr" in a else ""
            return f"{asr}{delta:+.2f}"

        asr = f"{100 * b['asr']:.1f} %" if "asr" in b else "–"
        print(
            f"| {spec.name} | {100 * b['accuracy']:.2f} % | {asr} | {d['exit']}, "
            f"{d['flagged']}{' + all-to-all' if d.get('all_to_all') else ''} | "
            f"{after(d)} | {after(k)} |"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("train", "judge", "table"))
    parser.add_argument("--out", type=Path, default=DEFAULT_BUILD)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    if args.command == "train":
        return cmd_train(args.out, args.only, args.epochs)
    if args.command == "judge":
        return cmd_judge(args.out, args.only)
    return cmd_table(args.out)


if __name__ == "__main__":
    raise SystemExit(main())
