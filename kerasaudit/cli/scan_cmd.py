"""``kerasaudit scan MODEL --data D``: per-channel ℓ1/ℓ2/ℓ∞ statistics and anomalous-ℓ∞ flags."""

from __future__ import annotations

import math
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
    OutputOpt,
    QuietOpt,
    UnsafeOpt,
    emit,
    handle_errors,
    prepare_output,
)
from kerasaudit.cli.context import load, require_paths, scaled_for, warn_if_unsafe
from kerasaudit.cli.data_options import (
    DEFAULT_BATCH_SIZE,
    BatchSizeOpt,
    ChannelsFirstOpt,
    DataArgs,
    DataOpt,
    LimitOpt,
    ResizeOpt,
    ScaleOpt,
    XKeyOpt,
    YKeyOpt,
)
from kerasaudit.cli.device_options import Device, DeviceOpt, MixedPrecisionOpt, strategy_for
from kerasaudit.cli.trigger_options import (
    TargetOpt,
    TriggerDataOpt,
    TriggerOpt,
    trigger_request,
)
from kerasaudit.errors import BadInputError, ExitCode

# kerasaudit.flags.DEFAULT_THRESHOLD, repeated so that `--help` does not import NumPy
# (tests/test_scan_cli.py checks that the two agree).
DEFAULT_THRESHOLD = 3.5
TRIGGER_IMAGES = 2000  # clean images stamped (in memory) to measure a trigger's effect

LayerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--layer",
        "-l",
        help="Scan only this layer (path like features/conv1, or a unique name); repeatable. "
        "Default: every convolutional layer.",
        show_default=False,
    ),
]
IncludeDenseOpt = Annotated[
    bool,
    typer.Option(
        "--include-dense",
        help=(
            "Scan every Dense layer too (units as channels; one applied at every position is "
            "scanned anyway)."
        ),
    ),
]
ThresholdOpt = Annotated[
    float,
    typer.Option(
        "--threshold",
        help="Flag channels whose anomaly score (robust z of ℓ∞ or ℓ∞/ℓ2 within their layer) "
        "exceeds this.",
    ),
]
SaveStatsOpt = Annotated[
    Path | None,
    typer.Option(
        "--save-stats",
        help="Write the raw statistics (.npz) for `prune` and for merging shards.",
        show_default=False,
    ),
]

ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        help="Scan only shard I of N (0-based: a contiguous run of the data, the N runs "
        "covering it once); save each shard's --save-stats and combine them with "
        "`kerasaudit merge-stats`.",
        show_default=False,
    ),
]


RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Scan on a Ray cluster with Ray Data: the data is cut into shards, a pool of "
        "actors (each loading the model once) scans them and the statistics are merged, equal "
        "to one scan. 'auto' (the cluster this machine belongs to), 'host:port' or "
        "'ray://host:10001'. Needs pip install 'kerasaudit[ray]'; model and data must be at the "
        "same paths on every node. Clean statistics only; --device and --mixed-precision apply "
        "on each actor (gpu: Ray reserves one GPU per actor).",
    ),
]
RayActorsOpt = Annotated[
    int,
    typer.Option("--ray-actors", min=1, help="With --ray: model replicas scanning at once."),
]
CpusPerActorOpt = Annotated[
    float,
    typer.Option("--cpus-per-task", min=0.1, help="With --ray: CPUs Ray reserves per actor."),
]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' → (I, N), checked before anything is loaded."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (-1, 0)
    if not sep or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise BadInputError(f"--shard expects I/N with 0 ≤ I < N, like 0/4; got {text!r}")
    return shard


