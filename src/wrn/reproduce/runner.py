"""Running a grid: every run is an ordinary `wrn train` child process, on this machine or as Ray tasks.

The orchestrator never initialises CUDA and holds no GPU: it only starts, watches and restarts processes.
Each run is started through :mod:`wrn.reproduce.child`, so it gets SIGTERM (checkpoint, then exit) when
whoever started it dies; and it holds its run's lock (:class:`wrn.reproduce.grid.RunLock`) until it exits, so
no two processes ever train one run, whatever was killed in between.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from wrn.errors import ConfigError
from wrn.reproduce import grid as G
from wrn.train.rundir import LOCK_FD_ENV

# A failed run is tried this many times in one command (the first try and one retry).
ATTEMPTS = 2
POLL_S = 0.05  # how often running children are checked: the orchestrator adds at most this per run
BUSY_RETRY_S = 1.0  # how often a run locked by another process is looked at again


@dataclass
class Outcome:
    key: str
    status: str  # done (trained now), skipped (done before), failed, interrupted, busy
    attempts: int = 0
    seconds: float = 0.0
    returncode: int | None = None
    last_line: str = ""


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: int | None = None  # the signal that stopped the grid

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


# --------------------------------------------------------------------------------------------- one run


def train_args(spec: G.RunSpec, argv: tuple[str, ...] | list[str]) -> tuple[list[str], str]:
    """The `wrn train` arguments that continue ``spec`` from where it stands, and what they do."""
    state = G.run_state(spec.dir)
    if state == "partial":
        return ["train", "--resume", str(spec.dir), "--no-progress"], "resume"
    # missing, or killed before its first checkpoint: `wrn train --out` starts such a folder afresh
    args = ["train", "--config", str(spec.config_path), "--out", str(spec.dir), "--no-progress", *argv]
    return args, "start"


def launch(
    spec: G.RunSpec, args: list[str], env: dict[str, str], lock_fd: int, what: str
) -> subprocess.Popen:
    """Start ``python -m wrn ARGS`` for ``spec``, output appended to its log, dying with this process."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "wrn.reproduce.child", str(os.getpid()), "-m", "wrn", *args]
    gpu = env.get("CUDA_VISIBLE_DEVICES")
    where = f" on GPU {gpu}" if gpu else ""
    with open(spec.log_path, "ab") as log:
        stamp = datetime.now().isoformat(timespec="milliseconds")
        log.write(f"=== wrn reproduce: {what} {spec.key}{where} at {stamp}: wrn {' '.join(args)}\n".encode())
        log.flush()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, LOCK_FD_ENV: str(lock_fd)},  # the child trains under the lock taken here
            pass_fds=(lock_fd,),
        )


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    return env


def last_error(spec: G.RunSpec) -> float | None:
    try:
        from wrn.train.logging import read_metrics

        records = read_metrics(spec.dir)
    except Exception:
        return None
    value = records[-1].get("test_error") if records else None
    return value if isinstance(value, (int, float)) else None


def execute(spec: G.RunSpec, argv: tuple[str, ...], extra_env: dict[str, str]) -> dict[str, Any]:
    """Train one run to its end in this process's child (a Ray task): lock, start or resume, wait."""
    lock = G.RunLock(spec.lock_path)
    if not lock.acquire():
        return {"status": "busy"}
    try:
        if G.run_state(spec.dir) == "done":
            return {"status": "skipped"}
        args, what = train_args(spec, argv)
        start = time.monotonic()
        proc = launch(spec, args, child_env(extra_env), lock.fd, what)
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        ok = rc == 0 and G.run_state(spec.dir) == "done"
        return {
            "status": "done" if ok else "failed",
            "returncode": rc,
            "seconds": time.monotonic() - start,
            "last_line": "" if ok else G.last_log_line(spec.log_path),
            "what": what,
        }
    finally:
        lock.release()


# --------------------------------------------------------------------------------------------- GPUs


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without initialising CUDA: CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for item in (x.strip() for x in env.split(",")):
            if not item or item.startswith("-"):
                break  # CUDA stops at the first invalid entry
            ids.append(item)
        return ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


# --------------------------------------------------------------------------------------------- locally


