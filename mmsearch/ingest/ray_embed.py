"""Embed on Ray actors (``mmsearch index --ray``): the model stage of a Ray sync, next to the decode tasks.

Each actor loads the space's encoder once, from the :class:`~mmsearch.encoders.registry.Portable` the
driver resolved its spec to (so a plugin's or a test's registered encoder loads there as here), and embeds
with :func:`mmsearch.ingest.commit.embed`, the function a local sync embeds with: images, texts, sounds'
windows and videos' frames or soundtracks alike, vectors and segments as locally. An embed call takes the
ObjectRefs of a few decode tasks' results: Ray hands the decoded pixels to the actor from the object store,
never through the driver, and only the items' metadata (pixels and windows dropped), their vectors and
segments come back to the driver, whose single writer commits them.

**Resources** (:func:`plan_actors`, from ``ray.cluster_resources()``): with GPUs, one actor per GPU
(``num_gpus=1``, device ``cuda``, batch :data:`GPU_BATCH`); without, one CPU actor per ~4 CPUs, each
reserving a share of CPUs that leaves at least one for decode tasks (a pool that took every CPU would wait
forever for the decode tasks it feeds on), with the driver's batch size and as many ONNX threads as CPUs
reserved. ``--ray-actors N`` sets the count.

The actors are kept for the process's next sync with the same model and options (a watcher's next batch, a
second ``Engine.index``) and replaced when another model needs them: only one pool holds CPUs or GPUs at a
time. The driver still loads the model (for its space and its preprocessing recipe) but does not embed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

if TYPE_CHECKING:
    from mmsearch.encoders.registry import Portable
    from mmsearch.ingest.commit import Segments
    from mmsearch.ingest.decode import Loaded
    from mmsearch.ingest.ray_decode import RayDecode

#: Inputs per model call on a GPU actor (a CPU actor keeps the driver's ``--batch-size``).
GPU_BATCH = 256
CPUS_PER_ACTOR = 4  # without --ray-actors: one CPU actor per this many cluster CPUs
#: Environment an actor's model load reads (the export cache, the hub's offline switch and cache).
_ENV_PREFIXES = ("MMSEARCH_CACHE", "MMSEARCH_THREADS", "HF_", "TRANSFORMERS_", "XDG_CACHE_HOME", "TOKENIZERS_")


@dataclass(frozen=True)
class ActorPlan:
    """How many embed actors, and what each reserves and runs on."""

    count: int
    num_gpus: float
    num_cpus: float
    device: str | None  # None: the driver's choice (the CPU runtime on a CPU-only worker)
    batch_size: int


def plan_actors(resources: Mapping[str, float], requested: int | None = None, cpu_batch: int = 64) -> ActorPlan:
    """The actor pool for a cluster with these resources (``ray.cluster_resources()``); pure."""
    gpus, cpus = float(resources.get("GPU", 0) or 0), float(resources.get("CPU", 1) or 1)
    if requested is not None and requested < 1:
        from mmsearch.errors import UsageError

        raise UsageError(f"--ray-actors {requested}: must be at least 1")
    if gpus >= 1:
        count = requested or int(gpus)
        share = min(1.0, gpus / count)  # more actors than GPUs share them
        return ActorPlan(count, share, _cpu_share(cpus, count, 1.0), "cuda", max(GPU_BATCH, cpu_batch))
    count = requested or max(1, int(cpus) // CPUS_PER_ACTOR)
    return ActorPlan(count, 0.0, _cpu_share(cpus, count, cpus / (2 * count)), None, cpu_batch)


def _cpu_share(cpus: float, count: int, wanted: float) -> float:
    """CPUs each actor reserves: ``wanted``, but never so many that decode tasks get no whole CPU."""
    return round(max(0.0, min(wanted, (cpus - 1) / count)), 2)


class Embedder:
    """A Ray actor's body: the encoder loaded once, then :meth:`embed` per call."""

    def __init__(self, spec: Portable, device: str | None, batch_size: int, env: dict[str, str], threads: int) -> None:
        os.environ.update(env)
        os.environ.setdefault("MMSEARCH_THREADS", str(threads))
        self.encoder = spec.load(device=device, batch_size=batch_size)

    def embed(self, *parts: list[Loaded]) -> tuple[list[Loaded], dict, Segments]:
        """Vectors of the decoded items of these decode tasks (each a list), dropped pixels and windows."""
        from mmsearch.ingest.commit import embed

        items = [x for part in parts for x in part]
        todo = {x.sha256: x for x in items if x.error is None}
        vectors, segments = embed(self.encoder, list(todo.values()))
        for x in items:
            x.pixels = x.windows = None
        return items, vectors, segments


