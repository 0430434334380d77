"""One prepared GPU check (issue 18): the platform's GPU figures in one short, safe run.

    make gpu-check             # .venv/bin/python bench/gpu_check.py: needs CUDA, <= 8 min
    make gpu-check SMOKE=1     # ... --smoke: tiny shapes on any machine (target < 2 min)
    .venv/bin/python bench/gpu_check.py [--smoke] [--out DIR] [--steps a,b,...]
        [--device auto|cuda|cpu] [--repeats N] [--budget S] [--timeout STEP=S ...] [--write-doc]

Each step runs in its own Python process under a hard timeout (its process group is killed
when it runs over); the check then goes on with the next step, and whatever the killed step
had written is kept. A step is ``ok``, ``skipped`` (with the reason) or ``failed`` (with the
reason: an exception, a timeout, a crash). Steps, in order:

``env``
    device, driver, torch / CUDA / cuDNN versions and the Python packages that matter.
``cuda_tests``
    pytest on every CUDA test module (``tests/test_*cuda*.py`` and any module whose
    ``pytestmark`` skips without CUDA): the packed LSTM's equivalence on the device. Without
    a device they skip, and the step is ``skipped`` with pytest's counts.
``lstm_trial``
    one LSTM trial through the project's ``Trainer`` (sampler, model, masked loss, Adam) at
    the paper's shapes (batch 128 x history 300, 48 classes, hidden 128, depth 1, cuDNN
    cell) against a bare ``nn.LSTM`` + ``Linear`` + Adam loop on one fixed batch of the same
    shape, as ``bench/bench_lstm.py`` does. Target: >= 0.95x bare.
``packing``
    ``PackedTrainer`` over K = 1, 8, 32, 64 members against the same K Trainers one after
    another, in two modes: ``exact`` (float32: TF32 off for matmuls and cuDNN) and ``fast``
    (TF32 on, ``torch.compile`` of the pack where it works, fused Adam for the sequential
    trainers, and any other option ``PackedTrainer`` accepts among ``cuda_graphs`` and
    ``fused``); GPU memory per member (``torch.cuda.max_memory_allocated`` above what was
    allocated before the pack was built, / K). Target: >= 10x one trial's throughput at K = 32.
``projection``
    the wall time of ``studies/paper.yaml`` from the rates measured above:
    ``study.walltime.estimate`` over its plan with K slots at the per-member rate (packed
    aggregate / K), i.e. the larger of total frames / aggregate rate and the critical path
    (300,000-iteration pre-train, then a 16,384-iteration fine-tune) / per-member rate.
    Target: <= 1 h. Evaluations, data loading and Ray start are not in it.
``cnn``
    the CNN stage's model throughput: the project's ``FrameClassifier`` (Inception-v3 from
    torchvision, random weights, uint8 input normalised on the device, channels-last on
    CUDA) against bare torchvision Inception-v3 on float input (channels-last too), 299 x
    299, batch 64, training step (SGD) and inference (forward + softmax), bf16 autocast off
    and on. Video decoding is not in it (``bench/bench_cnn.py`` measures the loader).
``tcn``
    a temporal model's training frames/s from the registry ``trainables.temporal.MODELS``
    (the first model with ``tcn`` in its name, its default config, built by the registry's
    ``build``, trained on its own ``loss``) on 8 whole-video samples of 2048 frames,
    against the bare LSTM loop at the paper's shapes; ``skipped`` while no such registry
    or model exists.
``study``
    a small real study (two synthetic kitchens, baselines, pre-trains and fine-tunes, two
    seeds, packing on) under a local Ray with ``resources: {cpu: 1, gpu: 0.25}``, logged to
    a SQLite MLflow store; checks one FINISHED task run per planned task, and (sampling
    Ray's resources while it runs) that Ray handed the trials a GPU. (``--smoke`` on a
    CPU: ``gpu: 0`` and packing forced on CPU trials.)

Timing: each figure is the median of ``--repeats`` (>= 3) rounds, the measured code and its
baseline alternating within each round in the same process. When a target is missed (and
always in ``--smoke``, to keep that code tested) a ``torch.profiler`` table of the slow side
is written to ``profiles/``.

Output under ``--out`` (default ``gpu_check_out/``), rewritten after every step:
``gpu_check.json`` (everything), ``gpu_check.md`` (the section for docs/benchmarks.md),
``steps/<step>.json``, ``logs/<step>.log``, ``profiles/<name>.txt``. ``--write-doc``
replaces the ``## GPU check`` section of docs/benchmarks.md with it (not with ``--smoke``).
Exit status: 0 when no step failed, 1 when one did, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages by path too
    sys.path.insert(0, str(ROOT))

DOC = ROOT / "docs" / "benchmarks.md"
#: the section's heading in docs/benchmarks.md; --write-doc replaces from it to the next "## "
SECTION = "## GPU check (`bench/gpu_check.py`)"
PAPER = ROOT / "studies" / "paper.yaml"
STATUSES = ("ok", "skipped", "failed")

#: the issue's targets (issue 18)
TRIAL_TARGET = 0.95  # one trial / bare cuDNN loop
PACK_TARGET = 10.0  # packed aggregate / one trial, at K = PACK_TARGET_K
PACK_TARGET_K = 32
HOUR_TARGET_S = 3600.0  # projected paper program

#: shapes and sizes: the paper's on a device, tiny ones for --smoke
FULL: dict[str, Any] = {
    "classes": 48, "history": 300, "hidden": 128, "batch": 128,
    "videos": 60, "min_len": 600, "max_len": 6000,
    "trial_iters": 5, "trial_warmup": 3,
    "ks": (1, 8, 32, 64), "pack_iters": 5, "pack_warmup": 3,
    "cnn_size": 299, "cnn_batch": 64, "cnn_iters": 5,
    "tcn_batch": 8, "tcn_frames": 2048,  # whole videos (~Breakfast's 75th percentile)
    "tcn_config": {},  # the registry's defaults: the paper's MS-TCN
    "study_model": {"history": 64, "hidden": 32, "batch_size": 16, "lr": 0.01},
    "study_iters": 60, "study_step": 20, "study_cpus": 4,
}
SMOKE: dict[str, Any] = {
    "classes": 12, "history": 16, "hidden": 8, "batch": 4,
    "videos": 12, "min_len": 60, "max_len": 200,
    "trial_iters": 2, "trial_warmup": 1,
    "ks": (1, 2, 3), "pack_iters": 2, "pack_warmup": 1,
    "cnn_size": 75, "cnn_batch": 2, "cnn_iters": 1,  # 75 px is Inception-v3's minimum
    "tcn_batch": 2, "tcn_frames": 64,
    "tcn_config": {"stages": 2, "layers": 2, "maps": 8},  # where the config has these fields
    "study_model": {"history": 16, "hidden": 8, "batch_size": 4, "lr": 0.01},
    "study_iters": 20, "study_step": 10, "study_cpus": 2,
}

#: step -> (hard timeout on a device, hard timeout in --smoke), seconds. Each step gets the
#: smaller of its own and what is left of the whole check's budget (BUDGET_S; on a device
#: 465 s: 8 minutes less a margin for process starts), so the check never runs past it.
#: The smoke limits are safety nets sized for a shared 2-core CPU under heavy load (a smoke
#: run took 189 s at load average 13-16, its study 96 s), not the smoke run's target.
TIMEOUTS: dict[str, tuple[float, float]] = {
    "env": (30, 40),
    "cuda_tests": (120, 90),  # the compile tests compile on the device
    "lstm_trial": (45, 60),
    "packing": (150, 90),
    "projection": (20, 40),
    "cnn": (45, 90),
    "tcn": (25, 60),
    "study": (110, 240),
}
STEPS = tuple(TIMEOUTS)
BUDGET_S = {"full": 465.0, "smoke": 540.0}
#: a step is not started with less time than this left in the budget
MIN_STEP_S = 5.0


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit 2."""


