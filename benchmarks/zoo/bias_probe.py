#!/usr/bin/env python3
"""Does refitting the output layer's bias give back the accuracy `defend` costs? (experiment)

`defend`'s accuracy loss on models trained outside the zoo was a shift of one class boundary
(coat / shirt lost 5-13 points, `benchmarks/external/judge.py --per-class`), not forgetting of
the target. A shift like that is what the last layer's bias sets. For each built model with a
defended copy (``zoo.py defend``: results/NAME/defended.*), the defended model's last ``Dense``
bias is refitted (its kernel and everything else kept) by minimising cross-entropy with the
features fixed, on:

- ``defender``: the defender's 1,000 labelled images (what `defend` itself could do; the
  final fine-tuning saw them);
- ``shares``: the same images, but to the original model's mean class probabilities (the
  suspect classifies clean images normally);
- ``oracle``: 1,000 evaluation images — an upper bound on what any bias can give, a diagnostic
  only, never a choice.

Every variant is measured on the evaluation images 1,000-8,999 (none of the above saw them),
with the zoo's own stamping. Usage (from the repository root, after `zoo.py defend`)::

    python benchmarks/zoo/bias_probe.py [--dir DIR] NAME...

Result (2026-12-04, eighteenth session; two development models rebuilt on this machine, one
`defend` run each): **no**. `blend_a10_resnet` defended −1.44 points / 1.95 %; bias refitted on
the defender's images −1.52 / 2.50 %, to the original's shares −1.49 / 3.57 %, oracle −1.54 /
2.40 %. `sig_nested` −2.11 / 4.54 %; −1.96 / 9.21 %, −1.44 / 9.59 %, oracle −1.74 / 11.79 %.
Even the oracle gives back at most 0.4 points, and every refit raised the target's bias and the
ASR with it: on these models the accuracy `defend` loses is the *target class's own* images
(shirt 75.6 → 61.5 %, coat 85.2 → 69.0 %; other classes ±2), a feature change no bias undoes.
Not pursued.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zoo  # noqa: E402
from recipes import BY_NAME  # noqa: E402

HELD = 1000  # evaluation images the oracle may fit on; the rest measure every variant


def last_dense(model: Any) -> Any:
    """The ``Dense`` layer that computes the logits (a trailing activation layer skipped)."""
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            return layer
        if not isinstance(layer, keras.layers.Activation | keras.layers.Softmax):
            break
    raise SystemExit(f"{model.name}: the output is not a top-level Dense layer")


def features(model: Any, dense: Any, x: np.ndarray) -> np.ndarray:
    import keras

    sub = keras.Model(model.inputs, dense.input)
    return np.asarray(sub.predict(x, batch_size=256, verbose=0), np.float64)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def refit(logits: np.ndarray, target: np.ndarray, bias: np.ndarray, steps: int = 500) -> np.ndarray:
    """The bias minimising mean cross-entropy of softmax(logits − old bias + b) against
    ``target`` (one-hot or probabilities); Newton steps on a convex problem in 10 numbers."""
    base = logits - bias
    b = bias.copy()
    for _ in range(steps):
        p = softmax(base + b)
        grad = (p - target).mean(axis=0)
        hess = (np.einsum("ni,ij->nij", p, np.eye(len(b))) - np.einsum("ni,nj->nij", p, p)).mean(0)
        hess += 1e-6 * np.eye(len(b))
        step = np.linalg.solve(hess, grad)
        b -= step
        if np.abs(step).max() < 1e-8:
            break
    return b - (b - bias).mean()  # softmax ignores a common shift: keep the mean as it was


def main() -> int:
    import keras

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--dir")
    args = parser.parse_args()
    root = zoo.zoo_dir(args.dir)
    xd, yd = zoo.load_split(root, "defender")
    xe, ye = zoo.load_split(root, "eval")
    for name in args.names:
        recipe = BY_NAME[name]
        out = zoo.results_dir(root, name)
        path = out / f"defended.{recipe.fmt}"
        if not path.exists():
            print(f"{name}: no defended model ({path})")
            continue
        original = keras.models.load_model(root / "models" / recipe.filename, compile=False)
        model = keras.models.load_model(path, compile=False)
        dense = last_dense(model)
        kernel, bias = (np.asarray(w, np.float64) for w in dense.get_weights())
        k = kernel.shape[1]
        hd = features(model, dense, xd) @ kernel + bias
        ho = features(model, dense, xe[:HELD]) @ kernel + bias
        shares = np.asarray(original.predict(xd, batch_size=256, verbose=0), np.float64)
        variants = {
            "defended": bias,
            "defender": refit(hd, np.eye(k)[yd], bias),
            "shares": refit(hd, shares, bias),
            "oracle": refit(ho, np.eye(k)[ye[:HELD]], bias),
        }
        before = zoo.measure(original, recipe, xe[HELD:], ye[HELD:])
        row: dict[str, Any] = {"model": name, "before": before}
        for variant, b in variants.items():
            dense.bias.assign(b.astype(np.float32))
            m = zoo.measure(model, recipe, xe[HELD:], ye[HELD:])
            row[variant] = {**m, "bias_change": [round(float(v), 3) for v in b - bias]}
        dense.bias.assign(bias.astype(np.float32))
        acc0 = row["before"]["accuracy"]
        print(
            f"{name}: before {acc0:.4f}/{row['before']['asr']}; "
            + "; ".join(
                f"{v} {100 * (row[v]['accuracy'] - acc0):+.2f} pt ASR "
                + "/".join(f"{100 * a:.2f}" for a in row[v]["asr"])
                for v in variants
            ),
            flush=True,
        )
        zoo.append_row(root / "results" / "bias_probe.jsonl", row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
