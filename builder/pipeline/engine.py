"""Engines that run a map over shards: `local` in this process, `ray` with Ray Data on a cluster.

A map is a worker class (built once per process or actor: it loads the model and the SAEs once) called with
one shard id at a time. The worker writes its output into the cache itself and returns only a status
({"shard", "tokens", "error"}); the driver checks the statuses and then merges what the shards wrote.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import AtlasError


@dataclass(frozen=True)
class EngineConfig:
    engine: str = "local"          # local | ray
    ray_address: str = ""          # empty: start a local Ray (or use the one already running)
    workers: int = 0               # ray: actors; 0: one per 2 CPUs of the cluster, at least 1
    gpus_per_worker: float = 0.0
    threads: int = 0               # torch threads per worker; 0: local = torch's default, ray = CPUs / workers


class Guarded:
    """Wraps a worker so that an error becomes a status naming the shard, not a dead actor."""

    def __init__(self, make: Callable, kwargs: dict):
        self.worker = make(**kwargs)

    def __call__(self, shard: int) -> dict:
        try:
            return {"shard": shard, "tokens": int(self.worker(shard)), "error": ""}
        except AtlasError as e:
            return {"shard": shard, "tokens": 0, "error": str(e)}
        except Exception as e:  # noqa: BLE001  any failure on a worker is reported with its shard
            last = traceback.extract_tb(e.__traceback__)[-1]
            return {"shard": shard, "tokens": 0,
                    "error": f"{type(e).__name__}: {e} ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"}


class _RayBatch:
    """Ray Data's callable class: one Guarded worker per actor, one shard per batch."""

    def __init__(self, make: Callable, kwargs: dict):
        self.guarded = Guarded(make, kwargs)

    def __call__(self, batch: dict) -> dict:
        rows = [self.guarded(int(s)) for s in batch["shard"]]
        return {k: [r[k] for r in rows] for k in ("shard", "tokens", "error")}


def check(cfg: EngineConfig) -> None:
    """Refuse a bad engine setup before any expensive stage."""
    if cfg.engine not in ("local", "ray"):
        raise AtlasError(f"--engine {cfg.engine!r}: expected local or ray")
    if cfg.workers < 0 or cfg.gpus_per_worker < 0 or cfg.threads < 0:
        raise AtlasError("--workers, --gpus-per-worker and threads must not be negative")
    if cfg.engine == "local":
        if cfg.gpus_per_worker:
            import torch

            if not torch.cuda.is_available():
                raise AtlasError(f"--gpus-per-worker {cfg.gpus_per_worker:g}: this machine has no GPU")
        return
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise AtlasError("--engine ray needs Ray: pip install 'feature-atlas[ray]'") from None
    _check_address(cfg.ray_address)


def _check_address(address: str) -> None:
    """An explicit HOST:PORT (or ray://HOST:PORT) must answer now: ray.init would otherwise wait for minutes, or
    silently keep a Ray this process already joined."""
    if address in ("", "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise AtlasError(f"--ray-address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise AtlasError(f"--ray-address {address}: cannot connect to Ray ({e.strerror or type(e).__name__})") from None


@contextlib.contextmanager
def _quiet_ray():
    """Ray Data logs every dataset's start and end to the console and warns about its own settings; the build
    reports progress itself, so only errors get through (Ray's log files keep everything)."""
    handlers = [h for h in logging.getLogger("ray.data").handlers if "File" not in type(h).__name__]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for h, level in zip(handlers, levels):
            h.setLevel(level)


def _ray_start(cfg: EngineConfig):
    import ray

    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=cfg.ray_address or None, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=False)
        except Exception as e:  # ConnectionError, TimeoutError, ValueError ... for an address that answers nothing
            raise AtlasError(f"--ray-address {cfg.ray_address or '(local)'}: cannot connect to Ray ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no answer'})") from None
        started = True
    gpus = ray.cluster_resources().get("GPU", 0)
    if cfg.gpus_per_worker and gpus < cfg.gpus_per_worker:
        if started:
            ray.shutdown()
        raise AtlasError(f"--gpus-per-worker {cfg.gpus_per_worker:g}: the Ray cluster has {gpus:g} GPU(s)")
    return ray, started


def run_map(cfg: EngineConfig, make: Callable, kwargs: dict, shards: list[int], what: str,
            progress: Callable[[dict], None] = lambda status: None) -> None:
    """Run `make(**kwargs)(shard)` for every shard; raise AtlasError naming the first shard that failed."""
    if not shards:
        return
    failed = []
    if cfg.engine == "local":
        worker = Guarded(make, kwargs)
        for s in shards:
            status = worker(s)
            if status["error"]:
                failed.append(status)
                break  # later shards would fail the same way; finished ones stay for the rerun
            progress(status)
    else:
        failed = _run_ray(cfg, make, kwargs, shards, progress)
    if failed:
        first = min(failed, key=lambda s: s["shard"])
        raise AtlasError(f"{what}: shard {first['shard']} failed on a worker: {first['error']}")


def _run_ray(cfg: EngineConfig, make: Callable, kwargs: dict, shards: list[int], progress) -> list[dict]:
    ray, started = _ray_start(cfg)
    try:
        with _quiet_ray():
            return _ray_map(ray, cfg, make, kwargs, shards, progress)
    finally:
        if started:
            ray.shutdown()


def _ray_map(ray, cfg: EngineConfig, make: Callable, kwargs: dict, shards: list[int], progress) -> list[dict]:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    cpus = ray.cluster_resources().get("CPU", 1)
    workers = cfg.workers or max(1, int(cpus // 2))
    threads = cfg.threads or max(1, int(cpus // workers))
    spec = kwargs.get("spec")
    if spec is not None and hasattr(spec, "threads") and not spec.threads:
        from dataclasses import replace

        kwargs = dict(kwargs, spec=replace(spec, threads=threads))
    ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=len(shards))
    out = ds.map_batches(_RayBatch, fn_constructor_kwargs={"make": make, "kwargs": kwargs}, batch_size=1,
                         concurrency=min(workers, len(shards)), num_cpus=threads,
                         num_gpus=cfg.gpus_per_worker or None)
    failed = []
    for row in out.iter_rows():
        status = {"shard": int(row["shard"]), "tokens": int(row["tokens"]), "error": str(row["error"])}
        (failed.append if status["error"] else progress)(status)
    return failed