_POOL: dict[str, Any] = {}  # the live pool: key, its actors


def actors(ray: Any, spec: Portable, requested: int | None) -> tuple[ActorPlan, list[Any]]:
    """The embed actors for ``spec`` on the connected cluster: the live pool if it is for the same spec,
    options and cluster, else a new one (the old one killed first, freeing its CPUs or GPUs)."""
    plan = plan_actors(ray.cluster_resources(), requested, spec.batch_size)
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    key = (ray.get_runtime_context().get_job_id(), spec, plan, tuple(sorted(env.items())))
    if _POOL.get("key") == key:
        return plan, _POOL["actors"]
    for old in _POOL.get("actors", []):
        try:
            ray.kill(old)
        except Exception:  # noqa: BLE001 - an actor of a runtime since shut down: gone already
            pass
    _POOL.clear()
    cls = ray.remote(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, max_restarts=0)(Embedder)
    threads = max(1, math.ceil(plan.num_cpus))
    made = [cls.remote(spec, plan.device, plan.batch_size, env, threads) for _ in range(plan.count)]
    _POOL.update(key=key, actors=made)
    return plan, made


def embedded(pool: RayDecode, tasks: Iterable[tuple], spec: Portable, *, chunk: int, group: int, window: int,
             requested: int | None = None) -> Iterator[tuple[list[Loaded], dict, Segments]]:
    """Decode ``tasks`` in Ray tasks of ``chunk`` files, and embed ``group`` decode results per actor call;
    yields each call's (items, vectors, segments) as it finishes, at most ``window`` chunks in flight."""
    from mmsearch.ingest.ray_decode import decode_task, ray_module

    ray, decode = ray_module(), decode_task()
    _, pool_actors = actors(ray, spec, requested)
    window = max(window, pool.workers * 2)  # decoded data waits in the cluster's object store, not here
    group = max(1, min(group, window // 2 or 1))
    calls = max(len(pool_actors) * 2, window // group)
    owners: dict[Any, tuple[list[tuple], list[Any]]] = {}
    turn = 0

    def submit(chunks: list[list[tuple]]) -> None:
        nonlocal turn
        refs = [decode.remote(c) for c in chunks]
        call = pool_actors[turn % len(pool_actors)].embed.remote(*refs)
        turn += 1
        owners[call] = ([t for c in chunks for t in c], refs)
        pool.pending += [call, *refs]

    def finished() -> Iterator[tuple[list[Loaded], dict, Segments]]:
        done, _ = ray.wait(list(owners), num_returns=1)
        for call in done:
            items, refs = owners.pop(call)
            gone = {call, *refs}  # released here, so the decoded data leaves the object store
            pool.pending = [r for r in pool.pending if r not in gone]
            yield _result(ray, call, items)

    chunks: list[list[tuple]] = [[]]
    for t in tasks:
        chunks[-1].append(t)
        if len(chunks[-1]) == chunk:
            if len(chunks) == group:
                submit(chunks)
                chunks = []
                if len(owners) >= calls:
                    yield from finished()
            chunks.append([])
    chunks = [c for c in chunks if c]
    if chunks:
        submit(chunks)
    while owners:
        yield from finished()


def _result(ray: Any, call: Any, items: list[tuple]) -> tuple[list[Loaded], dict, Segments]:
    """A finished embed call's result; one that failed as a whole (a lost worker, a model that cannot load
    or run on the actor) fails its files, named."""
    from mmsearch.ingest.decode import Loaded

    try:
        return ray.get(call)
    except Exception as exc:  # a RayTaskError, RayActorError or a lost worker: an event, not an abort
        if isinstance(exc, ray.exceptions.RayActorError):
            _POOL.clear()  # a dead actor (its model did not load, its worker was lost): the next sync makes new ones
        text = str(exc).strip().splitlines()
        why = f"embed failed on Ray: {type(exc).__name__}: {text[-1] if text else ''}"
        return [Loaded(t[0], t[1], error=why) for t in items], {}, {}
