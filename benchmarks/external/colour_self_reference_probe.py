"""On a task no shipped baseline covers, can references trained on the defender's own images
stand in for the clean reference models of the veto? (A probe; nothing in kerasaudit uses it.)

Two references (``colour.py``'s plain and VGG-style nets) are trained from scratch on the colour
task's 1,000 defender images (40 epochs, Adam); then, for each colour model named, every
label's Neural Cleanse trigger and universal additive perturbation (``reverse``'s engines with
their defaults: ``benchmarks/zoo/transfer_probe.py``) is applied to the defender's images of
the other labels and the share each reference sends to the label is written, one JSON line per
(model, reference), to ``results-colour/self_reference_probe.jsonl``.

    python benchmarks/external/colour_self_reference_probe.py colour_vgg_patch colour_plain_clean
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "zoo"))

import colour  # noqa: E402
import transfer_probe as tp  # noqa: E402

BUILD = colour.DEFAULT_BUILD
OUT = HERE / "results-colour" / "self_reference_probe.jsonl"


def references(x: np.ndarray, y: np.ndarray, cache: Path) -> list[tuple[str, object]]:
    import keras

    out = []
    for arch, seed in (("plain", 7), ("vgg", 8)):
        path = cache / f"self_reference_{arch}.keras"
        if not path.exists():
            model = colour.build(arch, seed)
            model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
            model.fit(x, y, epochs=40, batch_size=64, verbose=0)
            model.save(path)
        model = keras.models.load_model(path, compile=False)
        with np.load(BUILD / "data" / "eval.npz") as z:
            pred = np.argmax(model.predict(z["x"][:3000], verbose=0), axis=1)
            accuracy = float(np.mean(pred == z["y"][:3000]))
        print(f"reference {arch}: accuracy {accuracy:.3f} on 3,000 evaluation images", flush=True)
        out.append((arch, model))
    return out


def main(names: list[str]) -> int:
    data = BUILD / "data" / "defender.npz"
    cache = BUILD / "self_reference"
    cache.mkdir(parents=True, exist_ok=True)
    with np.load(data) as z:
        x, y = z["x"], z["y"]
    refs = references(x, y, cache)
    with OUT.open("a") as out:
        for name in names:
            path = BUILD / "models" / f"{name}.keras"
            mask, pattern, l1 = tp.masks(path, data, cache)
            delta, l2 = tp.perturbations(path, data, cache)
            for arch, model in refs:
                row = {
                    "model": name,
                    "reference": arch,
                    "l1": [round(float(v), 2) for v in l1],
                    "l2": [round(float(v), 3) for v in l2],
                    "mask_transfer": tp.transfer(model, x, y, mask, pattern),
                    "additive_transfer": tp.additive_transfer(model, x, y, delta),
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
