# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # DQN: a training run, what the Q-network learns, and a tuning study over several seeds
#
# This notebook trains DQN (`baselines/dqn.py`, the page [DQN](../docs/dqn.md) has the theory) on CartPole-v1 with
# the `rlhf` command run in process, looks at its learning curves and at what its Q-network learned, then runs a
# small hyperparameter study with `rlhf tune dqn --seeds-per-trial 2` and reads Optuna's analysis plots from the
# study's storage.
#
# **Budget.** `BUDGET = 1` keeps the whole notebook under about a minute on two CPU cores, so that the test suite
# can run it; at that size DQN has not finished learning and the study has eight short trials, so every result
# below is noisy and says little about DQN itself. Raise `BUDGET` (every size scales with it: `BUDGET = 3` trains
# 60k steps, more than the default 50k, and the study gets 24 trials of 9k steps) to get results worth reading.
# All outputs go to `runs/` under the notebook's working directory.

# %%
import json
from pathlib import Path

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from baselines.tune import TuneConfig, run_tune
from rlhf.cli import main as rlhf

BUDGET = 1  # raise it for real results: every size below scales with it
TRAIN_STEPS = 20_000 * BUDGET
TRIALS = 8 * BUDGET
TRIAL_STEPS = 3_000 * BUDGET
RUNS = Path("runs")

# %% [markdown]
# ## A training run
#
# `rlhf dqn` with CartPole-v1's defaults (double DQN, 3-step returns, a learning rate decayed linearly to 0, 64
# gradient steps every 256 env steps), shortened to `TRAIN_STEPS` env steps, with an evaluation of the greedy
# policy on a separate env every tenth of the run. `rlhf.cli.main` takes the same arguments as the shell command
# and returns its exit code.

