"""`peftbench list`: the experiment catalog of a suite, with each experiment's method family,
trainable parameters on the suite's model and its main result."""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path
from typing import Any

from peftbench.analysis import families
from peftbench.analysis.texttable import format_table
from peftbench.capabilities.matrix import build_meta_model
from peftbench.commands import list_capabilities
from peftbench.errors import ExitCode, ResultError, UserError
from peftbench.experiment import catalog, plan_cache
from peftbench.experiment.config import DEFAULTS_FILE, load_experiment
from peftbench.experiment.suite import RESULTS, result_stem
from peftbench.record.results import M_TEST_ACC, final_metrics, load
from peftbench.terminal import counted
from peftbench.training import methods

HELP = "list a suite's experiments: method family, trainable parameters, main result"
DESCRIPTION = """\
List every experiment of a suite (experiments/<method>/<name>/, found recursively), loaded as
`peftbench run` loads it, with:

  family, variant   the PEFT method and what sets the experiment apart inside it
  trainable         trainable parameters of the adapter on the experiment's model, counted on
                    an empty (meta-device) copy built from the model's config; only a local
                    folder or the Hugging Face cache is read, never the network
  result            whether the main result results/<method>--<name>.json exists
  test acc          its GSM8K test accuracy

Below the table: the PEFT methods of the installed peft that have no experiment, and the ones
left out on purpose with the reason.

Examples:
  peftbench list              the suite in the current folder
  peftbench list demo         the CPU demo suite
  peftbench list --no-params  skip building the model (fast)
  peftbench list --capabilities   what each method can do: merge, unmerge, several adapters,
                                  int8/int4 base (about 2 min the first time, then cached)
"""

NO_MODEL_CONFIG = "model config not available offline"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default=".", metavar="SUITE",
                        help="suite folder holding experiments/ and default_training_params.json (default: .)")
    parser.add_argument("--no-params", action="store_true",
                        help="do not count trainable parameters (no model config is read)")
    parser.add_argument("--capabilities", action="store_true",
                        help="print the capability matrix instead: per experiment, whether its adapter merges "
                             "into the base weights, unmerges, loads beside a second adapter, trains on an "
                             "int8/int4 base, and its trainable parameters and adapter size, measured on a tiny "
                             "model (cached in <suite>/.peftbench/capabilities/)")
    parser.add_argument("--refresh", action="store_true",
                        help="with --capabilities: measure again, ignoring the cache")


def run(args: argparse.Namespace) -> int:
    suite = Path(args.suite)
    if args.refresh and not args.capabilities:
        raise UserError("--refresh measures the capability matrix again: use it with --capabilities")
    if args.capabilities:
        return list_capabilities.run(suite, refresh=args.refresh)
    entries = catalog.catalog(suite)
    _check_suite_defaults(suite)
    counter = None if args.no_params else ParamCounter()
    # Without parameter counts nothing needs peft or torch: the configs come from the plan cache
    # that status and run-all share (experiment/plan_cache.py), loaded only when their files changed.
    cache = plan_cache.PlanCache(suite) if args.no_params else None
    rows, problems = [], []
    for entry in entries:
        row, problem = _row(suite, entry, counter, cache)
        rows.append(row)
        if problem:
            problems.append(f"{entry.experiment_name}: {problem}")
    header = ["family", "variant", "experiment", "trainable", "result", "test acc"]
    print(format_table(header, rows, right=[False, False, False, True, False, True], rule=True))
    print()
    print(_summary(suite, entries, counter, cache))
    if cache is not None:
        cache.save()
    for problem in problems:
        print(f"error: {problem}")
    return ExitCode.FAILED if problems else ExitCode.OK


def _check_suite_defaults(suite: Path) -> None:
    """A folder without default_training_params.json is not a suite (every experiment would fail to
    load for the same reason): bad input, said once, instead of one error line per experiment."""
    if not (suite / DEFAULTS_FILE).is_file():
        raise UserError(f"{str(suite)!r} is not a suite: it has no {DEFAULTS_FILE} (the defaults every experiment's "
                        "config builds on; a file holding {} takes the built-in ones)")


