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
# # RLHF end to end, through the Python API
#
# This notebook walks the pieces of `rlhf run` one at a time, then runs the whole loop, then tunes the reward
# model's robust likelihood with Optuna:
#
# 1. collect Pendulum-v1 episodes and cut them into **segments**;
# 2. let a simulated **teacher** (B-Pref) label pairs of segments, with mistakes;
# 3. train a Bradley-Terry **reward model** (an ensemble of MLPs) and compare its predicted segment returns with the
#    true ones;
# 4. run the **loop** (`rlhf run`, in process) on CartPole-v1, the fastest env, and plot the policy's true return;
# 5. an **Optuna study** of the random-answer rate $\epsilon$ and the learning rate, with an objective averaged over
#    several seeds.
#
# Pendulum serves the offline parts because its segment returns vary continuously (every step costs
# $\theta^2 + 0.1\,\dot\theta^2 + 0.001\,u^2$), so ranking segments is a real task; on CartPole (1 a step while
# the pole is up) most segments of a decent policy tie. The theory is on the documentation's RLHF page. Everything
# scales with `BUDGET`: at `BUDGET = 1` the notebook runs in under a minute and its numbers are noisy (few labels,
# few trials, few seeds); raise it to 5 or 10 for results worth reading. Files are written under the current folder
# (`runs/`).

# %%
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import optuna
import plotly.graph_objects as go
import torch

from rlhf.cli import main as rlhf_main
from rlhf.reward import (
    RewardModel,
    RewardModelConfig,
    RewardTrainerConfig,
    build_reward_model,
    evaluate_reward_model,
    preference_data,
    train_reward_model,
)
from rlhf.segments import Segment, SegmentCutter, action_columns, action_feature_dim, segment_features
from rlhf.teachers import make_teacher

BUDGET = 1  # raise for real results: more segments, labels, loop steps, trials and seeds
ENV_ID = "Pendulum-v1"
SEGMENT_LENGTH = 50
NUM_EPISODES = 40 * BUDGET
TRAIN_PAIRS = 150 * BUDGET
TEST_PAIRS = 300

# %% [markdown]
# ## 1. Segments
# A random policy (uniform torques) from Pendulum's random initial states gives segments of every quality: the
# pendulum hanging still, swinging, or passing the top. `SegmentCutter` buffers each episode and cuts
# non-overlapping windows of `SEGMENT_LENGTH` steps from a random offset. A window never runs past the time limit
# (a truncation is not an end of the task); a window that runs past a *termination* would be padded with the
# absorbing state (zero observation, a flag set, zero true reward). Pendulum never terminates, so none is padded
# here; on CartPole, the loop below, padding is what makes "the pole fell early" a worse segment.

# %%
rng = np.random.default_rng(0)
env = gym.make(ENV_ID)
action_space = env.action_space
obs_dim = int(np.prod(env.observation_space.shape or ()))
cutter = SegmentCutter(num_envs=1, segment_length=SEGMENT_LENGTH, rng=rng)
segments: list[Segment] = []
for episode in range(NUM_EPISODES):
    obs, _ = env.reset(seed=episode)
    steps: dict[str, list[object]] = {"obs": [], "actions": [], "rewards": [], "terminated": [], "truncated": []}
    done = False
    while not done:
        action = rng.uniform(-2.0, 2.0, size=1).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(steps, (obs, action, reward, terminated, truncated), strict=True):
            steps[key].append(value)
        obs, done = next_obs, terminated or truncated
    # the cutter reads time-major (T, num_envs, ...) arrays
    segments += cutter.add(*(np.asarray(steps[key])[:, None] for key in steps))
env.close()
true_returns = np.array([s.true_return for s in segments])
print(f"{len(segments)} segments of {SEGMENT_LENGTH} steps from {NUM_EPISODES} episodes")
go.Figure(go.Histogram(x=true_returns, nbinsx=30)).update_layout(
    title="True returns of the segments (0 is the best: upright and still)",
    xaxis_title="true segment return",
    yaxis_title="segments",
    template="plotly_white",
).show()

# ## 2. Labels from a simulated teacher
# Pairs are drawn at random; the training pairs are labeled by B-Pref's **mistake** teacher, which answers as the
# oracle (higher true return wins, equal returns tie) and then flips a non-tie answer with probability $\epsilon_t$.
# The test pairs are labeled by the oracle, so test accuracy measures how well the model recovers the *true*
# preferences, not how well it reproduces the teacher's mistakes. Segments are split first, so that no test
# segment was seen in training.

