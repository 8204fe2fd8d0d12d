"""Formatting of ``GradcamResult``: JSON, a terminal table, and the PNG pictures.

Pictures are drawn from maps that are already computed; the only arithmetic here is for
display (scaling the input to grey levels, normalising each map to its maximum, resizing it to
the input for the overlay).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.text import Text

from kerasaudit.formats._table import Table
from kerasaudit.stages.gradcam import GradcamResult, Localisation, ModelCams

SCHEMA = "kerasaudit.stages.gradcam/1"
GRID_FILE = "grid.png"
GRID_COLUMNS = 8
RATIO_NOTE = (
    "localisation ratio = (share of the CAM's mass inside the trigger's region) / (the region's "
    "share of the CAM grid); 1 = no preference for the trigger, higher = the map is on the trigger"
)
ROLE_NAMES = {"model": "model", "compare": "compare"}
_OUTLINE = "#00e5ff"


def image_file(i: int) -> str:
    return f"image_{i:03d}.png"


def to_json(result: GradcamResult, *, output: str | None = None) -> dict[str, Any]:
    body = result.to_dict()
    for i, entry in enumerate(body["images"]):
        entry["file"] = None if output is None else image_file(i)
    return {
        "schema": SCHEMA,
        "output": output,
        "files": None if output is None else [GRID_FILE, *map(image_file, range(result.count))],
        "localisation_ratio": RATIO_NOTE,
        **body,
    }


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _role_title(cams: ModelCams) -> str:
    where = Path(cams.source).name if cams.source else cams.name
    return f"{'model' if cams.role == 'model' else 'compare'}\n{where}"


def row_name(cams: ModelCams) -> str:
    """Short name of a model in pictures: "model", or the --compare file's stem ("pruned")."""
    if cams.role == "model" or not cams.source:
        return cams.role
    stem = Path(cams.source).stem
    return stem if len(stem) <= 16 else stem[:15] + "…"


def summary_line(result: GradcamResult, output: str | None = None) -> str:
    parts = [
        f"{result.method.label} of {result.count} image(s) in {result.seconds:.1f} s",
    ]
    for cams in result.models:
        loc = cams.localisation
        if loc is not None:
            parts.append(f"{cams.role}: triggered-image localisation ratio {_ratio(loc.ratio)}")
    if output:
        parts.append(f"wrote {output}")
    return "; ".join(parts)


def _localisation_row(table: Table, cams: ModelCams, name: str, loc: Localisation | None) -> None:
    if loc is None:
        return
    table.add_row(
        Text(f"{cams.role} ({cams.source or cams.name})"),
        name,
        str(loc.images),
        _pct(loc.mass_share),
        _pct(loc.area_share),
        _ratio(loc.ratio),
        _ratio(loc.ratio_median),
    )


def render(result: GradcamResult, console: Console, *, output: str | None = None) -> None:
    first = result.models[0]
    head = Table(title=Text(f"{result.method.label}"), show_header=False, title_justify="left")
    head.add_column("key", style="bold")
    head.add_column("value")
    for cams in result.models:
        head.add_row(cams.role, Text(cams.source or cams.name))
    head.add_row(
        "explained tensor",
        Text(
            f"{first.target.tensor} (layer {first.target.layer}), {first.target.grid[0]}×"
            f"{first.target.grid[1]} map; score: {first.score}"
        ),
    )
    head.add_row("class", result.class_rule)
    head.add_row("images", Text(f"{result.count} from {result.data}"))
    if result.trigger is not None:
        target = "" if result.target is None else f", target {result.target}"
        head.add_row("trigger", Text(f"{result.trigger['description']}{target}"))
    if output:
        head.add_row("pictures", Text(f"{output}/{GRID_FILE} and one image_NNN.png per image"))
    console.print(head)
    for note in result.notes:
        console.print(Text(f"note: {note}"))
    if result.trigger is not None:
        table = Table(title=Text("CAM mass in the trigger's region"), title_justify="left")
        for column in ("model", "images", "n", "mass in region", "region area", "ratio",
                       "median"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("model", "images") else "right")
        for cams in result.models:
            _localisation_row(table, cams, "triggered", cams.localisation)
            _localisation_row(table, cams, "clean (baseline)", cams.clean_localisation)
        console.print(table)
        console.print(Text(RATIO_NOTE))
    per_image = Table(title=Text("Per image"), title_justify="left")
    per_image.add_column("#", justify="right")
    per_image.add_column("label", justify="right")
    for cams in result.models:
        per_image.add_column(f"{cams.role}: clean →", justify="right")
        if cams.triggered is not None:
            per_image.add_column(f"{cams.role}: triggered →", justify="right")
            per_image.add_column("ratio", justify="right")
    for i in range(result.count):
        row = [
            str(int(result.indices[i])),
            "-" if result.labels is None else str(int(result.labels[i])),
        ]
        for cams in result.models:
            row.append(str(int(cams.clean.predicted[i])))
            if cams.triggered is not None:
                row.append(str(int(cams.triggered.predicted[i])))
                row.append(_ratio(_image_ratio(cams, i)))
        per_image.add_row(*row)
    console.print(per_image)


