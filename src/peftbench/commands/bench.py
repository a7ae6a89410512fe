"""`peftbench bench`: evaluation engines and training loops measured in one process, on the same
machine, model and items."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from peftbench import tasks
from peftbench.analysis.texttable import format_table
from peftbench.commands.options import pin_cpu_kernels_if_deterministic
from peftbench.errors import ExitCode, UserError
from peftbench.experiment.config import load_experiment, parse_overrides
from peftbench.record import hardware
from peftbench.training import data, modeling
from peftbench.training import trainer_check as TC
from peftbench.training.evaluate import evaluate_rows

HELP = "measure the dynamic vs static evaluation engine and peftbench's loop vs HF Trainer + peft"
DESCRIPTION = """\
Two comparisons in one process, on the same machine and items:

  evaluation  the suite's base model (no adapter) generates for the first --items test items
              with eval_engine "static" (the reference loop) and "dynamic" (the default):
              wall time, new tokens/s, the share of items whose text is identical up to the
              grader's cut point, and the strict accuracy of each
  training    --steps steps of the training experiment with peftbench's training step and with
              HF Trainer + peft, from the same initial weights on the same batches, optimizer,
              schedule and clipping: tokens/s of each and the largest per-step loss difference

Each side runs --rounds times (default 2) in alternating order (A B, then B A), after an
untimed warm-up (a short generation with each engine, one training step), so that neither side
always runs first on a cold or a warm process;
the tables show the mean wall time and each round's ratio. Settings come from the experiment's
merged training parameters (suite defaults, its training_params.json, then --set); with
`deterministic: true` (the demo suite) the CPU kernels are pinned to AVX2 as `peftbench run` pins
them, and `--set deterministic=false` measures the machine's own. Other
processes on the machine slow both sides alike, not alike in every second: run it on an
otherwise idle machine for figures worth recording.

examples:
  peftbench bench demo/                                   # CPU: SmolLM2-135M, 100 test items
  peftbench bench demo/ --items 30 --steps 10 --json
  peftbench bench . --set device=cuda --items 200         # the MetaMathQA suite on a GPU
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default=".", help="suite folder (default: .)")
    parser.add_argument("--train-experiment", metavar="EXPERIMENT_DIR",
                        help="experiment to train (default: the suite's first experiments/lora/*)")
    parser.add_argument("--items", type=int,
                        help="test items to generate for (default: the suite's test_size, else 200)")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each loop (default: 20)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times each side is measured, in the order A B, B A, ... so that neither "
                             "always goes first; figures are means over the rounds (default: 2)")
    parser.add_argument("--only", choices=("eval", "train"), help="run one of the two comparisons")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training parameter of the experiment (repeatable), e.g. device=cuda")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    if args.items is not None and args.items < 1:
        raise UserError(f"--items must be >= 1, got {args.items}")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.rounds < 1:
        raise UserError(f"--rounds must be >= 1, got {args.rounds}")
    experiment = _train_experiment(Path(args.suite), args.train_experiment)
    overrides = parse_overrides(args.overrides)
    # as `peftbench run` does for a suite with deterministic: true (the demo), so that bench
    # measures the kernels the suite's runs use; before load_experiment, which loads torch
    pin_cpu_kernels_if_deterministic([experiment], overrides)
    exp = load_experiment(experiment, overrides)
    _quiet_libraries()
    report: dict[str, Any] = {"machine": _machine(exp.train_config), "experiment": exp.experiment_name}
    if args.only in (None, "eval"):
        report["eval"] = bench_eval(exp.train_config, args.items, args.rounds)
    if args.only in (None, "train"):
        report["train"] = bench_train(exp, args.steps, args.rounds)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return ExitCode.OK


def _train_experiment(suite: Path, given: str | None) -> Path:
    if given is not None:
        return Path(given)
    if not suite.is_dir():
        raise UserError(f"suite folder {str(suite)!r} does not exist")
    loras = sorted(p.parent for p in (suite / "experiments" / "lora").glob("*/adapter_config.json"))
    if not loras:
        raise UserError(f"{suite} has no experiments/lora/*/ to train; name one with --train-experiment")
    return loras[0]


