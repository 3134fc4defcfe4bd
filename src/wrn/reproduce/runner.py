"""Running a grid: every run is an ordinary `wrn train` child process, on this machine or as Ray tasks.

One function trains one run: :func:`execute` takes the run's lock, starts or resumes its `wrn train` and
returns an :class:`Outcome`. Locally a thread pool runs it, ``--jobs`` runs at once, each on the lowest free
slot of a queue of GPU ids; on Ray, ``ray.remote(execute)`` runs it as a task. Both hand every outcome to one
:class:`Tally`, which counts the runs, prints how each ended, asks for one retry of a failed run and records
its failure.

The orchestrator never initialises CUDA and holds no GPU: it only starts, watches and restarts processes.
Each run is started through :mod:`wrn.reproduce.child`, so it gets SIGTERM (checkpoint, then exit) when
whoever started it dies; and it holds its run's lock (:class:`wrn.train.rundir.RunLock`) until it exits, so
no two processes ever train one run, whatever was killed in between.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from wrn.errors import ConfigError
from wrn.reproduce import grid as G
from wrn.train.rundir import LOCK_FD_ENV, RunDir, RunLock

# A failed run is tried this many times in one command (the first try and one retry).
ATTEMPTS = 2
POLL_S = 0.05  # how often running children are checked: the orchestrator adds at most this per run
BUSY_RETRY_S = 1.0  # how often a run locked by another process is looked at again
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # either one stops a grid: each run checkpoints and stops


@dataclass
class Outcome:
    key: str
    status: str  # done (trained now), skipped (done before), failed, interrupted, busy
    attempts: int = 0
    seconds: float = 0.0
    returncode: int | None = None
    last_line: str = ""
    attacked_only: bool = False  # done: trained before, only its attack made now


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


def train_args(spec: G.RunSpec) -> tuple[list[str], str]:
    """The `wrn train` arguments that continue ``spec`` from where it stands, and what they do.

    A new run trains its config file, which holds the grid's overrides already: nothing else is on its
    command line, so the file is what runs.
    """
    if RunDir(spec.dir).state() == "partial":
        return ["train", "--resume", str(spec.dir), "--no-progress"], "resume"
    # missing, or killed before its first checkpoint: `wrn train --out` starts such a folder afresh
    return ["train", "--config", str(spec.config_path), "--out", str(spec.dir), "--no-progress"], "start"


def launch(
    spec: G.RunSpec, args: list[str], env: dict[str, str], lock_fd: int, what: str, session: bool = False
) -> subprocess.Popen:
    """Start ``python -m wrn ARGS`` for ``spec``, output appended to its log, dying with this process (SIGTERM:
    a checkpoint, then exit). ``session``: in a session and process group of its own, out of reach of what
    kills this process's group."""
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
            start_new_session=session,
        )


def launch_for_ray(
    spec: G.RunSpec, args: list[str], env: dict[str, str], lock_fd: int, what: str
) -> subprocess.Popen:
    """:func:`launch` in a Ray task: when its worker dies, Ray kills the worker's process group at once
    (SIGKILL, a fraction of a second after), which would lose the run's work since its last checkpoint; in a
    session of its own the run gets its SIGTERM from the worker's death, saves a checkpoint and exits, and the
    retried task resumes it."""
    return launch(spec, args, env, lock_fd, what, session=True)


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


def attack_result(spec: G.RunSpec) -> str:
    """The attack's record in words ("AutoAttack: clean 84.00%, robust 64.00% of 50 images"), "" without one."""
    path = spec.record_path
    if path is None:
        return ""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        name = "AutoAttack" if "autoattack_acc" in record else "PGD"
        robust = record.get("autoattack_acc", record.get("pgd_acc"))
        return f"{name}: clean {record['clean_acc']}%, robust {robust}% of {record['n_points']} images"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return ""


# How execute() starts a child: launch()'s arguments; None when the grid is stopping and starts nothing.
Launcher = Callable[[G.RunSpec, list[str], dict[str, str], int, str], "subprocess.Popen | None"]