def _image_ratio(cams: ModelCams, i: int) -> float | None:
    if cams.triggered is None or cams.triggered.mass_share is None or cams.localisation is None:
        return None
    share = float(cams.triggered.mass_share[i])
    area = cams.localisation.area_share
    return share / area if np.isfinite(share) and area > 0 else None


# --- pictures ------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class _Display:
    """Inputs scaled to [0, 1] for display (one scale for the whole set, so clean and triggered
    images look alike), and maps resized to the input."""

    def __init__(self, result: GradcamResult) -> None:
        stacks = [result.images] + (
            [] if result.triggered_images is None else [result.triggered_images]
        )
        both = np.concatenate([s.reshape(-1) for s in stacks])
        self.lo = float(both.min())
        self.hi = float(both.max())
        self.height, self.width = result.images.shape[1:3]
        self.channels = result.images.shape[3]

    def image(self, x: np.ndarray) -> tuple[np.ndarray, str | None]:
        span = self.hi - self.lo if self.hi > self.lo else 1.0
        shown = np.clip((x - self.lo) / span, 0.0, 1.0)
        if self.channels == 1:
            return shown[..., 0], "gray"
        if self.channels >= 3:
            return shown[..., :3], None
        return shown.mean(axis=-1), "gray"

    def grey(self, x: np.ndarray) -> np.ndarray:
        shown, cmap = self.image(x)
        return shown if cmap == "gray" else shown.mean(axis=-1)

    def upsampled(self, cam: np.ndarray) -> np.ndarray:
        from PIL import Image

        peak = float(cam.max())
        norm = (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)
        picture = Image.fromarray(norm, mode="F").resize(
            (self.width, self.height), Image.Resampling.BILINEAR
        )
        return np.clip(np.asarray(picture, dtype=np.float32), 0.0, 1.0)

    @staticmethod
    def normalised(cam: np.ndarray) -> np.ndarray:
        peak = float(cam.max())
        return cam / peak if peak > 0 else np.zeros_like(cam)

    def extent(self) -> tuple[float, float, float, float]:
        return (-0.5, self.width - 0.5, self.height - 0.5, -0.5)


def _outline(ax: Any, region: np.ndarray | None) -> None:
    if region is None or not region.any():
        return
    padded = np.pad(region.astype(float), 1)
    ys = np.arange(-1, region.shape[0] + 1)
    xs = np.arange(-1, region.shape[1] + 1)
    ax.contour(xs, ys, padded, levels=[0.5], colors=_OUTLINE, linewidths=1.2)


def _bare(ax: Any) -> None:
    # No ticks; a thin grey frame, so a white trigger at the border still reads as inside.
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("#9e9e9e")
        spine.set_linewidth(0.6)


