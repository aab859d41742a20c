"""`rlhf tune dqn|ppo`: hyperparameter search with Optuna, and a report of what mattered.

TPE sampler (Bergstra et al. 2011), median pruner on the intermediate greedy evaluation returns each trial reports,
the study in ``OUT/study.sqlite`` (the same command on the same ``--out`` resumes it), every trial a normal run
folder ``OUT/trials/trial-NNNN`` (``OUT/trials/trial-NNNN/seed-S`` per seed with ``--seeds-per-trial N > 1``), and
``OUT/best_config.json`` for ``rlhf dqn --config OUT/best_config.json``. With ``--seeds-per-trial N`` a trial trains
its config with seeds ``seed, ..., seed + N - 1`` one after the other and its objective is the mean of their final
returns: one seed's return rewards lucky seeds as much as good hyperparameters.
The report holds Optuna's plotly figures: optimization history, parameter importances (PED-ANOVA), parallel
coordinates, slices and the intermediate values (learning curves) of every trial.

A new algorithm joins through one entry of ``algorithms()``: its config class (with ``defaults_for(env, **fields)``,
``eval_every``, ``eval_episodes``), its ``train(config, on_eval=...)`` and a search space.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import plotly.graph_objects as go
import sqlalchemy
import tyro

from baselines.common.envs import check_env_id
from baselines.common.errors import ConfigError, check
from baselines.common.report import Report
from baselines.common.runs import default_run_dir, to_jsonable, write_json

SearchSpace = Callable[[optuna.Trial, str], dict[str, Any]]


@dataclass(frozen=True)
class Algorithm:
    """What the tuner needs of an algorithm."""

    config_class: Any  # a config dataclass with ``defaults_for(env, **fields)``
    train: Callable[..., dict[str, Any]]  # ``train(config, on_eval=callback) -> summary``
    search_space: SearchSpace  # trial -> config field values


@dataclass(frozen=True)
class TuneConfig:
    """Search an algorithm's hyperparameters with Optuna; resumable; writes a report and the best config."""

    algo: tyro.conf.Positional[Literal["dqn", "ppo"]]
    """Algorithm to tune."""
    env: str = "CartPole-v1"
    """Gymnasium env id."""
    trials: int = 20
    """Trials in the study (finished and pruned ones count; a resumed study runs only the rest)."""
    total_steps: int | None = None
    """Env steps per trial (default: the algorithm's default for the env)."""
    evaluations: int = 5
    """Greedy evaluations per trial; their returns feed the median pruner."""
    eval_episodes: int = 5
    """Episodes per evaluation."""
    startup_trials: int = 5
    """Trials sampled at random (and never pruned against) before TPE and the pruner start."""
    seed: int = 0
    """Seed of the sampler and of every trial's first run (common random numbers across trials)."""
    seeds_per_trial: int = 1
    """Runs per trial, with seeds seed, seed+1, ..., seed+N-1; the objective is the mean of their final returns."""
    timeout: float | None = None
    """Stop starting new trials after this many seconds."""
    device: str = "cpu"
    """Torch device of each trial."""
    out: Path | None = None
    """Study folder (default runs/tune-<algo>-<env>-<time>)."""
    track: bool = False
    """Log every trial to wandb (offline unless logged in)."""

    def resolved(self) -> TuneConfig:
        check(self.algo in algorithms(), f"tuning {self.algo} needs baselines/{self.algo}.py, which is not here yet")
        check_env_id(self.env)
        check(self.trials >= 1, f"--trials must be at least 1, got {self.trials}")
        check(self.total_steps is None or self.total_steps >= 1, f"--total-steps must be positive: {self.total_steps}")
        check(self.evaluations >= 1 and self.eval_episodes >= 1, "--evaluations and --eval-episodes must be >= 1")
        check(self.seeds_per_trial >= 1, f"--seeds-per-trial must be at least 1, got {self.seeds_per_trial}")
        check(self.startup_trials >= 0, f"--startup-trials must be >= 0, got {self.startup_trials}")
        check(self.timeout is None or self.timeout > 0, f"--timeout must be positive seconds, got {self.timeout}")
        config_class = algorithms()[self.algo].config_class
        total_steps = self.total_steps or config_class.defaults_for(self.env).total_steps
        # What every trial shares (env, device, seed): checked once here, not failed by each trial in turn.
        config_class.defaults_for(
            self.env, total_steps=total_steps, seed=self.seed, device=self.device, eval_episodes=self.eval_episodes
        ).validate()
        out = self.out or default_run_dir(f"tune-{self.algo}", self.env)
        return dataclasses.replace(self, total_steps=total_steps, out=out)