def execute(spec: G.RunSpec, env: dict[str, str] | None = None, start: Launcher = launch) -> Outcome:
    """Train one run to its end in a child process: take its lock, start or resume it, wait for it; then, where
    the experiment asks for an attack (``spec.attack``) and its record is not there yet, attack the trained run
    with `wrn eval --attack` in a second child under the same lock.

    ``env`` is added to the child's environment (its GPU, its threads). ``start`` launches the child: the local
    runner's keeps it, to stop it on Ctrl-C. The outcome is ``busy`` (another process holds the run's lock),
    ``skipped`` (done already), ``done``, ``failed`` or ``interrupted`` (not started: the grid is stopping);
    counting the attempts is the caller's (:class:`Tally`). A Ray task runs this function as it is.
    """
    lock = RunLock(spec.lock_path)
    if not lock.acquire():
        return Outcome(spec.key, "busy")
    try:
        if spec.finished():
            return Outcome(spec.key, "skipped")
        begin = time.monotonic()
        trained_before = RunDir(spec.dir).state() == "done"
        if not trained_before:
            args, what = train_args(spec)
            rc = _wait(start(spec, args, child_env(env or {}), lock.fd, what))
            if rc is None:
                return Outcome(spec.key, "interrupted")
            if rc != 0 or RunDir(spec.dir).state() != "done":
                return Outcome(
                    spec.key, "failed", 0, time.monotonic() - begin, rc, G.last_log_line(spec.log_path)
                )
        # trained, not yet attacked: `wrn eval --attack` in a child of its own, its record last
        if spec.attack:
            rc = _wait(start(spec, list(spec.attack), child_env(env or {}), lock.fd, "attack"))
            if rc is None:
                return Outcome(spec.key, "interrupted")
            if rc != 0 or not spec.finished():
                return Outcome(
                    spec.key, "failed", 0, time.monotonic() - begin, rc, G.last_log_line(spec.log_path)
                )
        return Outcome(spec.key, "done", 0, time.monotonic() - begin, 0, attacked_only=trained_before)
    finally:
        lock.release()


def _wait(proc: subprocess.Popen | None) -> int | None:
    """The exit status of a child :func:`execute` started; None: it was not started (the grid is stopping)."""
    if proc is None:
        return None
    try:
        return proc.wait()
    except BaseException:  # a cancelled Ray task (KeyboardInterrupt): the run checkpoints and stops
        proc.terminate()
        proc.wait()
        raise


class Tally:
    """The one outcome handler of a grid, local or on Ray: it counts the runs, prints how each one ended,
    asks for one retry of a failed run and records a failure. ``lock`` guards it (the local runner's
    threads announce their starts through it)."""

    def __init__(self, total: int, say: Callable[[str], None], exit_code_in_failure: bool = True):
        self.total = total
        self.say = say
        self.summary = Summary()
        self.attempts: Counter[str] = Counter()  # the tries of each run that have ended (done or failed)
        self.finished = 0  # runs done, skipped, or failed for good
        self.lock = threading.Lock()
        self._exit_code_in_failure = exit_code_in_failure

    def skip_if_done(self, spec: G.RunSpec) -> bool:
        """A run this command has not tried that is done already: skipped, without taking its lock."""
        if self.attempts[spec.key] or not spec.finished():
            return False
        self.handle(spec, Outcome(spec.key, "skipped"))
        return True

    def handle(self, spec: G.RunSpec, outcome: Outcome, stopping: bool = False) -> str | None:
        """Account for what :func:`execute` returned: ``"busy"`` (look at the run again later), ``"retry"``
        (train it once more now) or None (it is over). While the grid is ``stopping``, a failure is an
        interruption: neither retried nor recorded."""
        with self.lock:
            if outcome.status == "busy":
                return "busy"
            if outcome.status in ("done", "failed"):
                self.attempts[spec.key] += 1
                outcome = replace(outcome, attempts=self.attempts[spec.key])
            if outcome.status == "failed" and stopping:
                outcome = replace(outcome, status="interrupted")
            elif outcome.status == "failed" and outcome.attempts < ATTEMPTS:
                rc, line = outcome.returncode, outcome.last_line
                self.say(f"failed {spec.key} (exit {rc}): {line}; trying once more")
                return "retry"
            elif outcome.status != "interrupted":
                outcome = self._ended(spec, outcome)
            self.summary.outcomes.append(outcome)
            return None

    def _ended(self, spec: G.RunSpec, outcome: Outcome) -> Outcome:
        """A run over for this command (skipped, done, or failed for good): counted and said."""
        self.finished += 1
        n = f"[{self.finished}/{self.total}]"
        if outcome.status == "done":
            G.clear_failure(spec)
            err = last_error(spec)
            text = f": test error {err:.2f}%" if err is not None else ""
            robust = attack_result(spec)
            text += f"; {robust}" if robust else ""
            self.say(f"{n} done {spec.key} in {outcome.seconds:.1f} s{text}")
        elif outcome.status == "failed":
            line = G.write_failure(spec, outcome.returncode, outcome.attempts) or outcome.last_line
            code = f" (exit {outcome.returncode})" if self._exit_code_in_failure else ""
            self.say(f"{n} FAILED {spec.key}{code} after {outcome.attempts} tries: {line}")
            outcome = replace(outcome, last_line=line)
        return outcome


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


