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
# # PPO: a training run, what each update did, and a tuning study over several seeds
#
# This notebook trains PPO (`baselines/ppo.py`; the page [PPO](../docs/ppo.md) has the theory) on CartPole-v1
# through the Python API, plots its learning curves and the diagnostics of its updates (approx KL, clip fraction,
# entropy, explained variance), then runs a small hyperparameter study with `rlhf tune ppo --seeds-per-trial 2`
# and reads Optuna's analysis plots from the study's storage.
#
# **Budget.** `BUDGET = 1` keeps the whole notebook under about a minute on two CPU cores, so that the test suite
# can run it: a 40k-step run and a study of ten trials of 10k steps with two seeds each. At that size every result
# below is noisy; raise `BUDGET` (every size scales with it: `BUDGET = 3` trains 120k steps, more than CartPole's
# default 100k, and the study gets 30 trials of 30k steps) for results worth reading. All outputs go to `runs/`
# under the notebook's working directory.

# %%
import json
from pathlib import Path

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from baselines.ppo import PPOConfig, train_ppo
from rlhf.cli import main as rlhf

BUDGET = 1  # raise it for real results: every size below scales with it
TRAIN_STEPS = 40_000 * BUDGET
TRIALS = 10 * BUDGET
TRIAL_STEPS = 10_000 * BUDGET
RUNS = Path("runs")

# %% [markdown]
# ## A training run
#
# `PPOConfig.defaults_for("CartPole-v1", ...)` starts from rl-zoo's tuned row for CartPole (8 envs x 32 steps per
# rollout, 20 epochs of minibatches of 256, gamma 0.98, GAE lambda 0.8, learning rate 1e-3 and clip range 0.2
# both annealed linearly to 0); the keyword arguments override it. `train_ppo` writes the same run folder as
# `rlhf ppo --env CartPole-v1 --total-steps 40000 --eval-every 4000 --out runs/ppo-cartpole` would.

# %%
run_dir = RUNS / "ppo-cartpole"
config = PPOConfig.defaults_for(
    "CartPole-v1", total_steps=TRAIN_STEPS, seed=0, eval_every=TRAIN_STEPS // 10, out=run_dir
)
summary = train_ppo(config)
rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
print({key: round(summary[key], 1) for key in ("env_steps", "wall_seconds", "steps_per_second", "eval_return_mean")})


# %%
def series(key: str) -> dict[str, list[float]]:
    """``key`` over env steps from the run's metrics.jsonl, as plotly's x and y."""
    picked = [(row["step"], row[key]) for row in rows if key in row]
    return {"x": [step for step, _ in picked], "y": [value for _, value in picked]}


fig = go.Figure()
fig.add_trace(go.Scatter(**series("charts/episodic_return"), mode="lines", name="training episodes (mean per rollout)"))
fig.add_trace(go.Scatter(**series("eval/return_mean"), mode="lines+markers", name="deterministic evaluation (mean)"))
fig.update_layout(title="PPO on CartPole-v1: returns", xaxis_title="env steps", yaxis_title="return")
fig.show()

# %% [markdown]
# The training curve is the mean return of the episodes that ended in each rollout, under the stochastic policy;
# the evaluation curve is the deterministic policy (the most likely action) on a separate env. CartPole's maximum
# is 500 (the time limit).
#
# ## What each update did
#
# PPO reuses each rollout for many minibatch steps, and the clipped surrogate keeps the new policy near the one
# that collected the data. The update logs how near it stayed:
#
# - `losses/approx_kl`: the k3 estimate $\mathbb{E}[(r - 1) - \log r]$ of the KL divergence between the old and
#   new policy, with $r$ the importance ratio;
# - `losses/clipfrac`: the fraction of samples whose ratio left $[1 - \epsilon, 1 + \epsilon]$, i.e. whose
#   gradient the clip switched off;
# - `losses/entropy`: the policy's entropy ($\log 2 \approx 0.69$ for a uniform choice between CartPole's two
#   actions); it falls as the policy becomes decisive;
# - `losses/explained_variance`: $1 - \mathrm{Var}(R - V) / \mathrm{Var}(R)$, how much of the returns' variance
#   the critic accounts for.

