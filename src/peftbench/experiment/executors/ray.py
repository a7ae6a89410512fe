"""The Ray executor: each run is one Ray task that starts a fresh `peftbench run` process on its
worker, over every GPU of this machine (a fresh local Ray instance, started and stopped here) or
of a running cluster (`--address`: `auto`, or an address checked to answer before Ray joins it).

The driver (this process) keeps everything that decides what runs and where results go:
- it checks each item is still stale and takes the experiment's lock (record/lock.py) before
  submitting it, and holds the lock until the result is written, so two drivers on one suite
  never run the same experiment twice;
- it ships the experiment and the local files its config names (staging.py) and writes the
  returned result and predictions into the suite's folders, as a local run would;
- it compares the run key the worker computed with its own: a different key (another library
  version on that node) is written but reported, never taken as up to date.

Faults. A lost node or a killed worker process is Ray's to retry (`max_retries`, default 1):
the summary says how often a run was started again. A run that fails by itself has written a
failed result, which comes back like any other; it is not retried (`retry_exceptions` stays off).
Ctrl+C or SIGTERM on the driver sets a flag the tasks poll: a running child gets SIGINT and
records itself as cancelled, a task not started yet returns at once ("not started"). A second
Ctrl+C, or a child that takes longer than CANCEL_GRACE_S to stop, ends the tasks by force.

Progress: a line on stderr whenever something changes (and every PROGRESS_EVERY_S), saying what
is pending, running (node, elapsed) and done, and, once, the Ray dashboard's address.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peftbench.errors import UserError
from peftbench.experiment import planning
from peftbench.experiment import suite as S
from peftbench.experiment.config import load_experiment, parse_overrides, suite_default_seed
from peftbench.experiment.executors import child, staging
from peftbench.experiment.executors.base import Outcome, Outcomes, RunItem, Settings
from peftbench.experiment.executors.local import recheck
from peftbench.fs import cache_root
from peftbench.record import provenance, runkey
from peftbench.record import lock as L
from peftbench.record.hardware import resolve_device
from peftbench.record.results import predictions_path_for

AUTO = "auto"  # --address auto: join the cluster Ray finds (RAY_ADDRESS, the last `ray start`)
LOCAL = "local"  # ray.init's word for "start a fresh instance here", whatever else is running
RAY_CLIENT_PREFIX, RAY_CLIENT_PORT = "ray://", 10001
CONNECT_TIMEOUT_S = 10  # a live head answers a TCP connect in milliseconds, even across a cluster
CANCEL_GRACE_S = 300  # a cancelled child writes its result within seconds; a long eval batch may take minutes
PROGRESS_EVERY_S = 30
POLL_S = 1.0  # how often a task looks at the cancel flag, and the driver at its tasks


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, an optional extra: pip install 'peftbench[ray]'") from None
    return ray


def execute(items: list[RunItem], settings: Settings) -> Outcomes:
    ray = import_ray()
    owned = not ray.is_initialized()
    if owned:
        _connect(ray, settings.address)
    try:
        return _Driver(ray, items, settings).run()
    finally:
        if owned:
            ray.shutdown()


def _connect(ray, address: str | None) -> None:
    """Start a fresh Ray instance here (no --address), or join the cluster at `address` after
    checking that it answers. Without an address, ray.init would join whatever cluster
    RAY_ADDRESS or /tmp/ray/ray_current_cluster names, which may be a stranger's or a dead one."""
    if address is not None:
        check_reachable(address)
    # The children's log text stays in their run folder on the worker (its end comes back with
    # the result): several runs printing progress bars into one terminal would be unreadable.
    try:
        context = ray.init(address=address or LOCAL, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a Ray instance on this machine"
        raise UserError(f"cannot start or reach {where}: {exc}") from None
    url = getattr(context, "dashboard_url", None)
    resources = ray.cluster_resources()
    print(f"run-all: Ray {'cluster ' + address if address else 'instance on this machine'}: "
          f"{len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s)"
          + (f"; dashboard http://{url}" if url and not str(url).startswith("http") else
             f"; dashboard {url}" if url else ""), file=sys.stderr, flush=True)


def check_reachable(address: str) -> None:
    """UserError, naming the address, unless something accepts a TCP connection at it within
    CONNECT_TIMEOUT_S. ray.init retries a dead address for as long as it is left running, printing
    GCS warnings; a refused port is known at once. `auto` is resolved as Ray resolves it
    (RAY_ADDRESS, then the cluster `ray start` started last). An address without a port is left
    to Ray."""
    resolved = _resolve_auto() if address == AUTO else address
    if resolved is None:
        return
    host_port = _host_port(resolved)
    if host_port is None:
        return
    shown = repr(address) + (f" ({resolved})" if resolved != address else "")
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:  # refused, no route, unknown host, or no answer within the timeout
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UserError(f"cannot reach the Ray cluster at {shown}: {reason}. Give the address of a running "
                        "cluster's head (HOST:6379, or ray://HOST:10001 for Ray Client), or leave --address "
                        "out to start a Ray instance on this machine") from None


def _resolve_auto() -> str | None:
    """The address `ray.init(address="auto")` would join; None when Ray's lookup is not where
    this version of Ray kept it (Ray then resolves it itself, unchecked)."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:
        return None
    try:
        return get_ray_address_from_environment(AUTO, None)
    except ConnectionError as exc:
        raise UserError(f"--address auto: no running Ray cluster found ({exc}); start one with `ray start --head`, "
                        "or leave --address out to start a Ray instance on this machine") from None


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT`, `[IPv6]:PORT` or `ray://HOST[:PORT]` (Ray Client, port 10001
    by default); None for anything else."""
    default_port = None
    if address.startswith(RAY_CLIENT_PREFIX):
        address, default_port = address[len(RAY_CLIENT_PREFIX):], RAY_CLIENT_PORT
    elif "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or host.endswith(":"):
        host, port = address, default_port
    host = host.strip("[]")
    if not host or port is None:
        return None
    return host, int(port)


# ----------------------------------------------------------------------------------------------
# the board: where tasks say they started and learn that the driver cancels


class Board:
    """A small Ray actor on the driver's node (it must outlive any worker node)."""

    def __init__(self):
        self._cancelled = False
        self._starts: dict[int, list[tuple[str, float]]] = {}

    def started(self, index: int, node: str) -> None:
        self._starts.setdefault(index, []).append((node, time.time()))

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def starts(self) -> dict[int, list[tuple[str, float]]]:
        return self._starts


# ----------------------------------------------------------------------------------------------
# the task, on a worker


def run_task(index: int, b: staging.Bundle, sources: dict[str, Any], cmd_settings: Settings,
             seed: int, overrides: tuple[str, ...], expected_run_key: str, board) -> dict[str, Any]:
    """Run one experiment in a fresh child process on this worker; return what it wrote."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    gpus = ray.get_gpu_ids()  # what Ray gave this task (it sets CUDA_VISIBLE_DEVICES, which the child inherits)
    node = f"{socket.gethostname()}:{node_id[:8]}" + (f" GPU {','.join(map(str, gpus))}" if gpus else "")
    if _value(board.cancelled.remote()):
        return {"node": node, "not_started": True}
    board.started.remote(index, node)

    cache = cache_root()
    # By node: nodes that share a file system (several on one machine) keep their runs apart.
    runs = cache / "ray-runs" / node_id[:12]
    runs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{b.method}--{b.name}-", dir=runs) as tmp:
        root = Path(tmp)
        exp_dir = staging.write_experiment(root / "suite", b)
        staged = {name: str(staging.unpack_source(cache, src, _value(sources[src.sha256])))
                  for name, src in b.sources.items()}
        item = RunItem(exp_dir, seed, overrides)
        outcome_file = root / "outcome.json"
        cmd = child.command(item, cmd_settings, outcome_file, if_stale=False, expected_run_key=expected_run_key,
                            extra_overrides=tuple(f"{k}={v}" for k, v in staged.items()))
        with open(root / "run.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
                                    preexec_fn=_child_setup())  # noqa: PLW1509 - system calls only
            cancel_sent, asked = False, None
            while True:
                try:
                    code = proc.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                # Asked without waiting for the answer: it is read on a later pass once there.
                asked = asked or board.cancelled.remote().future()
                if asked.done():
                    if not cancel_sent and asked.result():
                        cancel_sent = True
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(signal.SIGINT)
                    asked = None
        reported = child.read_outcome(outcome_file)
        result_bytes = predictions = None
        if reported is not None and reported.get("status") in ("success", "failed", "cancelled") and reported.get("result_path"):
            result_path = Path(reported["result_path"])
            result_bytes = result_path.read_bytes()
            pred = predictions_path_for(result_path)
            predictions = pred.read_bytes() if pred.exists() else None
        log_tail = (root / "run.log").read_bytes()[-16384:].decode("utf-8", "replace")
    return {"node": node, "code": code, "reported": reported, "result": result_bytes, "predictions": predictions,
            "staged": staged, "log_tail": log_tail, "seconds": time.monotonic() - started}


def _value(ref):
    """The value of `ref`, waited for without `ray.get`. A task blocked in ray.get hands its CPUs
    back to Ray until it returns, and Ray starts another task on them meanwhile: a run that
    reserved --cpus-per-run would then share them with another for the rest of its life."""
    return ref.future().result()


def _child_setup():
    """What the child does between fork and exec: die when the Ray worker that started it dies
    (a lost worker is retried elsewhere; an orphan would train on, holding the GPU the retry is
    scheduled on), and take SIGINT as Ctrl+C again: Ray workers block it, and a blocked signal
    stays blocked across exec, so the child could not be cancelled. The worker has threads, so
    the function runs only system calls: libc's prctl is looked up here, before the fork."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None  # not Linux: an orphaned run then goes on to its end
    PR_SET_PDEATHSIG = 1

    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


# ----------------------------------------------------------------------------------------------
# the driver


@dataclass
class _Submitted:
    index: int
    item: RunItem
    stem: str
    run_key: str
    inputs: dict
    bundle: staging.Bundle
    lock: Any
    git: Any
    suite: Path
    ref: Any = None
    outcome: Outcome | None = None
    done: bool = False


@dataclass
class _Driver:
    ray: Any
    items: list[RunItem]
    settings: Settings
    outcomes: list[Outcome | None] = field(default_factory=list)
    running: list[_Submitted] = field(default_factory=list)
    git_cache: dict = field(default_factory=dict)
    refs: dict = field(default_factory=dict)  # sha256 -> object ref of a packed source, put once
    last_state: tuple | None = None
    last_print: float = 0.0

    def run(self) -> Outcomes:
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        self.board = ray.remote(Board).options(
            num_cpus=0, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote()
        gpus = self.settings.gpus_per_run
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.task = ray.remote(run_task).options(num_cpus=self.settings.cpus_per_run, num_gpus=gpus,
                                                 max_retries=self.settings.max_retries, retry_exceptions=False)
        # Children on other nodes print into files nobody watches: no progress bars.
        self.cmd_settings = replace(self.settings, progress=False)
        self.outcomes = [None] * len(self.items)
        result = Outcomes()
        try:
            with _Signals() as self.signals:
                for index, item in enumerate(self.items):
                    if self.signals.count:
                        break
                    self._submit(index, item)
                self._watch(stop=lambda: self.signals.count > 0)
                if self.signals.count:
                    result.interrupted = True
                    self._cancel()
        finally:
            for sub in self.running:
                if not sub.done:
                    sub.lock.release()
            with contextlib.suppress(Exception):
                ray.kill(self.board)
        result += [o if o is not None else Outcome(i, "not started", "run-all was cancelled")
                   for i, o in zip(self.items, self.outcomes)]
        return result

    def _submit(self, index: int, item: RunItem) -> None:
        """Check, lock, ship: or record why not."""
        now = recheck(item, self.settings)
        if now is not None:
            print(f"  {item.experiment} (seed {item.seed}): {now.detail}: not started", file=sys.stderr, flush=True)
            self.outcomes[index] = now
            return
        try:
            exp = load_experiment(item.path, dict(parse_overrides(list(item.overrides)), seed=item.seed))
            key, inputs = runkey.compute(exp, resolve_device(exp.train_config.device).split(":")[0])
            b, packed = staging.bundle(exp, runkey.SOURCE_FIELDS)
        except UserError as exc:
            self.outcomes[index] = Outcome(item, "invalid", " ".join(str(exc).split()), error=str(exc))
            return
        stem = S.result_stem(exp.method, exp.name, exp.train_config.seed, suite_default_seed(exp.suite_dir))
        lock = L.ExperimentLock(S.state_dir(exp.suite_dir) / "locks" / f"{stem}.lock",
                                log=lambda msg: print(msg, file=sys.stderr, flush=True))
        try:
            lock.acquire()
        except L.LockHeld as held:
            self.outcomes[index] = Outcome(item, "skipped", f"{held}")
            return
        git = self.git_cache.setdefault(exp.suite_dir, provenance.git_state(exp.suite_dir))
        if not self.settings.force:
            # Checked again under the lock: another driver may have finished it meanwhile.
            up_to_date = planning.find_up_to_date(exp.suite_dir, stem, key,
                                                  S.why_not_results(git, exp.config_overrides) is None)
            if up_to_date is not None:
                lock.release()
                self.outcomes[index] = Outcome(item, "skipped", f"up to date ({up_to_date})")
                return
        refs = {sha: self.refs.get(sha) or self.refs.setdefault(sha, self.ray.put(data)) for sha, data in packed.items()}
        sub = _Submitted(index, item, stem, key, inputs, b, lock, git, exp.suite_dir)
        sub.ref = self.task.remote(index, b, refs, self.cmd_settings, exp.train_config.seed, item.overrides, key,
                                   self.board)
        self.running.append(sub)
        why = f": {item.reason}" if item.reason else ""
        print(f"[{index + 1}/{len(self.items)}] {item.experiment} (seed {item.seed}){why}: submitted",
              file=sys.stderr, flush=True)

    def _watch(self, stop) -> None:
        """Collect finished tasks until none is left or `stop()` says so, showing progress."""
        pending = {sub.ref: sub for sub in self.running if not sub.done}
        while pending and not stop():
            ready, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
            for ref in ready:
                self._collect(pending.pop(ref))
            self._progress(pending.values())

    def _collect(self, sub: _Submitted) -> None:
        """Write what came back and judge it; the experiment's lock is released after."""
        from ray.exceptions import RayError, TaskCancelledError

        try:
            try:
                payload = self.ray.get(sub.ref)
            except TaskCancelledError:
                sub.outcome = Outcome(sub.item, "cancelled", "stopped by force; no result written")
                return
            except RayError as exc:
                # Lost more often than --max-retries allows, or the task itself broke: nothing came back.
                cause = getattr(exc, "cause", None) or exc
                message = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
                sub.outcome = Outcome(sub.item, "failed", f"{type(cause).__name__}: {message}; no result written",
                                      retried=self._retried(sub), error=str(exc))
                return
            sub.outcome = self._judge(sub, payload)
        finally:
            sub.done = True
            sub.lock.release()
            self.outcomes[sub.index] = sub.outcome
            o = sub.outcome
            print(f"  {sub.item.experiment} (seed {sub.item.seed}): {o.status}"
                  + (f" on {o.node}" if o.node else "") + f": {o.detail}", file=sys.stderr, flush=True)

    def _judge(self, sub: _Submitted, payload: dict[str, Any]) -> Outcome:
        import json

        if payload.get("not_started"):
            return Outcome(sub.item, "not started", "run-all was cancelled", node=payload["node"])
        reported = payload["reported"]
        path = None
        if payload["result"] is not None:
            path = staging.write_returned(sub.suite, sub.stem, payload["result"], payload["predictions"], sub.bundle,
                                          payload["staged"], sub.git)
            reported = dict(reported, result_path=str(path))
        outcome = child.judge(sub.item, payload["code"], reported, payload["seconds"], child.last_line(payload["log_tail"]))
        outcome.node, outcome.retried, outcome.result_path = payload["node"], self._retried(sub), path
        notes = []
        if outcome.status == "success" and reported.get("run_key_matched") is False:
            theirs = json.loads(payload["result"])["run_info"].get("run_key_inputs") if payload["result"] else None
            why = runkey.explain_difference(sub.inputs, theirs) if theirs else "run key differs"
            notes.append(f"not up to date: {why} on node {payload['node']}")
        if outcome.retried:
            notes.append(f"retried {outcome.retried}x after a lost node or worker")
        if notes:
            outcome.detail = "; ".join([outcome.detail, *notes])
        return outcome

    def _retried(self, sub: _Submitted) -> int:
        return max(0, len(self._starts().get(sub.index, [])) - 1)

    def _starts(self) -> dict[int, list[tuple[str, float]]]:
        try:
            return self.ray.get(self.board.starts.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - progress and retry counts are informative; never fail a run over them
            return {}

    def _progress(self, pending) -> None:
        starts = self._starts()
        now = time.time()
        running = [(sub, starts[sub.index][-1]) for sub in pending if sub.index in starts]
        state = (len(pending), tuple(sub.index for sub, _ in running))
        if state == self.last_state and time.monotonic() - self.last_print < PROGRESS_EVERY_S:
            return
        self.last_state, self.last_print = state, time.monotonic()
        done = sum(1 for o in self.outcomes if o is not None)
        where = ", ".join(f"{sub.item.experiment} on {node} {now - t:.0f}s" for sub, (node, t) in running)
        print(f"run-all: {len(pending) - len(running)} pending, {len(running)} running"
              + (f" ({where})" if where else "") + f", {done} done", file=sys.stderr, flush=True)

    def _cancel(self) -> None:
        """Tell every task to stop, give the running children time to record themselves as
        cancelled, then end what is left by force."""
        print("run-all: cancelling; the running experiments record themselves as cancelled "
              "(Ctrl+C again to stop them by force)", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            self.ray.get(self.board.cancel.remote(), timeout=30)
        deadline = time.monotonic() + CANCEL_GRACE_S
        self._watch(stop=lambda: self.signals.count > 1 or time.monotonic() > deadline)
        for sub in self.running:
            if not sub.done:
                self.ray.cancel(sub.ref, force=True)
        for sub in self.running:
            if not sub.done:
                self._collect(sub)


class _Signals:
    """Counts SIGINT and SIGTERM while the driver runs, instead of raising: an exception raised
    by a signal handler while Ray's core waits comes out as a SystemError. A signal the driver
    was started with ignored (nohup, a background job) stays ignored."""

    def __init__(self):
        self.count = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        self.count += 1

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handler)
            except ValueError:
                pass  # not the main thread: Python cannot install handlers there
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