# %%
run_dir = RUNS / "dqn-cartpole"
code = rlhf(
    ["dqn", "--env", "CartPole-v1", "--total-steps", str(TRAIN_STEPS), "--seed", "0",
     "--eval-every", str(TRAIN_STEPS // 10), "--out", str(run_dir)]
)  # fmt: skip
assert code == 0, f"rlhf dqn exited with {code}"
summary = json.loads((run_dir / "summary.json").read_text())
rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
print({key: summary[key] for key in ("env_steps", "wall_seconds", "eval_return_mean", "gradient_steps", "episodes")})


# %%
def series(key: str) -> dict[str, list[float]]:
    """``key`` over env steps from the run's metrics.jsonl, as plotly's x and y."""
    picked = [(row["step"], row[key]) for row in rows if key in row]
    return {"x": [step for step, _ in picked], "y": [value for _, value in picked]}


fig = go.Figure()
fig.add_trace(go.Scatter(**series("charts/episodic_return"), mode="markers", name="training episode",
                         marker={"size": 4, "opacity": 0.5}))  # fmt: skip
fig.add_trace(go.Scatter(**series("eval/return_mean"), mode="lines+markers", name="greedy evaluation (mean)"))
fig.update_layout(title="DQN on CartPole-v1: returns", xaxis_title="env steps", yaxis_title="return")
fig.show()

# %% [markdown]
# Training episodes (dots) include epsilon-greedy exploration; the evaluation line is the greedy policy, the one
# DQN is learning. The first 1,000 steps are uniformly random (`learning_starts`), and the first evaluations are
# low; at `BUDGET = 1` (20k steps, 40% of the default budget) the greedy return is typically still below
# CartPole's maximum of 500.
#
# ## What the Q-network learned
#
# `losses/q_values` is the mean $Q(s, a)$ over the replayed batches since the previous log row and
# `losses/td_loss` the mean Huber loss of the TD errors. With $\gamma = 0.99$ and a reward of 1 per step, a state
# from which the pole stays up for good is worth about $1 / (1 - \gamma) = 100$; early on the values are small,
# and they rise as episodes get longer. The TD loss grows with the scale of the values before it can fall: it is
# no measure of progress by itself.

# %%
fig = make_subplots(rows=1, cols=3, subplot_titles=["mean Q(s, a)", "Huber TD loss", "epsilon"])
for col, key in enumerate(("losses/q_values", "losses/td_loss", "charts/epsilon"), start=1):
    fig.add_trace(go.Scatter(**series(key), mode="lines", name=key), row=1, col=col)
fig.update_layout(title="DQN on CartPole-v1: the Q-network and the exploration schedule", showlegend=False)
fig.show()

# %% [markdown]
# ## A tuning study with two seeds per trial
#
# `rlhf tune dqn` samples a configuration per trial from rl-zoo's DQN search space (learning rate, batch size,
# buffer size, target update interval, train frequency, exploration schedule, network size, and this DQN's
# extensions: double DQN, dueling, n-step, prioritized replay) with Optuna's TPE sampler, and prunes trials whose
# evaluation returns fall below the median of the others. With `seeds_per_trial=2` every trial trains its
# configuration on seeds 0 and 1 and its objective is the **mean of their final returns**: one seed's return would
# reward configurations that happened to be lucky on that seed. The study lives in `runs/tune-dqn/study.sqlite`;
# running the same cell again resumes it. Here it is called through the Python API, which is what
# `rlhf tune dqn --trials 8 --total-steps 3000 --evaluations 2 --eval-episodes 3 --startup-trials 2
# --seeds-per-trial 2 --out runs/tune-dqn` does at `BUDGET = 1`.

# %%
optuna.logging.set_verbosity(optuna.logging.WARNING)
tune_dir = RUNS / "tune-dqn"
study_summary = run_tune(
    TuneConfig("dqn", env="CartPole-v1", trials=TRIALS, total_steps=TRIAL_STEPS, evaluations=2, eval_episodes=3,
               startup_trials=2, seeds_per_trial=2, out=tune_dir)
)  # fmt: skip
optuna.logging.set_verbosity(optuna.logging.WARNING)  # run_tune turns Optuna's log on; the plots below need none
print({key: study_summary[key] for key in ("complete", "pruned", "failed", "best_trial", "best_value")})
print("best trial's seeds:", study_summary["best_seed_returns"], "best config:", study_summary["best_config"])

# %% [markdown]
# The study is read back from its storage, as any later session would read it:

# %%
study = optuna.load_study(study_name="dqn-CartPole-v1", storage=f"sqlite:///{(tune_dir / 'study.sqlite').resolve()}")
finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
fig = go.Figure()
for trial in study.trials:
    seeds = {key: value for key, value in trial.user_attrs.items() if key.startswith("return_seed_")}
    grey = {"color": "#888", "size": 8}
    fig.add_trace(go.Scatter(x=[trial.number] * len(seeds), y=list(seeds.values()), mode="markers", marker=grey,
                             showlegend=trial.number == 0, name="one seed"))  # fmt: skip
fig.add_trace(go.Scatter(x=[t.number for t in finished], y=[t.value for t in finished], mode="markers",
                         marker={"symbol": "diamond", "size": 12}, name="objective: mean over the seeds"))  # fmt: skip
fig.update_layout(title="Each trial's seeds and their mean", xaxis_title="trial", yaxis_title="final greedy return")
fig.show()

# %%
optuna.visualization.plot_optimization_history(study).show()
optuna.visualization.plot_intermediate_values(study).show()

# %%
try:  # needs a few complete trials with different values
    optuna.visualization.plot_param_importances(study).show()
except (ValueError, RuntimeError, ZeroDivisionError) as error:
    print("parameter importances not available yet:", error)
optuna.visualization.plot_slice(study, params=["learning_rate", "n_step", "double_dqn", "train_freq"]).show()

# %% [markdown]
# ## Reading the study
#
# - **Each trial's seeds and their mean**: the grey dots are the two seeds of a trial. Where they lie far apart,
#   one seed's return would have ranked the configuration by luck; the objective (diamond) is their mean. The
#   spread is also in the report's trial table (`runs/tune-dqn/report.html`) and as `return_std` on each trial.
# - **Optimization history**: the objective per trial and the best so far. The first `startup_trials` are random;
#   TPE proposes the rest from the good trials' parameters.
# - **Intermediate values**: what the median pruner saw. The first seed's evaluations come first; from the second
#   seed on, each point is the mean over the seeds done at the same evaluation, at step = env steps run by the
#   trial so far, so every trial's value at a step is a mean over the same seeds.
# - **Importances and slices**: which parameters moved the objective. With eight trials of 3,000 steps (the
#   default `BUDGET`), DQN barely starts learning and these plots show mostly noise: read them as what to look
#   at, not as findings. A larger `BUDGET` gives TPE and the importance estimate enough trials to work with.
#
# The best configuration trains again with `rlhf dqn --config runs/tune-dqn/best_config.json --seed 7`: confirm
# it on seeds the study did not use before trusting it.
