"""peftbench: a reproducible benchmark of PEFT methods on several tasks (MetaMathQA -> GSM8K,
commonsense reasoning, the CPU demo's two tasks).

Code map: one line per layer, in order, with what lives there and what it may import. A layer
imports only itself and the layers above it in this list (the parentheses say where it takes
fewer); nothing imports `commands` or `cli.py`. peftbench modules import each other at module
top, never inside a function, and the module-top graph has no cycle; heavy libraries (torch,
transformers, peft, numpy, pandas, ray, optuna, ...) are imported inside the functions that need
them, never when a module is imported. tests/test_import_boundaries.py holds all of this.

    __init__.py errors.py fs.py identity.py terminal.py signals.py
                    base: exit codes, errors and "did you mean"; atomic write, sha256, JSON, the
                    cache folder; identities of local files and hub revisions; text for the
                    terminal; SIGTERM as an exception           (the standard library; one another)
    scoring/        the GSM8K grader's pure rules, the Math-Verify worker apart; statistics of
                    graded items (intervals, paired tests); the code sandbox and HumanEval
                    grading                                                        (base; no torch)
    demo/           the demo's two data generators and the packaged SmolLM2 model            (base)
    tasks/          one module per task (metamathqa, commonsense, code, demo:word-problems,
                    demo:list-ops): its data, prompt, grader, stop point, metrics; the registry
                                                                    (base, scoring, demo; no torch)
    record/         what a run records: result schema and loader, run key (and the model identity
                    it hashes), provenance, locks, hardware and device, the suite's file names
                                                                       (base, scoring, demo, tasks)
    experiment/     what to run: typed config, suites, catalog, planning, plan cache, executors,
                    tuning                                                    (all above; no torch)
    training/       how a run is made: runner (the phases), loop, evaluate, data, modeling, methods,
                    checkpoint, reproduction            (all above; the run key hashes this folder)
    analysis/       how results are read: leaderboard (one per task), cross-task view, filters,
                    families, HTML report                        (all above but training; no torch)
    capabilities/   `list --capabilities`: merge/unmerge/multi-adapter checks on a tiny model
                                                                                        (all above)
    commands/       one module per subcommand, thin; `cli.py` wires them up              (anything)

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
