"""The names of a suite's files and folders: what makes a folder a suite and an experiment, and
where runs write.

A suite is `<suite>/default_training_params.json` beside `<suite>/experiments/<method>/<name>/`;
an experiment folder holds an adapter config, a training params file, or both. Defined here, below
the code that reads suites (experiment/) and the code that records runs (record/provenance: the
run output folders of every suite never make a git tree dirty), so that both name them alike."""

from __future__ import annotations

TRAINING_PARAMS_FILES = ("training_params.json", "training_parameters.json")  # the second: its older name
DEFAULTS_FILE = "default_training_params.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
EXPERIMENTS_DIR = "experiments"

RESULTS = "results"  # success on branch main with a clean tree, config as committed
TEMPORARY_RESULTS = "temporary_results"  # success anywhere else
CANCELLED_RESULTS = "cancelled_results"  # cancelled and failed runs
STATE_DIR = ".peftbench"  # checkpoints and locks of the suite; ignored by git and by the dirty check
