#!/usr/bin/env python3
"""The backdoor zoo: build it, evaluate kerasaudit on it, calibrate and report.

Usage (from the repository root; ``nox -s zoo_build`` / ``nox -s zoo`` run the same)::

    python benchmarks/zoo/zoo.py build [NAMES...]      # train what is missing (1-3 min/model)
    python benchmarks/zoo/zoo.py status                # what is built, accuracy, ASR
    python benchmarks/zoo/zoo.py confusion [NAMES...]  # cached known-chain ASR, split into
                                                       # the model's own confusion and flips

Models, data splits and per-model results live under ``benchmarks/zoo/build`` (not in git;
``--dir`` or ``KERASAUDIT_ZOO`` moves them). ``manifest.json`` (in git) records each model's
recipe and the SHA-256 of its weights, so a rebuild can be checked bit for bit: training pins
its kernels (``pin_kernels``: oneDNN's AVX2 code, one thread), so any x86-64 machine with AVX2
should reproduce it; entries from before the pinning (no "kernels" in the recipe) reproduce
only on the machine that wrote them.

Each model's verdict evidence (what ``kerasaudit reverse`` measured on the defender's images:
the numbers the verdict is computed from) is also kept, compact, in ``benchmarks/zoo/evidence/``
(in git, ~2 KB a model, with the SHA-256 of the weights it was measured on), so ``calibrate``,
``verdicts`` and ``table`` rerun in seconds on a fresh checkout without the build; a zoo
elsewhere (``--dir``) keeps its own under ``DIR/evidence``. ``benchmarks/zoo/evidence-spread/``
holds evidence of rebuilds measured with the untargeted search's spread term (other weights
than the manifest's): ``ratio`` fits the all-to-all threshold on it, ``verdicts --evidence``
judges it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kerasaudit.verdict import Baseline

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fmnist  # noqa: E402
from recipes import BATCH_SIZE, BY_NAME, KERNELS, LEARNING_RATE, RECIPES, Recipe  # noqa: E402

MANIFEST = HERE / "manifest.json"
EVIDENCE = HERE / "evidence"  # compact verdict evidence of the default build, in git
# evidence measured with reverse's untargeted spread term (2026-12-05 on): clean and all-to-all
# rebuilds whose weights differ from the default build's (`zoo.py ratio`), in git
EVIDENCE_SPREAD = HERE / "evidence-spread"


def zoo_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("KERASAUDIT_ZOO") or HERE / "build")


def log(msg: str) -> None:
    print(f"[zoo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # builds run side by side
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def claim(path: Path) -> bool:
    """Take the lock file ``path`` for this process (False: a live process holds it), so that
    several workers can run one list side by side, each model once. A lock whose process is
    gone (killed) is taken over."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(path.read_text() or "0")
                os.kill(holder, 0)  # raises when no such process
                return False
            except (ValueError, ProcessLookupError, FileNotFoundError):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except PermissionError:
                return False  # alive, another user's
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def append_row(path: Path, row: dict[str, Any], *, echo: bool = False) -> None:
    """One JSON line appended to ``path`` (the zoo scripts' result rows); ``echo``: printed too."""
    line = json.dumps(row)
    if echo:
        print(line, flush=True)
    with path.open("a") as f:
        f.write(line + "\n")


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


# --- data -----------------------------------------------------------------------------------


def ensure_data(root: Path) -> None:
    """defender.npz (1,000 test images, uint8) and eval.npz (the other 9,000)."""
    data = root / "data"
    if (data / "defender.npz").exists() and (data / "eval.npz").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    x, y = fmnist.load("test")
    defender, evaluation = fmnist.test_split()
    _save_npz(data / "defender.npz", x=x[defender], y=y[defender], index=defender)
    _save_npz(data / "eval.npz", x=x[evaluation], y=y[evaluation], index=evaluation)


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(root / "data" / f"{split}.npz") as f:
        return fmnist.to_float(f["x"]), f["y"]


# --- training one model ---------------------------------------------------------------------


def weights_sha256(model: Any) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    return np.argmax(model.predict(x, batch_size=500, verbose=0), axis=1)


def measure(model: Any, recipe: Recipe, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Clean accuracy and, per trigger, ASR: stamped images whose true label is not the
    trigger's target, sent to the target (all-to-all: every image, sent to y + 1).
    ``clean_to_target``: the same images *unstamped* that the model sends to the target by
    itself (its own confusion, part of any ASR); ``flipped``: stamped images sent to the
    target whose clean image is not (what the trigger itself does)."""
    clean = predict(model, x)
    out: dict[str, Any] = {"n": len(x), "accuracy": float(np.mean(clean == y))}
    asr, own, flipped = [], [], []
    for i, trig in enumerate(recipe.attack.triggers):
        target = trig.target_of(y)
        keep = target != y
        pred = predict(model, trig.stamp(x[keep], seed=10_000 + i))
        hit, already = pred == target[keep], clean[keep] == target[keep]
        asr.append(float(np.mean(hit)))
        own.append(float(np.mean(already)))
        flipped.append(float(np.mean(hit & ~already)))
    out["asr"] = asr
    out["clean_to_target"] = own
    out["flipped"] = flipped
    return out


def pin_kernels() -> None:
    """Pin oneDNN's instruction set and TensorFlow's thread pools to ``KERNELS`` (before
    TensorFlow runs anything; a second call in the same process checks instead)."""
    isa = str(KERNELS["onednn_max_cpu_isa"])
    if "tensorflow" not in sys.modules:
        os.environ["ONEDNN_MAX_CPU_ISA"] = isa
    elif os.environ.get("ONEDNN_MAX_CPU_ISA") != isa:
        raise RuntimeError(f"TensorFlow was imported before ONEDNN_MAX_CPU_ISA={isa} was set")
    import tensorflow as tf

    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() != KERNELS["intra_op_threads"]:
        threading.set_intra_op_parallelism_threads(KERNELS["intra_op_threads"])
    if threading.get_inter_op_parallelism_threads() != KERNELS["inter_op_threads"]:
        threading.set_inter_op_parallelism_threads(KERNELS["inter_op_threads"])


def train(recipe: Recipe, root: Path) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pin_kernels()
    import keras
    import tensorflow as tf
    from archs import build

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(recipe.seed)
    x_u8, y = fmnist.load("train")
    x = fmnist.to_float(x_u8)
    x, y, poison_info = recipe.attack.poison(x, y, seed=recipe.seed)
    model = build(recipe.arch)
    steps = recipe.epochs * int(np.ceil(len(x) / BATCH_SIZE))
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps, alpha=0.01)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)  # fmt: skip
    start = time.time()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=recipe.epochs, shuffle=True, verbose=0)
    seconds = time.time() - start
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    path = models / recipe.filename
    tmp = path.with_name(f".{path.stem}.tmp.{recipe.fmt}")
    model.save(tmp)
    reloaded = keras.models.load_model(tmp, compile=False)
    xe, ye = load_split(root, "eval")
    diff = float(np.max(np.abs(reloaded.predict(xe[:256], verbose=0)
                               - model.predict(xe[:256], verbose=0))))  # fmt: skip
    os.replace(tmp, path)
    xd, yd = load_split(root, "defender")
    info = {
        "recipe": recipe.to_dict(),
        "file": path.name,
        "params": int(model.count_params()),
        "weights_sha256": weights_sha256(model),
        "train_seconds": round(seconds, 1),
        "poisoning": poison_info,
        "reload_max_abs_diff": diff,
        "eval": measure(model, recipe, xe, ye),
        "defender": measure(model, recipe, xd, yd),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    _write_json(models / f"{recipe.name}.json", info)
    # The real trigger on the defender's images, for --trigger-data (true labels kept).
    for i, trig in enumerate(recipe.attack.triggers):
        _save_npz(models / f"{recipe.name}.trigger{i}.npz",
                  x=trig.stamp(xd, seed=20_000 + i), y=yd)  # fmt: skip
    return info


# --- running kerasaudit (as a user would: the CLI, JSON on stdout) --------------------------


def results_dir(root: Path, name: str) -> Path:
    out = root / "results" / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def this_checkout() -> None:
    """Stop unless ``kerasaudit`` imports from this checkout: an editable install that points
    at another copy would run that copy's code in every measurement (seen 2026-12-04)."""
    import kerasaudit as ka

    where = Path(ka.__file__).resolve().parent
    mine = HERE.parent.parent / "kerasaudit"
    if where != mine.resolve():
        raise SystemExit(
            f"kerasaudit imports from {where}, not from this checkout ({mine}): "
            "run `pip install -e .` in this checkout first"
        )


def kerasaudit(args: list[str], log_file: Path) -> tuple[int, dict[str, Any] | None, float]:
    """Run ``kerasaudit ARGS -f json -q``; (exit code, parsed stdout or None, seconds)."""
    cmd = [sys.executable, "-m", "kerasaudit", *args, "-f", "json", "-q"]
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.time() - start
    log_file.write_text("$ kerasaudit " + " ".join(args) + "\n" + done.stderr)
    try:
        data = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        data = None
    return done.returncode, data, seconds


def is_default_build(root: Path) -> bool:
    """The default build, whose cached results are kept in git beside this file."""
    return root.resolve() == (HERE / "build").resolve()


def recovered_dir(root: Path) -> Path:
    """Where removal.py caches each model's recovered triggers (NAME.npz, NAME.json): in git for
    the default build (benchmarks/zoo/recovered), else DIR/recovered."""
    return HERE / "recovered" if is_default_build(root) else root / "recovered"


def evidence_dir(root: Path) -> Path:
    """Where a zoo's compact evidence lives: in git for the default build, else DIR/evidence."""
    return EVIDENCE if is_default_build(root) else root / "evidence"


def compact_evidence(root: Path, name: str, report: dict[str, Any]) -> dict[str, Any]:
    """The compact evidence of one ``reverse`` report (``report["zoo"]`` says how it was run):
    what calibrate reads, plus the weights' SHA-256 and the engines' settings, and the
    untargeted search's outcome (which label it sent each class to, and what share: not yet
    used by the verdict; kept since 2026-12-04 so that a rule on it can be calibrated)."""
    info = json.loads((root / "models" / f"{name}.json").read_text())
    return {
        "zoo": {
            **report["zoo"],
            "weights_sha256": info["weights_sha256"],
            "versions": info.get("versions"),
        },
        "config": report.get("config"),
        "evidence": report["evidence"],
        "untargeted": report.get("untargeted"),
    }


def save_evidence(root: Path, name: str, report: dict[str, Any]) -> Path:
    """:func:`compact_evidence` written where calibrate reads it (:func:`evidence_dir`)."""
    compact = compact_evidence(root, name, report)
    path = evidence_dir(root) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, compact)
    return path


