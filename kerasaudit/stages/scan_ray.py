"""One scan over data spread across a Ray cluster: Ray Data ``map_batches`` over shards of the
data, a pool of actors each loading the model once (the same safe loader as every command) and
scanning the shards it is given; the per-shard statistics are merged on the driver, exactly as
``merge-stats`` merges ``scan --shard`` files (sums, counts and maxima: the merged result is the
unsharded scan up to float rounding).

The model and the data must be readable at the same paths on every node (a shared filesystem),
as for ``batch --ray``. Ray is an optional extra: ``pip install 'kerasaudit[ray]'``.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasaudit.data import DataSpec
from kerasaudit.errors import BadInputError
from kerasaudit.stages.scan import ScanStats, merge

SHARDS_PER_ACTOR = 4  # more shards than actors, so a slow node does not hold the rest up


@dataclass(frozen=True)
class RayScanSettings:
    address: str  # "auto", "host:port" or "ray://host:10001"
    actors: int = 2  # model replicas (Ray actors) scanning at once
    cpus_per_actor: float = 1.0
    shards: int | None = None  # default: actors × SHARDS_PER_ACTOR (at most one per image)
    device: str = "auto"  # each actor's --device (gpu: Ray reserves one GPU per actor)
    mixed_precision: bool = False  # each actor's --mixed-precision

    def check(self) -> None:
        if self.actors < 1:
            raise BadInputError(f"--ray-actors must be at least 1, got {self.actors}")
        if self.cpus_per_actor <= 0:
            raise BadInputError(f"--cpus-per-task must be positive, got {self.cpus_per_actor:g}")
        if self.shards is not None and self.shards < 1:
            raise BadInputError(f"the number of shards must be at least 1, got {self.shards}")


class _ShardScanner:
    """A Ray Data actor: loads the model and opens the data once, then scans shard after shard.
    Runs on the cluster's nodes, so it imports nothing from the driver's state."""

    def __init__(
        self,
        model_path: str,
        spec: DataSpec,
        shards: int,
        layers: Sequence[str] | None,
        include_dense: bool,
        unsafe: bool,
        custom_objects: str | None,
        device: str,
        mixed_precision: bool,
    ) -> None:
        from kerasaudit import _tf
        from kerasaudit.data import open_data
        from kerasaudit.loading import load_model
        from kerasaudit.stages.scan import Scanner, model_input_shape

        loaded = load_model(
            Path(model_path),
            unsafe=unsafe,
            custom_objects_file=None if custom_objects is None else Path(custom_objects),
        )
        self._dataset = open_data(spec, model_input_shape(loaded.model))
        self._scanner = Scanner(
            loaded.model,
            layers=layers,
            include_dense=include_dense,
            strategy=_tf.configure_device(device),
            mixed_precision=mixed_precision,
        )
        self._shards = shards
        self._batch_size = spec.batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [int(i) for i in batch["id"]]
        blobs = []
        for index in ids:
            shard = self._dataset.shard(index, self._shards)
            stats = self._scanner.stats(
                shard, batch_size=self._batch_size, source=str(shard.info.path)
            )
            blobs.append(pickle.dumps(stats))
        return {"id": np.asarray(ids, np.int64), "stats": np.asarray(blobs, dtype=object)}


def scan_stats_on_ray(
    model_path: Path,
    spec: DataSpec,
    images: int,
    settings: RayScanSettings,
    *,
    layers: Sequence[str] | None = None,
    include_dense: bool = False,
    unsafe: bool = False,
    custom_objects: Path | None = None,
) -> tuple[ScanStats, dict[str, Any]]:
    """Scan ``images`` examples of ``spec`` with ``model_path`` on a Ray cluster; returns the
    merged statistics and a description of the run (shards, actors, nodes, seconds)."""
    settings.check()
    from kerasaudit._ray import ray_session

    shards = min(images, settings.shards or settings.actors * SHARDS_PER_ACTOR)
    started = time.perf_counter()
    # Ray Data's own lines (execution plans, log paths, "progress bars disabled") are not for
    # kerasaudit's users; errors still come through
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with ray_session(settings.address, needs=("ray.data",)) as ray:
        from ray.exceptions import RayError

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        try:
            results = (
                # from_items: the shard ids are made on the driver, so no read task competes
                # with the actors for CPUs (ray.data.range on a 2-CPU cluster with 2 actors
                # deadlocks)
                ray.data.from_items([{"id": i} for i in range(shards)], override_num_blocks=shards)
                .map_batches(
                    _ShardScanner,
                    fn_constructor_kwargs={
                        "model_path": str(model_path),
                        "spec": spec,
                        "shards": shards,
                        "layers": None if layers is None else list(layers),
                        "include_dense": include_dense,
                        "unsafe": unsafe,
                        "custom_objects": None if custom_objects is None else str(custom_objects),
                        "device": settings.device,
                        "mixed_precision": settings.mixed_precision,
                    },
                    batch_size=1,
                    compute=ray.data.ActorPoolStrategy(size=settings.actors),
                    num_cpus=settings.cpus_per_actor,
                    num_gpus=1 if settings.device == "gpu" else 0,
                )
                .take_all()
            )
        except RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, BadInputError):
                raise BadInputError(str(cause)) from None
            raise
    if len(results) != shards or sorted(int(r["id"]) for r in results) != list(range(shards)):
        raise RuntimeError(f"Ray returned {len(results)} of {shards} shards")
    parts = [pickle.loads(r["stats"]) for r in sorted(results, key=lambda r: int(r["id"]))]
    merged = parts[0]
    for part in parts[1:]:
        merged = merge(merged, part)
    run = {
        "engine": "ray-data",
        "address": settings.address,
        "nodes": nodes,
        "actors": settings.actors,
        "shards": shards,
        "seconds": time.perf_counter() - started,
    }
    return merged, run