# ----------------------------------------------------------------------------------------------- search spaces
def dqn_search_space(trial: optuna.Trial, env: str) -> dict[str, Any]:
    """rl-zoo's DQN space (its ``sample_dqn_params``), narrowed to classic control, plus this DQN's extensions."""
    train_freq = trial.suggest_categorical("train_freq", [1, 4, 16, 64, 256])
    replay_subsample = trial.suggest_categorical("replay_subsample", [1, 2, 4, 8])  # env steps per gradient step
    net = trial.suggest_categorical("net_arch", ["small", "medium"])
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "lr_schedule": trial.suggest_categorical("lr_schedule", ["constant", "linear"]),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "buffer_size": trial.suggest_categorical("buffer_size", [10_000, 50_000, 100_000]),
        "learning_starts": trial.suggest_categorical("learning_starts", [0, 1000, 5000]),
        "gamma": trial.suggest_categorical("gamma", [0.95, 0.98, 0.99, 0.995]),
        "target_update_interval": trial.suggest_categorical("target_update_interval", [1, 10, 100, 250, 1000]),
        "train_freq": train_freq,
        "gradient_steps": max(train_freq // replay_subsample, 1),
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0.05, 0.5),
        "exploration_final_eps": trial.suggest_float("exploration_final_eps", 0.0, 0.2),
        "hidden_sizes": {"small": (64, 64), "medium": (256, 256)}[net],
        "double_dqn": trial.suggest_categorical("double_dqn", [False, True]),
        "dueling": trial.suggest_categorical("dueling", [False, True]),
        "n_step": trial.suggest_categorical("n_step", [1, 3, 5]),
        "prioritized": trial.suggest_categorical("prioritized", [False, True]),
    }


def ppo_search_space(trial: optuna.Trial, env: str) -> dict[str, Any]:
    """rl-zoo's PPO space (its ``sample_ppo_params``), with the minibatch no larger than a rollout."""
    from baselines.ppo import PPOConfig

    num_envs = PPOConfig.defaults_for(env).num_envs
    num_steps = trial.suggest_categorical("num_steps", [16, 32, 64, 128, 256, 512, 1024, 2048])
    batch_size = trial.suggest_categorical("batch_size", [32, 64, 128, 256])
    net = trial.suggest_categorical("net_arch", ["small", "medium"])
    return {
        "num_steps": num_steps,
        "batch_size": min(batch_size, num_envs * num_steps),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 5, 10, 20]),
        "gamma": trial.suggest_categorical("gamma", [0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.92, 0.95, 0.98, 1.0]),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "vf_coef": trial.suggest_float("vf_coef", 0.0, 1.0),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 0.8, 1.0, 2.0, 5.0]),
        "hidden_sizes": {"small": (64, 64), "medium": (256, 256)}[net],
        "activation": trial.suggest_categorical("activation", ["tanh", "relu"]),
    }


def algorithms() -> dict[str, Algorithm]:
    """The tunable algorithms: ``{name: Algorithm(config class, train function, search space)}``."""
    from baselines.dqn import DQNConfig, train_dqn

    table = {"dqn": Algorithm(DQNConfig, train_dqn, dqn_search_space)}
    try:
        from baselines.ppo import PPOConfig, train_ppo
    except ImportError:  # PPO not in this checkout
        return table
    table["ppo"] = Algorithm(PPOConfig, train_ppo, ppo_search_space)
    return table