class Skip(Exception):
    """A step that cannot apply here (the reason says why)."""


# -- the project's API, by whichever module names it has now ----------------------------------


def _first(*candidates: tuple[str, str]) -> Any:
    """The first ``module.attr`` that imports: the trainer modules were being renamed while
    this was written (``lstm_job`` -> ``train_job``, ``lstm_data`` -> ``split_data``)."""
    errors = []
    for module, attr in candidates:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            errors.append(f"{module}.{attr}: {e}")
    raise ImportError("; ".join(errors))


@dataclass
class Api:
    Trainer: Any
    SplitData: Any
    PackedTrainer: Any
    make_arrangement: Any

    def trainer(self, S: dict[str, Any], data: Any, seed: int = 0) -> Any:
        """A Trainer at ``S``'s shapes (cuDNN cell, depth 1) on ``data``. The config is
        given flat (``history``, ``hidden``, ``batch_size``, ...), which the trainer's
        config parses both before and after the models became plug-ins (``TrainConfig``
        nests the model's keys itself)."""
        flat = {"history": S["history"], "hidden": S["hidden"], "batch_size": S["batch"],
                "depth": 1, "cell": "cudnn", "seed": seed}
        return self.Trainer(flat, self.make_arrangement("identity", data.space), data)


def project_api() -> Api:
    return Api(
        Trainer=_first(("trainables.train_job", "Trainer"), ("trainables.lstm_job", "Trainer")),
        SplitData=_first(("trainables.split_data", "SplitData"),
                         ("trainables.lstm_data", "SplitData")),
        PackedTrainer=_first(("trainables.packed_lstm", "PackedTrainer")),
        make_arrangement=_first(("trainables.arrangements", "make_arrangement")),
    )


# -- one step, inside its own process ----------------------------------------------------------


class Ctx:
    """What a step gets: settings, its result dict and a way to save it as it goes."""

    def __init__(self, out: Path, name: str, smoke: bool, device: str, repeats: int,
                 limit: float):
        self.out, self.name, self.smoke, self.repeats = out, name, smoke, repeats
        self.S = SMOKE if smoke else FULL
        self.device_arg = device
        self.deadline = time.monotonic() + limit
        self.result: dict[str, Any] = {}
        self.status, self.reason = "running", None
        self.path = out / "steps" / f"{name}.json"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        """Atomically: a step killed half-way leaves its last complete save."""
        data = {"status": self.status, "reason": self.reason, "result": self.result}
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(self.path)

    def device(self) -> Any:
        import torch

        if self.device_arg == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device_arg)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any) -> float:
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def set_tf32(on: bool) -> None:
    """TF32 for cuBLAS matmuls and cuDNN (which includes its LSTM); off = exact float32."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def tf32_state() -> dict[str, bool]:
    import torch

    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn": bool(torch.backends.cudnn.allow_tf32)}


def make_table(S: dict[str, Any], seed: int = 0) -> Any:
    """Random videos with softmax features over ``S['classes']`` classes (the values do not
    matter for throughput), 1 test video in 6."""
    import numpy as np

    from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels

    rng = np.random.default_rng(seed)
    c = S["classes"]
    made = []
    for i in range(S["videos"]):
        n = int(rng.integers(S["min_len"], S["max_len"]))
        logits = rng.normal(size=(n, c)).astype(np.float32)
        feats = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        made.append(VideoLabels(f"v{i:03d}", rng.integers(0, c, n), f"P{i:03d}",
                                features=feats))
    ids = [v.video for v in made]
    test = max(1, len(ids) // 6)
    card = DatasetCard("gpucheck", 15.0, tuple(f"c{k}" for k in range(c)), "c0", "gpucheck",
                       "1", splits=(Split("split1", tuple(ids[test:]), tuple(ids[:test])),))
    return FrameTable.from_videos(card, made)


class Bare:
    """The baseline of a trial: ``nn.LSTM`` + ``Linear`` + Adam + cross-entropy on one fixed
    pre-made batch of the trial's shape (no sampling, no masking)."""

    def __init__(self, S: dict[str, Any], device: Any):
        import torch

        torch.manual_seed(0)
        c, h = S["classes"], S["hidden"]
        self.lstm = torch.nn.LSTM(c, h, 1, batch_first=True).to(device)
        self.head = torch.nn.Linear(h, c).to(device)
        self.opt = torch.optim.Adam([*self.lstm.parameters(), *self.head.parameters()], lr=1e-3)
        self.x = torch.softmax(torch.randn(S["batch"], S["history"], c, device=device), -1)
        self.y = torch.randint(0, c, (S["batch"], S["history"]), device=device)
        self.classes = c

    def train(self, n: int) -> None:
        import torch.nn.functional as F

        for _ in range(n):
            out, _ = self.lstm(self.x)
            loss = F.cross_entropy(self.head(out).reshape(-1, self.classes), self.y.reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


def profile(ctx: Ctx, name: str, fn: Callable[[], Any], device: Any, rows: int = 15
            ) -> dict[str, Any]:
    """``torch.profiler`` over one call of ``fn``: the table goes to ``profiles/<name>.txt``,
    the top operators (by self device time on CUDA, self CPU time on a CPU) into the result.
    Host time far above device time says the step is launch- (host-) bound. A profiler that
    fails (no CUPTI, say) is recorded as ``{"error": ...}``: the figures stand without it."""
    try:
        return _profile(ctx, name, fn, device, rows)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e).strip()[:300]}"}


def _profile(ctx: Ctx, name: str, fn: Callable[[], Any], device: Any, rows: int
             ) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    wall = time.perf_counter()
    with torch_profile(activities=acts) as prof:
        fn()
        sync(device)
    wall = time.perf_counter() - wall
    events = prof.key_averages()

    def dev_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", None)
                     or getattr(e, "self_cuda_time_total", 0.0) or 0.0)

    key = dev_us if device.type == "cuda" else (lambda e: float(e.self_cpu_time_total))
    sort = "self_cpu_time_total"
    if device.type == "cuda":
        sort = ("self_device_time_total" if hasattr(events[0], "self_device_time_total")
                else "self_cuda_time_total") if len(events) else sort
    table = events.table(sort_by=sort, row_limit=rows)
    (ctx.out / "profiles").mkdir(exist_ok=True)
    path = ctx.out / "profiles" / f"{name}.txt"
    path.write_text(f"{name}: one profiled call, {wall * 1e3:.1f} ms wall on {device}\n\n"
                    + table)
    top = sorted(events, key=key, reverse=True)[:5]
    return {
        "file": str(path.relative_to(ctx.out)),
        "wall_ms": wall * 1e3,
        "host_ms": sum(float(e.self_cpu_time_total) for e in events) / 1e3,
        "device_ms": sum(dev_us(e) for e in events) / 1e3,
        "kernel_launches": sum(int(e.count) for e in events
                               if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                            "cudaLaunchKernelExC")),
        "top": [{"op": e.key, "calls": int(e.count), "self_cpu_ms": e.self_cpu_time_total / 1e3,
                 "self_device_ms": dev_us(e) / 1e3} for e in top],
    }