@handle_errors
def scan(
    model: ModelArg,
    data: DataOpt,
    x_key: XKeyOpt = None,
    y_key: YKeyOpt = None,
    scale: ScaleOpt = "auto",
    channels_first: ChannelsFirstOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    resize: ResizeOpt = False,
    layer: LayerOpt = None,
    include_dense: IncludeDenseOpt = False,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    save_stats: SaveStatsOpt = None,
    shard: ShardOpt = None,
    ray: RayOpt = None,
    ray_actors: RayActorsOpt = 2,
    cpus_per_task: CpusPerActorOpt = 1.0,
    trigger: TriggerOpt = None,
    trigger_data: TriggerDataOpt = None,
    target: TargetOpt = None,
    device: DeviceOpt = Device.AUTO,
    mixed_precision: MixedPrecisionOpt = False,
    fmt: FormatOpt = OutputFormat.TABLE,
    output: OutputOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    unsafe: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
    model_output: ModelOutputOpt = None,
) -> None:
    """Measure ℓ1, ℓ2 and ℓ∞ of every conv channel's activation map in one pass over clean data
    and flag channels with anomalous ℓ∞. Clean statistics are not a backdoor verdict (a
    backdoor hides from them): `kerasaudit audit` gives one. With --trigger or --trigger-data,
    also flag the channels the trigger drives (triggered − clean ℓ∞, the paper's criterion).
    Exit code 1 when channels are flagged."""
    require_paths(("model", model), ("--data", data))
    from kerasaudit._io import check_output_path
    from kerasaudit.cli.progress import progress_bar
    from kerasaudit.data import open_data
    from kerasaudit.formats import scan_fmt
    from kerasaudit.stages import scan as scan_lib

    consoles = Consoles(quiet)
    which = parse_shard(shard)
    if which is not None and (trigger is not None or trigger_data is not None):
        raise BadInputError("--shard scans clean statistics only; drop --trigger/--trigger-data")
    if ray is not None and (which is not None or trigger is not None or trigger_data is not None):
        raise BadInputError("--ray scans clean statistics of all the data: drop --shard/--trigger")
    if not math.isfinite(threshold):
        raise BadInputError(f"--threshold must be a finite number, got {threshold}")
    prepare_output(output, force)
    if save_stats is not None:
        check_output_path(save_stats, force=force)
        if output is not None and save_stats.resolve() == output.resolve():
            raise BadInputError("--save-stats and --output name the same file")
    data_args = DataArgs(x_key, y_key, scale, channels_first, limit, batch_size, resize)
    spec = data_args.spec_for(data)
    request = trigger_request(trigger, trigger_data, target)
    # Load first: the sandboxed load forks before TensorFlow's runtime starts (cheaper).
    loaded = load(consoles, model, unsafe, custom_objects, output=model_output)
    # With --ray the model runs on the actors, which pick their own device (a GPU-less driver
    # may send work to GPU nodes).
    strategy = strategy_for(device) if ray is None else None
    warn_if_unsafe(consoles, loaded)
    data_args = scaled_for(consoles, loaded, data_args)
    spec = data_args.spec_for(data)
    dataset = open_data(spec, scan_lib.model_input_shape(loaded.model))
    if which is not None:
        dataset = dataset.shard(*which)
    ray_run = None
    if ray is not None:
        from kerasaudit.stages.scan_ray import RayScanSettings, scan_stats_on_ray

        settings = RayScanSettings(
            ray,
            actors=ray_actors,
            cpus_per_actor=cpus_per_task,
            device=device.value,
            mixed_precision=mixed_precision,
        )
        with consoles.err.status(f"scanning on Ray ({ray}, {ray_actors} actor(s))"):
            stats, ray_run = scan_stats_on_ray(
                model,
                spec,
                dataset.info.count,
                settings,
                layers=layer,
                include_dense=include_dense,
                unsafe=unsafe,
                custom_objects=custom_objects,
            )
        result = scan_lib.analyse(stats, threshold, seconds=ray_run["seconds"])
    else:
        with progress_bar(consoles, "scanning") as update:
            result = scan_lib.scan(
                loaded.model,
                dataset,
                layers=layer,
                include_dense=include_dense,
                threshold=threshold,
                strategy=strategy,
                mixed_precision=mixed_precision,
                progress=update,
                source=str(data) if which is None else dataset.info.path,
            )
    neurons = None
    if request is not None:
        from kerasaudit.cli.context import open_inputs
        from kerasaudit.neurons import trigger_neurons
        from kerasaudit.stages.scan import Scanner

        inputs = open_inputs(consoles, loaded, data_args, data, trigger=request)
        assert inputs.trigger is not None
        with consoles.err.status("measuring the trigger's effect on every channel"):
            clean_x, _ = dataset.take_array(min(dataset.info.count, TRIGGER_IMAGES))
            neurons = trigger_neurons(
                loaded.model,
                clean_x,
                inputs.trigger,
                label=target,
                threshold=threshold,
                batch_size=batch_size,
                scanner=Scanner(
                    loaded.model,
                    layers=[s.layer for s in result.stats.layers],
                    strategy=strategy,
                ),
            )
    if save_stats is not None:
        scan_lib.save_stats(result.stats, save_stats, force=force)
    stats_file = None if save_stats is None else str(save_stats)
    emit(
        fmt,
        lambda: scan_fmt.to_json(
            result, model_path=str(model), stats_file=stats_file, neurons=neurons
        ),
        lambda console: scan_fmt.render(
            result, console, model_path=str(model), stats_file=stats_file, neurons=neurons
        ),
        consoles,
        output,
        force,
    )
    consoles.info(
        f"scanned {result.stats.images:,} images, {len(result.stats.layers)} layers, "
        f"{result.channel_count:,} channels in {result.seconds or 0:.1f} s: "
        f"{result.flagged_count:,} flagged on clean data (threshold {result.threshold:g})"
    )
    if ray_run is not None:
        consoles.info(
            f"on Ray: {ray_run['shards']} shards over {ray_run['actors']} actor(s) on "
            f"{ray_run['nodes']} node(s), merged"
        )
    for warning in result.warnings:
        consoles.info(f"warning: {warning}")
    if neurons is not None:
        from kerasaudit.formats import neurons_fmt

        consoles.info("under the trigger: " + neurons_fmt.summary(neurons))
    else:
        consoles.info(
            "clean statistics are not a backdoor verdict: run `kerasaudit audit` for one, or "
            "pass --trigger/--trigger-data to flag the channels a known trigger drives"
        )
    if result.has_findings or (neurons is not None and neurons.flagged_count):
        raise typer.Exit(int(ExitCode.FINDINGS))
