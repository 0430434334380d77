"""How long a study will take, estimated before it runs (``kitchen-study run --dry-run``).

The figure is an **estimate**, printed as one: the plan's training frames (per trial:
iterations x batch size x the model's window) divided by a throughput measured on this machine
at the plan's model shapes, spread over the trial slots that run in parallel, and never shorter than
the longest chain of dependent tasks (a fine-tune waits for its pre-train).

* Throughput: Adam steps of the model alone (random inputs, :func:`measure_throughput`)
  with the threads a trial gets (``resources.cpu``) on the device it would use: the median
  step of :data:`MEASURE_STEPS` after :data:`WARMUP_STEPS` untimed ones (the first steps of
  a fresh model run at a third of the steady rate on a CPU, and one stalled step would
  skew a mean). One figure per shape (the model's config, batch size, window) *and* label
  space (each task's own: its input and output width, the target's classes plus the
  source's when a source is used), since the width moves a small model's cost by ~2x.
  Measured figures are cached in ``$XDG_CACHE_HOME/kitchen-study/throughput.json``
  (default ``~/.cache``), keyed by the shape, width, threads, device, host and torch
  version, with the machine's load average when measured (a figure measured on a busy
  machine is pessimistic: the line says so); entries measured by another method are
  measured again. The output says whether a figure was measured now or read from the
  cache, and when.
* Slots: ``floor(CPUs / resources.cpu)`` with the CPUs of ``--num-cpus`` or of this machine
  (and ``floor(GPUs / resources.gpu)`` when trials take GPUs); a search runs at most
  ``max_concurrent`` trials at once.
* Not included (so a real run takes longer): evaluations, sampling batches, Ray start and
  trial start-up; ASHA stopping search trials early makes it shorter.

:func:`estimate` is pure (throughputs come from a function); :func:`estimate_lines` measures
and formats.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Estimate",
    "not_schedulable_here",
    "Shape",
    "estimate",
    "estimate_lines",
    "task_frames",
]

#: Steps timed per shape and width; the figure is their median (module docstring).
MEASURE_STEPS = 5

#: Untimed steps first: a fresh model's first steps run at a fraction of the steady rate.
WARMUP_STEPS = 2

#: How a cached figure was measured; an entry with another (an older version's) is measured
#: again rather than trusted.
METHOD = f"median of {MEASURE_STEPS} steps after {WARMUP_STEPS} warm-up"


#: The frames of a training sample assumed for a model trained on whole videos (MS-TCN without
#: ``window``): the dry run does not read every video's length, so it costs such a model at
#: this length (about a Breakfast video's 75th percentile at 15 fps) and says so.
WHOLE_VIDEO_FRAMES = 2048


@dataclass(frozen=True)
class Shape:
    """What a training step costs depends on (besides the machine): the model's config
    (canonical JSON), the batch size and the frames per sample."""

    model: str
    batch_size: int
    window: int

    def config(self) -> Any:
        from trainables.train_config import TrainConfig

        return TrainConfig.parse({"model": json.loads(self.model)}).model

    def text(self) -> str:
        m = self.config().model_dump(mode="json")  # the config's own field order
        kind = m.pop("kind")
        fields = ", ".join(f"{k} {v}" for k, v in m.items())
        return f"{kind} ({fields}), batch {self.batch_size} x {self.window} frames"


def task_shape(task: Any) -> Shape:
    from trainables.temporal import kind_of

    c = task.config
    window = kind_of(c.model).train_window(c.model, WHOLE_VIDEO_FRAMES)
    return Shape(json.dumps(c.model.model_dump(mode="json"), sort_keys=True), c.batch_size,
                 window)


def task_frames(task: Any) -> int:
    """Training frames of one trial of ``task``: iterations x batch size x window."""
    c = task.config
    return int(c.iterations) * int(c.batch_size) * task_shape(task).window


def _label_dim(task: Any, cards: Mapping[str, Any]) -> int:
    """Input/output width: the target's classes, plus the source's when a source is used
    (an upper bound for every arrangement); feature vectors that are not class scores keep
    their own width."""
    def dim(name: str | None) -> int:
        card = cards.get(name) if name else None
        if card is None:
            return 0
        feats = getattr(card, "features", None) or {}
        return max(int(feats.get("dim") or 0), len(card.classes))

    return max(1, dim(task.target) + (dim(task.source) if task.source else 0))


@dataclass
class Estimate:
    """The numbers behind the printed estimate (seconds)."""

    trials: int
    frames: int
    compute_s: float  # every trial one after another
    slots: int
    chain_s: float  # the longest chain of dependent tasks
    per_shape: dict[tuple[Shape, int], float] = field(default_factory=dict)  # frames/s used

    @property
    def wall_s(self) -> float:
        return max(self.compute_s / max(self.slots, 1), self.chain_s)


def estimate(plan: Any, skip: Collection[str], slots: int,
             frames_per_s: Callable[[Shape, int], float],
             width: Callable[[Any], int] = lambda t: 1) -> Estimate:
    """Pure: the plan's tasks not in ``skip`` at ``frames_per_s(shape, width(task))``, on
    ``slots`` parallel trial slots (see the module docstring)."""
    todo = [t for t in plan if t.id not in skip]
    per_shape: dict[tuple[Shape, int], float] = {}
    seconds: dict[str, float] = {}  # one trial of the task
    frames = compute = 0.0
    for t in todo:
        key = (task_shape(t), int(width(t)))
        if key not in per_shape:
            per_shape[key] = float(frames_per_s(*key))
        seconds[t.id] = task_frames(t) / max(per_shape[key], 1e-9)
        frames += task_frames(t) * t.trials
        compute += seconds[t.id] * t.trials
    # longest chain: a task starts when its dependencies (still to run) have ended; a
    # search runs its trials in waves of max_concurrent (and of the slots)
    finish: dict[str, float] = {}
    for t in todo:  # plan order: dependencies come first
        waves = 1
        if t.trials > 1:
            conc = t.search.max_concurrent if t.search is not None else t.trials
            waves = math.ceil(t.trials / max(1, min(conc, slots)))
        start = max((finish.get(d, 0.0) for d in t.deps), default=0.0)
        finish[t.id] = start + waves * seconds[t.id]
    return Estimate(trials=sum(t.trials for t in todo), frames=int(frames), compute_s=compute,
                    slots=slots, chain_s=max(finish.values(), default=0.0),
                    per_shape=per_shape)


# -- throughput: measured, cached -----------------------------------------------------------


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/kitchen-study/throughput.json`` (default ``~/.cache/...``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "kitchen-study" / "throughput.json"


def _cache_key(shape: Shape, dim: int, threads: int, device: str) -> str:
    import torch

    return (f"torch {torch.__version__} | {device} | {platform.node()} {platform.machine()} | "
            f"threads {threads} | {shape.text()} | classes {dim}")


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or an unreadable one: measure again
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic: a temporary file renamed over the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".throughput.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def measure_throughput(shape: Shape, dim: int, threads: int, device: str = "cpu",
                       steps: int = MEASURE_STEPS, warmup: int = WARMUP_STEPS) -> float:
    """Training frames per second of the shape's model (from the registry: forward, its own
    loss, backward, Adam) on random inputs of ``shape`` and ``dim`` classes: at the median
    of ``steps`` timed steps after ``warmup`` untimed ones."""
    import torch

    from trainables.temporal import kind_of

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        dev = torch.device(device)
        gen = torch.Generator().manual_seed(0)
        cfg = shape.config()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = kind_of(cfg).build(cfg, dim, dim).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(shape.batch_size, shape.window, dim, generator=gen).to(dev)
        y = torch.randint(0, dim, (shape.batch_size, shape.window), generator=gen).to(dev)

        def step() -> None:
            loss = model.loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def synced() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        for _ in range(warmup):
            step()
        synced()
        times = []
        for _ in range(max(1, steps)):
            t0 = time.perf_counter()
            step()
            synced()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return shape.batch_size * shape.window / max(statistics.median(times), 1e-9)


def _fmt_time(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _throughput_lines(per_shape: Mapping[tuple[Shape, int], float],
                      used: Mapping[tuple[Shape, int], Mapping[str, Any]],
                      fresh: Collection[tuple[Shape, int]], threads: int,
                      device: str) -> list[str]:
    """One line per shape: its figure (or range over the label widths), measured now or
    cached (the oldest date), and whether a figure was measured on a busy machine."""
    shapes: dict[Shape, list[int]] = {}
    for shape, dim in per_shape:
        shapes.setdefault(shape, []).append(dim)
    lines = []
    for shape, dims in shapes.items():
        keys = [(shape, d) for d in sorted(dims)]
        vals = [per_shape[k] for k in keys]
        rate = (f"{vals[0]:,.0f} frames/s" if len(vals) == 1 else
                f"{min(vals):,.0f}-{max(vals):,.0f} frames/s")
        width = (f"{dims[0]} classes" if len(dims) == 1 else
                 f"{len(dims)} widths, {min(dims)}-{max(dims)} classes")
        if all(k in fresh for k in keys):
            when = "measured now"
        else:
            dates = sorted(str(used[k].get("measured_at", "?")) for k in keys if k not in fresh)
            when = f"cached, measured {dates[0]}" + (" and now" if fresh else "")
        busy = [used[k] for k in keys if _busy(used[k])]
        note = ""
        if busy:
            worst = max(busy, key=lambda e: float(e["load_average"]))
            note = (f"; {len(busy)} of {len(keys)} measured at load average "
                    f"{float(worst['load_average']):.1f} on {worst['cpus']} CPUs: other work "
                    "shared the machine, so the figure is low (delete the cache to measure "
                    "again)")
        lines.append(f"  throughput {rate} at {shape.text()}, {width}, {threads} thread(s) on "
                     f"{device} ({when}, {METHOD}{note})")
    return lines


def _busy(entry: Mapping[str, Any]) -> bool:
    """Measured while at least half the machine's CPUs were busy with other work."""
    load, cpus = entry.get("load_average"), entry.get("cpus")
    return isinstance(load, int | float) and isinstance(cpus, int) and load >= 0.5 * cpus