# -- steps ----------------------------------------------------------------------------------


def step_env(ctx: Ctx) -> None:
    from importlib import metadata

    import torch

    r = ctx.result
    r["python"] = platform.python_version()
    r["host"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
    r["torch"] = torch.__version__
    r["cuda_runtime"] = torch.version.cuda
    r["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    r["cuda_available"] = bool(torch.cuda.is_available())
    r["device"] = str(ctx.device())
    r["gpus"] = [
        {"name": torch.cuda.get_device_name(i),
         "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
         "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
        for i in range(torch.cuda.device_count())
    ] if r["cuda_available"] else []
    r["driver"] = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=15, check=True)
        r["driver"] = smi.stdout.strip().splitlines()[0] if smi.stdout.strip() else None
    r["packages"] = {}
    for p in ("torchvision", "ray", "mlflow", "optuna"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            r["packages"][p] = metadata.version(p)
    r["tf32_defaults"] = tf32_state()
    ctx.status = "ok"
    if not r["cuda_available"]:
        ctx.reason = "no CUDA device: the CPU runs the steps"


_CUDA_MARK = re.compile(r"^pytestmark\s*=.*cuda\.is_available\(\)", re.M)


def cuda_test_modules() -> list[Path]:
    """``tests/test_*cuda*.py`` and the test modules whose ``pytestmark`` skips them without
    CUDA (the modules that only run on a device)."""
    found = []
    for p in sorted((ROOT / "tests").glob("test_*.py")):
        if p.name == "test_gpu_check.py":
            continue  # this script's own test runs on any machine
        if "cuda" in p.stem or _CUDA_MARK.search(p.read_text(errors="replace")):
            found.append(p)
    return found


def _junit_counts(path: Path) -> dict[str, Any] | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    for s in suites:
        for k in counts:
            counts[k] += int(s.get(k, 0))
        for case in s.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = failed[:20]
    return counts


def step_cuda_tests(ctx: Ctx) -> None:
    import torch

    modules = cuda_test_modules()
    r = ctx.result
    r["modules"] = [str(p.relative_to(ROOT)) for p in modules]
    if not modules:
        raise Skip("no CUDA test module in tests/")
    junit = ctx.out / "cuda_tests.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
           f"--junitxml={junit}", "--timeout=120", *r["modules"]]
    r["command"] = " ".join(["python", *cmd[1:]])
    ctx.save()
    try:  # pytest stops short of our own hard limit, so its counts survive a slow run
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=max(5.0, ctx.left() - 5))
        rc, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()
    except subprocess.TimeoutExpired as e:
        rc, tail = None, (str(e.stdout or "") + str(e.stderr or "")).strip().splitlines()
    r["returncode"] = rc
    r["summary"] = tail[-1] if tail else ""
    (ctx.out / "logs").mkdir(exist_ok=True)
    (ctx.out / "logs" / "cuda_tests.pytest.log").write_text("\n".join(tail) + "\n")
    counts = _junit_counts(junit)
    r["counts"] = counts
    if rc is None:
        ctx.status, ctx.reason = "failed", "pytest ran past the step's time"
    elif rc != 0:
        ctx.status, ctx.reason = "failed", f"pytest exit {rc}: {r['summary']}"
    elif counts and counts["tests"] and counts["skipped"] == counts["tests"]:
        ctx.status = "skipped"
        ctx.reason = (f"pytest skipped all {counts['tests']} tests of {len(modules)} module(s)"
                      + ("" if torch.cuda.is_available() else ": no CUDA device"))
    else:
        ctx.status = "ok"


def step_lstm_trial(ctx: Ctx) -> None:
    import torch

    api, S, dev = project_api(), ctx.S, ctx.device()
    data = api.SplitData.load(make_table(S), 1, dev)
    trainer = api.trainer(S, data)
    bare = Bare(S, dev)
    iters, frames = S["trial_iters"], S["batch"] * S["history"]
    r = ctx.result
    r.update(shapes={k: S[k] for k in ("classes", "history", "hidden", "batch")},
             device=str(dev), tf32=tf32_state(), iters=iters, warmup=S["trial_warmup"],
             repeats=ctx.repeats)
    # warm-up: allocator, cuDNN autotuning, oneDNN primitives
    bare.train(S["trial_warmup"])
    trainer.train(S["trial_warmup"])
    sync(dev)
    t_bare, t_trainer, t_sample = [], [], []
    for _ in range(ctx.repeats):
        t_bare.append(timed(lambda: bare.train(iters), dev) / iters)
        t_trainer.append(timed(lambda: trainer.train(iters), dev) / iters)
        t_sample.append(timed(lambda: [trainer.sampler.sample() for _ in range(10)], dev) / 10)
    r["bare_fps"] = frames / median(t_bare)
    r["trainer_fps"] = frames / median(t_trainer)
    r["ratio"] = r["trainer_fps"] / r["bare_fps"]
    r["trainer_ms"], r["bare_ms"] = median(t_trainer) * 1e3, median(t_bare) * 1e3
    r["sample_ms"] = median(t_sample) * 1e3
    r["runs_ms"] = {"trainer": [t * 1e3 for t in t_trainer], "bare": [t * 1e3 for t in t_bare]}
    r["target"] = TRIAL_TARGET
    r["met"] = r["ratio"] >= TRIAL_TARGET
    ctx.save()
    if not r["met"] or ctx.smoke:
        r["profile"] = profile(ctx, "lstm_trial", lambda: trainer.train(2), dev)
        r["profile_bare"] = profile(ctx, "lstm_trial_bare", lambda: bare.train(2), dev)
    if dev.type == "cuda":
        r["gpu_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    ctx.status = "ok"


#: the options of the ``fast`` mode, tried in this order of preference; each one the pack
#: constructor does not take, or that fails, is dropped (the reason is recorded)
FAST_OPTIONS = ("tf32", "compile", "cuda_graphs", "fused")


def _pack_options(api: Api) -> list[str]:
    import inspect

    params = inspect.signature(api.PackedTrainer).parameters
    return [o for o in FAST_OPTIONS if o in params]


def _fused_adam(trainers: list[Any]) -> str | None:
    """Replace each trainer's Adam by torch's fused Adam (same lr, betas, eps); the reason
    when that is not possible here."""
    import torch

    for t in trainers:
        lr = t.optimizer.param_groups[0]["lr"]
        try:
            t.optimizer = torch.optim.Adam(t.model.parameters(), lr=lr, fused=True)
        except (RuntimeError, ValueError, TypeError) as e:
            return f"{type(e).__name__}: {e}"
    return None


def _measure_pack(ctx: Ctx, api: Api, data: Any, k: int, variant: str, dev: Any,
                  broken: dict[str, str]) -> dict[str, Any]:
    """One row: K members packed against the same K trainers in turn. ``broken``: fast
    options that failed at an earlier K (not tried again: a failing compile costs time)."""
    import torch

    S = ctx.S

    def trainers() -> list[Any]:
        return [api.trainer(S, data, seed=s) for s in range(k)]

    row: dict[str, Any] = {"variant": variant, "k": k}
    set_tf32(variant == "fast")
    seq = trainers()
    if variant == "fast":
        row["sequential_fused_adam"] = (_fused_adam(seq) or "on")
    # the fast options the pack takes, dropped one by one (last first) until one works
    wanted = [o for o in _pack_options(api) if o not in broken] if variant == "fast" else []
    dropped = {o: broken[o] for o in _pack_options(api) if o in broken and variant == "fast"}
    pack = None
    while pack is None:
        opts = {o: True for o in wanted}
        if dev.type == "cuda":
            sync(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
        try:
            candidate = api.PackedTrainer(trainers(), **opts)
            candidate.train(S["pack_warmup"])  # compilation, allocator, cuBLAS handles
            sync(dev)
            pack = candidate
        except Exception as e:  # compile/graph failures come in many types
            if not wanted:
                raise
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            dropped[wanted[-1]] = broken[wanted[-1]] = f"{type(e).__name__}: {first}"
            wanted = wanted[:-1]
            candidate = None  # the failed pack's memory is not the next one's
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    row["pack_options"] = wanted
    row["dropped_options"] = dropped
    if dev.type == "cuda":
        row["mem_per_member_mib"] = (torch.cuda.max_memory_allocated(dev) - before) / k / 2**20
    for t in seq:
        t.train(S["pack_warmup"])
    sync(dev)
    iters, frames = S["pack_iters"], S["batch"] * S["history"] * S["pack_iters"] * k
    t_pack, t_seq = [], []
    stats, losses = None, []
    for _ in range(ctx.repeats):
        t0 = time.perf_counter()
        stats = pack.train(iters)
        sync(dev)
        t_pack.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        losses = [t.train(iters).loss for t in seq]
        sync(dev)
        t_seq.append(time.perf_counter() - t0)
    if pack.failures:
        raise RuntimeError(f"a packed member failed: {pack.failures}")
    row["packed_fps"] = frames / median(t_pack)
    row["sequential_fps"] = frames / median(t_seq)
    row["packed_ms_per_iter"] = median(t_pack) / iters * 1e3
    # same seeds, same batches: the last round's mean losses agree up to float rounding
    row["max_abs_dloss"] = max(abs(a - b) for a, b in zip(stats.loss, losses, strict=True))
    row["_pack"] = pack  # for a profile; dropped before saving
    return row


def step_packing(ctx: Ctx) -> None:
    import torch

    api, S, dev = project_api(), ctx.S, ctx.device()
    data = api.SplitData.load(make_table(S), 1, dev)
    r = ctx.result
    r.update(shapes={k: S[k] for k in ("classes", "history", "hidden", "batch")},
             device=str(dev), ks=list(S["ks"]), iters=S["pack_iters"],
             warmup=S["pack_warmup"], repeats=ctx.repeats,
             fast_options_available=_pack_options(api), rows=[])
    if dev.type == "cuda":  # one trial's memory, measured alone (the per-member yardstick)
        set_tf32(False)
        sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        api.trainer(S, data).train(2)
        sync(dev)
        r["one_trial_mib"] = (torch.cuda.max_memory_allocated(dev) - before) / 2**20
    ctx.save()
    broken: dict[str, str] = {}
    single: dict[str, float] = {}  # one trial's rate (K = 1 sequential) per mode
    # K outermost: a step cut short by its timeout loses the largest K of both modes
    for k in S["ks"]:
        for variant in ("exact", "fast"):
            row = _measure_pack(ctx, api, data, k, variant, dev, broken)
            pack = row.pop("_pack")
            if k == 1:
                single[variant] = row["sequential_fps"]
            one = single.get(variant)
            row["vs_one_trial"] = row["packed_fps"] / one if one else None
            is_target = k == PACK_TARGET_K or (ctx.smoke and k == max(S["ks"]))
            if is_target and row["vs_one_trial"] is not None:
                row["target"] = PACK_TARGET
                row["met"] = row["vs_one_trial"] >= PACK_TARGET
                if not row["met"] or ctx.smoke:
                    row["profile"] = profile(ctx, f"packing_{variant}_k{k}",
                                             lambda p=pack: p.train(1), dev)
            r["rows"].append(row)
            del pack
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            ctx.save()  # partial results survive a timeout at a larger K
    set_tf32(False)
    ctx.status = "ok"


def step_projection(ctx: Ctx) -> None:
    from study.plan import make_plan
    from study.spec import load_spec
    from study.walltime import estimate, task_frames

    plan = make_plan(load_spec(PAPER))
    r = ctx.result
    total = sum(task_frames(t) * t.trials for t in plan)
    # at 1 frame/s on one slot the chain's seconds are its frames
    critical = round(estimate(plan, (), 1, lambda s, d: 1.0).chain_s)
    t0 = next(iter(plan))
    per_iter = task_frames(t0) // int(t0.config.iterations)  # batch x the model's window
    r.update(spec=str(PAPER.relative_to(ROOT)), trials=plan.trial_count, frames=total,
             iterations=total // per_iter, critical_frames=critical,
             critical_iterations=critical // per_iter,
             need_member_fps=critical / HOUR_TARGET_S, target_s=HOUR_TARGET_S,
             measured_shapes="smoke (tiny shapes, not the paper's)" if ctx.smoke
             else "the paper's", rows=[])

    def load(step: str) -> dict[str, Any]:
        try:
            return json.loads((ctx.out / "steps" / f"{step}.json").read_text())["result"]
        except (OSError, ValueError, KeyError):
            return {}

    rates = []
    trial = load("lstm_trial")
    if trial.get("trainer_fps"):
        rates.append(("one trial (Trainer)", 1, float(trial["trainer_fps"])))
    for row in load("packing").get("rows", []):
        rates.append((f"pack, {row['variant']}", int(row["k"]), float(row["packed_fps"])))
    if not rates:
        raise RuntimeError("no measured rate: the lstm_trial and packing steps left none")
    for what, k, aggregate in rates:
        member = aggregate / k
        est = estimate(plan, (), k, lambda s, m=member: m)
        r["rows"].append({"what": what, "k": k, "aggregate_fps": aggregate,
                          "member_fps": member, "by_throughput_s": est.compute_s / k,
                          "by_critical_path_s": est.chain_s, "wall_s": est.wall_s,
                          "met": est.wall_s <= HOUR_TARGET_S})
    best = min(r["rows"], key=lambda x: x["wall_s"])
    r["best"] = {"what": best["what"], "k": best["k"], "wall_s": best["wall_s"]}
    ctx.status = "ok"


def step_cnn(ctx: Ctx) -> None:
    import torch
    import torch.nn.functional as F
    import torchvision.models as tvm

    from trainables.cnn_config import CNNConfig
    from trainables.cnn_model import build_model

    S, dev = ctx.S, ctx.device()
    size, batch, iters, classes = S["cnn_size"], S["cnn_batch"], S["cnn_iters"], 48
    cuda = dev.type == "cuda"
    defaults = CNNConfig()
    torch.manual_seed(0)
    project = build_model("inception_v3", classes).to(dev)
    bare = tvm.inception_v3(weights=None, aux_logits=False, init_weights=True,
                            num_classes=classes).to(dev)
    if cuda:  # as CNNTrainer trains on a GPU; the baseline too, so the ratio is the wrapper's
        project = project.to(memory_format=torch.channels_last)
        bare = bare.to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = cuda
    xs = {"project": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                                   device=dev),
          "bare": torch.randn(batch, 3, size, size, device=dev)}
    if cuda:
        xs = {n: x.contiguous(memory_format=torch.channels_last) for n, x in xs.items()}
    y = torch.randint(0, classes, (batch,), device=dev)
    models = {"project": project, "bare": bare}
    opts = {n: torch.optim.SGD(m.parameters(), lr=defaults.learning_rate,
                               momentum=defaults.momentum) for n, m in models.items()}

    def train(name: str, amp: bool) -> None:
        m, x = models[name], xs[name]
        m.train()
        for _ in range(iters):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(m(x), y)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()

    @torch.no_grad()
    def infer(name: str, amp: bool) -> None:
        m, x = models[name], xs[name]
        m.eval()
        for _ in range(iters):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                torch.softmax(m(x).float(), 1)

    r = ctx.result
    r.update(model="inception_v3", size=size, batch=batch, iters=iters, repeats=ctx.repeats,
             device=str(dev), optimizer=f"SGD lr {defaults.learning_rate} momentum "
             f"{defaults.momentum}", rows=[])
    for amp in (False, True):
        for kind, fn in (("train", train), ("inference", infer)):
            fn("project", amp)  # warm-up (cuDNN autotuning for this mode)
            fn("bare", amp)
            t = {"project": [], "bare": []}
            for _ in range(ctx.repeats):
                for name in ("project", "bare"):
                    t[name].append(timed(lambda n=name, f=fn, a=amp: f(n, a), dev))
            fps = {n: batch * iters / median(v) for n, v in t.items()}
            r["rows"].append({"amp": amp, "kind": kind, "project_fps": fps["project"],
                              "bare_fps": fps["bare"], "ratio": fps["project"] / fps["bare"]})
            ctx.save()
    ctx.status = "ok"


def step_tcn(ctx: Ctx) -> None:
    import torch
    import torch.nn.functional as F

    try:
        registry = importlib.import_module("trainables.temporal").MODELS
    except (ImportError, AttributeError) as e:
        raise Skip(f"no temporal-model registry (trainables.temporal.MODELS): {e}") from None
    names = [n for n in registry if "tcn" in str(n).lower()]
    r = ctx.result
    r["registry"] = sorted(map(str, registry))
    if not names:
        raise Skip(f"the registry has no TCN (models: {', '.join(r['registry'])})")
    S, dev = ctx.S, ctx.device()
    c, batch, frames = S["classes"], S["tcn_batch"], S["tcn_frames"]
    kind = registry[names[0]]
    # the registry's contract (trainables.temporal.ModelKind): build(config, input, classes)
    # gives a network with forward(x) -> (logits, state) and loss(x, y)
    fields = getattr(kind.config, "model_fields", {})
    config = kind.config(**{k: v for k, v in S["tcn_config"].items() if k in fields})
    torch.manual_seed(0)
    net = kind.build(config, c, c).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.softmax(torch.randn(batch, frames, c, device=dev), -1)
    y = torch.randint(0, c, (batch, frames), device=dev)

    def objective() -> Any:
        if hasattr(net, "loss"):
            return net.loss(x, y)
        logits = net(x)[0]
        return F.cross_entropy(logits.reshape(-1, c), y.reshape(-1))

    def train(n: int) -> None:
        net.train()
        for _ in range(n):
            loss = objective()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    bare = Bare(S, dev)
    iters = S["trial_iters"]
    train(S["trial_warmup"])
    bare.train(S["trial_warmup"])
    sync(dev)
    t_tcn, t_bare = [], []
    for _ in range(ctx.repeats):
        t_tcn.append(timed(lambda: train(iters), dev) / iters)
        t_bare.append(timed(lambda: bare.train(iters), dev) / iters)
    r.update(model=str(names[0]), config=config.model_dump(mode="json"), device=str(dev),
             batch=batch, frames=frames, classes=c,
             params=sum(p.numel() for p in net.parameters()),
             tcn_fps=batch * frames / median(t_tcn),
             lstm_bare_fps=S["batch"] * S["history"] / median(t_bare),
             lstm_shape=f"batch {S['batch']} x history {S['history']}, hidden {S['hidden']}")
    r["ratio"] = r["tcn_fps"] / r["lstm_bare_fps"]
    ctx.status = "ok"


def step_study(ctx: Ctx) -> None:
    from collections import Counter

    from data_prep.synth import make_kitchens
    from data_prep.table import write_table
    from study.plan import make_plan
    from study.runner import run_study
    from study.spec_data import open_study
    from study.tracking import MlflowRunLogger

    dev, S = ctx.device(), ctx.S
    gpu = dev.type == "cuda"
    work = Path(tempfile.mkdtemp(prefix="study_", dir=ctx.out))
    names = []
    for name, table in make_kitchens(0, 2, 8, participants=4).items():
        write_table(table, work / "data" / f"{name}.parquet")
        names.append(name)
    a, b = names
    resources = {"cpu": 1, "gpu": 0.25} if gpu else {"cpu": 1, "gpu": 0}
    packing: dict[str, Any] = {"max_trials": 4} if gpu else {"max_trials": 4, "force_cpu": True}
    spec = {
        "name": "gpucheck",
        "datasets": {n: {"path": f"data/{n}.parquet", "splits": [1]} for n in names},
        "model": dict(S["study_model"]),
        "experiments": {"seeds": [0, 1], "iterations": S["study_iters"],
                        "pretrain_iterations": S["study_iters"],
                        "eval_at": [S["study_step"]], "baselines": [b],
                        "edges": [{"source": a, "target": b, "mode": "transfer",
                                   "arrangement": "concat"}]},
        "iterations_per_step": S["study_step"],
        "resources": resources,
        "packing": packing,
        "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        "storage_path": str(work / "ray_results"),
    }
    import yaml

    path = work / "gpucheck.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = open_study(path)
    plan = make_plan(loaded.spec, loaded.cards)
    r = ctx.result
    r.update(work=str(work.relative_to(ctx.out)), resources=resources, packing=packing,
             tasks=len(plan), trials=plan.trial_count, ray_cpus=S["study_cpus"])
    ctx.save()
    t0 = time.perf_counter()
    with _ray_usage() as used:
        out = run_study(loaded, progress=False, tracking_uri=loaded.spec.tracking_uri,
                        num_cpus=S["study_cpus"])
    r["seconds"] = time.perf_counter() - t0
    r["ray_in_use"] = dict(used)
    r["outcome"] = {"status": out.status, "finished": len(out.finished),
                    "failed": dict(out.failed), "not_run": dict(out.not_run)}
    ctx.save()
    runs = [x for x in MlflowRunLogger(loaded.spec.tracking_uri).study_runs("gpucheck")
            if x.role == "task"]
    per_task = Counter(x.task_id for x in runs)
    r["mlflow_task_runs"] = len(runs)
    r["mlflow_finished"] = sum(x.status == "FINISHED" for x in runs)
    r["packed_runs"] = sum("ks.pack" in x.tags for x in runs)
    r["packs"] = len({x.tags["ks.pack"] for x in runs if "ks.pack" in x.tags})
    r["num_gpus_param"] = sorted({str(x.params.get("num_gpus")) for x in runs})
    problems = []
    if out.status != "FINISHED":
        problems.append(f"study {out.status}: {out.failed or out.not_run}")
    if set(per_task) != set(plan.ids):
        problems.append(f"task runs {sorted(per_task)} are not the plan's {sorted(plan.ids)}")
    if any(n != 1 for n in per_task.values()):
        problems.append(f"not one run per task: {dict(per_task)}")
    if r["mlflow_finished"] != len(plan):
        problems.append(f"{r['mlflow_finished']} FINISHED task runs for {len(plan)} tasks")
    if gpu and not used.get("GPU"):
        problems.append(f"Ray never had a GPU in use during the study ({dict(used)})")
    r["one_run_per_task"] = not problems
    ctx.status, ctx.reason = ("failed", "; ".join(problems)) if problems else ("ok", None)


@contextlib.contextmanager
def _ray_usage(every: float = 0.5) -> Any:
    """While the block runs: the most CPUs and GPUs the local Ray had handed to trials
    (cluster total - available, sampled every ``every`` s): GPU > 0 shows Ray scheduled
    the trials on the GPU."""
    import threading

    import ray

    used: dict[str, float] = {"CPU": 0.0, "GPU": 0.0, "samples": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every):
            try:
                if not ray.is_initialized():
                    continue
                total, free = ray.cluster_resources(), ray.available_resources()
            except Exception:  # Ray starting or shutting down: the next sample
                continue
            for res in ("CPU", "GPU"):
                used[res] = max(used[res], float(total.get(res, 0)) - float(free.get(res, 0)))
            used["samples"] += 1

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield used
    finally:
        stop.set()
        thread.join(timeout=5)


STEP_FUNCS: dict[str, Callable[[Ctx], None]] = {
    "env": step_env, "cuda_tests": step_cuda_tests, "lstm_trial": step_lstm_trial,
    "packing": step_packing, "projection": step_projection, "cnn": step_cnn, "tcn": step_tcn,
    "study": step_study,
}
assert tuple(STEP_FUNCS) == STEPS


def run_one_step(args: argparse.Namespace) -> int:
    """Inside the step's own process: run it, save its result whatever happens."""
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ctx = Ctx(args.out, args.step, args.smoke, args.device, args.repeats, args.limit)
    ctx.save()
    rc = 0
    try:
        STEP_FUNCS[args.step](ctx)
    except Skip as e:
        ctx.status, ctx.reason = "skipped", str(e)
    except Exception as e:
        traceback.print_exc()
        ctx.status = "failed"
        ctx.reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e) else ''}"
        rc = 1
    ctx.save()
    return rc