# ----------------------------------------------------------------------------------------------- the study
def make_objective(cfg: TuneConfig, algorithm: Algorithm) -> Callable[[optuna.Trial], float]:
    """One trial: sample a config, train it once per seed in its own run folder, report evaluations, return the mean
    final return over the seeds.

    What the pruner sees stays comparable across trials: at each evaluation of the trial's k-th seed (k = 0, 1, ...)
    the trial reports the mean, over seeds 0..k, of their returns at that same evaluation, at step = the env steps
    of the seeds before it plus this evaluation's env steps. With one seed per trial that is the evaluation return
    at its env step, as before; at a given step every trial's value is a mean over the same seeds."""
    assert cfg.out is not None and cfg.total_steps is not None
    eval_every = max(cfg.total_steps // cfg.evaluations, 1)
    trials_dir = cfg.out / "trials"

    def objective(trial: optuna.Trial) -> float:
        values = {**algorithm.search_space(trial, cfg.env), "total_steps": cfg.total_steps}
        trial.set_user_attr("config", to_jsonable({"env": cfg.env, **values}))  # what best_config.json holds
        trial_dir = trials_dir / f"trial-{trial.number:04d}"
        seeds = [cfg.seed + k for k in range(cfg.seeds_per_trial)]
        curves: list[dict[int, float]] = []  # per seed done or running: {env_steps: eval return}
        finals: list[float] = []
        steps_before = 0  # env steps of the seeds already finished
        wall_seconds = 0.0
        for seed in seeds:
            config = algorithm.config_class.defaults_for(
                cfg.env,
                **values,
                seed=seed,
                device=cfg.device,
                eval_every=eval_every,
                eval_episodes=cfg.eval_episodes,
                out=trial_dir if cfg.seeds_per_trial == 1 else trial_dir / f"seed-{seed}",
                track=cfg.track,
            )
            curve: dict[int, float] = {}
            curves.append(curve)

            def on_eval(
                env_steps: int, eval_return_mean: float, curve: dict[int, float] = curve, offset: int = steps_before
            ) -> None:
                curve[env_steps] = eval_return_mean
                mean = sum(c.get(env_steps, eval_return_mean) for c in curves) / len(curves)
                trial.report(mean, offset + env_steps)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"mean return {mean:.1f} over {len(curves)} seed(s) at step {offset + env_steps} "
                        "is below the median"
                    )

            summary = algorithm.train(config, on_eval=on_eval)
            finals.append(float(summary["eval_return_mean"]))
            trial.set_user_attr(f"return_seed_{seed}", finals[-1])
            wall_seconds += summary["wall_seconds"]
            trial.set_user_attr("wall_seconds", wall_seconds)
            steps_before += int(summary["env_steps"])
        trial.set_user_attr("seed_returns", finals)
        trial.set_user_attr("return_std", float(np.std(finals)))
        return float(np.mean(finals))

    return objective