def not_schedulable_here(cpu: float, gpu: float, cpus: int, gpus: int) -> str | None:
    """Pure: why a local Ray with ``cpus`` CPUs and ``gpus`` GPUs could start no trial that
    asks for ``cpu``/``gpu`` each (a dry run says so first: the estimate after it is for
    the CPUs/GPUs it names, not a machine that can run the study), else None."""
    if gpu > 0 and gpus < gpu:
        have = "none" if gpus == 0 else f"only {gpus}"
        return (f"no trial can be scheduled on this machine: the spec asks for {gpu:g} GPU(s) "
                f"per trial (resources.gpu) and it has {have}; run it on a machine or "
                "cluster with GPUs (docs/cluster.md). The estimate below is for this "
                "machine's CPU instead")
    if cpu > cpus:
        return (f"no trial can be scheduled on this machine: the spec asks for {cpu:g} CPUs "
                f"per trial (resources.cpu) and it has {cpus}; the estimate below assumes "
                "one trial at a time")
    return None


def estimate_lines(loaded: Any, plan: Any, skip: Collection[str] = (),
                   num_cpus: int | None = None) -> list[str]:
    """The dry run's estimate, measuring (or reading from the cache) the throughput of each
    shape still to run. Every line says what it is: an estimate, a measured figure (now or
    cached, with its date), or what is left out."""
    todo = [t for t in plan if t.id not in skip]
    if not todo:
        return ["estimate: nothing left to run"]
    import torch

    res = loaded.spec.resources
    threads = max(1, int(res.cpu))
    cpus = num_cpus or os.cpu_count() or 1
    slots = max(1, int(cpus // res.cpu))
    device = "cpu"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if res.gpu > 0 and gpus:
        device = "cuda"
        slots = max(1, min(slots, int(gpus // res.gpu)))
    unschedulable = not_schedulable_here(res.cpu, res.gpu, cpus, gpus)
    path = cache_path()
    cache = _read_cache(path)
    used: dict[tuple[Shape, int], dict[str, Any]] = {}  # the entry behind each figure
    fresh: set[tuple[Shape, int]] = set()

    def fps(shape: Shape, dim: int) -> float:
        key = _cache_key(shape, dim, threads, device)
        hit = cache.get(key)
        if not (isinstance(hit, dict) and hit.get("method") == METHOD
                and isinstance(hit.get("frames_per_s"), int | float)):
            # the machine's load before measuring: a busy machine measures low
            try:
                load: float | None = os.getloadavg()[0]
            except (AttributeError, OSError):  # no load average on this platform
                load = None
            hit = cache[key] = {
                "frames_per_s": measure_throughput(shape, dim, threads, device),
                "method": METHOD, "load_average": load, "cpus": os.cpu_count(),
                "measured_at": time.strftime("%Y-%m-%d %H:%M")}
            fresh.add((shape, dim))
        used[(shape, dim)] = hit
        return float(hit["frames_per_s"])

    est = estimate(plan, skip, slots, fps, lambda t: _label_dim(t, loaded.cards))
    try:
        _write_cache(path, cache)
        cached_note = f"cache {path}"
    except OSError as e:  # a read-only home: the estimate stands, only the cache is missing
        cached_note = f"not cached ({e.strerror or e})"
    lines = [unschedulable] if unschedulable else []
    lines += [
        f"estimate (not a measurement): about {_fmt_time(est.wall_s)} wall time for the "
        f"{est.trials} trial(s) still to run",
        f"  training frames: {est.frames:,} (iterations x batch x window: the LSTM's history, "
        f"{WHOLE_VIDEO_FRAMES} frames for a model trained on whole videos; ASHA may stop "
        "search trials earlier)",
    ]
    lines += _throughput_lines(est.per_shape, used, fresh, threads, device)
    lines.append(f"  {est.slots} trial(s) in parallel ({cpus} CPUs / {res.cpu:g} per trial); "
                 f"longest dependency chain {_fmt_time(est.chain_s)}; {cached_note}")
    lines.append("  not included: evaluations, batch sampling, Ray and trial start-up")
    return lines