def _quiet_libraries() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _machine(cfg) -> dict[str, Any]:
    import torch

    device = hardware.resolve_device(cfg.device)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else hardware.cpu_info().get("cpu_model")
    capability = torch.backends.cpu.get_cpu_capability()
    pinned = hardware.pinned_level(torch_capability=capability) is not None
    return {"device": device, "name": name, "torch_threads": torch.get_num_threads(), "dtype": cfg.dtype,
            "python": platform.python_version(), "torch": torch.__version__,
            "cpu_kernels": f"{capability} (pinned)" if pinned else capability}


def _orders(names: tuple[str, str], rounds: int) -> list[tuple[str, str]]:
    """A B, B A, A B, ...: each side goes first as often as the other (within one round), so
    that what drifts over the run (warm caches, the machine's clock, other load) weighs on both."""
    return [names if r % 2 == 0 else names[::-1] for r in range(rounds)]


def bench_eval(cfg, items: int | None, rounds: int = 2) -> dict[str, Any]:
    """Both engines on the base model and the first `items` test items, `rounds` times each."""
    import torch

    task = tasks.get(cfg.task)
    items = items or cfg.test_size or 200
    rows = task.load_eval_data(cfg.eval_dataset, 0, items).test[:items]
    device = hardware.resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    loaded = modeling.load_model(cfg, None, device)

    def evaluate(engine: str, subset, generation_kwargs):
        return evaluate_rows(loaded.model, loaded.tokenizer, subset, task=task, split="test",
                             template=cfg.query_template, batch_size=cfg.batch_size_eval,
                             generation_kwargs=generation_kwargs, engine=engine)

    # Untimed warm-up: the first forward passes pay for allocations and kernel selection.
    for engine in ("static", "dynamic"):
        evaluate(engine, rows[:2], {**cfg.generation_kwargs, "max_new_tokens": 4})
    outcomes: dict[str, list] = {"static": [], "dynamic": []}
    for order in _orders(("static", "dynamic"), rounds):
        for engine in order:
            outcomes[engine].append(evaluate(engine, rows, cfg.generation_kwargs))

    out: dict[str, Any] = {"items": len(rows), "model": cfg.model_id, "rounds": rounds}
    for engine, runs in outcomes.items():
        seconds, tokens = sum(o.seconds for o in runs), sum(o.generated_tokens for o in runs)
        first = runs[0]
        out[engine] = {"engine_used": first.engine, "seconds": seconds / rounds, "new_tokens": first.generated_tokens,
                       "tokens_per_s": tokens / seconds if seconds else None, "accuracy": first.accuracy,
                       "correct": sum(r[f"correct_{task.grade_names[0]}"] for r in first.rows),
                       "round_seconds": [o.seconds for o in runs],
                       # greedy generation on one machine: every round must write the same texts
                       "rounds_identical": all([r["generated"] for r in o.rows] == [r["generated"] for r in first.rows]
                                               for o in runs)}

    # the same text up to where the task's grades stop reading it (the dynamic engine stops there)
    def cut(text: str, row: dict[str, Any]) -> str:
        return text[:task.continuation_start(text, row)]

    same = sum(cut(a["generated"], r) == cut(b["generated"], r)
               for r, a, b in zip(rows, outcomes["static"][0].rows, outcomes["dynamic"][0].rows))
    out["identical_share"] = same / len(rows) if rows else None
    out["speedup"] = out["static"]["seconds"] / out["dynamic"]["seconds"] if out["dynamic"]["seconds"] else None
    out["round_speedups"] = [s.seconds / d.seconds if d.seconds else None
                             for s, d in zip(outcomes["static"], outcomes["dynamic"])]
    out["accuracy_difference_items"] = out["dynamic"]["correct"] - out["static"]["correct"]
    return out


