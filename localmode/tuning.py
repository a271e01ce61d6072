"""Hyperparameter tuning with Optuna: local mode's stand-in for the SageMaker tuning job.

Same search space and objective as the AWS pipeline, both read from imgclf.contract: each trial is a
training job (localmode.training_job) scored by the last "average test loss" its log prints, read with the
tuning job's own regex. TPE sampler; a median pruner fed with the objective after every epoch (SageMaker's
"early stopping: Auto" looks at the same intermediate values); SQLite storage, so a run that was
interrupted resumes with the trials it had finished.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna

from imgclf import contract
from localmode.training_job import TrainingJob, TrainingJobFailed, run_training_job

FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
_OBJECTIVE_REGEX = re.compile(contract.METRIC_REGEXES[contract.OBJECTIVE_METRIC_NAME])


@dataclass(frozen=True)
class TuningResult:
    best_hyperparameters: dict[str, str]
    best_objective: float
    best_trial_number: int
    study: optuna.Study


def suggest_hyperparameters(trial: optuna.Trial) -> dict[str, str]:
    """One point of contract.SEARCH_SPACE, as SageMaker would pass it (strings)."""
    chosen: dict[str, str] = {}
    for parameter in contract.SEARCH_SPACE:
        if isinstance(parameter, contract.ContinuousParameter):
            value = trial.suggest_float(parameter.name, parameter.min_value, parameter.max_value,
                                        log=parameter.scaling == "Logarithmic")
            chosen[parameter.name] = f"{value:.6g}"
        else:
            chosen[parameter.name] = trial.suggest_categorical(parameter.name, list(parameter.values))
    return chosen


def open_study(storage_path: Path, study_name: str, seed: int = 0) -> optuna.Study:
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{storage_path}",
        load_if_exists=True,
        direction="minimize" if contract.OBJECTIVE_TYPE == "Minimize" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )


def finished_trial_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def tune(
    *,
    study: optuna.Study,
    trials_dir: Path,
    data_dir: Path,
    static_hyperparameters: Mapping[str, str | int | float],
    n_trials: int,
    parallel: int = 1,
    threads_per_trial: int | None = None,
    on_trial_done: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> TuningResult:
    """Run trials until `n_trials` have finished (completed or pruned), counting those of earlier runs."""
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        tuned = suggest_hyperparameters(trial)
        job = TrainingJob(
            name=f"trial-{trial.number:03d}",
            job_dir=trials_dir / f"trial-{trial.number:03d}",
            data_dir=data_dir,
            hyperparameters={**static_hyperparameters, **tuned},
            quoted_hyperparameters=frozenset(tuned),
            threads_per_process=threads_per_trial,
        )
        step = 0
        pruned = False

        def on_line(line: str) -> None:
            nonlocal step, pruned
            match = _OBJECTIVE_REGEX.search(line)
            if match:
                trial.report(float(match.group(1)), step)
                step += 1
                pruned = trial.should_prune()

        result = run_training_job(job, on_line=on_line, should_stop=lambda: pruned)
        if pruned:
            raise optuna.TrialPruned(f"pruned after {step} epochs")
        values = result.metric_series.get(contract.OBJECTIVE_METRIC_NAME)
        if not values or not math.isfinite(values[-1]):
            raise RuntimeError(f"{job.name} printed no '{contract.OBJECTIVE_METRIC_NAME}': see {job.log_path}")
        trial.set_user_attr("job_dir", str(job.job_dir))
        trial.set_user_attr("final_metrics", result.final_metrics)
        return values[-1]

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial_done is not None:
            with lock:
                on_trial_done(trial)

    def optimize(trials: int, workers: int) -> None:
        study.optimize(
            objective,
            n_trials=trials,
            n_jobs=workers,
            # A failed trial (say, a diverging learning rate) is recorded as failed; the tuning goes on.
            catch=(TrainingJobFailed,),
            # Stop exactly at n_trials finished trials, however many parallel workers are running.
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=FINISHED_STATES), callback],
        )

    remaining = max(0, n_trials - finished_trial_count(study))
    if remaining and parallel > 1 and not study.get_trials(deepcopy=False, states=FINISHED_STATES):
        # The first trial fills the shared feature cache; run it alone so parallel ones do not all pay for it.
        optimize(1, 1)
        remaining = max(0, n_trials - finished_trial_count(study))
    if remaining:
        optimize(remaining, parallel)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError("no tuning trial completed: see the trial logs under " + str(trials_dir))
    best = study.best_trial
    best_hyperparameters = {name: str(value) for name, value in best.params.items()}
    return TuningResult(best_hyperparameters=best_hyperparameters, best_objective=float(best.value),
                        best_trial_number=best.number, study=study)
