"""``kerasaudit gradcam MODEL --data D -o DIR``: class activation maps, clean and triggered."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kerasaudit.cli.common import (
    Consoles,
    CustomObjectsOpt,
    ForceOpt,
    FormatOpt,
    ModelArg,
    ModelOutputOpt,
    OutputFormat,
    QuietOpt,
    UnsafeOpt,
    emit,
    handle_errors,
    prepare_output,
)
from kerasaudit.cli.context import load, open_inputs, require_paths
from kerasaudit.cli.data_options import (
    BatchSizeOpt,
    ChannelsFirstOpt,
    DataArgs,
    DataOpt,
    ResizeOpt,
    ScaleOpt,
    XKeyOpt,
    YKeyOpt,
)
from kerasaudit.cli.trigger_options import (
    TargetOpt,
    TriggerDataOpt,
    TriggerOpt,
    trigger_request,
)
from kerasaudit.errors import BadInputError


class MethodChoice(StrEnum):  # mirrors kerasaudit.stages.gradcam.CamMethod without importing NumPy
    GRADCAM = "gradcam"
    GRADCAM_PLUS_PLUS = "gradcam++"
    SCORECAM = "scorecam"


MethodOpt = Annotated[
    MethodChoice,
    typer.Option(
        "--method",
        "-m",
        help="gradcam, gradcam++ or scorecam (gradient-free, slower), all via tf-keras-vis.",
    ),
]
CamLayerOpt = Annotated[
    str | None,
    typer.Option(
        "--layer",
        "-l",
        help="Layer to explain: a conv layer (path like features/conv1, or a unique name; its "
        "output after BatchNorm/activation is used) or any layer with a 2-D map output. "
        "Default: the last conv layer.",
        show_default=False,
    ),
]
ClassOpt = Annotated[
    int | None,
    typer.Option(
        "--class",
        help="Explain this label for every image (default: each image's predicted label).",
        show_default=False,
        min=0,
    ),
]
CamLimitOpt = Annotated[
    int, typer.Option("--limit", min=1, help="Explain the first N images of the data.")
]
CompareOpt = Annotated[
    Path | None,
    typer.Option(
        "--compare",
        help="A second model (e.g. the pruned one) explained on the same images, shown beside.",
        show_default=False,
    ),
]


@handle_errors
def gradcam(
    model: ModelArg,
    data: DataOpt,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Directory for the PNGs (grid.png, image_NNN.png), written atomically.",
            show_default=False,
        ),
    ],
    method: MethodOpt = MethodChoice.GRADCAM,
    layer: CamLayerOpt = None,
    class_index: ClassOpt = None,
    limit: CamLimitOpt = 16,
    trigger: TriggerOpt = None,
    trigger_data: TriggerDataOpt = None,
    target: TargetOpt = None,
    compare: CompareOpt = None,
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    channels_first: ChannelsFirstOpt = None,
    batch_size: BatchSizeOpt = 32,
    resize: ResizeOpt = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report to this file.")
    ] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    unsafe: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
    model_output: ModelOutputOpt = None,
) -> None:
    """Grad-CAM / Grad-CAM++ / Score-CAM maps of the first --limit images: one PNG per image
    (input, map, overlay; clean and triggered side by side with --trigger; the --compare model
    below) and a grid of all. With --trigger, reports how much of each map lies on the trigger."""
    require_paths(("model", model), ("--data", data))
    from kerasaudit._io import write_atomic
    from kerasaudit.cli.common import emit_json
    from kerasaudit.cli.progress import progress_bar
    from kerasaudit.formats import gradcam_fmt
    from kerasaudit.stages.gradcam import CamMethod
    from kerasaudit.stages.gradcam import gradcam as run_gradcam

    consoles = Consoles(quiet)
    if target is not None and trigger is None and trigger_data is None:
        raise BadInputError("--target needs --trigger (the target is the label it forces)")
    request = trigger_request(trigger, trigger_data, target)
    prepare_output(output, force)
    prepare_output(report, force)
    # --limit here counts explained images; the data itself is not limited.
    data_args = DataArgs(x_key, y_key, scale, channels_first, batch_size=batch_size, resize=resize)
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    other = None if compare is None else load(consoles, compare, unsafe, custom_objects)
    inputs = open_inputs(consoles, loaded, data_args, data, trigger=request)
    with progress_bar(consoles, "computing maps") as update:
        result = run_gradcam(
            loaded.model,
            inputs.dataset,
            method=CamMethod(method.value),
            layer=layer,
            class_index=class_index,
            limit=limit,
            trigger=inputs.trigger,
            target=target,
            compare=None if other is None else other.model,
            model_source=str(model),
            compare_source=None if compare is None else str(compare),
            batch_size=batch_size,
            progress=update,
        )
    with progress_bar(consoles, "drawing pictures") as update:
        write_atomic(output, lambda tmp: gradcam_fmt.write_images(result, tmp, update), force=force)
    out_name = str(output)
    if report is not None:
        emit_json(gradcam_fmt.to_json(result, output=out_name), report, force)
    emit(
        fmt,
        lambda: gradcam_fmt.to_json(result, output=out_name),
        lambda console: gradcam_fmt.render(result, console, output=out_name),
        consoles,
        None,
        force,
    )
    consoles.info(gradcam_fmt.summary_line(result, out_name))