# -- the orchestrator ---------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the step's process group (a step's pytest, Ray, compile
    workers go with it)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Running:
    """A step's process (its own process group) and its hard limit."""

    proc: subprocess.Popen
    started: float
    limit: float

    def wait(self) -> tuple[int | None, float]:
        """(exit status, or None when it ran past its limit and was killed; seconds). Call it
        right after :func:`start_step`: the limit is enforced here."""
        left = self.limit - (time.monotonic() - self.started)
        try:
            rc: int | None = self.proc.wait(timeout=max(left, 0.01))
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
            rc = None
        except BaseException:  # Ctrl-C: leave nothing running behind
            _kill_group(self.proc)
            raise
        return rc, time.monotonic() - self.started


def start_step(name: str, limit: float, args: argparse.Namespace) -> Running:
    """Start step ``name``'s process in a new process group, output to its log."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--out",
           str(args.out), "--device", args.device, "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--limit", f"{limit:.1f}"]
    if args.smoke:
        cmd.append("--smoke")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # the check is of this machine: its study starts a local Ray even inside a Ray job
    env.pop("RAY_ADDRESS", None)
    log = args.out / "logs" / f"{name}.log"
    t0 = time.monotonic()
    with log.open("w") as f:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    return Running(proc, t0, limit)


def _log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[:300]


def collect(name: str, rc: int | None, seconds: float, limit: float, args: argparse.Namespace
            ) -> dict[str, Any]:
    try:
        saved = json.loads((args.out / "steps" / f"{name}.json").read_text())
    except (OSError, ValueError):
        saved = {"status": "failed", "reason": None, "result": {}}
    status, reason = saved.get("status"), saved.get("reason")
    if rc is None:
        status = "failed"
        reason = f"timed out after {limit:.0f} s (hard limit; partial results kept)"
    elif status not in STATUSES:  # the process died without saving an outcome
        status = "failed"
        reason = f"the step's process ended (exit {rc}) without a result: " + _log_tail(
            args.out / "logs" / f"{name}.log")
    return {"status": status, "reason": reason, "seconds": round(seconds, 1),
            "limit_s": round(limit, 1), "result": saved.get("result") or {}}


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    for sub in ("steps", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for old in (out / "steps").glob("*.json"):  # a rerun into the same folder starts clean
        old.unlink()
    mode = "smoke" if args.smoke else "full"
    budget = args.budget or BUDGET_S[mode]
    start = time.monotonic()
    report: dict[str, Any] = {
        "smoke": args.smoke,
        "command": "python bench/gpu_check.py " + " ".join(args.argv),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "budget_s": budget, "repeats": args.repeats, "steps": {},
    }
    # one step at a time, so that no measurement shares the machine with another step
    for name in args.steps:
        left = budget - (time.monotonic() - start)
        if left < MIN_STEP_S:
            report["steps"][name] = {
                "status": "failed", "seconds": 0.0, "result": {},
                "reason": f"not run: the check's budget of {budget:.0f} s was spent"}
        else:
            limit = min(args.timeouts[name], left)
            print(f"[gpu-check] {name} (limit {limit:.0f} s) ...", flush=True)
            rc, seconds = start_step(name, limit, args).wait()
            if name == "study" and rc is None:
                _reap_ray()
            report["steps"][name] = collect(name, rc, seconds, limit, args)
        s = report["steps"][name]
        what = [x for x in (_summary(name, s), s.get("reason")) if x]
        print(f"[gpu-check] {name}: {s['status']} in {s['seconds']:.0f} s"
              + (f" - {'; '.join(what)}" if what else ""), flush=True)
        report["seconds"] = round(time.monotonic() - start, 1)
        write_outputs(report, out)
    return report


def _reap_ray() -> None:
    """A study step killed mid-run may leave its local Ray behind: the project's reaper
    ends the sessions whose driver is gone."""
    with contextlib.suppress(Exception):
        from study.local_ray import reap_orphaned_ray

        reap_orphaned_ray()


def write_outputs(report: dict[str, Any], out: Path) -> None:
    for name, text in (("gpu_check.json", json.dumps(report, indent=1, default=str)),
                       ("gpu_check.md", render_md(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


# -- Markdown -------------------------------------------------------------------------------


def _n(x: Any, fmt: str = ",.0f") -> str:
    return "—" if x is None else format(x, fmt)


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def _met(met: Any) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def _summary(name: str, s: dict[str, Any]) -> str:
    r = s.get("result") or {}
    try:
        if name == "env" and r:
            gpu = (f"{r['gpus'][0]['name']}, driver {r.get('driver')}" if r.get("gpus")
                   else f"no GPU ({r.get('host')})")
            return (f"{gpu}; torch {r.get('torch')}, CUDA {r.get('cuda_runtime')}, cuDNN "
                    f"{r.get('cudnn')}")
        if name == "cuda_tests" and r.get("counts"):
            c = r["counts"]
            return (f"{c['passed']} passed, {c['skipped']} skipped, "
                    f"{c['failures'] + c['errors']} failed ({len(r['modules'])} module(s))")
        if name == "lstm_trial" and "ratio" in r:
            return (f"Trainer {_n(r['trainer_fps'])} frames/s = {r['ratio']:.2f}× bare "
                    f"(target ≥ {TRIAL_TARGET}×: {_met(r.get('met'))})")
        if name == "packing" and r.get("rows"):
            best = max(r["rows"], key=lambda x: x["packed_fps"])
            return (f"best {_n(best['packed_fps'])} frames/s ({best['variant']}, K = "
                    f"{best['k']}); {len(r['rows'])} of {2 * len(r['ks'])} rows measured")
        if name == "projection" and r.get("best"):
            b = r["best"]
            return (f"paper.yaml ≥ {_h(b['wall_s'])} ({b['what']}, K = {b['k']}; target ≤ 1 h: "
                    f"{_met(b['wall_s'] <= HOUR_TARGET_S)})")
        if name == "cnn" and r.get("rows"):
            best = max(r["rows"], key=lambda x: x["project_fps"] if x["kind"] == "train" else 0)
            return (f"train {_n(best['project_fps'])} frames/s (AMP "
                    f"{'on' if best['amp'] else 'off'}), {best['ratio']:.2f}× bare")
        if name == "tcn" and "tcn_fps" in r:
            return f"{r['model']}: {_n(r['tcn_fps'])} frames/s, {r['ratio']:.2f}× the bare LSTM"
        if name == "study" and "mlflow_task_runs" in r:
            return (f"{r['tasks']} tasks, {r['mlflow_task_runs']} task runs "
                    f"({r['mlflow_finished']} FINISHED, {r['packed_runs']} packed) in "
                    f"{r['seconds']:.0f} s")
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    return ""


def render_md(report: dict[str, Any]) -> str:
    steps = report["steps"]
    env = (steps.get("env") or {}).get("result") or {}
    gpus = env.get("gpus") or []
    device = (f"{gpus[0]['name']} ({gpus[0]['memory_gib']} GiB), driver {env.get('driver')}"
              if gpus else f"no GPU ({env['host']})" if env else "(env step not run)")
    lines = [SECTION, ""]
    if report["smoke"]:
        lines += ["**Smoke run: tiny shapes; these numbers test the script, they are not "
                  "figures.**", ""]
    lines += [
        f"`{report['command']}` on {device}; torch {env.get('torch')}, CUDA "
        f"{env.get('cuda_runtime')}, cuDNN {env.get('cudnn')}; {report['started']}; "
        f"{report.get('seconds', 0):.0f} s in all. Each figure is the median of "
        f"{report['repeats']} rounds with its baseline alternating in the same process "
        "(bench/gpu_check.py's docstring has the method).",
        "",
        "| step | status | s | result |",
        "|---|---|---:|---|",
    ]
    for name, s in steps.items():
        what = _summary(name, s)
        if s["status"] != "ok" and s.get("reason"):
            what = f"{what}; {s['reason']}" if what else s["reason"]
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.0f} | "
                     f"{what.replace('|', '/')} |")
    r = (steps.get("lstm_trial") or {}).get("result") or {}
    if "ratio" in r:
        sh = r["shapes"]
        lines += ["", f"### One trial vs a bare `nn.LSTM` loop (batch {sh['batch']} × history "
                  f"{sh['history']}, hidden {sh['hidden']}, {sh['classes']} classes)", "",
                  "| what | ms / iteration | frames/s | vs bare |", "|---|---:|---:|---:|",
                  f"| bare nn.LSTM + Linear + Adam, fixed batch | {r['bare_ms']:.2f} | "
                  f"{_n(r['bare_fps'])} | 1.00 |",
                  f"| Trainer (sampler, masked loss, Adam) | {r['trainer_ms']:.2f} | "
                  f"{_n(r['trainer_fps'])} | {r['ratio']:.2f} |",
                  f"| batch sampling alone | {r['sample_ms']:.3f} | | |", "",
                  f"Target ≥ {TRIAL_TARGET}×: {_met(r.get('met'))}. TF32 as torch's defaults: "
                  f"{r['tf32']}."]
        for key in ("profile", "profile_bare"):
            p = r.get(key)
            if p:
                lines.append("")
            if p and "error" in p:
                lines.append(f"Profile ({key}) failed: {p['error']}")
            elif p:
                lines.append(f"Profile ({p['file']}): {p['wall_ms']:.1f} ms wall, host "
                             f"{p['host_ms']:.1f} ms, device {p['device_ms']:.1f} ms; top: "
                             + ", ".join(f"{t['op']} ({t['calls']})" for t in p["top"][:3]))
    r = (steps.get("packing") or {}).get("result") or {}
    if r.get("rows"):
        cuda = any("mem_per_member_mib" in row for row in r["rows"])
        lines += ["", "### Packed LSTM vs K sequential trials", "",
                  "| mode | K | packed frames/s | sequential frames/s | packed / sequential | "
                  "packed / one trial | packed ms/iter | max abs Δ loss | GPU MiB per member | "
                  "pack options |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for row in r["rows"]:
            mark = f" ({_met(row['met'])})" if "met" in row else ""
            opts = ", ".join(row["pack_options"]) or "—"
            if row.get("dropped_options"):
                opts += "; dropped: " + ", ".join(row["dropped_options"])
            if row.get("sequential_fused_adam"):
                opts += "; sequential fused Adam: " + str(row["sequential_fused_adam"])[:60]
            lines.append(
                f"| {row['variant']} | {row['k']} | {_n(row['packed_fps'])} | "
                f"{_n(row['sequential_fps'])} | {row['packed_fps'] / row['sequential_fps']:.2f}"
                f" | {_n(row['vs_one_trial'], '.2f')}{mark} | {row['packed_ms_per_iter']:.1f} | "
                f"{row['max_abs_dloss']:.1e} | {_n(row.get('mem_per_member_mib'))} | "
                f"{opts.replace('|', '/')} |")
        lines += ["", f"Target: packed ≥ {PACK_TARGET:g}× one trial at K = {PACK_TARGET_K}. "
                  "`exact`: float32 (TF32 off); `fast`: TF32 on plus the pack options listed."
                  + (f" One trial alone: {_n(r.get('one_trial_mib'))} MiB." if cuda else "")]
        for row in r["rows"]:
            p = row.get("profile")
            if p:
                lines.append("")
            if p and "error" in p:
                lines.append(f"Profile of {row['variant']} K = {row['k']} failed: {p['error']}")
            elif p:
                lines.append(f"Profile of {row['variant']} K = {row['k']} ({p['file']}): "
                             f"{p['wall_ms']:.1f} ms wall, host {p['host_ms']:.1f} ms, device "
                             f"{p['device_ms']:.1f} ms, {p['kernel_launches']} kernel launches.")
    r = (steps.get("projection") or {}).get("result") or {}
    if r.get("rows"):
        lines += ["", f"### Projected wall time of `{r['spec']}`", "",
                  f"{r['trials']} trials, {r['iterations']:,} iterations ({r['frames']:.3g} "
                  f"frames); critical path {r['critical_iterations']:,} iterations, so one "
                  f"member needs ≥ {_n(r['need_member_fps'])} frames/s for 1 h. Rates measured "
                  f"at {r['measured_shapes']} shapes; evaluation, data loading and Ray start "
                  "are not included.", "",
                  "| rate from | K | per member frames/s | by throughput | by critical path | "
                  "projected | ≤ 1 h |", "|---|---:|---:|---:|---:|---:|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['what']} | {row['k']} | {_n(row['member_fps'])} | "
                         f"{_h(row['by_throughput_s'])} | {_h(row['by_critical_path_s'])} | "
                         f"{_h(row['wall_s'])} | {_met(row['met'])} |")
    r = (steps.get("cnn") or {}).get("result") or {}
    if r.get("rows"):
        lines += ["", f"### CNN stage: {r['model']} at {r['size']}×{r['size']}, batch "
                  f"{r['batch']}, random weights ({r['optimizer']})", "",
                  "| AMP (bf16) | what | project frames/s | bare torchvision frames/s | ratio |",
                  "|---|---|---:|---:|---:|"]
        for row in r["rows"]:
            lines.append(f"| {'on' if row['amp'] else 'off'} | {row['kind']} | "
                         f"{_n(row['project_fps'], ',.1f')} | {_n(row['bare_fps'], ',.1f')} | "
                         f"{row['ratio']:.2f} |")
        lines += ["", "Model only (fixed batch on the device); decoding and augmentation are "
                  "`bench/bench_cnn.py`'s."]
    r = (steps.get("tcn") or {}).get("result") or {}
    if "tcn_fps" in r:
        cfg = ", ".join(f"{k} {v}" for k, v in r["config"].items() if k != "kind")
        lines += ["", f"### Temporal model `{r['model']}` ({cfg})", "",
                  "| model | batch × frames | training frames/s | vs bare LSTM |",
                  "|---|---|---:|---:|",
                  f"| {r['model']} ({r['params']:,} parameters) | {r['batch']} × {r['frames']} | "
                  f"{_n(r['tcn_fps'])} | {r['ratio']:.2f} |",
                  f"| bare LSTM loop | {r['lstm_shape']} | {_n(r['lstm_bare_fps'])} | 1.00 |"]
    r = (steps.get("study") or {}).get("result") or {}
    if "mlflow_task_runs" in r:
        lines += ["", f"### A real study under Ray (resources {r['resources']}, packing "
                  f"{r['packing']})", "",
                  f"{r['tasks']} tasks ({r['trials']} trials) on a local Ray of "
                  f"{r['ray_cpus']} CPUs: {r['outcome']['status']} in {r['seconds']:.0f} s; "
                  f"MLflow: {r['mlflow_task_runs']} task runs, {r['mlflow_finished']} FINISHED, "
                  f"{r['packed_runs']} of them in {r['packs']} pack(s); num_gpus per task "
                  f"{', '.join(r['num_gpus_param'])}; most held by trials at once: "
                  f"{r.get('ray_in_use', {}).get('CPU', 0):g} CPU, "
                  f"{r.get('ray_in_use', {}).get('GPU', 0):g} GPU; one run per task: "
                  f"{'yes' if r['one_run_per_task'] else '**no**'}."]
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    """Replace (or append) the ``## GPU check`` section of docs/benchmarks.md."""
    old = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## GPU check\b.*?(?=^## |\Z)", re.S | re.M)
    new = (pattern.sub(lambda _: section.rstrip("\n") + "\n\n", old) if pattern.search(old)
           else old.rstrip("\n") + "\n\n" + section)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(DOC)


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, any machine (< 2 min)")
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_check_out")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"any of {', '.join(STEPS)}")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per figure (>= 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per step (default: 1 in --smoke, torch's own otherwise)")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"seconds for the whole check (default {BUDGET_S['full']:.0f}, "
                         f"--smoke {BUDGET_S['smoke']:.0f})")
    ap.add_argument("--timeout", action="append", default=[], metavar="STEP=S",
                    help="override one step's hard timeout")
    ap.add_argument("--write-doc", action="store_true",
                    help="replace the '## GPU check' section of docs/benchmarks.md")
    # inside a step's process (set by the orchestrator)
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = argv
    args.out = args.out.resolve()
    if args.threads is None:
        # 1 thread on a CPU smoke run: competing OpenMP threads on a small shared machine
        # made steps several times slower (docs/benchmarks.md, LSTM training)
        args.threads = 1 if args.smoke else 0
    if args.step:
        return args
    if args.repeats < 3:
        raise UsageError(f"--repeats {args.repeats}: figures are medians of at least 3 rounds")
    if args.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", args.device):
        raise UsageError(f"--device {args.device!r}: auto, cuda, cuda:N or cpu")
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in args.steps if s not in STEPS]
    if bad or not args.steps:
        raise UsageError(f"--steps: unknown step {bad[0]!r} (steps: {', '.join(STEPS)})" if bad
                         else "--steps: no step given")
    args.timeouts = {s: TIMEOUTS[s][1 if args.smoke else 0] for s in STEPS}
    for item in args.timeout:
        name, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if name not in STEPS or seconds <= 0:
            raise UsageError(f"--timeout {item!r}: STEP=SECONDS with a step of "
                             f"{', '.join(STEPS)} and a positive number")
        args.timeouts[name] = seconds
    if args.write_doc and args.smoke:
        raise UsageError("--write-doc with --smoke: smoke numbers are not figures")
    if not args.smoke:
        import torch

        want_cuda = args.device != "cpu"
        if args.device == "cpu" or not torch.cuda.is_available():
            raise UsageError(("no CUDA device here" if want_cuda else "--device cpu without "
                              "--smoke") + ": the full check is for a GPU machine (run "
                             "`make gpu-check SMOKE=1` here)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.step:
        return run_one_step(args)
    report = run_check(args)
    failed = [n for n, s in report["steps"].items() if s["status"] == "failed"]
    print(f"[gpu-check] {len(report['steps'])} steps in {report['seconds']:.0f} s; "
          f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; "
          f"{args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    if args.write_doc:
        write_doc(render_md(report))
        print(f"[gpu-check] wrote {SECTION!r} in {DOC}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