def bench_train(exp, steps: int, rounds: int = 2) -> dict[str, Any]:
    """peftbench's training step and HF Trainer + peft over the same `steps` batches, `rounds`
    times each, every time from a fresh copy of the same initial weights."""
    import torch

    cfg, peft_config = exp.train_config, exp.peft_config
    device = hardware.resolve_device(cfg.device)

    def fresh_model():
        torch.manual_seed(cfg.seed)  # the same initial adapter for both loops
        return modeling.load_model(cfg, peft_config, device)

    loaded = fresh_model()
    train_rows, _ = tasks.get(cfg.task).load_train_rows(cfg.train_dataset, cfg.char_limit)
    samples = data.tokenize_train_rows(train_rows, loaded.tokenizer, cfg.query_template, cfg.max_seq_length)
    batches = TC.step_batches(samples, loaded.tokenizer, cfg, steps)
    TC.check_comparable(peft_config, batches[0], cfg)
    TC.run_peftbench(loaded.model, cfg, peft_config, device, batches[:1])  # untimed warm-up
    del loaded
    loops = {"peftbench": TC.run_peftbench, "hf_trainer": TC.run_hf_trainer}
    runs: dict[str, list] = {"peftbench": [], "hf_trainer": []}
    for order in _orders(("peftbench", "hf_trainer"), rounds):
        for name in order:
            runs[name].append(loops[name](fresh_model().model, cfg, peft_config, device, batches))

    out: dict[str, Any] = {"experiment": exp.experiment_name, "steps": steps, "tokens": runs["peftbench"][0].tokens,
                           "rounds": rounds}
    for name, done in runs.items():
        seconds = sum(r.seconds for r in done)
        out[name] = {"seconds": seconds / rounds, "tokens_per_s": sum(r.tokens for r in done) / seconds if seconds else None,
                     "losses": done[0].losses, "round_seconds": [r.seconds for r in done]}
    ours, theirs = out["peftbench"]["tokens_per_s"], out["hf_trainer"]["tokens_per_s"]
    out["throughput_ratio"] = ours / theirs if ours and theirs else None
    out["round_ratios"] = [t.seconds / o.seconds if o.seconds else None
                           for o, t in zip(runs["peftbench"], runs["hf_trainer"])]
    # every round of both loops against the first of peftbench's: the same losses or a difference
    reference = runs["peftbench"][0].losses
    out["max_loss_rel_diff"] = max(TC.max_relative_difference(r.losses, reference)
                                   for done in runs.values() for r in done)
    return out


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"machine: {m['name']} ({m['device']}, {m['cpu_kernels']} CPU kernels, {m['torch_threads']} torch "
             f"threads, {m['dtype']}, torch {m['torch']})"]
    if "eval" in report:
        e = report["eval"]
        lines += ["", f"evaluation: {e['model']}, base model, {e['items']} test items, "
                      f"{_rounds(e['rounds'])} (wall s: the mean)"]
        body = [[name, e[name]["engine_used"], f"{e[name]['seconds']:.2f}", str(e[name]["new_tokens"]),
                 f"{e[name]['tokens_per_s']:.1f}", f"{100 * e[name]['accuracy']:.1f}% ({e[name]['correct']})"]
                for name in ("static", "dynamic")]
        lines.append(format_table(["engine", "ran", "wall s", "new tokens", "new tok/s", "accuracy"], body,
                                  right=[False, False, True, True, True, True], rule=True))
        lines.append(f"dynamic vs static: {e['speedup']:.2f}x faster ({_each(e['round_speedups'])}); "
                     f"{100 * e['identical_share']:.0f}% of items identical up to the grader's cut point; "
                     f"accuracy {e['accuracy_difference_items']:+d} items")
        for name in ("static", "dynamic"):
            if not e[name]["rounds_identical"]:
                lines.append(f"warning: the {name} engine wrote different texts in different rounds")
    if "train" in report:
        t = report["train"]
        lines += ["", f"training: {t['experiment']}, {t['steps']} steps, {t['tokens']} tokens, "
                      f"{_rounds(t['rounds'])} (wall s: the mean)"]
        body = [[name, f"{t[key]['seconds']:.2f}", f"{t[key]['tokens_per_s']:.1f}"]
                for name, key in (("peftbench loop", "peftbench"), ("HF Trainer + peft", "hf_trainer"))]
        lines.append(format_table(["loop", "wall s", "tokens/s"], body, right=[False, True, True], rule=True))
        lines.append(f"peftbench vs Trainer: {t['throughput_ratio']:.2f}x tokens/s ({_each(t['round_ratios'])}); "
                     f"largest per-step loss difference {100 * t['max_loss_rel_diff']:.4f}% relative")
    return "\n".join(lines)


def _rounds(n: int) -> str:
    return "1 round" if n == 1 else f"{n} rounds in alternating order"


def _each(ratios: list) -> str:
    return "rounds: " + ", ".join("n/a" if r is None else f"{r:.2f}x" for r in ratios)