# %%
keys = ["losses/approx_kl", "losses/clipfrac", "losses/entropy", "losses/explained_variance"]
fig = make_subplots(rows=2, cols=2, subplot_titles=keys)
for i, key in enumerate(keys):
    fig.add_trace(go.Scatter(**series(key), mode="lines", name=key), row=i // 2 + 1, col=i % 2 + 1)
fig.update_layout(title="PPO on CartPole-v1: diagnostics of each update", showlegend=False, height=550)
fig.show()

# %% [markdown]
# With CartPole's defaults the learning rate and the clip range both fall linearly to 0 over the run
# (`charts/learning_rate`, `charts/clip_range`), so the late updates move the policy less and approx KL shrinks
# towards the end; the clip fraction need not, as the clip range it is measured against shrinks too. A clip
# fraction that stays high, or an approx KL far above 0.02, is the usual sign of a learning rate too large for the
# number of epochs.
#
# ## A tuning study with two seeds per trial
#
# `rlhf tune ppo` samples each trial's configuration from rl-zoo's PPO search space (rollout length, minibatch
# size, epochs, gamma, GAE lambda, learning rate, clip range, entropy and value coefficients, gradient clipping,
# network size and activation) with Optuna's TPE sampler, and prunes trials whose evaluation returns fall below
# the median. With `--seeds-per-trial 2 --seed 5` every trial trains its configuration on seeds 5 and 6 (`--seed`
# is the sampler's seed and every trial's first seed) and its objective is the **mean of their final returns**, so
# that a configuration is not ranked by one lucky (or unlucky) seed. The command runs in process through
# `rlhf.cli.main`; running the cell again resumes the study. (Seed 5 because its first random trials are cheap
# ones: with seed 0 the first trial trains 256x256 networks for 20 epochs over 16k-step rollouts, which costs this
# notebook's whole time budget.)

# %%
tune_dir = RUNS / "tune-ppo"
code = rlhf(
    ["tune", "ppo", "--env", "CartPole-v1", "--trials", str(TRIALS), "--total-steps", str(TRIAL_STEPS),
     "--evaluations", "2", "--eval-episodes", "5", "--startup-trials", "3", "--seeds-per-trial", "2", "--seed", "5",
     "--out", str(tune_dir)]
)  # fmt: skip
assert code == 0, f"rlhf tune exited with {code}"
optuna.logging.set_verbosity(optuna.logging.WARNING)
tune_summary = json.loads((tune_dir / "summary.json").read_text())
print({key: tune_summary[key] for key in ("complete", "pruned", "failed", "best_trial", "best_value")})
print("best trial's seeds:", tune_summary["best_seed_returns"])
print("best config:", json.loads((tune_dir / "best_config.json").read_text()))

# %% [markdown]
# The study is read back from its storage, as any later session would read it:

# %%
storage = f"sqlite:///{(tune_dir / 'study.sqlite').resolve()}"
study = optuna.load_study(study_name="ppo-CartPole-v1", storage=storage)
rows_by_trial = []
for trial in study.trials:
    seeds = {key: value for key, value in trial.user_attrs.items() if key.startswith("return_seed_")}
    rows_by_trial.append((trial.number, trial.state.name, trial.value, seeds))
    print(trial.number, trial.state.name, trial.value, seeds)

# %%
optuna.visualization.plot_optimization_history(study).show()
optuna.visualization.plot_intermediate_values(study).show()

# %%
try:  # needs a few complete trials with different values
    optuna.visualization.plot_param_importances(study).show()
except (ValueError, RuntimeError, ZeroDivisionError) as error:
    print("parameter importances not available yet:", error)
optuna.visualization.plot_parallel_coordinate(study, params=["learning_rate", "n_epochs", "num_steps", "gamma"]).show()

# %% [markdown]
# ## Reading the study
#
# - **The trial list** shows each trial's two seeds beside its objective (their mean). A configuration whose seeds
#   land far apart is unreliable even when its mean is good; `return_std` on each trial, the report's trial table
#   (`runs/tune-ppo/report.html`) and `best_return_std` in `summary.json` keep that spread.
# - **Optimization history**: the objective per trial and the best so far; the first three trials are random, then
#   TPE proposes configurations like the good ones.
# - **Intermediate values**: what the median pruner compared. Up to `TRIAL_STEPS` env steps they are
#   seed 5's evaluation returns (more when a rollout is longer than `TRIAL_STEPS`); after that, the mean over seeds 5
#   and 6 at the same evaluation, so at any step every trial is measured the same way. A trial pruned during its
#   second seed keeps its first seed's final return as a user attribute.
# - **Importances and parallel coordinates**: which parameters the objective moved with. With ten trials of 10k
#   steps (the default `BUDGET`) this is mostly noise, and a reader should not conclude from it; a larger `BUDGET`
#   gives TPE and the importance estimate enough trials to work with.
#
# Train the best configuration again on a seed the study did not use before trusting it:
# `rlhf ppo --config runs/tune-ppo/best_config.json --seed 7`.
