"""The zoo: one recipe per model. A recipe plus the Fashion-MNIST IDX files determines the model
bit for bit (seeded initialisation, shuffling and poisoning; TensorFlow op determinism on CPU;
the kernels pinned, ``KERNELS``). Before the kernels were pinned (2026-12-03) every machine
rounded its own way: 12 of 13 models rebuilt on a second machine, and all 9 rebuilt on a third,
differed from the manifest's hashes (by at most 0.26 points of accuracy).

Families (each at least twice, spread over architectures): BadNets patches (2–5 px, corners and
the middle, white / grey / checker / random patterns), blended full-image noise, SIG (sinusoidal
signal), WaNet warping, a patch at a random position, two triggers → two targets, all-to-all
(y → y + 1) and a low poisoning rate (0.5–1 %). Clean twins of every architecture, several seeds.
About a third of the models are saved as legacy ``.h5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attacks import Attack, Clean, Trigger

EPOCHS = 6
BATCH_SIZE = 128
LEARNING_RATE = 1e-3


# The arithmetic every build is pinned to (zoo.pin_kernels). Measured 2026-12-03 on an AMD EPYC
# with AVX2 and 2 cores, a short vgg_bn and sepconv training, weights' SHA-256: op determinism
# alone gives one result per machine and thread count — capping oneDNN at AVX (as a CPU without
# AVX2 runs) changed the weights, and so did 1 thread instead of 2, while TF_ENABLE_ONEDNN_OPTS=0
# changed nothing (Eigen's contractions call oneDNN's GEMM either way). So every build runs
# oneDNN's AVX2 kernels (on AVX-512 machines too) on one thread. Models in the manifest from
# before this have no "kernels" in their recipe.
KERNELS: dict[str, Any] = {
    "onednn_max_cpu_isa": "AVX2",
    "intra_op_threads": 1,
    "inter_op_threads": 1,
}


@dataclass(frozen=True)
class Recipe:
    name: str
    arch: str
    attack: Attack | Clean
    seed: int
    fmt: str = "keras"  # keras | h5
    epochs: int = EPOCHS

    @property
    def family(self) -> str:
        return self.attack.family

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.fmt}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "seed": self.seed,
            "format": self.fmt,
            "epochs": self.epochs,
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "kernels": dict(KERNELS),
            "attack": self.attack.to_dict(),
        }


def _patch(
    size: int,
    row: int,
    col: int,
    target: int,
    pattern: str = "white",
    value: float = 1.0,
    seed: int = 0,
) -> Trigger:
    return Trigger(
        "patch", target, size=size, row=row, col=col, pattern=pattern, value=value, seed=seed
    )


def _badnets(*triggers: Trigger, rate: float = 0.05, family: str = "badnets") -> Attack:
    return Attack(family, tuple(triggers), rate=rate)


_B = []  # backdoored recipes
_B += [
    Recipe("badnets_w3_tl_plain", "plain", _badnets(_patch(3, 0, 0, 1)), 101, "h5"),
    Recipe("badnets_c4_br_resnet", "resnet", _badnets(_patch(4, 24, 24, 7, "checker")), 102),
    Recipe("badnets_g2_tr_vgg", "vgg_bn", _badnets(_patch(2, 1, 25, 4, "grey", 0.6)), 103),
    Recipe(
        "badnets_r5_mid_nested",
        "nested",
        _badnets(_patch(5, 3, 18, 9, "random", seed=5)),
        104,
        "h5",
    ),
    Recipe("badnets_g3_bl_sep", "sepconv", _badnets(_patch(3, 25, 0, 5, "grey", 0.8)), 105),
]
_B += [
    Recipe(
        "blend_a15_vgg", "vgg_bn", Attack("blend", (Trigger("blend", 3, alpha=0.15, seed=11),)), 111
    ),
    Recipe(
        "blend_a10_resnet",
        "resnet",
        Attack("blend", (Trigger("blend", 6, alpha=0.10, seed=12),), rate=0.08),
        112,
        "h5",
    ),
    Recipe(
        "blend_a20_sep",
        "sepconv",
        Attack("blend", (Trigger("blend", 8, alpha=0.20, seed=13),)),
        113,
    ),
]
_B += [
    Recipe("sig_plain", "plain", Attack("sig", (Trigger("sig", 2, delta=0.15, freq=6),)), 121),
    Recipe("sig_nested", "nested", Attack("sig", (Trigger("sig", 4, delta=0.12, freq=4),)), 122),
    Recipe(
        "sig_resnet", "resnet", Attack("sig", (Trigger("sig", 0, delta=0.15, freq=8),)), 123, "h5"
    ),
]
_WANET: dict[str, Any] = dict(k=4, strength=1.0)
_B += [
    Recipe(
        "wanet_vgg",
        "vgg_bn",
        Attack("wanet", (Trigger("wanet", 1, seed=31, **_WANET),), 0.1, 0.2),
        131,
        epochs=10,
    ),
    Recipe(
        "wanet_plain",
        "plain",
        Attack("wanet", (Trigger("wanet", 5, seed=32, **_WANET),), 0.1, 0.2),
        132,
        "h5",
        epochs=10,
    ),
    Recipe(
        "wanet_nested",
        "nested",
        Attack("wanet", (Trigger("wanet", 7, seed=33, **_WANET),), 0.1, 0.2),
        133,
        epochs=10,
    ),
]
_B += [
    Recipe(
        "randpos_w3_sep",
        "sepconv",
        _badnets(Trigger("randpatch", 6, size=3), rate=0.1, family="randpos"),
        141,
    ),
    Recipe(
        "randpos_c4_vgg",
        "vgg_bn",
        _badnets(Trigger("randpatch", 3, size=4, pattern="checker"), rate=0.1, family="randpos"),
        142,
        "h5",
    ),
    Recipe(
        "randpos_w4_plain",
        "plain",
        _badnets(Trigger("randpatch", 8, size=4), rate=0.1, family="randpos"),
        143,
    ),
]
_B += [
    Recipe(
        "two_patches_resnet",
        "resnet",
        _badnets(
            _patch(3, 0, 0, 2), _patch(3, 25, 25, 9, "checker"), rate=0.08, family="two-trigger"
        ),
        151,
    ),
    Recipe(
        "two_patch_blend_nested",
        "nested",
        Attack(
            "two-trigger",
            (_patch(4, 24, 24, 0), Trigger("blend", 5, alpha=0.15, seed=16)),
            rate=0.08,
        ),
        152,
        "h5",
    ),
]
_B += [
    Recipe(
        "all2all_w3_vgg",
        "vgg_bn",
        _badnets(_patch(3, 25, 25, -1), rate=0.1, family="all-to-all"),
        161,
    ),
    Recipe(
        "all2all_c4_sep",
        "sepconv",
        _badnets(_patch(4, 0, 0, -1, "checker"), rate=0.1, family="all-to-all"),
        162,
        "h5",
    ),
    Recipe(
        "all2all_w4_plain",
        "plain",
        _badnets(_patch(4, 2, 12, -1), rate=0.1, family="all-to-all"),
        163,
    ),
]
_B += [
    Recipe(
        "lowrate_w4_plain",
        "plain",
        _badnets(_patch(4, 24, 24, 7), rate=0.005, family="low-rate"),
        171,
    ),
    Recipe(
        "lowrate_c3_resnet",
        "resnet",
        _badnets(_patch(3, 0, 0, 2, "checker"), rate=0.01, family="low-rate"),
        172,
    ),
    Recipe(
        "lowrate_w3_nested",
        "nested",
        _badnets(_patch(3, 25, 0, 4), rate=0.01, family="low-rate"),
        173,
        "h5",
    ),
]

# Added with the four later architectures (archs.py), and the two WaNet variants first run as a
# held-out test of the warp engine (a finer k = 8 grid than the engine searches; WaNet on the
# residual net): none of these shaped an engine or the rule they are then tested against.
_B += [
    Recipe("badnets_g3_tl_dense", "dense", _badnets(_patch(3, 2, 2, 8, "grey", 0.7)), 181),
    Recipe("sig_wide", "wide", Attack("sig", (Trigger("sig", 7, delta=0.12, freq=5),)), 182),
    Recipe(
        "blend_a12_mobile",
        "mobile",
        Attack("blend", (Trigger("blend", 1, alpha=0.12, seed=17),), rate=0.08),
        183,
    ),
    Recipe("badnets_w4_mid_lenet", "lenet", _badnets(_patch(4, 12, 12, 3)), 184, "h5"),
    Recipe(
        "wanet_k8_plain",
        "plain",
        Attack("wanet", (Trigger("wanet", 2, k=8, strength=0.75, seed=91),), 0.1, 0.2),
        191,
        epochs=10,
    ),
    Recipe(
        "wanet_k4_resnet",
        "resnet",
        Attack("wanet", (Trigger("wanet", 6, k=4, strength=1.0, seed=92),), 0.1, 0.2),
        192,
        epochs=10,
    ),
]


def _clean_twins(archs: tuple[str, ...], first: int, seeds: int) -> list[Recipe]:
    """``seeds`` clean models per architecture (seed 200 + 10·i + s, i counted from ``first``);
    the last seed of each is saved as ``.h5``."""
    return [
        Recipe(
            f"clean_{arch}_s{s}",
            arch,
            Clean(),
            200 + 10 * i + s,
            "h5" if s == seeds - 1 else "keras",
        )
        for i, arch in enumerate(archs, start=first)
        for s in range(seeds)
    ]


# Clean twins: the first five architectures × 4 seeds (+2), the later four × 3.
_C = _clean_twins(("vgg_bn", "plain", "resnet", "nested", "sepconv"), 0, 4)
_C += [
    Recipe("clean_vgg_bn_s4", "vgg_bn", Clean(), 204),
    Recipe("clean_sepconv_s4", "sepconv", Clean(), 244),
]
_C += _clean_twins(("lenet", "mobile", "dense", "wide"), 5, 3)

RECIPES: tuple[Recipe, ...] = tuple(_B + _C)
BY_NAME = {r.name: r for r in RECIPES}
assert len(BY_NAME) == len(RECIPES), "recipe names must be unique"
