"""A run's result must land somewhere: its results folders are checked before training, and a
write that still fails at the end goes to a fallback folder instead of being lost. Its adapter
lands only where it replaces nothing but an earlier adapter (`check_adapter_dir`, --output-dir).

Training and evaluation can take hours; a results folder that cannot be written must cost
seconds, not the run. `check_writable` probes a folder (by creating and removing a temporary
file, because os.access says yes to root even on a folder it cannot use, such as a path that is
a file). If the final write fails anyway (disk full, permissions changed meanwhile),
`write_with_fallback` writes the same files to the first folder of `fallback_dirs` that takes
them and says where; the runner then exits 1."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from peftbench.errors import UserError
from peftbench.experiment.config import (ADAPTER_CONFIG_FILE, DEFAULTS_FILE, EXPERIMENTS_DIR, TRAINING_PARAMS_FILES,
                                         Experiment)
from peftbench.experiment.suite import state_dir

FALLBACK_DIR = "unwritten_results"  # under the suite's .peftbench/ (ignored by git)


def check_writable(folder: Path, what: str = "results") -> None:
    """UserError, naming the folder, when files cannot be created in `folder`. A folder that
    does not exist yet is judged by its nearest existing parent, and nothing is left behind."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    problem = None
    if not probe.is_dir():
        problem = f"{probe} is not a folder"
    else:
        try:
            with tempfile.TemporaryFile(dir=probe, prefix=".peftbench-write-check-"):
                pass
        except OSError as exc:
            problem = f"{probe}: {exc.strerror or exc}"
    if problem:
        raise UserError(f"cannot write {what} to {folder} ({problem}); make it writable, then run again. "
                        "Nothing was trained.")


# What PEFT's save_pretrained writes beside adapter_config.json: a folder holding one of them
# is a saved adapter, which a new run may write over; without them, the config is an experiment's.
ADAPTER_WEIGHTS_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def check_adapter_dir(folder: Path, exp: Experiment) -> None:
    """UserError, before anything runs, when saving the adapter (or the fully fine-tuned model)
    into `folder` would replace something that is not an earlier run's output: a folder inside
    the suite's experiments/ tree, the suite's own folder, an experiment's or suite's config, an
    adapter_config.json with no adapter weights beside it (an experiment's config, copied), or
    the local model the run starts from."""
    target = folder.expanduser().resolve()
    experiments = (exp.suite_dir / EXPERIMENTS_DIR).resolve()
    problem = None
    if target == experiments or experiments in target.parents:
        problem = f"it is inside the suite's {EXPERIMENTS_DIR}/ folder ({experiments})"
    elif target == exp.suite_dir.resolve():
        problem = "it is the suite's own folder"
    elif _is_local_model(exp.train_config.model_id, target):
        problem = "it is the model this run fine-tunes (model_id)"
    elif target.is_dir():
        configs = [name for name in (*TRAINING_PARAMS_FILES, DEFAULTS_FILE) if (target / name).is_file()]
        if configs:
            problem = f"it holds {configs[0]}: an experiment's or a suite's config"
        elif (target / ADAPTER_CONFIG_FILE).is_file() and not any((target / w).is_file() for w in ADAPTER_WEIGHTS_FILES):
            problem = f"it holds an {ADAPTER_CONFIG_FILE} with no adapter weights beside it: an experiment's config"
    if problem:
        raise UserError(f"--output-dir {folder}: {problem}; saving the adapter there would replace it. Give a new "
                        "folder, or one an earlier run saved its adapter into. Nothing was run.")


def _is_local_model(model_id: str, target: Path) -> bool:
    path = Path(model_id).expanduser()
    return path.is_dir() and path.resolve() == target


def fallback_dirs(suite_dir: Path) -> list[Path]:
    """Where a result goes when its own folder refuses it, in order of preference."""
    return [state_dir(suite_dir) / FALLBACK_DIR, Path(tempfile.gettempdir()) / f"peftbench-{FALLBACK_DIR}"]


def write_with_fallback(path: Path, write: Callable[[Path], None], fallbacks: list[Path],
                        log: Callable[[str], None]) -> tuple[Path, str | None]:
    """`write(path)`; when it raises OSError, `write(folder / path.name)` for each fallback folder
    until one works. Returns (where the files are, None) or (fallback path, what went wrong).
    OSError from every place is raised with all the reasons."""
    try:
        write(path)
        return path, None
    except OSError as exc:
        problem = f"could not write {path} ({type(exc).__name__}: {exc.strerror or exc})"
    reasons = [problem]
    for folder in fallbacks:
        target = folder / path.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write(target)
        except OSError as exc:
            reasons.append(f"could not write {target} ({exc.strerror or exc})")
            continue
        log(f"{problem}; the result is written to {target} instead: move it into {path.parent}/ when that folder is writable")
        return target, f"{problem}; written to {target} instead"
    raise OSError("; ".join(reasons))