def open_study(cfg: TuneConfig, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study in ``OUT/study.sqlite`` or load it; trials left running by a crash are marked failed."""
    assert cfg.out is not None and cfg.total_steps is not None
    cfg.out.mkdir(parents=True, exist_ok=True)
    eval_every = max(cfg.total_steps // cfg.evaluations, 1)
    try:
        study = optuna.create_study(
            study_name=f"{cfg.algo}-{cfg.env}",
            storage=f"sqlite:///{(cfg.out / 'study.sqlite').resolve()}",
            load_if_exists=True,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.startup_trials),
            pruner=pruner
            or optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=eval_every),
        )
    except sqlalchemy.exc.DatabaseError as error:  # not an SQLite file, or a damaged one
        raise ConfigError(f"{cfg.out / 'study.sqlite'} is not a readable study ({error.orig})") from None
    identity = {
        "algo": cfg.algo,
        "env": cfg.env,
        "total_steps": cfg.total_steps,
        "seed": cfg.seed,
        "seeds_per_trial": cfg.seeds_per_trial,
    }
    # Studies made before --seeds-per-trial existed ran one seed per trial.
    saved = {k: study.user_attrs.get(k, 1 if k == "seeds_per_trial" else None) for k in identity}
    if not study.user_attrs:
        for key, value in identity.items():
            study.set_user_attr(key, value)
    elif saved != identity:
        raise ConfigError(f"{cfg.out} holds a study with {saved}; resume it with those settings or pick another --out")
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return study


def run_tune(config: TuneConfig) -> dict[str, Any]:
    """Run (or resume) the study, then write the report, best_config.json and summary.json; return the summary."""
    cfg = config.resolved()
    assert cfg.out is not None
    fresh = not cfg.out.exists() or not any(cfg.out.iterdir())
    check(
        fresh or (cfg.out / "study.sqlite").exists(), f"{cfg.out} holds something else than a study; pick another --out"
    )
    algorithm = algorithms()[cfg.algo]
    start = time.perf_counter()
    optuna.logging.set_verbosity(logging.INFO)
    study = open_study(cfg)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = cfg.trials - len(study.get_trials(deepcopy=False, states=finished))
    if remaining > 0:
        study.optimize(make_objective(cfg, algorithm), n_trials=remaining, timeout=cfg.timeout, catch=(ConfigError,))
    summary = write_results(cfg, study, time.perf_counter() - start)
    check(
        summary["complete"] + summary["pruned"] > 0,
        f"no trial finished: {summary['failed']} failed (the log above says why); results in {cfg.out}",
    )
    return summary


def write_results(cfg: TuneConfig, study: optuna.Study, wall_seconds: float) -> dict[str, Any]:
    """best_config.json, report.html and summary.json of the study."""
    assert cfg.out is not None
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value or float("-inf")) if complete else None
    best_config_path = cfg.out / "best_config.json"
    if best is not None:
        write_json(best_config_path, best.user_attrs["config"])
    summary = {
        "algo": "tune",
        "tuned_algo": cfg.algo,
        "env_id": cfg.env,
        "trials": len(trials),
        "complete": len(complete),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "best_trial": best.number if best is not None else None,
        "best_value": best.value if best is not None else None,
        "best_params": best.params if best is not None else None,
        "seeds_per_trial": cfg.seeds_per_trial,
        "best_seed_returns": best.user_attrs.get("seed_returns") if best is not None else None,
        "best_return_std": best.user_attrs.get("return_std") if best is not None else None,
        "best_config": str(best_config_path) if best is not None else None,
        "wall_seconds": wall_seconds,
    }
    write_json(cfg.out / "summary.json", summary)
    write_report(cfg, study, summary)
    return summary


def write_report(cfg: TuneConfig, study: optuna.Study, summary: dict[str, Any]) -> None:
    """Optuna's plotly figures and a table of trials."""
    assert cfg.out is not None
    best = summary["best_value"]
    report = Report(
        f"Tuning {cfg.algo.upper()} on {cfg.env}",
        f"{summary['trials']} trials ({summary['complete']} complete, {summary['pruned']} pruned, "
        f"{summary['failed']} failed) of {cfg.total_steps} env steps per seed; objective: final greedy return over "
        f"{cfg.eval_episodes} episodes, the mean over {cfg.seeds_per_trial} seed(s) per trial "
        f"({cfg.seed}..{cfg.seed + cfg.seeds_per_trial - 1}); best {best if best is None else round(best, 2)} "
        f"(trial {summary['best_trial']}"
        + (f", seeds {[round(r, 2) for r in summary['best_seed_returns']]}" if summary["best_seed_returns"] else "")
        + ").",
    )
    if summary["best_config"]:
        report.text(
            f"Best config: {summary['best_config']}. Train with it: "
            f"rlhf {cfg.algo} --env {cfg.env} --config {summary['best_config']}"
        )
    params = sorted({name for t in study.trials for name in t.params})
    try:  # most important first; needs two or more complete trials
        params = list(optuna.importance.get_param_importances(study)) + params
        params = list(dict.fromkeys(params))
    except (ValueError, RuntimeError, ZeroDivisionError):
        pass
    slices = [params[i : i + 4] for i in range(0, len(params), 4)]  # four per row stay readable
    figures: list[tuple[str, Callable[[optuna.Study], go.Figure]]] = [
        ("Optimization history", optuna.visualization.plot_optimization_history),
        ("Parameter importances (PED-ANOVA, Optuna's default)", optuna.visualization.plot_param_importances),
        ("Parallel coordinates", optuna.visualization.plot_parallel_coordinate),
        *(
            (f"Slices: objective against {', '.join(group)}", lambda s, g=group: optuna.visualization.plot_slice(s, g))
            for group in slices
        ),
        ("Intermediate values: evaluation returns the pruner saw", optuna.visualization.plot_intermediate_values),
    ]
    headings: set[str] = set()
    for title, plot in figures:
        heading = title.split(":")[0]  # one heading over all slice figures
        if heading not in headings:
            report.heading(heading)
            headings.add(heading)
        try:
            fig = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. importances need 2+ complete trials
            report.text(f"Not available yet: {error}")
            continue
        fig.update_layout(title=title, height=400 if title.startswith("Slices") else 440)
        report.figure(fig)
    report.heading("Trials")
    report.table(
        ["trial", "state", "final return (mean over seeds)", "std over seeds", "seconds", *params],
        [
            [
                t.number,
                t.state.name,
                t.value if t.value is not None else "-",
                round(t.user_attrs["return_std"], 2) if "return_std" in t.user_attrs else "-",
                t.user_attrs.get("wall_seconds", "-"),
            ]
            + [t.params.get(name, "-") for name in params]
            for t in study.trials
        ],
    )
    report.write(cfg.out / "report.html")