class _Active:
    def __init__(self, spec, proc, lock, what, slot):
        self.spec, self.proc, self.lock, self.what, self.slot = spec, proc, lock, what, slot
        self.start = time.monotonic()


def run_local(
    specs: list[G.RunSpec],
    argv: tuple[str, ...],
    jobs: int,
    gpus: list[str],
    say: Callable[[str], None] = print,
) -> Summary:
    """Train ``specs`` with ``jobs`` children at once, child i pinned to GPU ``gpus[i % len(gpus)]``."""
    summary = Summary()
    total = len(specs)
    queue: deque[G.RunSpec] = deque(specs)
    waiting: list[G.RunSpec] = []
    attempts: Counter[str] = Counter()
    active: dict[int, _Active] = {}
    free = list(range(jobs))
    stop: list[int] = []
    threads = None
    if not gpus and jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
    done_count = 0
    last_busy_check = 0.0
    told_waiting = False

    def on_term(signum, frame):
        stop.append(signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while (queue or active or waiting) and not stop:
            while queue and free and not stop:
                spec = queue.popleft()
                if G.run_state(spec.dir) == "done" and attempts[spec.key] == 0:
                    summary.outcomes.append(Outcome(spec.key, "skipped"))
                    done_count += 1
                    continue
                lock = G.RunLock(spec.lock_path)
                if not lock.acquire():
                    waiting.append(spec)
                    continue
                if G.run_state(spec.dir) == "done":  # finished by another process meanwhile
                    lock.release()
                    summary.outcomes.append(Outcome(spec.key, "skipped"))
                    done_count += 1
                    continue
                slot = free.pop(0)
                extra = {}
                if gpus:
                    extra["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
                if threads:
                    extra["OMP_NUM_THREADS"] = threads
                args, what = train_args(spec, argv)
                proc = launch(spec, args, child_env(extra), lock.fd, what)
                attempts[spec.key] += 1
                active[slot] = _Active(spec, proc, lock, what, slot)
                pin = f" on GPU {extra['CUDA_VISIBLE_DEVICES']}" if gpus else ""
                retry = " (retry)" if attempts[spec.key] > 1 else ""
                say(
                    f"[{done_count + len(active)}/{total}] {what}{retry} {spec.key}{pin}: log {spec.log_path}"
                )
            for slot, run in list(active.items()):
                rc = run.proc.poll()
                if rc is None:
                    continue
                del active[slot]
                run.lock.release()
                free.append(slot)
                free.sort()
                seconds = time.monotonic() - run.start
                key = run.spec.key
                if rc == 0 and G.run_state(run.spec.dir) == "done":
                    G.clear_failure(run.spec)
                    done_count += 1
                    err = last_error(run.spec)
                    text = f": test error {err:.2f}%" if err is not None else ""
                    say(f"[{done_count}/{total}] done {key} in {seconds:.1f} s{text}")
                    summary.outcomes.append(Outcome(key, "done", attempts[key], seconds, rc))
                elif stop:
                    summary.outcomes.append(Outcome(key, "interrupted", attempts[key], seconds, rc))
                elif attempts[key] < ATTEMPTS:
                    say(f"failed {key} (exit {rc}): {G.last_log_line(run.spec.log_path)}; trying once more")
                    queue.appendleft(run.spec)
                else:
                    line = G.write_failure(run.spec, rc, attempts[key])
                    done_count += 1
                    say(
                        f"[{done_count}/{total}] FAILED {key} (exit {rc}) after {attempts[key]} tries: {line}"
                    )
                    summary.outcomes.append(Outcome(key, "failed", attempts[key], seconds, rc, line))
            if waiting and time.monotonic() - last_busy_check >= BUSY_RETRY_S:
                if not active and not queue and not told_waiting:
                    names = ", ".join(s.key for s in waiting)
                    say(f"waiting for {len(waiting)} run(s) that another process is training: {names}")
                    told_waiting = True
                last_busy_check = time.monotonic()
                queue.extend(waiting)
                waiting.clear()
            if active or waiting:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        stop.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if active:
            _stop_children(active, summary, say)
    if stop:
        summary.interrupted = stop[0]
    return summary


def _stop_children(active: dict[int, _Active], summary: Summary, say) -> None:
    """Ask every running child to checkpoint and stop (SIGTERM), and wait for them."""
    say(f"stopping {len(active)} run(s): each saves a checkpoint first (Ctrl-C again to kill them now)")
    for run in active.values():
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
    try:
        for run in active.values():
            run.proc.wait()
    except KeyboardInterrupt:
        for run in active.values():
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
    for run in active.values():
        run.lock.release()
        summary.outcomes.append(Outcome(run.spec.key, "interrupted", 1, time.monotonic() - run.start))


# --------------------------------------------------------------------------------------------- on Ray


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs Ray, which is not installed; install it with pip install 'wrn[ray]' "
            "(or pip install 'ray[default]>=2.9')"
        ) from None
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--ray {address!r} is not an address Ray understands; use auto, local, HOST:PORT or ray://HOST:PORT"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at {address!r} ({exc.strerror or exc}); check the address, start one "
            "with 'ray start --head', or use --ray local"
        ) from None