@contextlib.contextmanager
def signals_to(record: Callable[[int], None]) -> Iterator[None]:
    """While the grid runs, SIGINT and SIGTERM are handed to ``record`` (the loop reads what it holds between
    its checks), whatever this process inherited: a command started with SIGINT ignored (a background job of
    a shell script) stops on Ctrl-C as its runs do, and no signal arrives as an exception in the middle of
    the bookkeeping. The handlers it replaced are put back at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: record(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def ctrl_c_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt for as long as the command runs, even when it was started with SIGINT
    ignored: `wrn train` stops on it whatever it inherited, so the command that starts the runs must too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


class _LocalGrid:
    """Runs :func:`execute` in a pool of ``jobs`` threads, each waiting on its run's child process.

    Slot ``i`` (the lowest free one is taken) pins its run to GPU ``gpus[i % len(gpus)]``. SIGTERM or Ctrl-C
    stops the grid: every running child is asked to checkpoint and stop, and waited for.
    """

    def __init__(self, specs: list[G.RunSpec], jobs: int, gpus: list[str], say: Callable[[str], None]):
        self.tally = Tally(len(specs), say)
        self.queue: deque[G.RunSpec] = deque(specs)
        self.waiting: list[G.RunSpec] = []  # runs whose lock another process holds
        self.slots = list(range(jobs))  # free slots, a heap
        self.jobs, self.gpus = jobs, gpus
        self.threads = None
        if not gpus and jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
            self.threads = str(max(1, (os.cpu_count() or 1) // jobs))
        self.futures: dict[Future, tuple[G.RunSpec, int]] = {}
        self.children: dict[str, subprocess.Popen] = {}  # run key -> its running child (under tally.lock)
        self.stop: list[int] = []  # the signal that stops the grid
        self.last_busy_check = 0.0
        self.told_waiting = False

    def run(self) -> Summary:
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="wrn-run")
        try:
            with signals_to(self.stop.append):
                try:
                    while (self.queue or self.futures or self.waiting) and not self.stop:
                        self._start_ready(pool)
                        self._collect()
                        self._look_at_waiting()
                finally:
                    if self.futures:
                        self._stop_all()
        finally:
            pool.shutdown(wait=True)
        if self.stop:
            self.tally.summary.interrupted = self.stop[0]
        return self.tally.summary

    def _start_ready(self, pool: ThreadPoolExecutor) -> None:
        while self.queue and self.slots and not self.stop:
            spec = self.queue.popleft()
            if self.tally.skip_if_done(spec):
                continue
            slot = heapq.heappop(self.slots)
            env = {}
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
            if self.threads:
                env["OMP_NUM_THREADS"] = self.threads
            self.futures[pool.submit(execute, spec, env, self._launch)] = (spec, slot)

    def _launch(self, spec, args, env, lock_fd, what) -> subprocess.Popen | None:
        """execute()'s launcher, in a pool thread: start the child (unless stopping), keep it, say so."""
        with self.tally.lock:
            if self.stop:
                return None
            proc = launch(spec, args, env, lock_fd, what)
            self.children[spec.key] = proc
            t = self.tally
            pin = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if self.gpus else ""
            retry = " (retry)" if t.attempts[spec.key] else ""
            n = t.finished + len(self.children)
            t.say(f"[{n}/{t.total}] {what}{retry} {spec.key}{pin}: log {spec.log_path}")
            return proc

    def _collect(self, stopping: bool = False) -> None:
        """Hand every run that has ended to the tally (waiting up to POLL_S for one)."""
        if not self.futures:
            if self.waiting:
                time.sleep(POLL_S)
            return
        ended, _ = wait(self.futures, timeout=POLL_S, return_when=FIRST_COMPLETED)
        for future in sorted(ended, key=lambda f: self.futures[f][1]):
            spec, slot = self.futures.pop(future)
            heapq.heappush(self.slots, slot)
            with self.tally.lock:
                self.children.pop(spec.key, None)
            if stopping and future.exception() is not None:
                outcome = Outcome(spec.key, "interrupted")
            else:
                outcome = future.result()
            action = self.tally.handle(spec, outcome, stopping=stopping or bool(self.stop))
            if action == "busy":
                self.waiting.append(spec)
            elif action == "retry":
                self.queue.appendleft(spec)

    def _look_at_waiting(self) -> None:
        """Every BUSY_RETRY_S, try the runs another process holds again (saying so once, when nothing else
        is left), once every run in flight has got past its lock."""
        if not self.waiting or time.monotonic() - self.last_busy_check < BUSY_RETRY_S:
            return
        with self.tally.lock:
            if len(self.futures) > len(self.children):
                return
        if not self.futures and not self.queue and not self.told_waiting:
            names = ", ".join(s.key for s in self.waiting)
            self.tally.say(
                f"waiting for {len(self.waiting)} run(s) that another process is training: {names}"
            )
            self.told_waiting = True
        self.last_busy_check = time.monotonic()
        self.queue.extend(self.waiting)
        self.waiting.clear()

    def _stop_all(self) -> None:
        """Ask every running child to checkpoint and stop (SIGTERM), and wait for them; a Ctrl-C meanwhile
        kills them."""
        with self.tally.lock:
            if not self.stop:  # an error in the loop: no new child starts from now on
                self.stop.append(signal.SIGINT)
            running = list(self.children.values())
        if running:
            self.tally.say(
                f"stopping {len(running)} run(s): each saves a checkpoint first (Ctrl-C again to kill them now)"
            )
        self._signal_children(signal.SIGTERM)
        asked = len(self.stop)
        killed = False
        while self.futures:
            if not killed and signal.SIGINT in self.stop[asked:]:
                self._signal_children(signal.SIGKILL)
                killed = True
            self._collect(stopping=True)

    def _signal_children(self, signum: int) -> None:
        with self.tally.lock:
            running = list(self.children.values())
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signum)


