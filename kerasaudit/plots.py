"""Plots (matplotlib, headless). Formatters compute nothing; neither does this: it draws a
result that is already computed."""

from __future__ import annotations

from pathlib import Path

from kerasaudit.stages.sweep import SweepResult


def sweep_plot(result: SweepResult, path: Path) -> None:
    """Accuracy and ASR against pruning ratio: one row per layer, one line per criterion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(p.layer for p in result.points))
    criteria = list(dict.fromkeys(str(p.criterion) for p in result.points))
    fig, axes = plt.subplots(len(layers), 2, figsize=(10, 2.6 * len(layers) + 0.6), squeeze=False)
    for row, layer in enumerate(layers):
        acc_ax, asr_ax = axes[row]
        for criterion in criteria:
            pts = [p for p in result.points if p.layer == layer and str(p.criterion) == criterion]
            ratios = [0.0] + [p.ratio for p in pts]
            acc_ax.plot(
                ratios,
                [100 * result.baseline_accuracy] + [100 * p.accuracy for p in pts],
                marker="o",
                ms=3,
                label=criterion,
            )
            asr_ax.plot(
                ratios,
                [100 * (result.baseline_asr or 0)] + [100 * (p.asr or 0) for p in pts],
                marker="o",
                ms=3,
                label=criterion,
            )
        acc_ax.axhline(
            100 * (result.baseline_accuracy - result.max_acc_drop), color="grey", ls="--", lw=0.8
        )
        acc_ax.set_ylabel(f"{layer}\naccuracy %")
        asr_ax.set_ylabel("ASR %")
        asr_ax.set_ylim(-2, 102)
        if result.best is not None and result.best.layer == layer:
            b = result.best
            asr_ax.plot(
                [b.ratio],
                [100 * (b.asr or 0)],
                marker="*",
                ms=14,
                color="black",
                label="recommended",
            )
    axes[0][0].set_title("clean accuracy (dashed: budget)")
    axes[0][1].set_title(f"attack success rate (target {result.target})")
    axes[-1][0].set_xlabel("pruning ratio")
    axes[-1][1].set_xlabel("pruning ratio")
    axes[0][1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