def _row(suite: Path, entry, counter: ParamCounter | None, cache=None) -> tuple[list[str], str | None]:
    try:
        exp = load_experiment(entry.path) if cache is None else plan_cache.load_experiment(entry.path, {}, cache)
    except UserError as exc:
        first_line = str(exc).splitlines()[0]
        return [entry.peft_type or "?", "", entry.experiment_name, "", "", ""], first_line
    seed = exp.train_config.seed
    family = families.family_name(exp.adapter_config, exp.train_config.to_dict())
    variant = families.variant_label(exp.adapter_config, exp.train_config.to_dict())
    trainable = "" if counter is None else counter.trainable(exp)
    path = suite / RESULTS / f"{result_stem(entry.method, entry.name, seed, seed)}.json"
    result, accuracy = "-", ""
    if path.is_file():
        try:
            acc = final_metrics(load(path)).get(M_TEST_ACC)
            result, accuracy = "yes", ("" if acc is None else f"{100 * acc:.1f}%")
        except ResultError as exc:
            result = f"unreadable result ({exc.reason})"
    return [family, variant if variant != family else "", entry.experiment_name, trainable, result, accuracy], None


def _summary(suite: Path, entries, counter: ParamCounter | None, cache=None) -> str:
    covered = catalog.covered_methods(entries)
    full = sum(1 for e in entries if e.peft_type is None)
    installed = catalog.installed_methods(None if cache is None else cache.peft_types())
    missing = [m for m in installed if m not in covered and m not in catalog.EXCLUDED_METHODS]
    lines = [f"{counted(len(entries), 'experiment')}: {len(covered)} of the {len(installed)} causal-LM methods of the "
             f"installed peft, and {full} full fine-tuning"]
    if missing:
        lines.append(f"without an experiment: {', '.join(missing)}")
    for name, reason in sorted(catalog.EXCLUDED_METHODS.items()):
        if name in installed and name not in covered:
            lines.append(f"left out: {name}: {reason}")
    if counter is not None and counter.unavailable:
        lines.append(f"trainable parameters: {NO_MODEL_CONFIG} for {', '.join(sorted(counter.unavailable))}")
    return "\n".join(lines)


class ParamCounter:
    """Counts trainable parameters of an experiment on an empty copy of its model.

    The model is built once per model id from its config on the meta device (no weights are
    read or allocated); each adapter is added with `low_cpu_mem_usage=True`, so its weights are
    not initialised either. The config comes from a local folder or the Hugging Face cache."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str | None], Any] = {}
        self.unavailable: set[str] = set()

    def trainable(self, exp) -> str:
        cfg = exp.train_config
        if cfg.max_steps == 0:  # an evaluation-only run (the "Base model" row) trains nothing
            return "0"
        model = self._meta_model(cfg.model_id, cfg.model_revision)
        if model is None:
            return "n/a"
        tokenizer = None
        if methods.traits(exp.peft_config).config_needs_tokenizer:  # CPT: its context length is in tokens
            tokenizer = self._tokenizer(cfg.model_id, cfg.model_revision)
            if tokenizer is None:
                return "n/a (no tokenizer offline)"
        try:
            return _human(_count_trainable(model, exp.peft_config, cfg.max_steps, tokenizer))
        except NotImplementedError:  # an initialisation that computes on the weights (SVD, clustering)
            return "n/a (init needs weights)"
        except Exception as exc:  # noqa: BLE001 - a count is informative, never fatal for the listing
            return f"n/a ({type(exc).__name__})"

    def _meta_model(self, model_id: str, revision: str | None):
        key = (model_id, revision)
        if key not in self._models:
            self._models[key] = build_meta_model(model_id, revision)
            if self._models[key] is None:
                self.unavailable.add(model_id)
        return self._models[key]

    def _tokenizer(self, model_id: str, revision: str | None):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(model_id, revision=revision, local_files_only=True)
        except (OSError, ValueError):
            return None


def _count_trainable(meta_model, peft_config, max_steps: int, tokenizer=None) -> int:
    model = copy.deepcopy(meta_model)
    if peft_config is None:
        return sum(p.numel() for p in model.parameters())
    from peft import get_peft_model

    config = methods.prepare_peft_config(peft_config, max(max_steps, 1), tokenizer=tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, config, low_cpu_mem_usage=True)
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