def connect_ray(address: str):
    """``ray.init(address=ADDRESS)`` with Ray's own meanings of auto, local, HOST:PORT and ray://HOST:PORT."""
    ray = import_ray()
    if address not in ("auto", "local"):
        _reachable(address)
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
    if address == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address!r} ({reason}); start one with 'ray start --head' "
            "or use --ray local"
        ) from None
    return ray


def run_ray(
    ray,
    specs: list[G.RunSpec],
    argv: tuple[str, ...],
    gpus_per_run: float | None,
    cpus_per_run: float,
    jobs: int | None,
    say: Callable[[str], None] = print,
) -> Summary:
    """One Ray task per run (a worker that dies has its task retried by Ray); results on a shared disk."""
    if gpus_per_run is None:
        gpus_per_run = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    extra = {"OMP_NUM_THREADS": str(max(1, int(cpus_per_run)))}
    task = ray.remote(execute).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=1)
    summary = Summary()
    total = len(specs)
    queue: deque[G.RunSpec] = deque(specs)
    attempts: Counter[str] = Counter()
    in_flight: dict[Any, tuple[G.RunSpec, float]] = {}
    limit = jobs or total
    finished = 0
    try:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                spec = queue.popleft()
                if G.run_state(spec.dir) == "done" and attempts[spec.key] == 0:
                    summary.outcomes.append(Outcome(spec.key, "skipped"))
                    finished += 1
                    continue
                attempts[spec.key] += 1
                in_flight[task.remote(spec, tuple(argv), extra)] = (spec, time.monotonic())
                retry = " (retry)" if attempts[spec.key] > 1 else ""
                say(f"[{finished + len(in_flight)}/{total}] submitted{retry} {spec.key}: log {spec.log_path}")
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                spec, start = in_flight.pop(ref)
                key = spec.key
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the worker died twice, or the task could not run
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    result = {"status": "failed", "returncode": None, "last_line": reason}
                status = result["status"]
                if status == "busy":
                    attempts[key] -= 1
                    time.sleep(BUSY_RETRY_S)
                    queue.append(spec)
                elif status == "skipped":
                    finished += 1
                    summary.outcomes.append(Outcome(key, "skipped"))
                elif status == "done":
                    G.clear_failure(spec)
                    finished += 1
                    err = last_error(spec)
                    text = f": test error {err:.2f}%" if err is not None else ""
                    say(f"[{finished}/{total}] done {key} in {result['seconds']:.1f} s{text}")
                    summary.outcomes.append(Outcome(key, "done", attempts[key], result["seconds"], 0))
                elif attempts[key] < ATTEMPTS:
                    say(
                        f"failed {key} (exit {result.get('returncode')}): {result.get('last_line')}; trying once more"
                    )
                    queue.appendleft(spec)
                else:
                    line = G.write_failure(spec, result.get("returncode"), attempts[key])
                    line = line or str(result.get("last_line") or "")
                    finished += 1
                    say(f"[{finished}/{total}] FAILED {key} after {attempts[key]} tries: {line}")
                    rc = result.get("returncode")
                    summary.outcomes.append(Outcome(key, "failed", attempts[key], 0.0, rc, line))
    except KeyboardInterrupt:
        say(f"stopping {len(in_flight)} Ray task(s): their runs save a checkpoint and stop")
        for ref in in_flight:
            ray.cancel(ref)
        summary.interrupted = signal.SIGINT
    return summary