def weights_of(root: Path, name: str) -> str:
    """The SHA-256 of the weights built under ``root`` (models/NAME.json)."""
    return str(json.loads((root / "models" / f"{name}.json").read_text())["weights_sha256"])


def removal_rows(root: Path) -> Path:
    """Where ``removal.py`` keeps its rows: in git for the default build, else under ``root``."""
    if is_default_build(root):
        return HERE / "results" / "removal.jsonl"
    return root / "results" / "removal.jsonl"


def same_build(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two removal rows were measured on the same weights: their SHA-256 when both
    record it (rows since 2026-12-04), else the original's accuracy and ASR on the 9,000
    evaluation images (another build of the recipe gives other numbers)."""
    if a.get("weights_sha256") and b.get("weights_sha256"):
        return bool(a["weights_sha256"] == b["weights_sha256"])
    return bool(a["accuracy_before"] == b["accuracy_before"] and a["asr_before"] == b["asr_before"])


def defend_from_removal(root: Path, name: str, variant: str = "dflt") -> dict[str, Any] | None:
    """``defend``'s result on the weights built under ``root`` from ``removal.py``'s latest
    ``variant`` row of that build (``dflt``: defend's defaults, removal from the cached trigger
    recovery), in the shape of results/NAME/defend.json's stage; None when there is none."""
    path = removal_rows(root)
    if not path.exists():
        return None
    info = json.loads((root / "models" / f"{name}.json").read_text())
    here = {
        "weights_sha256": info["weights_sha256"],
        "accuracy_before": info["eval"]["accuracy"],
        "asr_before": info["eval"]["asr"],
    }
    found = None
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["model"] == name and row["variant"] == variant and same_build(row, here):
            found = row
    if found is None:
        return None
    if found.get("unchanged"):
        return {"after": None, "seconds": found["reverse_seconds"], "exit_code": 0,
                "source": f"removal.py {variant}"}  # fmt: skip
    return {
        "after": {"accuracy": found["accuracy_after"], "asr": found["asr_after"]},
        "seconds": round(found["reverse_seconds"] + found["seconds"], 1),
        "exit_code": 1,
        "source": f"removal.py {variant}",
    }


def measured_on(evidence: Path) -> str | None:
    """The SHA-256 of the weights a kept evidence file was measured on (None: not recorded)."""
    kept = json.loads(evidence.read_text())["zoo"].get("weights_sha256")
    return None if kept is None else str(kept)


def evidence_current(root: Path, name: str) -> bool:
    """Whether evidence/NAME.json was measured on the weights built under ``root`` (a rebuild
    with other weights — another recipe, or an unpinned build elsewhere — makes it stale)."""
    path = evidence_dir(root) / f"{name}.json"
    return path.exists() and measured_on(path) == weights_of(root, name)


def stale_evidence(root: Path) -> list[str]:
    """Models whose kept evidence was measured on other weights than the zoo's record of them:
    manifest.json for the default build, else the models built under ``root``."""
    if is_default_build(root):
        manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
        record = {name: entry["weights_sha256"] for name, entry in manifest.items()}
    else:
        record = {p.stem: weights_of(root, p.stem) for p in (root / "models").glob("*.json")}
    stale = []
    for path in sorted(evidence_dir(root).glob("*.json")):
        if path.stem in record and measured_on(path) != record[path.stem]:
            stale.append(path.stem)
    return stale


def warn_stale(root: Path) -> None:
    stale = stale_evidence(root)
    if stale:
        print(f"NOTE: the evidence of {len(stale)} model(s) was measured on other weights than "
              f"the zoo records ({', '.join(stale)}): `zoo.py evidence NAME…` on a build of "
              "them replaces it", flush=True)  # fmt: skip


def built(root: Path, names: list[str]) -> list[Recipe]:
    """The recipes of ``names`` (default: the zoo's) built under ``root``; a held-out name
    (``heldout.py``) too, for ``--dir benchmarks/zoo/build-heldout``."""
    out = []
    for name in names or [r.name for r in RECIPES]:
        recipe = recipe_named(name)
        if (root / "models" / f"{name}.json").exists():
            out.append(recipe)
    return out


def cmd_evidence(args: argparse.Namespace) -> int:
    """``kerasaudit reverse`` on every built model (the defender's 1,000 images): the evidence
    the verdict is calibrated on, cached in results/NAME/reverse.json."""
    root = zoo_dir(args.dir)
    data = root / "data" / "defender.npz"
    for recipe in built(root, args.names):
        out = results_dir(root, recipe.name)
        target = out / "reverse.json"
        sha = weights_of(root, recipe.name)
        if target.exists() and not args.force:
            if evidence_current(root, recipe.name):
                continue
            cached = json.loads(target.read_text())
            # a report says which weights it was measured on (older ones do not: trusted only
            # where there is no evidence yet, as before)
            reported = cached["zoo"].get("weights_sha256")
            path = evidence_dir(root) / f"{recipe.name}.json"
            if reported == sha or (reported is None and not path.exists()):
                save_evidence(root, recipe.name, cached)
                log(f"{recipe.name}: evidence written from {target}")
                continue
            log(f"{recipe.name}: the cached report is of other weights: measuring again")
        log(f"reverse {recipe.name}")
        model = root / "models" / recipe.filename
        code, report, seconds = kerasaudit(
            ["reverse", str(model), "-d", str(data), "--no-complete"], out / "reverse.log"
        )
        if report is None or code not in (0, 1):
            log(f"FAILED reverse {recipe.name} (exit {code}); see {out / 'reverse.log'}")
            continue
        report["zoo"] = {
            "exit_code": code,
            "seconds": seconds,
            "recipe": recipe.to_dict(),
            "weights_sha256": sha,
        }
        _write_json(target, report)
        save_evidence(root, recipe.name, report)
        v = report["verdict"]
        wrong = recipe.family == "clean" and (v["flagged"] or v["all_to_all"])
        log(
            f"{recipe.name}: flagged {v['flagged']} all-to-all {v['all_to_all']} ({seconds:.0f} s)"
            + (" — FALSE POSITIVE: a clean model flagged" if wrong else "")
        )
    return 0


def cmd_warp(args: argparse.Namespace) -> int:
    """Add the warp engine's numbers to evidence measured before it existed: the engine alone
    (``kerasaudit.stages.reverse.warp_findings``, `reverse`'s defaults and images, seeded per
    label like every engine, so the numbers are what a full `reverse` run measures), merged
    into evidence/NAME.json; the per-label details cached in results/NAME/warp.json."""
    from kerasaudit.evaluation import classifier_io
    from kerasaudit.stages.reverse import ReverseConfig, warp_findings

    root = zoo_dir(args.dir)
    config = ReverseConfig()
    for recipe in built(root, args.names):
        path = evidence_dir(root) / f"{recipe.name}.json"
        if not path.exists():
            continue  # `zoo.py evidence` runs every engine, this one included
        report = json.loads(path.read_text())
        labels = report["evidence"]["labels"]
        if all(e.get("warp_rms") is not None for e in labels) and not args.force:
            continue
        log(f"warp {recipe.name}")
        model, data = load_case(root, recipe)
        x, y = data.take_array(config.images)
        started = time.time()
        found = warp_findings(
            model, x, y, [e["label"] for e in labels], config, classifier_io(model).outputs
        )
        seconds = round(time.time() - started, 1)
        for e, w in zip(labels, found, strict=True):
            e["warp_rms"], e["warp_reached"] = w.rms, w.reached
        report["zoo"]["warp"] = {"seconds": seconds, "source": "zoo.py warp (engine alone)"}
        _write_json(path, report)
        _write_json(results_dir(root, recipe.name) / "warp.json",
                    {"labels": [w.to_dict() for w in found], "seconds": seconds})  # fmt: skip
        sizes = " ".join(f"{w.rms:.2f}{'' if w.reached else '*'}" for w in found)
        log(f"{recipe.name}: warp RMS per label {sizes} ({seconds:.0f} s)")
    return 0


# The known-trigger chain the README recommends (one run per model, documented options).
# 20 epochs since 2026-12-02: 10 → 20 took the goal from 7 to 9 of 16 models on the dev half
# and from 7 to 9 of 15 on the test half (`zoo.split`); the 10-epoch runs stay cached as
# known.e10.json. Since 2026-12-03 prune's --distill-stamped is on by default (README,
# "Ninth session"); the runs before it were kept on that machine as known.hard.json.
# --extend-to 160 since 2026-12-06 (JOURNAL, twenty-ninth session; the runs before it are
# known.noext.json on the held-out build).
KNOWN_CHAIN = [
    "-c", "linf-trigger", "--ratio", "auto", "--fine-tune-epochs", "20", "--unlearn",
    "--distill", "0.8", "--extend-to", "160",
]  # fmt: skip


TWO_TRIGGER_EPOCHS = 40  # the chain's --fine-tune-epochs with a second known trigger


def trigger_args(root: Path, recipe: Recipe, index: int) -> list[str]:
    """How the defender states a known trigger: a spec when one expresses it, else the
    defender's own images carrying it (``--trigger-data``)."""
    trig = recipe.attack.triggers[index]
    target = [] if trig.target < 0 else ["--target", str(trig.target)]  # all-to-all: untargeted
    if trig.spec is not None:
        return ["--trigger", trig.spec, *target]
    return ["--trigger-data", str(_trigger_images(root, recipe, index)), *target]


def also_unlearn_args(root: Path, recipe: Recipe, index: int) -> list[str]:
    """A further known trigger of the same model, unlearnt in the same ``prune`` run."""
    trig = recipe.attack.triggers[index]
    if trig.spec is not None:
        return ["--also-unlearn", trig.spec]
    return ["--also-unlearn-data", str(_trigger_images(root, recipe, index))]


def _trigger_images(root: Path, recipe: Recipe, index: int) -> Path:
    return root / "models" / f"{recipe.name}.trigger{index}.npz"


def load_case(root: Path, recipe: Recipe) -> tuple[Any, Any]:
    """(the model as kerasaudit loads it, the defender's 1,000 images as a Dataset): what
    every zoo script that defends or probes a model starts from."""
    from kerasaudit.loading import load_model

    return load_model(root / "models" / recipe.filename).model, defender_data(root)


def defender_data(root: Path) -> Any:
    """The defender's 1,000 images under ``root/data`` as a Dataset (a zoo build's, or
    benchmarks/external's, which keeps the same layout)."""
    from kerasaudit.data import DataSpec, open_data

    return open_data(DataSpec(path=root / "data" / "defender.npz"), (28, 28, 1), 10)


def known_trigger(root: Path, recipe: Recipe, index: int = 0) -> Any:
    """Trigger ``index`` of ``recipe`` as the library takes it: its spec, else the defender's
    images carrying it (TriggerData, target = the trigger's)."""
    from kerasaudit.triggers import TriggerData, load_trigger

    trig = recipe.attack.triggers[index]
    if trig.spec:
        return load_trigger(trig.spec, (28, 28, 1))
    with np.load(_trigger_images(root, recipe, index)) as f:
        return TriggerData.from_arrays(f"trigger{index}", f["x"], f["y"], trig.target)


def measure_file(root: Path, recipe: Recipe, path: Path) -> dict[str, Any]:
    """Clean accuracy and real-trigger ASR of a model file on the 9,000 evaluation images,
    stamped by the zoo's own code (never kerasaudit's)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    model = keras.models.load_model(path, compile=False)
    xe, ye = load_split(root, "eval")
    return measure(model, recipe, xe, ye)


def original_eval(root: Path, recipe: Recipe) -> dict[str, Any]:
    info = json.loads((root / "models" / f"{recipe.name}.json").read_text())
    return info["eval"]


def cmd_defend(args: argparse.Namespace) -> int:
    """``kerasaudit defend`` (no trigger known) on every built model; the defended model is
    measured with the real trigger on the evaluation images. Cached in results/NAME/defend.json."""
    root = zoo_dir(args.dir)
    for recipe in built(root, args.names):
        target = results_dir(root, recipe.name) / "defend.json"
        if target.exists() and not args.force:
            continue
        log(f"defend {recipe.name}")
        result = defend_model(root, recipe)
        if result is None:
            continue
        _write_json(target, result)
        code, after = result["exit_code"], result["after"]
        log(
            f"{recipe.name}: exit {code}, flagged {result['flagged']}, after "
            + ("unchanged" if after is None else f"{after['accuracy']:.4f} / {after['asr']}")
        )
    return 0


def store_recovered(root: Path, name: str, found: list[Any], meta: dict[str, Any]) -> None:
    """Write ``removal.found_triggers``'s cache of ``found`` (FoundTrigger, in order) for the
    weights built under ``root``: the arrays as recovered/NAME.npz (mask/pattern/delta/flow
    + index), ``meta`` with the weights and each trigger's stem, label and kind as NAME.json."""
    store = recovered_dir(root)
    store.mkdir(parents=True, exist_ok=True)
    stored: dict[str, Any] = {}  # np.savez_compressed's **kwds
    for i, f in enumerate(found):
        stored[f"mask{i}"], stored[f"pattern{i}"] = f.mask, f.pattern
        if f.delta is not None:
            stored[f"delta{i}"] = f.delta
        if f.flow is not None:
            stored[f"flow{i}"] = f.flow
    tmp = store / f"{name}.tmp.npz"
    np.savez_compressed(tmp, **stored)
    os.replace(tmp, store / f"{name}.npz")
    _write_json(store / f"{name}.json", {
        "weights_sha256": weights_of(root, name),
        **meta,
        "found": [{"stem": f.stem, "label": f.label, "kind": f.kind} for f in found],
    })  # fmt: skip


def cache_recovered(root: Path, name: str, artifacts: Path) -> None:
    """``removal.found_triggers``'s cache (:func:`store_recovered`, and
    results/NAME/reverse.json) from a ``defend --artifacts`` directory: its reverse step's
    triggers, so that removal variants run on them without searching again. Kept when a
    cache of these weights is there."""
    from kerasaudit.stages.reverse import FoundTrigger
    from kerasaudit.triggers import read_trigger_file

    meta = recovered_dir(root) / f"{name}.json"
    if meta.exists() and json.loads(meta.read_text()).get("weights_sha256") == weights_of(
        root, name
    ):
        return
    report = json.loads((artifacts / "reverse.json").read_text())
    found = []
    for file in (Path(f).name for f in report["files"] if f.endswith(".npz")):
        t = read_trigger_file(artifacts / file)
        found.append(FoundTrigger(Path(file).stem, t.meta.get("label"), t.meta["kind"], t.mask,
                                  t.pattern, t.delta, t.flow))  # fmt: skip
    _write_json(results_dir(root, name) / "reverse.json", report)
    verdict = report["verdict"]
    store_recovered(root, name, found, {
        "flagged": list(verdict["flagged"]),
        "all_to_all": verdict["all_to_all"],
        "value_range": list(report["value_range"]),
        "source": "defend --artifacts",
    })  # fmt: skip


def defend_model(root: Path, recipe: Recipe) -> dict[str, Any] | None:
    """``kerasaudit defend`` (defaults) on one built model of ``root`` (the defender's data),
    the defended model measured with the real trigger on the evaluation images; None (logged)
    when the CLI failed. The defended model and the log stay in ``results/NAME``."""
    out = results_dir(root, recipe.name)
    defended = out / f"defended.{recipe.fmt}"
    defended.unlink(missing_ok=True)
    model = root / "models" / recipe.filename
    data = root / "data" / "defender.npz"
    artifacts = out / "defend-artifacts"
    code, report, seconds = kerasaudit(
        ["defend", str(model), "-d", str(data), "-o", str(defended), "--artifacts",
         str(artifacts), "--force"],
        out / "defend.log",
    )  # fmt: skip
    if report is None or code not in (0, 1):
        log(f"FAILED defend {recipe.name} (exit {code}); see {out / 'defend.log'}")
        return None
    if artifacts.is_dir():
        try:
            cache_recovered(root, recipe.name, artifacts)
        except (OSError, KeyError, ValueError) as error:  # the row stands without the cache
            log(f"{recipe.name}: recovered triggers not cached ({error!r})")
    return {
        "exit_code": code,
        "seconds": seconds,
        "flagged": report.get("flagged"),
        "all_to_all": report.get("all_to_all"),
        "written": defended.exists(),
        "before": original_eval(root, recipe),
        "after": measure_file(root, recipe, defended) if defended.exists() else None,
        "report": report,
    }


def cmd_known(args: argparse.Namespace) -> int:
    """The README's known-trigger ``prune`` chain on every backdoored model, measured with the
    real trigger on the evaluation images. Cached in results/NAME/known.json."""
    root = zoo_dir(args.dir)
    for recipe in built(root, args.names):
        if not recipe.attack.triggers:
            continue
        out = results_dir(root, recipe.name)
        suffix = "" if args.optimizer is None else f".{args.optimizer}"
        suffix += "" if args.epochs is None else f".e{args.epochs}"
        suffix += "" if args.unlearn_fraction is None else f".u{args.unlearn_fraction:g}"
        suffix += ".first" if args.no_rank_also else ""
        suffix += f".{args.tag}" if args.tag else ""
        target = out / f"known{suffix}.json"
        if target.exists() and not args.force:
            continue
        lock = out / f"known{suffix}.lock"
        if not claim(lock):
            log(f"{recipe.name}: known{suffix} is running in another process")
            continue
        try:
            run_known(args, root, recipe, out, suffix, target)
        finally:
            lock.unlink(missing_ok=True)
    return 0


def run_known(
    args: argparse.Namespace, root: Path, recipe: Recipe, out: Path, suffix: str, target: Path
) -> None:
    """One model's chain run for ``cmd_known`` (its lock held)."""
    data = root / "data" / "defender.npz"
    extra = [] if args.optimizer is None else ["--optimizer", args.optimizer]
    # a later --fine-tune-epochs overrides the chain's; with a second known trigger the
    # README's chain fine-tunes 40 epochs (JOURNAL, twenty-sixth session)
    epochs = args.epochs
    if epochs is None and len(recipe.attack.triggers) > 1:
        epochs = TWO_TRIGGER_EPOCHS
    if epochs is not None:
        extra += ["--fine-tune-epochs", str(epochs)]
    if args.unlearn_fraction is not None:
        extra += ["--unlearn-fraction", f"{args.unlearn_fraction:g}"]
    if args.no_rank_also:  # the first trigger alone ranks (the chain before 2026-12-05 23:10)
        extra += ["--no-rank-also"]
    extra += shlex.split(args.extra or "")  # a later option overrides the chain's
    # One run: every known trigger ranks the channels (prune's default) and is unlearnt.
    for index in range(1, len(recipe.attack.triggers)):
        extra += also_unlearn_args(root, recipe, index)
    pruned = out / f"known0{suffix}.{recipe.fmt}"
    pruned.unlink(missing_ok=True)
    log(f"known-trigger chain {recipe.name}")
    code, report, seconds = kerasaudit(
        ["prune", str(root / "models" / recipe.filename), "-d", str(data),
         *trigger_args(root, recipe, 0), *KNOWN_CHAIN, *extra, "-o", str(pruned)],
        out / f"known0{suffix}.log",
    )  # fmt: skip
    result = {
        "runs": [{"exit_code": code, "seconds": seconds, "report": report}],
        "before": original_eval(root, recipe),
        "after": measure_file(root, recipe, pruned) if pruned.exists() else None,
        "seconds": seconds,
    }
    _write_json(target, result)
    log(f"{recipe.name}: after {result['after']}")


def cmd_confusion(args: argparse.Namespace) -> int:
    """Measure again, with ``clean_to_target`` and ``flipped`` (see ``measure``), every cached
    known-trigger result (results/NAME/known*.json) whose model file is on disk, and the
    original; the json files gain the fields. Prints, per trigger, the ASR after the chain,
    the share of the same images the model sends to the target unstamped, and the rest."""
    root = zoo_dir(args.dir)
    counts: dict[str, list[int]] = {}  # split → [models, within the goal, flips within it]
    for recipe in built(root, args.names):
        out = results_dir(root, recipe.name)
        for cached in sorted(out.glob("known*.json")):
            suffix = cached.name[len("known") : -len(".json")]
            path = out / f"known0{suffix}.{recipe.fmt}"
            if not path.exists():
                continue
            result = json.loads(cached.read_text())
            result["before"] = measure_file(root, recipe, root / "models" / recipe.filename)
            result["after"] = after = measure_file(root, recipe, path)
            _write_json(cached, result)
            cells = [
                f"ASR {100 * a:.2f} % (unstamped {100 * o:.2f}, flipped {100 * f:.2f})"
                for a, o, f in zip(
                    after["asr"], after["clean_to_target"], after["flipped"], strict=True
                )
            ]
            lost = 100 * (result["before"]["accuracy"] - after["accuracy"])
            print(f"{recipe.name:24} {split(recipe.name):4} known{suffix:5} {-lost:+.2f}  "
                  + " | ".join(cells), flush=True)  # fmt: skip
            if suffix == "":
                row = counts.setdefault(split(recipe.name), [0, 0, 0])
                row[0] += 1
                row[1] += within_goal(max(after["asr"]), lost)
                row[2] += within_goal(max(after["flipped"]), lost)
    for half, (models, goal, flips) in sorted(counts.items()):
        print(f"{half}: within the goal (ASR ≤ 2 %, ≤ 1.5 points) {goal} of {models}; "
              f"with the trigger's flips ≤ 2 % instead of the ASR {flips} of {models}")  # fmt: skip
    return 0


def floor(root: Path, recipe: Recipe, twins: list[Recipe] | None = None) -> list[float]:
    """Per trigger: the share of stamped evaluation images the *clean* twins of the same
    architecture (default: the zoo's) send to the target by themselves (mean over seeds): the
    ASR no defence can go below. Cached in results/NAME/floor.json, once a twin is built (NaN
    until then)."""
    out = results_dir(root, recipe.name) / "floor.json"
    if out.exists():
        return list(json.loads(out.read_text())["floor"])
    if twins is None:
        twins = [r for r in RECIPES if r.family == "clean" and r.arch == recipe.arch]
    measured = on_twins(root, recipe, twins)
    if not measured:
        return [math.nan] * len(recipe.attack.triggers)
    result = mean_floor(measured.values(), recipe)
    _write_json(out, {"floor": result, "twins": sorted(measured)})
    return result


def on_twins(
    root: Path, recipe: Recipe, twins: list[Recipe], loaded: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """``measure`` of ``recipe``'s real triggers on each built model of ``twins`` (clean models
    of its architecture) in ``root``: what a model never poisoned does with them. ``loaded``:
    a cache of models by name, kept across calls."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    cache = {} if loaded is None else loaded
    xe, ye = load_split(root, "eval")
    out = {}
    for twin in twins:
        path = root / "models" / twin.filename
        if not path.exists():
            continue
        if twin.name not in cache:
            cache[twin.name] = keras.models.load_model(path, compile=False)
        out[twin.name] = measure(cache[twin.name], recipe, xe, ye)
    return out


def mean_floor(measured: Iterable[dict[str, Any]], recipe: Recipe) -> list[float]:
    """Per trigger, the twins' mean ASR (:func:`on_twins`): the trigger's floor."""
    values = [m["asr"] for m in measured]
    return [float(np.mean([v[i] for v in values])) for i in range(len(recipe.attack.triggers))]


def shipped_baseline(root: Path) -> Baseline | None:
    """The baseline ``kerasaudit reverse`` judges the zoo's models against: the one
    ``--baseline auto`` chooses for the defender's images (None, the plain rule, without them);
    its rule comes with it (``kerasaudit.verdict.rule_for``)."""
    from kerasaudit import baselines

    if not (root / "data" / "defender.npz").exists():
        return None
    x, y = load_split(root, "defender")
    return baselines.choose("auto", x, y, 10).baseline


def cmd_table(args: argparse.Namespace) -> int:
    """The README table from the cached results (evidence, defend, known, floors)."""
    import calibrate

    root = zoo_dir(args.dir)
    baseline = shipped_baseline(root)
    evidence = {m.name: m for m in calibrate.load_models(evidence_dir(root))}
    out = HERE / "results"
    # The committed table keeps every removal result measured so far (each run takes minutes),
    # with the SHA-256 of the weights it was measured on: a model not built here keeps its row;
    # built with the same weights, a stage not run here keeps its cached result; built with
    # other weights (another CPU rounds differently), the row is replaced only when defend and
    # known (MAIN_STAGES) were rerun here — variant stages measured only on the other weights
    # are then left out, never mixed with this build's results.
    committed = {}
    if root == HERE / "build" and (out / "table.json").exists():
        committed = {r["name"]: r for r in json.loads((out / "table.json").read_text())}
    rows = []
    for recipe in RECIPES if not args.names else [BY_NAME[n] for n in args.names]:
        if not (root / "models" / f"{recipe.name}.json").exists():
            if recipe.name in committed:
                rows.append(committed[recipe.name])
            continue
        res = root / "results" / recipe.name
        cached = committed.get(recipe.name, {})
        info = json.loads((root / "models" / f"{recipe.name}.json").read_text())
        measured = {}
        for stage in STAGES:
            path = res / f"{stage}.json"
            if path.exists():
                data = json.loads(path.read_text())
                measured[stage] = {"after": data.get("after"), "seconds": data.get("seconds"),
                                   "exit_code": data.get("exit_code")}  # fmt: skip
            elif stage == "defend" and (dflt := defend_from_removal(root, recipe.name)):
                measured[stage] = dflt
        if cached and cached.get("weights_sha256") != info["weights_sha256"]:
            missing = [s for s in MAIN_STAGES if s in cached and s not in measured]
            if missing:
                log(f"{recipe.name}: built here with other weights and {', '.join(missing)} not "
                    "rerun on them: the committed row stays")  # fmt: skip
                rows.append(cached)
                continue
            dropped = [s for s in STAGES if s in cached and s not in measured]
            if dropped:
                log(f"{recipe.name}: {', '.join(dropped)} measured on other weights only: left out")
            cached = {}
        row: dict[str, Any] = {
            "name": recipe.name,
            "family": recipe.family,
            "arch": recipe.arch,
            "format": recipe.fmt,
            "targets": list(recipe.attack.targets),
            "accuracy": info["eval"]["accuracy"],
            "asr": info["eval"]["asr"],
            "weights_sha256": info["weights_sha256"],
        }
        model = evidence.get(recipe.name)
        if model is not None:
            o = calibrate.outcome(model, None, baseline)
            row["verdict"] = {
                "flagged": list(o.flagged),
                "all_to_all": o.all_to_all_verdict,
                "right": o.detected if not o.clean else not o.false_positive,
            }
        for stage in STAGES:
            if stage in measured:
                row[stage] = measured[stage]
            elif stage in cached:
                row[stage] = cached[stage]
        if recipe.attack.triggers:
            # the clean twins' share: not this model's weights, so any committed value serves
            row["floor"] = committed.get(recipe.name, {}).get("floor") or floor(root, recipe)
        rows.append(row)
    out.mkdir(exist_ok=True)
    _write_json(out / "table.json", rows)
    summary = removal_summary(rows) + variant_summary(rows)
    text = table_markdown(rows) + "\n\n" + "\n".join(summary)
    (out / "table.md").write_text(text + "\n")
    if root == HERE / "build" and not args.names:  # the full zoo: the README shows it too
        replace_marked(HERE.parents[1] / "README.md", text)
    print(text)
    return 0


GOAL_ASR = 0.02  # the removal goal: every trigger's ASR ≤ 2 % ...
GOAL_DROP = 1.5  # ... at ≤ 1.5 points of clean accuracy lost


def _removal(row: dict[str, Any], stage: str) -> tuple[float, float] | None:
    """(worst trigger's ASR after, accuracy points lost) of a changed model, else None."""
    after = (row.get(stage) or {}).get("after")
    if after is None:
        return None
    drop = round(100 * (row["accuracy"] - after["accuracy"]), 6)  # 135 of 9,000 is 1.5, not more
    return (max(after["asr"]) if after["asr"] else float("nan")), drop


def within_goal(worst_asr: float, lost: float) -> bool:
    """The removal goal: the worst trigger's ASR ≤ 2 % at ≤ 1.5 points of accuracy lost."""
    return worst_asr <= GOAL_ASR and round(lost, 6) <= GOAL_DROP  # 135 of 9,000 is 1.5


def _meets_goal(row: dict[str, Any], stage: str) -> bool:
    measured = _removal(row, stage)
    return measured is not None and within_goal(*measured)


def _removal_cell(row: dict[str, Any], stage: str) -> str:
    if not row.get(stage):
        return "–"
    measured = _removal(row, stage)
    if measured is None:
        return "not changed"
    asr, drop = measured
    return f"{'✓' if _meets_goal(row, stage) else '✗'} {100 * asr:.2f} % / {-drop:+.2f}"


KNOWN_VARIANTS = {
    ".e10": "`--fine-tune-epochs 10` (the chain until 2026-12-02)",
    ".sgd": "`--optimizer sgd` (and 10 epochs)",
}


MAIN_STAGES = ("defend", "known")  # a rebuilt model's row is replaced once both were rerun
STAGES = (*MAIN_STAGES, *(f"known{v}" for v in KNOWN_VARIANTS))


def recipe_named(name: str) -> Recipe:
    """The zoo's recipe called ``name``, or a held-out (heldout.py) or development (devset.py)
    one, so that the probe scripts run on ``--dir benchmarks/zoo/build-heldout`` too."""
    if name in BY_NAME:
        return BY_NAME[name]
    from devset import DEVELOPMENT
    from heldout import HELD_OUT

    named = {r.name: r for r in (*HELD_OUT, *DEVELOPMENT)}
    if name not in named:
        raise SystemExit(f"no zoo, held-out or development recipe called {name!r}")
    return named[name]


def split(name: str) -> str:
    """The zoo's fixed development/test halves of the backdoored models for comparing removal
    variants: alternate models in name order (declared before the first variant was run);
    "heldout" for a held-out model (heldout.py)."""
    names = sorted(r.name for r in RECIPES if r.family != "clean")
    if name not in names and name not in BY_NAME:
        return "heldout"
    return "dev" if names.index(name) % 2 == 0 else "test"


def variant_summary(rows: list[dict[str, Any]]) -> list[str]:
    """The known-trigger chain against each cached variant of it, on the models both ran on,
    per half (:func:`split`)."""
    lines = []
    for suffix, what in KNOWN_VARIANTS.items():
        stage = f"known{suffix}"
        both = [r for r in rows if r.get(stage) and r.get("known") and r.get("floor")]
        if not both:
            continue
        parts = []
        for half in ("dev", "test"):
            some = [r for r in both if split(r["name"]) == half]
            chain = sum(_meets_goal(r, "known") for r in some)
            variant = sum(_meets_goal(r, stage) for r in some)
            parts.append(f"{half} {chain} → {variant} of {len(some)}")
        lines.append(f"- known trigger with {what} instead: within the goal {', '.join(parts)}")
    return lines


def removal_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per removal stage, over the backdoored models it was run on: how many meet the goal, how
    many meet each half of it, and how many meet it when a trigger's bar is its floor (the
    share the clean twins send to the target anyway) where that is above 2 %."""
    lines = []
    for stage, name in (("known", "known trigger (`prune` chain)"), ("defend", "`defend`")):
        run = [r for r in rows if r.get("floor") is not None and r.get(stage)]
        if not run:
            continue
        goal = low = kept = at_floor = 0
        for r in run:
            measured = _removal(r, stage)
            if measured is None:  # left unchanged: the backdoor stays
                continue
            after = r[stage]["after"]["asr"]
            bars = [max(GOAL_ASR, f) for f in r["floor"]]
            asr, drop = measured
            low += asr <= GOAL_ASR
            kept += drop <= GOAL_DROP
            goal += _meets_goal(r, stage)
            at_floor += drop <= GOAL_DROP and all(a <= b for a, b in zip(after, bars, strict=True))
        lines.append(
            f"- {name}: **{goal} of {len(run)}** within the goal (ASR ≤ 2 % and ≤ 1.5 points); "
            f"ASR ≤ 2 % on {low}, ≤ 1.5 points lost on {kept}; {at_floor} with each trigger's "
            "ASR at most max(2 %, its floor)"
        )
    return lines


BEGIN, END = "<!-- zoo table: zoo.py table writes this -->", "<!-- end of zoo table -->"


def replace_marked(path: Path, text: str) -> None:
    """Replace what lies between the README's zoo-table markers with ``text`` (atomically)."""
    page = path.read_text()
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{path}: no {BEGIN!r} … {END!r} markers")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    os.replace(tmp, path)


def table_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| family | arch | model | clean acc | ASR | verdict | known trigger: ASR / Δacc "
        "| defend: ASR / Δacc | floor | defend s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(rows, key=lambda r: (r["family"] == "clean", r["family"], r["arch"])):
        v = row.get("verdict")
        if v is None:
            verdict = "–"
        else:
            flagged = ", ".join(map(str, v["flagged"])) or "none"
            if v["all_to_all"]:
                flagged += " (all-to-all)"
            verdict = f"{'✓' if v['right'] else '✗'} {flagged}"
        asr = " / ".join(f"{100 * a:.1f} %" for a in row["asr"]) or "–"
        fl = " / ".join(f"{100 * a:.2f} %" for a in row.get("floor", [])) or "–"
        seconds = (row.get("defend") or {}).get("seconds")
        lines.append(
            f"| {row['family']} | {row['arch']} | {row['name']} | "
            f"{100 * row['accuracy']:.2f} % | {asr} | {verdict} | "
            f"{_removal_cell(row, 'known')} | {_removal_cell(row, 'defend')} | {fl} | "
            f"{'–' if seconds is None else f'{seconds:.0f}'} |"
        )
    return "\n".join(lines)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Cross-validated verdict calibration from the cached evidence (seconds)."""
    import calibrate

    root = zoo_dir(args.dir)
    warn_stale(root)
    for variant in calibrate.VARIANTS:  # both families, cross-validated the same way
        other = calibrate.calibrate(evidence_dir(root), args.parameter, variant, args.method)
        for scheme in ("leave-one-architecture-out", "leave-one-family-out"):
            s = other[scheme]["summary"]
            print(f"{variant:16} {scheme:27} ({other['parameter']:g}) FP "
                  f"{s['false_positives']}/{s['clean_models']} detected "
                  f"{s['detected']}/{s['backdoored_models']} AUROC {s['auroc']:.3f} "
                  f"extra labels {s['wrong_labels']}")  # fmt: skip
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    for baseline, stem in ((False, "calibration"), (True, "calibration-baseline")):
        report = calibrate.calibrate(
            evidence_dir(root), args.parameter, args.variant, args.method, baseline
        )
        _write_json(out / f"{stem}.json", report)
        text = calibrate.markdown(report)
        (out / f"{stem}.md").write_text(text + "\n")
        print(f"## {stem}\n\n{text}")
        print("rule fitted on every model:", json.dumps(report["rule_fitted_on_all"], indent=1))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """The shipped Fashion-MNIST baseline (kerasaudit/baseline_files/fashion-mnist.json): the
    per-label offsets of every clean model's evidence and the rule calibrated with them (K
    chosen by leave-one-architecture-out CV, as ``calibrate`` reports; the untargeted ratio
    from benchmarks/zoo/evidence-spread, as ``ratio`` fits it), fingerprinted with the class
    means of the Fashion-MNIST training split."""
    import calibrate

    from kerasaudit import baselines

    root = zoo_dir(args.dir)
    models = calibrate.load_models(evidence_dir(root))
    parameter = args.parameter
    if parameter is None:
        parameter = calibrate.choose_parameter(models, args.variant, args.method, baseline=True)
    rule, baseline = calibrate.fit(models, parameter, args.variant, args.method, baseline=True)
    assert baseline is not None
    # the all-to-all threshold from evidence of the current untargeted objective (cmd_ratio)
    current = [m for m in calibrate.load_models(EVIDENCE_SPREAD) if m.clean]
    if len([m for m in current if m.spread_objective]) >= calibrate.RATIO_MIN_MODELS:
        ratios = calibrate.untargeted_ratios(current)
        rule = replace(rule, untargeted_ratio=calibrate.ratio_threshold(ratios, args.method,
                                                                        parameter))  # fmt: skip
    # the reference models and their veto are not refitted here: kept from the shipped file
    # (chosen with transfer_probe.py; JOURNAL.md, twenty-first session)
    path = baselines.SHIPPED / "fashion-mnist.json"
    kept = baselines.load(path).baseline if path.exists() else None
    if kept is not None:
        rule = replace(rule, transfer=kept.rule.transfer)
        baseline = replace(
            baseline, references=kept.references, reference_range=kept.reference_range
        )
    x, y = fmnist.load("train")
    x = fmnist.to_float(x)
    task = baselines.TaskBaseline(
        replace(baseline, name="fashion-mnist", rule=calibrate.rounded(rule)),
        num_classes=10,
        image_shape=tuple(x.shape[1:]),
        fingerprint=baselines.fingerprint(x, y, 10),
        description=(
            f"Fashion-MNIST: per-label offsets of the {baseline.models} clean models of "
            f"benchmarks/zoo; thresholds robust K = {parameter:g} (method {args.method}, "
            f"variant {args.variant}); fingerprint: class means of the 60,000 training images"
            + (
                "; the mask and warp signals vetoed where a label's trigger (that signal's) "
                f"sends >= {rule.transfer:.0%} of the {len(baseline.references)} clean reference "
                "models' images (shipped beside it) to it (transfer_probe.py)"
                if baseline.references
                else ""
            )
        ),
    )
    path.parent.mkdir(exist_ok=True)
    baselines.save(task, path, force=True)
    print(f"wrote {path}: K = {parameter:g}; {task.baseline.rule.describe()}")
    return 0


def cmd_ratio(args: argparse.Namespace) -> int:
    """The all-to-all threshold (the untargeted ratio) alone, from evidence measured with the
    product's untargeted objective (``--evidence``, default benchmarks/zoo/evidence-spread):
    per K, the fit on every clean model, the clean models flagged leaving their architecture
    out, the all-to-all models under it. ``--ship`` writes the fit at the shipped baseline's K
    (its description's "K = ") into kerasaudit/baseline_files/fashion-mnist.json, nothing else
    changed."""
    import re

    import calibrate

    from kerasaudit import baselines

    evidence = args.evidence or EVIDENCE_SPREAD
    models = calibrate.load_models(evidence)
    rows = calibrate.ratio_report(models, args.method)
    if not rows or not rows[0]["spread_objective"]:
        log(f"fewer than {calibrate.RATIO_MIN_MODELS} clean models measured with the spread term "
            f"under {evidence}: fitted on all clean models")  # fmt: skip
    print("| K | threshold | clean flagged (architecture left out) | all-to-all under it |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        flagged = ", ".join(row["clean_flagged_leaving_architecture_out"]) or "none"
        below = f"{len(row['all_to_all_below'])} of {len(row['all_to_all_models'])}"
        print(f"| {row['parameter']:g} | {row['threshold']:.3f} | {flagged} of "
              f"{row['clean_models']} | {below} |")  # fmt: skip
    if not args.ship:
        return 0
    path = baselines.SHIPPED / "fashion-mnist.json"
    task = baselines.load(path)
    found = re.search(r"K = ([0-9.]+)", task.description)
    if found is None:
        raise SystemExit(f"{path}: no 'K = ' in its description; pass --parameter")
    k = args.parameter if args.parameter is not None else float(found.group(1))
    chosen = next((r for r in rows if r["parameter"] == k), None)
    if chosen is None:
        raise SystemExit(f"K = {k:g} is not in the grid {calibrate.GRID[args.method]}")
    rule = replace(task.baseline.rule, untargeted_ratio=round(chosen["threshold"], 3))
    note = (f"; untargeted ratio refitted at K = {k:g} on {chosen['clean_models']} clean models "
            f"measured with the spread term (zoo.py ratio)")  # fmt: skip
    description = re.sub(r"; untargeted ratio refitted.*?\(zoo.py ratio\)", "", task.description)
    task = replace(task, baseline=replace(task.baseline, rule=rule), description=description + note)
    baselines.save(task, path, force=True)
    print(f"wrote {path}: {rule.describe()}")
    return 0


# --- commands -------------------------------------------------------------------------------


def record_manifest(info: dict[str, Any]) -> None:
    """Add one model to manifest.json (re-read first: builds may run side by side)."""
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    name = info["recipe"]["name"]
    manifest[name] = {"weights_sha256": info["weights_sha256"], "recipe": info["recipe"]}
    _write_json(MANIFEST, dict(sorted(manifest.items())))


def manifest_note(old: dict[str, Any] | None, info: dict[str, Any]) -> str | None:
    """How a fresh build compares with the model's manifest entry (None: no entry): the same
    weights, a changed recipe, or the same recipe trained to other weights (not bit-exact on
    this machine: the check that the pinned kernels, recipes.KERNELS, are meant to pass)."""
    if old is None:
        return None
    if old["weights_sha256"] == info["weights_sha256"]:
        return "weights equal to the manifest's (bit for bit)"
    if old.get("recipe") != info["recipe"]:
        return "NOTE: the recipe changed since the manifest's entry (other weights expected)"
    pinned = "kernels pinned" if "kernels" in info["recipe"] else "kernels not pinned"
    return f"NOTE: same recipe, other weights than the manifest's ({pinned}: not bit-exact here)"


def keeps_entry(old: dict[str, Any] | None, info: dict[str, Any]) -> bool:
    """Whether a build leaves the manifest's entry ``old`` as it is: an entry of the same recipe
    records the weights the committed evidence was measured on, and another machine's draw of
    that recipe (not bit-exact) must not replace it unless asked (``--repin``)."""
    return old is not None and old.get("recipe") == info["recipe"]


def cmd_build(args: argparse.Namespace) -> int:
    root = zoo_dir(args.dir)
    ensure_data(root)
    names = args.names or [r.name for r in RECIPES]
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    failed = []
    for name in names:
        recipe = BY_NAME[name]
        meta = root / "models" / f"{name}.json"
        if meta.exists() and (root / "models" / recipe.filename).exists() and not args.force:
            continue
        log(f"training {name} ({recipe.arch}, {recipe.family}, {recipe.epochs} epochs)")
        done = subprocess.run([sys.executable, __file__, "train", name, "--dir", str(root)],
                              check=False)  # fmt: skip
        if done.returncode != 0:
            failed.append(name)
            log(f"FAILED {name} (exit {done.returncode})")
            continue
        info = json.loads(meta.read_text())
        ev = info["eval"]
        log(f"{name}: acc {ev['accuracy']:.4f} asr {ev['asr']} ({info['train_seconds']} s)")
        note = manifest_note(manifest.get(name), info)
        if note:
            log(f"{name}: {note}")
        if not is_default_build(root):  # a zoo elsewhere (--dir) keeps its own record
            continue
        if args.repin or not keeps_entry(manifest.get(name), info):
            record_manifest(info)
        elif manifest[name]["weights_sha256"] != info["weights_sha256"]:
            log(f"{name}: manifest.json keeps the recorded weights (--repin records these)")
    return 1 if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    root = zoo_dir(args.dir)
    ensure_data(root)
    train(BY_NAME[args.names[0]], root)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    root = zoo_dir(args.dir)
    for recipe in RECIPES:
        meta = root / "models" / f"{recipe.name}.json"
        if not meta.exists():
            print(f"{recipe.name:28} {recipe.arch:8} {recipe.family:12} not built")
            continue
        info = json.loads(meta.read_text())
        ev = info["eval"]
        asr = " ".join(f"{a:.4f}" for a in ev["asr"])
        print(f"{recipe.name:28} {recipe.arch:8} {recipe.family:12} acc {ev['accuracy']:.4f} "
              f"asr {asr:14} {info['train_seconds']:6.1f} s")  # fmt: skip
    return 0


def cmd_verdicts(args: argparse.Namespace) -> int:
    """The *shipped* rule and baseline (what ``kerasaudit reverse`` uses on the defender's
    images: :func:`shipped_baseline`, nothing refitted) on every model whose evidence is kept
    (evidence/NAME.json), and defend's own cached verdict where only removal.py's recovered
    triggers exist: one line per model, then the counts. On a rebuilt zoo this
    tests the rule on weights it was not fitted on (seconds)."""
    import calibrate

    from kerasaudit.verdict import rule_for

    root = zoo_dir(args.dir)
    if not args.evidence:
        warn_stale(root)
    baseline = shipped_baseline(root)
    rule = rule_for(baseline)
    print(f"baseline: {'none' if baseline is None else baseline.name}; rule: {rule.describe()}")
    models = calibrate.load_models(args.evidence or evidence_dir(root))
    wanted = set(args.names)
    outcomes = [
        calibrate.outcome(m, None, baseline) for m in models if not wanted or m.name in wanted
    ]
    judged = {o.name for o in outcomes}
    cached = []  # no evidence, but defend's own verdict cached by removal.py
    for recipe in RECIPES:
        found = recovered_dir(root) / f"{recipe.name}.json"
        if recipe.name in judged or (wanted and recipe.name not in wanted) or not found.exists():
            continue
        if args.evidence:  # judge that directory's evidence alone
            continue
        info = json.loads(found.read_text())
        targets = [t.target for t in recipe.attack.triggers]
        verdict = (info["flagged"], bool(info["all_to_all"]))
        cached.append(calibrate.judged(recipe.name, recipe.arch, recipe.family, targets, *verdict,
                                       math.nan))  # fmt: skip
    for o in outcomes + cached:
        flagged = ", ".join(map(str, o.flagged)) or "nothing"
        flagged += " + all-to-all" if o.all_to_all_verdict else ""
        if o.clean:
            mark = "false positive" if o.false_positive else "ok"
        else:
            mark = "detected" if o.detected else "MISSED"
            mark += f", {o.wrong_labels} wrong label(s)" if o.wrong_labels else ""
        source = " (defend's cached verdict)" if o in cached else ""
        print(f"{o.name:26} {o.arch:8} {o.family:11} flagged {flagged:22} {mark}{source}")
    s = calibrate.summarise(outcomes + cached)
    auroc = calibrate.auroc(outcomes)  # scores need the evidence
    print(f"clean models flagged {s['false_positives']} of {s['clean_models']}; backdoored "
          f"detected with the right target(s) {s['detected']} of {s['backdoored_models']}; "
          f"wrong labels {s['wrong_labels']}; AUROC {auroc:.3f} (the {len(outcomes)} models "
          f"with evidence)")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        choices=[
            "build",
            "train",
            "status",
            "evidence",
            "warp",
            "calibrate",
            "baseline",
            "ratio",
            "verdicts",
            "defend",
            "known",
            "confusion",
            "table",
        ],
    )
    parser.add_argument("names", nargs="*")
    parser.add_argument("--dir", help="zoo directory (default benchmarks/zoo/build)")
    parser.add_argument("--force", action="store_true", help="redo even if cached")
    parser.add_argument("--method", default="robust", choices=("robust", "max"),
                        help="calibrate: threshold method (calibrate.py)")  # fmt: skip
    parser.add_argument("--parameter", type=float, default=None,
                        help="calibrate: K (robust) or slack (max); default: chosen by "
                        "leave-one-architecture-out cross-validation")  # fmt: skip
    parser.add_argument(
        "--variant",
        default="or",
        help="calibrate/baseline: rule family (default or: what ships, no ℓ∞ threshold)",
    )
    parser.add_argument(
        "--evidence",
        type=Path,
        default=None,
        help="ratio, verdicts: evidence directory instead of the zoo's (ratio: default "
        "benchmarks/zoo/evidence-spread)",
    )
    parser.add_argument(
        "--repin",
        action="store_true",
        help="build: record this build's weights in manifest.json even where it holds other "
        "weights for the same recipe (default: keep the recorded ones)",
    )
    parser.add_argument("--ship", action="store_true",
                        help="ratio: write the threshold into the shipped baseline")  # fmt: skip
    parser.add_argument(
        "--optimizer", help="known: the chain with prune --optimizer X (cached as known.X.json)"
    )
    parser.add_argument(
        "--epochs", type=int, help="known: the chain with --fine-tune-epochs N (known.eN.json)"
    )
    parser.add_argument(
        "--unlearn-fraction",
        type=float,
        help="known: the chain with --unlearn-fraction F (known.uF.json)",
    )
    parser.add_argument(
        "--no-rank-also",
        action="store_true",
        help="known: the chain with prune --no-rank-also (known.first.json)",
    )
    parser.add_argument("--extra", help="known: more prune options, as one argument with '=': "
                        "--extra='--learning-rate 3e-4' (needs --tag)")  # fmt: skip
    parser.add_argument("--tag", help="known: cache the variant as known.TAG.json")
    args = parser.parse_intermixed_args()  # options before, between or after the names
    if args.extra and not args.tag:
        parser.error("--extra needs --tag (its results must not replace the chain's)")
    this_checkout()
    commands = {
        "build": cmd_build,
        "train": cmd_train,
        "status": cmd_status,
        "evidence": cmd_evidence,
        "warp": cmd_warp,
        "calibrate": cmd_calibrate,
        "baseline": cmd_baseline,
        "ratio": cmd_ratio,
        "verdicts": cmd_verdicts,
        "defend": cmd_defend,
        "known": cmd_known,
        "confusion": cmd_confusion,
        "table": cmd_table,
    }
    stop_children_on_sigterm()
    return commands[args.command](args)


def stop_children_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so that ``subprocess.run`` kills its child on the way
    out: a killed ``build`` or ``known`` no longer leaves its training or ``kerasaudit`` child
    running (and writing) behind it."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    raise SystemExit(main())
