#!/usr/bin/env python3
"""Is a label's small Neural Cleanse mask a feature of its class or a backdoor? Ask other models.

The verdict's false positives on clean rebuilds (JOURNAL.md, twentieth session) are labels —
"Bag" above all — whose recovered mask is small in one model because the class itself is easy
to reach, not because of a trigger. Such a mask draws the class's own features, so it should
also move *other* clean models of the task toward the label; a backdoor's trigger is something
only the suspect learned. This probe measures that: for each model, `reverse`'s Neural Cleanse
search alone (its defaults, every label, nothing else; masks cached), then each label's trigger
stamped on the defender's images of the other labels and given to clean reference models; the
share each reference sends to the label is its *transfer*.

    python benchmarks/zoo/transfer_probe.py --data DIR/data/defender.npz \
        --refs REF.keras ... --models MODEL.keras ... --out results/transfer_probe.jsonl

One row per (model, reference): the model's masks' ℓ1 per label and the reference's transfer
per label. Masks are cached in ``--cache`` (one ``.npz`` per model file stem, with its
weights' SHA-256), so adding references costs only their predictions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(
    path: Path, data_path: Path, cache: Path, kind: str, compute: Any
) -> dict[str, np.ndarray]:
    """``compute(model, data)``'s arrays for the model file at ``path``, cached in ``cache``
    as ``STEM[.KIND].npz`` with the weights' SHA-256 (recomputed when they changed)."""
    from kerasaudit.data import DataSpec, open_data
    from kerasaudit.loading import load_model

    digest = sha256(path)
    key = cache / f"{path.stem}{'' if kind == 'mask' else '.' + kind}.npz"
    if key.exists():
        with np.load(key) as z:
            if str(z["sha256"]) == digest:
                return {k: z[k] for k in z.files if k != "sha256"}
    model = load_model(path).model
    data = open_data(DataSpec(path=data_path), tuple(model.input_shape[1:]), 10)
    started = time.perf_counter()
    arrays = compute(model, data)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(key, **arrays, sha256=digest)
    engine = "Neural Cleanse" if kind == "mask" else kind
    print(f"{path.name}: {engine} {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return arrays


def masks(path: Path, data_path: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks (k, H, W), patterns (k, H, W, C), ℓ1 (k,)) of `reverse`'s Neural Cleanse rows."""
    from kerasaudit.stages.reverse import ReverseConfig, reverse_engineer

    def compute(model: Any, data: Any) -> dict[str, np.ndarray]:
        config = ReverseConfig(
            untargeted=False, additive=False, margin=False, warp=False, complete=False,
            baseline="none",
        )  # fmt: skip
        found = reverse_engineer(model, data, config=config, bias_layers=[])
        return {
            "mask": np.stack([r.mask for r in found.labels]),
            "pattern": np.stack([r.pattern for r in found.labels]),
            "l1": np.asarray([r.mask_l1 for r in found.labels]),
        }

    z = _cached(path, data_path, cache, "mask", compute)
    return z["mask"], z["pattern"], z["l1"]


def perturbations(path: Path, data_path: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(deltas (k, H, W, C), ℓ2 (k,)) of `reverse`'s universal additive perturbations: its
    additive engine alone, its defaults, every label (cached like :func:`masks`)."""
    from kerasaudit.evaluation import classifier_io
    from kerasaudit.inversion import AdditiveForm, BatchedInversion
    from kerasaudit.stages.reverse import ReverseConfig, _value_range

    def compute(model: Any, data: Any) -> dict[str, np.ndarray]:
        config = ReverseConfig()
        x, y = data.take_array(config.images)
        value_range = _value_range(x)
        found = BatchedInversion(
            model,
            list(range(10)),
            x,
            y,
            AdditiveForm(*value_range),
            config.additive_inversion(value_range),
            classifier_io(model).outputs,
        ).run(None)
        return {
            "delta": np.stack([t.arrays[0] for t in found]),
            "l2": np.asarray([t.size for t in found]),
        }

    z = _cached(path, data_path, cache, "additive", compute)
    return z["delta"], z["l2"]


def additive_transfer(reference: Any, x: np.ndarray, y: np.ndarray, delta: np.ndarray) -> list:
    """Per label k: the share of the images of other labels that ``reference`` sends to k once
    label k's perturbation is added (clipped to [0, 1], as `reverse` measures it)."""
    from kerasaudit.evaluation import classifier_io, predictor
    from kerasaudit.stages.reverse import _additive_success

    predict = predictor(reference, tuple(x.shape[1:]), classifier_io(reference).outputs)
    return [
        round(_additive_success(predict, x, y, k, delta[k], 0.0, 1.0), 4) for k in range(len(delta))
    ]


def transfer(reference: Any, x: np.ndarray, y: np.ndarray, m: np.ndarray, p: np.ndarray) -> list:
    """Per label k: the share of the images of other labels that ``reference`` sends to k once
    label k's trigger is stamped on them (``evaluation.stamped_success``, as `reverse` does)."""
    from kerasaudit.evaluation import classifier_io, predictor, stamped_success

    predict = predictor(reference, tuple(x.shape[1:]), classifier_io(reference).outputs)
    return [round(stamped_success(predict, x, y, k, m[k], p[k])[0], 4) for k in range(len(m))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the defender's images (.npz x, y)")
    ap.add_argument("--refs", type=Path, nargs="+", required=True, help="clean reference models")
    ap.add_argument("--models", type=Path, nargs="+", required=True, help="models to probe")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/transfer_probe_masks"))
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    ap.add_argument(
        "--kind",
        choices=("mask", "additive"),
        default="mask",
        help="which trigger: Neural Cleanse's mask (default) or the additive perturbation",
    )
    args = ap.parse_args(argv)
    from kerasaudit.loading import load_model

    with np.load(args.data) as z:
        x = z["x"].astype(np.float32) / (255.0 if z["x"].dtype == np.uint8 else 1.0)
        y = z["y"]
    if args.kind == "additive":
        return _additive_rows(args, x, y)
    found = {path: masks(path, args.data, args.cache) for path in args.models}
    with args.out.open("a") as out:
        for ref in args.refs:
            reference = load_model(ref).model
            for path, (m, p, l1) in found.items():
                row = {
                    "model": path.stem,
                    "reference": ref.stem,
                    "l1": [round(float(v), 2) for v in l1],
                    "transfer": transfer(reference, x, y, m, p),
                }
                out.write(json.dumps(row) + "\n")
    return 0


def _additive_rows(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> int:
    from kerasaudit.loading import load_model

    references = [(ref, load_model(ref).model) for ref in args.refs]
    with args.out.open("a") as out:
        for path in args.models:  # one model at a time: its rows are kept if a later one fails
            delta, l2 = perturbations(path, args.data, args.cache)
            for ref, reference in references:
                row = {
                    "model": path.stem,
                    "reference": ref.stem,
                    "l2": [round(float(v), 3) for v in l2],
                    "transfer": additive_transfer(reference, x, y, delta),
                    "kind": "additive",
                }
                out.write(json.dumps(row) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
