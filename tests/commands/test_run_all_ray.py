"""run-all --executor ray on a real two-node Ray cluster on this machine (CPU only, loopback only).

One cluster serves the module: a head node and a worker node of one CPU each, both bound to
127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and node_ip_address), no dashboard, 150 MiB of
object store each, usage statistics off: no traffic leaves the loopback interface. The driver is
a `peftbench run-all` process, as a user would start it, so that Ctrl+C can be sent to it. The
worker node is removed by the last test. The first tests, on where the driver connects, start no
cluster: ray.init is replaced by a recorder. Skipped, with the reason, where the `ray` extra is
not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the ray extra is not installed: pip install 'peftbench[ray]'")

pytest.importorskip("torch")
pytest.importorskip("peft")

MiB = 1 << 20
LORA = "experiments/lora/tiny-r4"
FULL = "experiments/full-finetuning/tiny"
# Keys of a metrics entry that measure time or memory: they differ between any two runs.
_MEASURED = ("time", "/ sec", "mem", "rss")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(cluster, worker node, environment for drivers): two nodes of one CPU each on 127.0.0.1."""
    cache = tmp_path_factory.mktemp("peftbench-cache")
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "PEFTBENCH_CACHE": str(cache),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():  # the node processes inherit them
            mp.setenv(key, value)
        import ray._private.ray_constants as ray_constants
        from ray.cluster_utils import Cluster

        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # in case ray was imported before the env was set
        nodes = dict(num_cpus=1, object_store_memory=150 * MiB, node_ip_address="127.0.0.1")
        c = Cluster(initialize_head=True, head_node_args=dict(nodes, include_dashboard=False))
        try:
            worker = c.add_node(**nodes)
            c.wait_for_nodes()
            yield c, worker, {**os.environ, **env}
        finally:
            c.shutdown()