def _prediction(result: GradcamResult, predicted: int, confidence: float) -> str:
    shown = f" {100 * confidence:.0f} %" if 0.0 <= confidence <= 1.0 else ""
    return f"predicted {result.label_name(predicted)}{shown}"


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def image_png(result: GradcamResult, i: int) -> bytes:
    """One image: for each model, the input, the map and the overlay, clean and triggered."""
    plt = _pyplot()
    show = _Display(result)
    variants = 1 if result.triggered_images is None else 2
    rows = len(result.models)
    cols = 3 * variants
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.75 * cols + 0.9, 2.25 * rows + 0.75), squeeze=False
    )
    label = (
        "" if result.labels is None else f", true label {result.label_name(int(result.labels[i]))}"
    )
    first = result.models[0]
    fig.suptitle(
        f"Image #{int(result.indices[i])}{label} — {result.method.label} of "
        f"{first.target.tensor} ({first.target.grid[0]}×{first.target.grid[1]}), explaining "
        f"{'the predicted label' if result.class_rule == 'predicted' else result.class_rule}",
        fontsize=9.5,
    )
    for row, cams in enumerate(result.models):
        sets = [(cams.clean, result.images)]
        if cams.triggered is not None and result.triggered_images is not None:
            sets.append((cams.triggered, result.triggered_images))
        for v, (cam_set, stack) in enumerate(sets):
            x = stack[i]
            image, cmap = show.image(x)
            cam = cam_set.cams[i]
            region = result.region if cam_set.variant == "triggered" else None
            ax_in, ax_heat, ax_over = axes[row][3 * v : 3 * v + 3]
            ax_in.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax_in.set_title(
                f"{cam_set.variant} input\n"
                f"{_prediction(result, int(cam_set.predicted[i]), float(cam_set.confidence[i]))}",
                fontsize=7.5,
            )
            ax_heat.imshow(
                show.normalised(cam),
                cmap="jet",
                vmin=0,
                vmax=1,
                interpolation="nearest",
                extent=show.extent(),
            )
            _outline(ax_heat, region)
            heat_title = f"map (explains {result.label_name(int(cam_set.explained[i]))})"
            if cam_set.variant == "triggered":
                ratio = _image_ratio(cams, i)
                share = None if cam_set.mass_share is None else float(cam_set.mass_share[i])
                heat_title += (
                    f"\n{_pct(share if share is not None and np.isfinite(share) else None)} of "
                    f"mass in trigger (×{_ratio(ratio)})"
                )
            else:
                heat_title += "\n"
            ax_heat.set_title(heat_title, fontsize=7.5)
            ax_over.imshow(show.grey(x), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax_over.imshow(show.upsampled(cam), cmap="jet", vmin=0, vmax=1, alpha=0.45)
            _outline(ax_over, region)
            ax_over.set_title("overlay\n", fontsize=7.5)
            for ax in (ax_in, ax_heat, ax_over):
                _bare(ax)
        axes[row][0].set_ylabel(_role_title(cams), fontsize=8.5)
    if result.region is not None:
        fig.text(
            0.5,
            0.01,
            "cyan outline: the trigger's region · maps normalised to their own maximum "
            "(blue 0 → red max)",
            ha="center",
            fontsize=7.5,
            color="#444444",
        )
    else:
        fig.text(
            0.5, 0.01, "maps normalised to their own maximum (blue 0 → red max)",
            ha="center", fontsize=7.5, color="#444444",
        )  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 0.95), h_pad=1.2)
    return _png(fig)


def grid_png(result: GradcamResult, *, columns: int = GRID_COLUMNS) -> bytes:
    """All images: overlays, one row per model × (clean, triggered), ``columns`` images a row."""
    plt = _pyplot()
    show = _Display(result)
    lines: list[tuple[ModelCams, str]] = []
    for cams in result.models:
        lines.append((cams, "clean"))
        if cams.triggered is not None:
            lines.append((cams, "triggered"))
    n = result.count
    columns = max(1, min(columns, n))
    blocks = -(-n // columns)
    rows = blocks * len(lines)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.3 * columns + 1.6, 1.45 * rows + 0.8), squeeze=False
    )
    first = result.models[0]
    fig.suptitle(
        f"{result.method.label} overlays of {first.target.tensor} — "
        + ("each map explains the predicted label" if result.class_rule == "predicted"
           else f"each map explains {result.class_rule}"),
        fontsize=10,
    )  # fmt: skip
    for block in range(blocks):
        for line, (cams, variant) in enumerate(lines):
            row = block * len(lines) + line
            cam_set = cams.clean if variant == "clean" else cams.triggered
            stack = result.images if variant == "clean" else result.triggered_images
            for col in range(columns):
                ax = axes[row][col]
                _bare(ax)
                i = block * columns + col
                if i >= n or cam_set is None or stack is None:
                    ax.axis("off")
                    continue
                ax.imshow(show.grey(stack[i]), cmap="gray", vmin=0, vmax=1)
                ax.imshow(show.upsampled(cam_set.cams[i]), cmap="jet", vmin=0, vmax=1, alpha=0.45)
                if variant == "triggered":
                    _outline(ax, result.region)
                truth = "" if result.labels is None else f"y={int(result.labels[i])} "
                title = f"#{int(result.indices[i])} {truth}→ {int(cam_set.predicted[i])}"
                if variant == "triggered":
                    title += f"\n×{_ratio(_image_ratio(cams, i))} on trigger"
                ax.set_title(title, fontsize=7)
            axes[row][0].set_ylabel(f"{row_name(cams)}\n{variant}", fontsize=8)
    legend = "#image index" + (", y=true label" if result.labels is not None else "")
    legend += " → predicted label"
    if result.region is not None:
        legend += " · cyan: trigger region · ×r: localisation ratio (1 = no preference)"
    fig.text(0.5, 0.005, legend, ha="center", fontsize=7.5, color="#444444")
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    return _png(fig)


def write_images(
    result: GradcamResult, directory: Path, progress: Callable[[int, int], None] | None = None
) -> None:
    """Write ``grid.png`` and one ``image_NNN.png`` per image into ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GRID_FILE).write_bytes(grid_png(result))
    for i in range(result.count):
        (directory / image_file(i)).write_bytes(image_png(result, i))
        if progress is not None:
            progress(i + 1, result.count)