# %%
TEACHER_MISTAKES = 0.2
order = rng.permutation(len(segments))
train_segments = [segments[i] for i in order[: len(order) // 2]]
test_segments = [segments[i] for i in order[len(order) // 2 :]]


def random_pairs(pool: list[Segment], count: int, generator: np.random.Generator) -> list[tuple[Segment, Segment]]:
    first = generator.integers(0, len(pool), size=count)
    second = (first + generator.integers(1, len(pool), size=count)) % len(pool)
    return [(pool[i], pool[j]) for i, j in zip(first, second, strict=True)]


def labeled(
    pairs: list[tuple[Segment, Segment]], teacher_name: str, generator: np.random.Generator
) -> list[tuple[Segment, Segment, str]]:
    teacher = make_teacher(teacher_name, epsilon=TEACHER_MISTAKES if teacher_name == "mistake" else None)
    return [(a, b, teacher.choose(a, b, generator)) for a, b in pairs]


oracle = make_teacher("oracle")
test_labels = [p for p in labeled(random_pairs(test_segments, TEST_PAIRS, rng), "oracle", rng) if p[2] != "tie"]
test_data = preference_data(test_labels, action_space)
train_pairs = random_pairs(train_segments, TRAIN_PAIRS, rng)
train_labels = labeled(train_pairs, "mistake", rng)
agree = np.mean([oracle.choose(a, b, rng) == c for a, b, c in train_labels])
print(f"{len(train_labels)} training labels (mistake teacher, eps {TEACHER_MISTAKES}): {agree:.0%} agree with oracle")
print(f"{len(test_labels)} test pairs (oracle, ties left out)")

# %% [markdown]
# ## 3. A reward model and its predicted returns
# An ensemble of three MLPs reads the observation of each step (the action columns are ignored, as
# `--reward-inputs observations` does) and scores a segment by the sum of its step rewards. It is trained on the
# Bradley-Terry cross-entropy under the random-answer likelihood
# $P_\epsilon(a \succ b) = (1 - \epsilon)\,\sigma(\hat R_a - \hat R_b) + \epsilon / 2$, each member on its own bootstrap
# resample, with 10% of the labels held out for early stopping.


# %%
def make_model(seed: int) -> RewardModel:
    return build_reward_model(
        RewardModelConfig(
            feature_dim=obs_dim + action_feature_dim(action_space) + 1,
            ensemble_size=3,
            seed=seed,
            max_length=SEGMENT_LENGTH,
            ignored_features=action_columns(obs_dim, action_space),
        )
    )


model = make_model(seed=0)
fit = train_reward_model(
    model,
    preference_data(train_labels, action_space),
    RewardTrainerConfig(random_answer_rate=0.1, epochs=30, split_seed=0),
    np.random.default_rng(0),
)
test = evaluate_reward_model(model, test_data)
print(
    f"trained {fit['epochs_run']:.0f} epochs: held-out accuracy {fit['val_accuracy']:.2f} (teacher's labels), "
    f"test accuracy {test['accuracy']:.2f} (oracle's)"
)
with torch.no_grad():
    predicted = model.segment_returns(torch.from_numpy(segment_features(test_segments, action_space))).mean(0)
test_true = np.array([s.true_return for s in test_segments])
correlation = np.corrcoef(predicted.numpy(), test_true)[0, 1]
go.Figure(
    go.Scatter(x=test_true, y=predicted.numpy(), mode="markers", marker={"size": 6, "opacity": 0.6})
).update_layout(
    title=f"Predicted vs true returns of unseen segments (Pearson r = {correlation:.2f})",
    xaxis_title="true segment return",
    yaxis_title="predicted return (ensemble mean)",
    template="plotly_white",
).show()

# %% [markdown]
# The reward model is only defined up to an offset and a scale (Bradley-Terry sees differences of returns), so what
# matters is the *ranking*: a high correlation means the model orders segments as the true reward does, even though
# a fifth of its labels were wrong (the test pairs are judged against the oracle). The true reward is a smooth
# function of the angle and the angular velocity, which a small MLP of the observation can represent.
#
# ## 4. The loop
# `rlhf run` does all of this online: PPO collects rollouts, segments go to a pool, the ensemble picks the pairs it
# disagrees on most, a teacher answers them through the preference store, the reward model is retrained each round
# and PPO optimizes it. Here it runs in process through the CLI's `main` with a noisy teacher (Boltzmann-rational,
# $\beta = 1$) at a tiny budget.

# %%
LOOP_ENV = "CartPole-v1"
LOOP_STEPS = 20_000 * BUDGET
loop_dir = Path("runs/rlhf-cartpole")
code = rlhf_main(
    ["run", "--env", LOOP_ENV, "--teacher", "noisy", "--labels", str(40 * BUDGET), "--total-steps", str(LOOP_STEPS),
     "--eval-every", str(LOOP_STEPS // 5), "--seed", "0", "--out", str(loop_dir)]
)  # fmt: skip
assert code == 0
rows = [json.loads(line) for line in (loop_dir / "metrics.jsonl").read_text().splitlines()]
summary = json.loads((loop_dir / "summary.json").read_text())
evals = [(r["step"], r["eval/return_mean"]) for r in rows if "eval/return_mean" in r]
trains = [(r["step"], r["charts/episodic_return"]) for r in rows if "charts/episodic_return" in r]
fig = go.Figure()
fig.add_trace(go.Scatter(x=[s for s, _ in trains], y=[v for _, v in trains], name="training episodes", opacity=0.5))
fig.add_trace(go.Scatter(x=[s for s, _ in evals], y=[v for _, v in evals], name="evaluation", mode="lines+markers"))
fig.update_layout(
    title=f"RLHF on CartPole-v1: true return ({summary['labels_used']} labels, noisy teacher)",
    xaxis_title="env steps",
    yaxis_title="true return",
    template="plotly_white",
).show()
rounds = [(r["step"], r["reward/val_accuracy"], r["labels/total"]) for r in rows if "reward/val_accuracy" in r]
print("reward model per round (step, held-out accuracy, labels):", [(s, round(a, 2), n) for s, a, n in rounds])
print({k: summary[k] for k in ("eval_return_mean", "labels_used", "reward_model_accuracy", "wall_seconds")})

# %% [markdown]
# The policy is never shown the true reward: its return rises only because the reward model learned from the
# labels what the true reward values. At this budget the run is short; the documentation's figure
# `rlhf-cartpole-teachers` (100 labels, 60k steps, five seeds per teacher) shows the full curves.
#
# ## 5. An Optuna study: how much should the likelihood expect mistakes?
# The random-answer rate $\epsilon$ caps what a contradicted label can cost ($-\log(\epsilon / 2)$) and makes its
# gradient fade; too small and wrong labels pull as hard as right ones, too large and the model discounts right
# labels too. The study searches $\epsilon \in [0, 0.45]$ and the learning rate, with the teacher flipping 20% of its
# answers. The objective is the **test accuracy against the oracle** on the held-out pairs (cheap: no PPO), **averaged
# over several seeds**: each seed draws other training pairs, other mistakes and another initialization. One seed's
# accuracy swings by several points with those draws, so a study on one seed would reward trials that drew an easy
# set of mistakes, and its "best" trial would be a lucky seed rather than a better setting (the same reason
# `rlhf tune` takes an objective over several seeds).

# %%
STUDY_SEEDS = (1, 2, 3) if BUDGET == 1 else tuple(range(1, 2 + 2 * BUDGET))
TRIALS = 10 * BUDGET
STUDY_PAIRS = 100 * BUDGET


def objective(trial: optuna.Trial) -> float:
    rate = trial.suggest_float("random_answer_rate", 0.0, 0.45)
    lr = trial.suggest_float("lr", 3e-4, 3e-2, log=True)
    accuracies = []
    for seed in STUDY_SEEDS:
        generator = np.random.default_rng(seed)
        labels = labeled(random_pairs(train_segments, STUDY_PAIRS, generator), "mistake", generator)
        reward_model = make_model(seed)
        train_reward_model(
            reward_model,
            preference_data(labels, action_space),
            RewardTrainerConfig(random_answer_rate=rate, lr=lr, epochs=20, split_seed=seed),
            generator,
        )
        accuracies.append(evaluate_reward_model(reward_model, test_data)["accuracy"])
    trial.set_user_attr("per_seed", [round(a, 3) for a in accuracies])
    return float(np.mean(accuracies))


optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
study.enqueue_trial({"random_answer_rate": 0.0, "lr": 1e-3})  # plain Bradley-Terry, for reference
study.enqueue_trial({"random_answer_rate": 0.1, "lr": 1e-3})  # the loop's defaults
study.optimize(objective, n_trials=TRIALS)
table = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs"))
print(table.sort_values("value", ascending=False).to_string(index=False))
print("best:", study.best_params, f"mean test accuracy {study.best_value:.3f}")

# %%
optuna.visualization.plot_optimization_history(study).show()
optuna.visualization.plot_slice(study).show()

# %%
if len(study.trials) >= 4:  # fANOVA importances need a few completed trials
    optuna.visualization.plot_param_importances(study).show()

# %% [markdown]
# ### Reading the study
# - The first two trials are plain Bradley-Terry ($\epsilon = 0$) and the loop's default ($\epsilon = 0.1$) at the
#   default learning rate, so the table shows where the search started from. The per-seed accuracies (`user_attrs`)
#   show how far one seed's figure lies from the mean: that spread is why the objective averages seeds.
# - When this notebook was written (`BUDGET = 1`, the project's 2-core machine), plain Bradley-Terry scored lowest
#   (mean test accuracy 0.75, one seed 0.57 and another 0.89), the default $\epsilon = 0.1$ reached 0.89, and the
#   best trials put $\epsilon$ between about 0.27 and 0.43 (0.90-0.91). With a teacher that flips 20% of its
#   answers, a likelihood that expects random answers stops the flipped labels from pulling the model at full
#   strength; expecting somewhat more of them than the teacher makes costs little. Large learning rates (above
#   about 0.005) did worse on one seed in three. The table above, printed by this run, is what to read: another CPU
#   may round differently.
# - At `BUDGET = 1` (10 trials, 3 seeds, 100 labels) differences of a point or two are within noise, and the
#   importance plot rests on a handful of trials: read it as a sketch. In the loop the documentation measured the
#   same question properly: with a teacher that flips 10% of its answers on Pendulum, $\epsilon = 0.1$ took the
#   median true return from -1123 to -256 (tuning seeds 0-4), and it is the default; raising it to 0.2 did not
#   help there (seeds 10-19: median -195 either way, worst -801 against -285).