# --------------------------------------------------------------------------------------------- a grid


def run_grid(
    plan: G.Plan,
    *,
    jobs: int | None = None,
    ray_address: str | None = None,
    gpus_per_run: float | None = None,
    cpus_per_run: float = 1.0,
    download: bool = False,
    say: Callable[[str], None] = print,
) -> Summary:
    """Check everything, write experiment.yaml and the configs, then train every run not yet done."""
    existing = G.check_out(plan)
    ray = connect_ray(ray_address) if ray_address is not None else None
    try:
        G.check_data(plan.datasets, download)
        G.write_experiment(plan, existing)
        for spec in plan.todo:
            G.write_config(plan, spec)
        argv = plan.overrides.argv
        done = sum(G.run_state(s.dir) == "done" for s in plan.todo)
        what = plan.experiment.name + (
            f" (runs of {plan.base.name})" if plan.base is not plan.experiment else ""
        )
        where = f"Ray at {ray_address}" if ray is not None else None
        if ray is None:
            gpus = visible_gpus()
            jobs = jobs or max(1, len(gpus))
            where = f"{jobs} at once" + (f" on GPUs {','.join(gpus)}" if gpus else " on the CPU")
        scaled = f"; scaled down ({', '.join(plan.scaled)})" if plan.scaled else ""
        say(f"{what}: {len(plan.todo)} runs in {plan.out}, {done} already done, {where}{scaled}")
        if ray is None:
            return run_local(plan.todo, argv, jobs, gpus, say)
        return run_ray(ray, plan.todo, argv, gpus_per_run, cpus_per_run, jobs, say)
    finally:
        if ray is not None:
            ray.shutdown()


def run_bench(
    out: Path, options: list[str], download: bool = False, say: Callable[[str], None] = print
) -> Summary:
    """Figure 4: ``wrn bench figure4 --out OUT/bench`` once (retried once), unless its JSON is there; its
    output shows as it comes (which network, which step), and noisy timings are called unreliable."""
    from wrn.bench import figure4

    bench_dir = out / G.BENCH_DIR
    key = "figure4"
    summary = Summary()
    if (bench_dir / G.BENCH_FILE).is_file():
        say(f"figure4: {bench_dir / G.BENCH_FILE} is there already; nothing to do")
        summary.outcomes.append(Outcome(key, "skipped"))
        return summary
    lock = G.RunLock(out / ".figure4.lock")
    if not lock.acquire():
        raise ConfigError(f"another process is running the benchmark in {out}; wait for it to finish")
    log = out / G.LOGS_DIR / "figure4.log"
    try:
        for attempt in range(1, ATTEMPTS + 1):
            if bench_dir.exists():
                shutil.rmtree(bench_dir)  # a benchmark killed half-way: its partial output is worthless
            args = ["bench", "figure4", "--out", str(bench_dir), *options]
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "wrn.reproduce.child", str(os.getpid()), "-m", "wrn", *args]
            say(f"figure4: wrn {' '.join(args)} (log {log})")
            start = time.monotonic()
            with open(log, "ab") as f:
                f.write(f"=== wrn reproduce: attempt {attempt}: wrn {' '.join(args)}\n".encode())
                f.flush()
                with subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=child_env({}),
                ) as proc:
                    for raw in proc.stdout:  # its progress (which network, which step) shows as it comes
                        f.write(raw)
                        f.flush()
                        if raw.strip():
                            say(f"figure4: {raw.decode(errors='replace').strip()}")
                rc = proc.returncode
            if rc == 0 and (bench_dir / G.BENCH_FILE).is_file():
                summary.outcomes.append(Outcome(key, "done", attempt, time.monotonic() - start, 0))
                for sentence in figure4.unreliable(figure4.read(bench_dir / G.BENCH_FILE)):
                    say(f"figure4: UNRELIABLE: {sentence}")
                return summary
            if rc in (130, 143, -2, -15):
                summary.interrupted = signal.SIGINT
                return summary
            say(f"figure4 failed (exit {rc}): {G.last_log_line(log)}")
        line = G.last_log_line(log)
        summary.outcomes.append(Outcome(key, "failed", ATTEMPTS, 0.0, rc, line))
        return summary
    finally:
        lock.release()
