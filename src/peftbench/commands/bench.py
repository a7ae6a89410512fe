"""`peftbench bench`: evaluation engines and training loops measured in one process, on the same
machine, model and items."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from peftbench.errors import ExitCode, UserError

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

Settings come from the experiment's merged training parameters (suite defaults, its
training_params.json, then --set). Other processes on the machine slow both sides alike, not
alike in every second: run it on an otherwise idle machine for figures worth recording.

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
    parser.add_argument("--only", choices=("eval", "train"), help="run one of the two comparisons")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training parameter of the experiment (repeatable), e.g. device=cuda")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    from peftbench.experiment.config import load_experiment, parse_overrides

    if args.items is not None and args.items < 1:
        raise UserError(f"--items must be >= 1, got {args.items}")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    exp = load_experiment(_train_experiment(Path(args.suite), args.train_experiment), parse_overrides(args.overrides))
    _quiet_libraries()
    report: dict[str, Any] = {"machine": _machine(exp.train_config), "experiment": exp.experiment_name}
    if args.only in (None, "eval"):
        report["eval"] = bench_eval(exp.train_config, args.items)
    if args.only in (None, "train"):
        report["train"] = bench_train(exp, args.steps)
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

    from peftbench.record import hardware
    from peftbench.training import modeling

    device = modeling.resolve_device(cfg.device)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else hardware.cpu_info().get("cpu_model")
    return {"device": device, "name": name, "torch_threads": torch.get_num_threads(), "dtype": cfg.dtype,
            "python": platform.python_version(), "torch": torch.__version__}


def bench_eval(cfg, items: int | None) -> dict[str, Any]:
    """Both engines on the base model and the first `items` test items."""
    import torch

    from peftbench.scoring.grader import continuation_start, grade
    from peftbench.training import data, modeling
    from peftbench.training.evaluate import evaluate_rows

    items = items or cfg.test_size or 200
    rows = data.load_eval_splits(cfg.eval_dataset, 0, items).test[:items]
    device = modeling.resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    loaded = modeling.load_model(cfg, None, device)
    out: dict[str, Any] = {"items": len(rows), "model": cfg.model_id}
    outcomes = {}
    for engine in ("static", "dynamic"):
        o = evaluate_rows(loaded.model, loaded.tokenizer, rows, split="test", template=cfg.query_template,
                          batch_size=cfg.batch_size_eval, generation_kwargs=cfg.generation_kwargs, grade=grade,
                          engine=engine)
        outcomes[engine] = o
        out[engine] = {"engine_used": o.engine, "seconds": o.seconds, "new_tokens": o.generated_tokens,
                       "tokens_per_s": o.generated_tokens / o.seconds if o.seconds else None,
                       "accuracy": o.accuracy, "correct": sum(r["correct_strict"] for r in o.rows)}

    def cut(text: str) -> str:
        return text[:continuation_start(text)]

    same = sum(cut(a["generated"]) == cut(b["generated"])
               for a, b in zip(outcomes["static"].rows, outcomes["dynamic"].rows))
    out["identical_share"] = same / len(rows) if rows else None
    out["speedup"] = outcomes["static"].seconds / outcomes["dynamic"].seconds if outcomes["dynamic"].seconds else None
    out["accuracy_difference_items"] = out["dynamic"]["correct"] - out["static"]["correct"]
    return out


def bench_train(exp, steps: int) -> dict[str, Any]:
    """peftbench's training step and HF Trainer + peft over the same `steps` batches."""
    import torch

    from peftbench.training import data, modeling
    from peftbench.training import trainer_check as TC

    cfg, peft_config = exp.train_config, exp.peft_config
    device = modeling.resolve_device(cfg.device)

    def fresh_model():
        torch.manual_seed(cfg.seed)  # the same initial adapter for both loops
        return modeling.load_model(cfg, peft_config, device)

    loaded = fresh_model()
    train_rows, _ = data.load_train_rows(cfg.train_dataset, cfg.char_limit)
    samples = data.tokenize_train_rows(train_rows, loaded.tokenizer, cfg.query_template, cfg.max_seq_length)
    batches = TC.step_batches(samples, loaded.tokenizer, cfg, steps)
    TC.check_comparable(peft_config, batches[0])
    ours = TC.run_peftbench(loaded.model, cfg, peft_config, device, batches)
    del loaded
    theirs = TC.run_hf_trainer(fresh_model().model, cfg, peft_config, device, batches)
    return {
        "experiment": exp.experiment_name, "steps": steps, "tokens": ours.tokens,
        "peftbench": {"seconds": ours.seconds, "tokens_per_s": ours.tokens_per_s, "losses": ours.losses},
        "hf_trainer": {"seconds": theirs.seconds, "tokens_per_s": theirs.tokens_per_s, "losses": theirs.losses},
        "throughput_ratio": ours.tokens_per_s / theirs.tokens_per_s if theirs.tokens_per_s else None,
        "max_loss_rel_diff": TC.max_relative_difference(ours.losses, theirs.losses),
    }


def render(report: dict[str, Any]) -> str:
    from peftbench.analysis.texttable import format_table

    m = report["machine"]
    lines = [f"machine: {m['name']} ({m['device']}, {m['torch_threads']} torch threads, {m['dtype']}, "
             f"torch {m['torch']})"]
    if "eval" in report:
        e = report["eval"]
        lines += ["", f"evaluation: {e['model']}, base model, {e['items']} test items"]
        body = [[name, e[name]["engine_used"], f"{e[name]['seconds']:.1f}", str(e[name]["new_tokens"]),
                 f"{e[name]['tokens_per_s']:.1f}", f"{100 * e[name]['accuracy']:.1f}% ({e[name]['correct']})"]
                for name in ("static", "dynamic")]
        lines.append(format_table(["engine", "ran", "wall s", "new tokens", "new tok/s", "accuracy"], body,
                                  right=[False, False, True, True, True, True], rule=True))
        lines.append(f"dynamic vs static: {e['speedup']:.2f}x faster; {100 * e['identical_share']:.0f}% of items "
                     f"identical up to the grader's cut point; accuracy {e['accuracy_difference_items']:+d} items")
    if "train" in report:
        t = report["train"]
        lines += ["", f"training: {t['experiment']}, {t['steps']} steps, {t['tokens']} tokens"]
        body = [[name, f"{t[key]['seconds']:.1f}", f"{t[key]['tokens_per_s']:.1f}"]
                for name, key in (("peftbench loop", "peftbench"), ("HF Trainer + peft", "hf_trainer"))]
        lines.append(format_table(["loop", "wall s", "tokens/s"], body, right=[False, True, True], rule=True))
        lines.append(f"peftbench vs Trainer: {t['throughput_ratio']:.2f}x tokens/s; largest per-step loss "
                     f"difference {100 * t['max_loss_rel_diff']:.4f}% relative")
    return "\n".join(lines)