def run_local(
    specs: list[G.RunSpec], jobs: int, gpus: list[str], say: Callable[[str], None] = print
) -> Summary:
    """Train ``specs`` with ``jobs`` children at once, child i pinned to GPU ``gpus[i % len(gpus)]``."""
    return _LocalGrid(specs, jobs, gpus, say).run()


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


def _ray_outcome(ray, ref, spec: G.RunSpec) -> Outcome:
    try:
        return ray.get(ref)
    except Exception as exc:  # the worker died twice, or the task could not run
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return Outcome(spec.key, "failed", last_line=reason)


def run_ray(
    ray,
    specs: list[G.RunSpec],
    gpus_per_run: float | None,
    cpus_per_run: float,
    jobs: int | None,
    say: Callable[[str], None] = print,
) -> Summary:
    """One Ray task per run (a worker that dies has its task retried by Ray); results on a shared disk."""
    if gpus_per_run is None:
        gpus_per_run = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    env = {"OMP_NUM_THREADS": str(max(1, int(cpus_per_run)))}
    task = ray.remote(execute).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=1)
    tally = Tally(len(specs), say, exit_code_in_failure=False)
    queue: deque[G.RunSpec] = deque(specs)
    in_flight: dict[Any, G.RunSpec] = {}
    limit = jobs or len(specs)
    try:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                spec = queue.popleft()
                if tally.skip_if_done(spec):
                    continue
                in_flight[task.remote(spec, env, launch_for_ray)] = spec
                retry = " (retry)" if tally.attempts[spec.key] else ""
                n = tally.finished + len(in_flight)
                say(f"[{n}/{tally.total}] submitted{retry} {spec.key}: log {spec.log_path}")
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                spec = in_flight.pop(ref)
                action = tally.handle(spec, _ray_outcome(ray, ref, spec))
                if action == "busy":
                    time.sleep(BUSY_RETRY_S)
                    queue.append(spec)
                elif action == "retry":
                    queue.appendleft(spec)
    except KeyboardInterrupt:
        say(f"stopping {len(in_flight)} Ray task(s): their runs save a checkpoint and stop")
        for ref in in_flight:
            ray.cancel(ref)
        tally.summary.interrupted = signal.SIGINT
    return tally.summary


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
        G.check_generated(plan)
        G.write_experiment(plan, existing)
        for spec in plan.todo:
            G.write_config(plan, spec)
        done = sum(s.finished() for s in plan.todo)
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
            return run_local(plan.todo, jobs, gpus, say)
        return run_ray(ray, plan.todo, gpus_per_run, cpus_per_run, jobs, say)
    finally:
        if ray is not None:
            ray.shutdown()


def run_bench(out: Path, options: list[str], say: Callable[[str], None] = print) -> Summary:
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
    lock = RunLock(out / ".figure4.lock")
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