def drive(cluster, suite: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    c, _, env = cluster
    return subprocess.run(_driver_command(c, suite, *args), capture_output=True, text=True, env=env, timeout=timeout)


def start_driver(cluster, suite: Path) -> subprocess.Popen:
    # SIGINT as a terminal's foreground process has it: whoever started pytest may have left it
    # ignored (a background job), and an ignored signal stays ignored in the children.
    return subprocess.Popen(_driver_command(cluster[0], suite), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cluster[2], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _driver_command(c, suite: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "peftbench.cli", "run-all", str(suite), "--executor", "ray", "--address", c.address,
            "--cpus-per-run", "1", "--no-progress", *args]


def summary_lines(out: str) -> dict[str, str]:
    """experiment -> its line of the summary table."""
    table = out.split("RESULT OR REASON")[-1]
    return {line.split()[0]: line for line in table.splitlines() if line.strip() and "/" in line.split()[0]}


def results(suite: Path, folder: str) -> dict[str, dict]:
    from peftbench.record.results import load

    return {p.name.split("--2")[0]: load(p) for p in sorted((suite / folder).glob("*.json"))}


def comparable(result: dict) -> dict:
    """What must not depend on where a run ran: metrics without timings and memory, the
    predictions' hash and the adapter's hash."""
    info = result["run_info"]
    metrics = [{k: v for k, v in m.items() if not any(word in k for word in _MEASURED)}
               for m in result["train_info"]["metrics"]]
    return {"metrics": metrics, "predictions": info["predictions"]["sha256"], "adapter": info.get("adapter_sha256"),
            "status": result["train_info"]["status"]}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def training_on(cluster, node=None) -> list[Path]:
    """Checkpoints of runs under way (on `node`, else anywhere): training has passed an evaluation."""
    cache = Path(cluster[2]["PEFTBENCH_CACHE"]) / "ray-runs"
    return list(cache.glob(f"{node.node_id[:12] if node else '*'}/*/suite/.peftbench/checkpoints/*.pt"))


def ray_tasks_running() -> list[str]:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ray::run_task" in cmdline or ("peftbench.cli run " in cmdline and "ray-runs" in cmdline):
            found.append(cmdline)
    return found


# --- where the driver connects: no cluster is started ----------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): a connect is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_init_calls(monkeypatch) -> list:
    """The addresses ray.init is called with; each call then fails as an unreachable cluster would."""
    import ray

    calls = []

    def init(address=None, **kwargs):
        calls.append(address)
        raise ConnectionError("stopped by the test")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


@pytest.fixture
def stale_cluster_file(tmp_path, monkeypatch) -> str:
    """Ray's record of the cluster `ray start` started last (/tmp/ray/ray_current_cluster, here
    under RAY_TMPDIR), naming one long gone; its address."""
    address = f"127.0.0.1:{closed_port()}"
    ray_tmp = tmp_path / "ray-tmp"
    (ray_tmp / "ray").mkdir(parents=True)
    (ray_tmp / "ray" / "ray_current_cluster").write_text(address + "\n")
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    return address


def test_without_address_run_all_starts_a_fresh_local_instance_never_the_cluster_ray_last_joined(
        tiny_suite, stale_cluster_file, ray_init_calls, capsys):
    from peftbench.cli import main

    code = main(["run-all", str(tiny_suite), "--executor", "ray", "--no-progress"])
    assert ray_init_calls == ["local"]  # None would join the cluster in ray_current_cluster (or RAY_ADDRESS)
    assert code == 2
    assert "cannot start or reach a Ray instance on this machine: stopped by the test" in capsys.readouterr().err


def test_a_dead_address_is_refused_with_exit_2_naming_it_before_ray_tries_to_join(tiny_suite, ray_init_calls, capsys):
    from peftbench.cli import main

    address = f"127.0.0.1:{closed_port()}"
    code = main(["run-all", str(tiny_suite), "--executor", "ray", "--address", address, "--no-progress"])
    assert ray_init_calls == []  # ray.init retries a dead address for as long as it is left running
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Ray cluster at {address!r}: Connection refused" in err
    assert "leave --address out to start a Ray instance on this machine" in err


def test_address_auto_naming_a_cluster_that_is_gone_is_refused_with_exit_2(
        tiny_suite, stale_cluster_file, ray_init_calls, capsys):
    from peftbench.cli import main

    code = main(["run-all", str(tiny_suite), "--executor", "ray", "--address", "auto", "--no-progress"])
    assert ray_init_calls == [] and code == 2
    assert f"cannot reach the Ray cluster at 'auto' ({stale_cluster_file}): Connection refused" in capsys.readouterr().err


@pytest.mark.parametrize("address, host_port", [
    ("127.0.0.1:6379", ("127.0.0.1", 6379)), ("head.example:6380", ("head.example", 6380)),
    ("[::1]:6379", ("::1", 6379)), ("ray://head.example", ("head.example", 10001)),
    ("ray://head.example:10002", ("head.example", 10002)), ("head.example", None), ("::1", None),
    ("http://head.example:8265", None)])
def test_the_address_checked_is_the_host_and_port_ray_would_connect_to(address, host_port):
    from peftbench.experiment.executors.ray import _host_port

    assert _host_port(address) == host_port


def test_three_runs_on_two_nodes_equal_a_local_run_a_raising_run_fails_once_and_a_second_run_all_runs_nothing(
        cluster, make_suite, tiny_model_dir, tiny_lora, tmp_path):
    from peftbench.cli import main

    suite = make_suite(tmp_path / "suite", tiny_model_dir)
    r2 = suite / "experiments" / "lora" / "tiny-r2"
    r2.mkdir()
    (r2 / "adapter_config.json").write_text(json.dumps(dict(tiny_lora, r=2, lora_alpha=4)))
    local = Path(shutil.copytree(suite, tmp_path / "local"))  # same data files: the defaults name the originals
    # Its config passes every check before the run; loading its weights raises once the run has started.
    broken_model = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken-model"))
    (broken_model / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    broken = suite / "experiments" / "full-finetuning" / "a-broken-model"
    broken.mkdir()
    (broken / "training_params.json").write_text(json.dumps({"model_id": str(broken_model)}))

    done = drive(cluster, suite)
    assert done.returncode == 1, done.stderr  # one run failed
    lines = summary_lines(done.stdout)
    assert {k: v.split()[2] for k, v in lines.items()} == {
        "full-finetuning/a-broken-model": "failed", "full-finetuning/tiny": "success",
        "lora/tiny-r2": "success", "lora/tiny-r4": "success"}, done.stdout
    assert not any("retried" in line for line in lines.values()), done.stdout
    assert "ran 4 (3 success, 1 failed, 0 cancelled)" in done.stdout
    nodes = {line.split(" on ")[1].split(":")[1] for line in done.stderr.splitlines()
             if ": success on " in line or ": failed on " in line}
    assert len(nodes) == 2, done.stderr  # both nodes ran something

    # The results landed in the suite's own folders (outside git: temporary_results), with
    # their predictions beside them, and the failed run's result once, in cancelled_results.
    ray_results = results(suite, "temporary_results")
    assert sorted(ray_results) == ["full-finetuning--tiny", "lora--tiny-r2", "lora--tiny-r4"]
    assert len(list((suite / "temporary_results").glob("*.predictions.jsonl.gz"))) == 3
    failed = results(suite, "cancelled_results")
    assert list(failed) == ["full-finetuning--a-broken-model"]
    assert failed["full-finetuning--a-broken-model"]["train_info"]["status"] == "failed"
    for result in ray_results.values():  # what only the driver knows is the driver's
        assert result["run_info"]["train_config"]["model_id"] == str(tiny_model_dir)
        assert result["meta_info"]["model_info"]["id"] == str(tiny_model_dir)
        assert "ray-sources" not in json.dumps([result["run_info"]["train_config"], result["meta_info"]])
        assert result["run_info"]["suite"] == str(suite)

    # The same three runs here, in this process, with one thread as each Ray task has.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(local / LORA), str(local / FULL), str(local / "experiments/lora/tiny-r2"),
                     "--no-progress", "--clean"]) == 0
    finally:
        torch.set_num_threads(threads)
    local_results = results(local, "temporary_results")
    assert {k: comparable(v) for k, v in ray_results.items()} == {k: comparable(v) for k, v in local_results.items()}

    # Nothing is stale any more: the second run-all starts no task.
    shutil.rmtree(broken)
    again = drive(cluster, suite)
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout and "ran 0 (" in again.stdout
    assert "submitted" not in again.stderr
    assert len(list((suite / "temporary_results").iterdir())) == 6


def test_ctrl_c_on_the_driver_cancels_the_running_tasks_records_them_and_exits_130(
        cluster, make_suite, tiny_model_dir, tmp_path):
    from peftbench.experiment import planning

    suite = make_suite(tmp_path / "suite", tiny_model_dir, max_steps=3000, eval_steps=10)
    before = set(training_on(cluster))
    driver = start_driver(cluster, suite)
    try:
        wait_for(lambda: len(set(training_on(cluster)) - before) >= 2 or driver.poll() is not None, 180,
                 "both runs to pass their first evaluation")
        driver.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl+C
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, err
    lines = summary_lines(out)
    assert {k: v.split()[2] for k, v in lines.items()} == {"full-finetuning/tiny": "cancelled",
                                                           "lora/tiny-r4": "cancelled"}, out + err
    recorded = results(suite, "cancelled_results")
    assert {k: v["train_info"]["status"] for k, v in recorded.items()} == {
        "full-finetuning--tiny": "cancelled", "lora--tiny-r4": "cancelled"}
    assert not (suite / "temporary_results").exists()
    wait_for(lambda: not ray_tasks_running(), 30, "the Ray tasks and their runs to end")
    # A restarted run-all picks up exactly what is still stale.
    assert [i.reason for i in planning.plan([str(suite)], None)] == ["last attempt cancelled: KeyboardInterrupt"] * 2


def test_a_run_on_a_lost_node_is_retried_on_the_other_and_leaves_nothing_partial(
        cluster, make_suite, tiny_model_dir, tmp_path):
    c, worker, _ = cluster
    suite = make_suite(tmp_path / "suite", tiny_model_dir, max_steps=300, eval_steps=10)
    driver = start_driver(cluster, suite)
    try:
        wait_for(lambda: training_on(cluster, worker) or driver.poll() is not None, 180,
                 "a run to be training on the worker node")
        c.remove_node(worker)
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out + err
    lines = summary_lines(out)
    assert {k: v.split()[2] for k, v in lines.items()} == {"full-finetuning/tiny": "success",
                                                           "lora/tiny-r4": "success"}, out
    assert sum("retried 1x after a lost node or worker" in line for line in lines.values()) == 1, out
    # Exactly one result and one predictions file per experiment; no temporary or cancelled files.
    assert sorted(p.name.split("--2")[0] + ("" if p.suffix == ".json" else ".predictions")
                  for p in (suite / "temporary_results").iterdir()) == [
        "full-finetuning--tiny", "full-finetuning--tiny.predictions", "lora--tiny-r4", "lora--tiny-r4.predictions"]
    assert not (suite / "cancelled_results").exists()


def test_a_run_keeps_the_cpus_it_reserved_for_its_whole_life(cluster, make_suite, tiny_model_dir, tiny_lora, tmp_path):
    """Each node has one CPU and each run reserves one: never two runs on a node at once. A task
    that waited in ray.get (for the cancel flag, for its staged files) lent its CPU to Ray, which
    started the next run beside it."""
    import re
    import threading

    import psutil

    suite = make_suite(tmp_path / "suite", tiny_model_dir, max_steps=24, eval_steps=12)
    for r in (2, 3):
        folder = suite / "experiments" / "lora" / f"tiny-r{r}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(dict(tiny_lora, r=r, lora_alpha=2 * r)))
    most: dict[str, int] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            per_node: dict[str, int] = {}
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                found = re.search(r"ray-runs/([0-9a-f]{12})/", cmdline)
                if "peftbench.cli run " in cmdline and found:
                    per_node[found.group(1)] = per_node.get(found.group(1), 0) + 1
            for node, count in per_node.items():
                most[node] = max(most.get(node, 0), count)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        done = drive(cluster, suite)
    finally:
        stop.set()
        watcher.join()
    assert done.returncode == 0, done.stderr
    assert "ran 4 (4 success" in done.stdout, done.stdout
    assert most and max(most.values()) == 1, f"runs at once per node: {most}"
