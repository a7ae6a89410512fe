"""peftbench: a reproducible benchmark of PEFT methods on several tasks (MetaMathQA -> GSM8K,
commonsense reasoning, the CPU demo's two tasks).

Code map: one line per folder, what lives there and what it may import. Layers import only
the ones above them in this list; nothing imports `commands`, and torch, transformers and peft
are imported inside the functions that need them, never when a module is imported.

    errors.py fs.py identity.py  exit codes, errors and "did you mean"; atomic write, sha256, JSON,
                    the cache folder; identities of local files and hub revisions  (stdlib only)
    scoring/        the GSM8K grader's pure rules; the Math-Verify worker apart; the code sandbox and
                    HumanEval grading  (nothing else of peftbench but errors, no torch)
    demo/           the demo's two data generators and the packaged SmolLM2 model     (errors, fs)
    tasks/          one module per task (metamathqa, commonsense, demo:word-problems, demo:list-ops):
                    its data, prompt, grader, stop point, metrics; the registry
                    (errors, fs, identity, scoring, demo; no torch)
    experiment/     what to run: typed config, suites, catalog, planning, executors  (errors, fs, tasks,
                    record; no torch; training only inside functions, e.g. device and model identity)
    record/         what a run records: result schema and loader, run key, identity, provenance, locks
                    (errors, fs, experiment; training only inside functions, e.g. the run key's)
    training/       how a run is made: runner (the phases), loop, evaluate, data, modeling, methods,
                    checkpoint, reproduction (everything above; the run key hashes this folder)
    analysis/       how results are read: leaderboard (one per task), cross-task view, stats, filters,
                    families, HTML report  (errors, tasks, experiment, record; no torch)
    capabilities/   `list --capabilities`: merge/unmerge/multi-adapter checks on a tiny model (training)
    commands/       one module per subcommand, thin; `cli.py` wires them up     (anything)

One `peftbench run experiments/lora/x/`, from the command line to the written result:

    cli.main                              parse, pick commands/run, a UserError -> exit 2
    commands/run.run                      experiment/config.load_experiment -> Experiment (typed
                                          TrainConfig + PEFT config), training/meta_check.check_builds
                                          (model and adapter on the meta device), then per seed:
    training/runner.run_experiment        record/lock.ExperimentLock, then the phases:
      _record_static_info                 record/provenance.git_state, command, host, configs
      _preflight                          device, record/runkey.compute (bad input: nothing written)
      _setup                              the task's loaders (tasks/<task>), training/modeling.load_model,
                                          versions and dataset/model identities (meta_info)
      _train                              training/loop.run_training: train_step -> validate
                                          (training/evaluate + the task's grader) -> checkpoint
      _test                               the task's test sets, graded the same way
      _finish                             the adapter saved, sizes counted
      _write_result                       experiment/suite.checked_result_path picks results/,
                                          temporary_results/ or cancelled_results/;
                                          record/results.write_predictions, fs.atomic_write_json
"""

__version__ = "0.1.0"
