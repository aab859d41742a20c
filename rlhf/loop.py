"""The RLHF loop (Christiano et al. 2017, https://arxiv.org/abs/1706.03741), top to bottom.

PPO (``baselines/ppo.py``, reused, not copied) collects rollouts -> segments -> candidate pairs -> active selection
-> queries in the preference store -> labels (a simulated teacher here; people in the browser through the same
store) -> Bradley-Terry reward-model update -> PPO continues on the learned reward. Labels arrive on a schedule:
an initial batch, then a decaying (hyperbolic) number per round, until the label budget is spent.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import plotly.graph_objects as go
import torch

from baselines.common.checkpoint import load_checkpoint, save_checkpoint
from baselines.common.config import cli_default, read_config_file, resolve_resume
from baselines.common.distributed import World, init_world
from baselines.common.errors import ConfigError, check
from baselines.common.evaluation import evaluate_policy
from baselines.common.progress import progress_bar
from baselines.common.report import Report, color, metric_series
from baselines.common.runs import MetricsLogger, RunFolder, default_run_dir, next_due, write_json
from baselines.gpto import GPTO, GPTOConfig
from baselines.ppo import (
    PPO,
    Learner,
    PPOConfig,
    PPOState,
    collect_rollout,
    init_ppo,
    rank_share,
)
from rlhf.labelers import estimate_labeler_quality, label_weights
from rlhf.query import QueryMethod, preference_probabilities, select_pairs
from rlhf.render import MUJOCO_VIEWS, check_mujoco_rendering, render_policy_clip, render_segments
from rlhf.reward import (
    LearnedReward,
    PreferenceData,
    RewardModel,
    RewardModelConfig,
    RewardTrainerConfig,
    as_ppo_reward_fn,
    build_reward_model,
    load_reward_model,
    preference_data,
    reinitialize,
    save_reward_model,
    train_reward_model,
    warn_if_unmeasured,
)
from rlhf.reward.label_filter import LabelFilter
from rlhf.reward.regularization import AdaptiveL2
from rlhf.reward.warm_start import state_entropy_rewards, warm_start
from rlhf.segments import (
    Segment,
    SegmentCutter,
    SegmentPool,
    absorbing_features,
    action_columns,
    action_feature_dim,
    describe_action_space,
    segment_features,
)
from rlhf.store import LoopStatus, PreferenceStore
from rlhf.teachers import SimulatedTeacher, make_teacher

REFIT_OUTPUT_SCALE = 0.02
"""--reward-refit: the fresh output layer's scale (``rlhf.reward.reinitialize``): every segment starts near a
return of 0, where every label pulls."""

STATUS_EVERY_S = 2.0  # the labeling service's view of the run's progress is at most this old between measurements
HUMAN_POLL_S = 0.5  # how often a loop waiting for people's labels looks at the store
CLIPS_DIR = "clips"  # the run's clips (the labeling service's media dir): segment clips and policy clips
FINAL_CLIP = "policy-final.mp4"  # the final policy's clip, in the clips folder
TeacherName = Literal["oracle", "noisy", "myopic", "mistake", "skip", "equal", "human"]

# Per-env settings of the loop (segment_length, label_phase, reward_inputs, ending_pair_share; chosen on tuning
# seeds 0-4, see benchmarks/rlhf_protocol.py) and of its PPO (overrides of PPO's own table).
RLHF_ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {
        "segment_length": 50,
        "label_phase": 0.25,
        "reward_inputs": "observations",
        "ppo": {"num_envs": 8, "num_steps": 256},
    },
    # gamma 0.99 (rl-zoo's row has 0.98): a learned "still alive" reward varies by a percent or two between states,
    # and at 0.98 an end 100 steps ahead weighs less than that (a policy drifting off the track at constant speed).
    "CartPole-v1": {"segment_length": 50, "label_phase": 0.5, "ppo": {"gamma": 0.99}},
    # Sparse goals: -1 a step until the goal (Acrobot, MountainCar), or an action cost and +100 at the goal
    # (MountainCarContinuous). Only segments that reach the goal differ, so half the candidate pairs hold one.
    "Acrobot-v1": {"segment_length": 50, "label_phase": 0.25, "ending_pair_share": 0.5, "ppo": {}},
    "MountainCar-v0": {"segment_length": 50, "label_phase": 0.25, "ending_pair_share": 0.5, "ppo": {}},
    "MountainCarContinuous-v0": {"segment_length": 50, "label_phase": 0.25, "ending_pair_share": 0.5, "ppo": {}},
    # MuJoCo (Christiano et al. 2017's robots): 50-step clips (Hopper's play in 1 s at 50 fps, the pendulums' in 2 s).
    # Balancing tasks are learned early, so their labels come in the first quarter; locomotion keeps improving, so
    # its labels are spread over the first half (segments of the later, faster gaits need judging too). PPO scales
    # the learned reward by the discounted return's std too, as its MuJoCo rows were tuned (rl-zoo normalizes):
    # without it, InvertedPendulum's returns at gamma 0.999 reach hundreds, the value loss's gradient fills the
    # global norm clip (0.3) and the policy unlearns balancing (50 labels, 50k steps, tuning seeds 0-5: 1000 reached
    # on 5 of 6, then 56-826 at the end; with it 1000 at the end on all six, from 10-30k steps on).
    **{
        env: {"segment_length": 50, "label_phase": phase, "ppo": {"normalize_reward": True}}
        for env, phase in (
            ("InvertedPendulum-v5", 0.25),
            ("Hopper-v5", 0.5),
            ("HalfCheetah-v5", 0.5),
            ("Walker2d-v5", 0.5),
        )
    },
    # The double pendulum also keeps an entropy bonus (0.01). Without one the policy's std falls to ~0.05, and runs
    # that failed had parked the cart off centre (|x| 0.5-0.8 on a rail ending at 1), where the learned reward does
    # not look, and lost the first recovery on 20-40% of starts. With it (700 labels, 1M steps, tuning seeds 0-9):
    # median 9355, 7 of 10 at >= 8000; without: median 6445, 4 of 10.
    "InvertedDoublePendulum-v5": {
        "segment_length": 50,
        "label_phase": 0.25,
        "ppo": {"normalize_reward": True, "ent_coef": 0.01},
    },
}


@dataclass(frozen=True)
class RLHFConfig:
    """Reinforcement learning from preferences: PPO on a reward model trained from labeled segment pairs."""

    env: str = "Pendulum-v1"
    """Gymnasium env id."""
    teacher: TeacherName = "oracle"
    """Who labels: a B-Pref simulated teacher (oracle, noisy, myopic, mistake, skip, equal), or human: people in
    the browser (the labeling service starts alongside the loop)."""
    teacher_beta: float | None = None
    """noisy: Bradley-Terry rationality (default 1)."""
    teacher_gamma: float | None = None
    """myopic: discount over the segment (default 0.9)."""
    teacher_epsilon: float | None = None
    """mistake: flip probability (default 0.1)."""
    teacher_threshold: float | None = None
    """skip: skip when both returns are below this; equal: tie when returns differ by less than this."""
    labels: int = 200
    """Label budget for the whole run."""
    total_steps: int = 50_000
    """Env steps of PPO."""
    seed: int = 0
    """Seed of envs, PPO, sampling, teacher and reward model."""
    algo: Literal["ppo", "gpto"] = "ppo"
    """What optimizes the learned reward: PPO, or GPTO (with the env's GPTO defaults; --ppo-config may set its
    fields)."""
    reward_model: Literal["mlp", "transformer"] = "mlp"
    """MLP ensemble, or a small GPT-2 with a preference-attention readout (Preference Transformer)."""
    reward_inputs: Literal["observations", "observations-actions"] | None = None
    """What the reward model reads of a step: the observation alone (what a person judging a clip sees), or the
    observation and the action (default: the env's row of RLHF_ENV_DEFAULTS, else observations)."""
    query: QueryMethod = "disagreement"
    """Pair selection: uniform, ensemble disagreement, or preference entropy."""
    segment_length: int | None = None
    """Steps per segment (default: the env's row of RLHF_ENV_DEFAULTS, else 50)."""
    initial_label_fraction: float = 0.25
    """Share of the budget labeled in the first round, from the initial policy's segments."""
    label_rounds: int = 10
    """Rounds that collect labels (a hyperbolically decaying number each after the first)."""
    label_phase: float | None = None
    """Fraction of total_steps over which the label rounds are spread (default: the env's row, else 0.25)."""
    ending_pair_share: float | None = None
    """Share of candidate pairs that include a segment reaching its episode's termination, while the pool holds
    one (default: the env's row of RLHF_ENV_DEFAULTS, else 0: uniform). For sparse goals (Acrobot, MountainCar)."""
    candidate_factor: int = 10
    """Candidate pairs scored per query (active selection keeps the most informative)."""
    pool_size: int = 1000
    """Most recent segments that pairs are drawn from."""
    ensemble_size: int = 5
    """Reward-model ensemble members (MLP). Five rather than three: on Pendulum's tuning seeds the worst runs of the
    oracle and of the mistaken teachers came out far better (with 20% mistakes 1 run in 20 spun, against 9)."""
    reward_epochs: int = 30
    """Maximum reward-model epochs per round (early stopping on held-out labels)."""
    reward_lr: float = 1e-3
    """Reward-model learning rate."""
    label_smoothing: float = 0.0
    """Label smoothing of the Bradley-Terry targets (for noisy labelers)."""
    random_answer_rate: float = 0.1
    """Assumed share of random answers in the reward model's likelihood (Christiano et al. 2017): in [0, 0.5);
    0 is plain Bradley-Terry. 0.1 costs nothing with an oracle and holds a teacher with 10% mistakes."""
    reward_refit: bool = False
    """Train the reward model from fresh weights (a small output layer) at each round after the first, on all
    labels so far, instead of continuing from the last round's: a model that learned a wrong ranking early is not
    kept from unlearning it. Helps with a teacher that gets one answer in five wrong; not with one in ten."""
    reward_warm_start: bool = False
    """Before the first labels, regress the reward ensemble onto a state-entropy reward of the segments so far
    (RIME's warm start)."""
    label_filter: Literal["none", "rime"] = "none"
    """rime: before each reward epoch, leave out labels the model contradicts beyond an adaptive threshold and
    flip confidently contradicted ones (Cheng et al. 2024); none: train on every label."""
    reward_regularization: Literal["weight-decay", "adaptive-l2"] = "weight-decay"
    """weight-decay: AdamW's fixed decoupled decay (1e-2); adaptive-l2: Christiano et al.'s L2 penalty, its
    coefficient moved each epoch to keep the held-out loss between 1.1 and 1.5 times the training loss."""
    human_pace: Literal["wait", "continue"] = "wait"
    """--teacher human: wait: at each label round the policy waits until that round's labels are in (the page and
    the terminal say how many are awaited), so it never outruns its labelers; continue: PPO goes on with the
    reward model it has, retrained as labels come in."""
    human_retrain_labels: int = 10
    """--teacher human: also retrain the reward model each time this many new labels are in (between rounds)."""
    host: str = "127.0.0.1"
    """--teacher human: address of the labeling service."""
    port: int = 8000
    """--teacher human: port of the labeling service."""
    eval_every: int = 10_000
    """Evaluate the policy on the true reward every this many env steps (0: only at the end), and at the end."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    ppo_config: Path | None = None
    """JSON file of PPO (or, with --algo gpto, GPTO) fields overriding the env's defaults."""
    device: str = "cpu"
    """Learner device (cpu or cuda)."""
    out: Path | None = None
    """Run folder; the preference store is OUT/prefs.sqlite (default runs/run-<env>-<time>)."""
    track: bool = False
    """Also log to wandb (offline unless logged in)."""
    resume: Path | None = None
    """Continue the run in this folder from its store and last checkpoint."""

    FIELDS_ADDED_LATER: ClassVar[dict[str, Any]] = {
        "algo": "ppo",
        "random_answer_rate": 0.0,
        "reward_inputs": "observations-actions",
        "ending_pair_share": 0.0,
        "label_filter": "none",
        "reward_warm_start": False,
        "reward_refit": False,
        "reward_regularization": "weight-decay",
        "human_pace": "continue",
    }
    """What a run saved before these fields existed did (``--resume`` keeps it: the same experiment)."""

    @classmethod
    def cli_default(cls, env: str | None, config_file: str | None, resume: str | None) -> RLHFConfig:
        """The default instance the CLI shows and overrides (``baselines.common.config.cli_default``)."""
        return cli_default(cls, env, config_file, resume)

    @property
    def resolved_label_phase(self) -> float:
        default = RLHF_ENV_DEFAULTS.get(self.env, {}).get("label_phase", 0.25)
        return float(self.label_phase if self.label_phase is not None else default)

    @property
    def resolved_reward_inputs(self) -> str:
        default = RLHF_ENV_DEFAULTS.get(self.env, {}).get("reward_inputs", "observations")
        return str(self.reward_inputs or default)

    @property
    def resolved_ending_pair_share(self) -> float:
        default = RLHF_ENV_DEFAULTS.get(self.env, {}).get("ending_pair_share", 0.0)
        return float(default if self.ending_pair_share is None else self.ending_pair_share)

    @property
    def resolved_segment_length(self) -> int:
        default = RLHF_ENV_DEFAULTS.get(self.env, {}).get("segment_length", 50)
        return int(default if self.segment_length is None else self.segment_length)  # 0 is refused, not replaced

    @property
    def learner(self) -> Learner:
        return GPTO if self.algo == "gpto" else PPO

    def ppo(self) -> PPOConfig:
        """The PPO (or GPTO) config of the loop: the env's defaults, the loop's overrides, then --ppo-config."""
        # The learned reward is scaled by LearnedReward (a step's RMS); a row or --ppo-config may also have PPO
        # scale it by the discounted return's std, where a long horizon makes returns large (gamma 0.999).
        overrides: dict[str, Any] = {"normalize_reward": False}
        overrides.update(RLHF_ENV_DEFAULTS.get(self.env, {}).get("ppo", {}))
        if self.ppo_config is not None:
            overrides.update(read_config_file(GPTOConfig if self.algo == "gpto" else PPOConfig, self.ppo_config))
        overrides.update(
            total_steps=self.total_steps,
            seed=self.seed,
            device=self.device,
            eval_every=self.eval_every,
            eval_episodes=self.eval_episodes,
        )
        config_class = GPTOConfig if self.algo == "gpto" else PPOConfig
        return config_class.defaults_for(self.env, **{k: v for k, v in overrides.items() if k != "env"})

    def validate(self) -> None:
        check(self.labels > 0, f"--labels must be positive (the label budget), got {self.labels}")
        pace = self.human_pace
        check(pace in ("wait", "continue"), f"--human-pace must be wait or continue, got {pace!r}")
        rate = self.random_answer_rate
        check(0.0 <= rate < 0.5, f"--random-answer-rate must be in [0, 0.5) (0.5: every answer random), got {rate}")
        check(self.total_steps > 0, f"--total-steps must be positive, got {self.total_steps}")
        check(0 < self.initial_label_fraction <= 1, "--initial-label-fraction must be in (0, 1]")
        check(
            self.label_rounds >= 1 and 0 < self.resolved_label_phase <= 1,
            "--label-rounds >= 1, --label-phase in (0, 1]",
        )
        check(self.candidate_factor >= 1 and self.ensemble_size >= 1, "--candidate-factor, --ensemble-size >= 1")
        share = self.resolved_ending_pair_share
        check(0.0 <= share <= 1.0, f"--ending-pair-share must be in [0, 1], got {share}")
        check(self.pool_size >= 2, f"--pool-size must be at least 2 (segments to pair), got {self.pool_size}")
        check(self.query == "uniform" or self.ensemble_size > 1 or self.query == "entropy",
              "--query disagreement needs --ensemble-size of at least 2")  # fmt: skip
        policy_config = self.ppo()
        policy_config.validate()
        if isinstance(policy_config, GPTOConfig):
            check(policy_config.tasks is None, "--ppo-config: GPTO's tasks are not for rlhf run (one env's rewards)")
            check(policy_config.reuse == 1, "--ppo-config: GPTO's reuse is not for rlhf run (earlier rollouts' "
                  "rewards came from reward models since retrained)")  # fmt: skip
        self.make_teacher()
        if self.human and self.env in MUJOCO_VIEWS:
            check_mujoco_rendering()  # people see clips: refuse before the run folder exists, not at the first query
        horizon = _horizon(self.env)
        length = self.resolved_segment_length
        check(length >= 1, f"--segment-length must be at least 1, got {length}")
        # A budget beyond the pairs a run can form would only ask the same pairs again, and scoring its candidates
        # at once would exhaust memory: refuse it before anything is allocated.
        segments = max(self.total_steps // length, 2)
        pairs = segments * (segments - 1) // 2
        check(
            self.labels <= pairs,
            f"--labels {self.labels} is more than the {pairs:,} distinct pairs of the about {segments} segments of "
            f"{length} steps that --total-steps {self.total_steps} collects; lower --labels or raise --total-steps",
        )
        if horizon is not None:
            check(
                length <= horizon, f"--segment-length {length} is longer than {self.env}'s horizon of {horizon} steps"
            )

    @property
    def human(self) -> bool:
        return self.teacher == "human"

    def make_teacher(self) -> SimulatedTeacher | None:
        if self.human:
            return None
        return make_teacher(
            self.teacher, self.teacher_beta, self.teacher_gamma, self.teacher_epsilon, self.teacher_threshold
        )


def _horizon(env_id: str) -> int | None:
    import gymnasium as gym

    spec = gym.spec(env_id)
    return spec.max_episode_steps


def label_schedule(total: int, rounds: int, initial_fraction: float, decay: float = 1.0) -> list[int]:
    """Labels per round: ``initial_fraction`` of the budget first, the rest decaying as ``1 / (1 + decay * i)``.

    The counts sum to ``total`` exactly (largest remainders), as imitation's hyperbolic query schedule.
    """
    first = max(1, round(total * initial_fraction)) if rounds > 1 else total
    rest = total - first
    weights = np.array([1.0 / (1.0 + decay * i) for i in range(1, rounds)])
    if rest <= 0 or len(weights) == 0:
        return [total] + [0] * (rounds - 1)
    shares = rest * weights / weights.sum()
    counts = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - counts))[: rest - counts.sum()]:
        counts[i] += 1
    return [first, *counts.tolist()]


@dataclass
class LoopState:
    """What the loop adds to PPO's state: the round counter, labels, segments in memory, history."""

    round: int = 0
    labels_used: int = 0
    queries: int = 0
    trained_on: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    label_filter: dict[str, float] = dataclasses.field(default_factory=dict)
    """The label filter's running threshold state (``LabelFilter.state_dict``); empty without a filter."""
    l2: dict[str, float] = dataclasses.field(default_factory=dict)
    """The adaptive L2 coefficient (``AdaptiveL2.state_dict``); empty without it."""


def _preference_data(
    store: PreferenceStore, segments: dict[str, Segment], action_space: Any, model: Any, trained: bool
) -> PreferenceData | None:
    """All effective non-skip labels as Bradley-Terry training data (targets: 1 a, 0 b, 0.5 tie), each weighted by
    its labeler's estimated reliability (``rlhf.labelers``, recorded in the store for the admin page); None while
    there are none (a teacher may skip every pair it has seen).

    The reliability reads the reward model's ``P(a)`` from before this round's training (``trained``: whether
    there is such a model), so the round's new labels are judged by a model that never saw them; agreement with
    other labelers on shared pairs counts too. One labeler alone weighs 1 (``estimate_labeler_quality``); estimates
    that would leave every label at weight 0 train unweighted with a warning (an operator's weights that do raise).
    """
    labeled = [p for p in store.effective_labels() if p.choice != "skip"]
    if not labeled:
        return None
    missing = [i for p in labeled for i in (p.segment_a, p.segment_b) if i not in segments]
    for segment in store.get_segments(sorted(set(missing))):
        segments[segment.id] = segment
    pairs = [(segments[p.segment_a], segments[p.segment_b], p.choice) for p in labeled]
    model_prob_a = None
    if trained:
        probabilities = preference_probabilities(
            model,
            segment_features([a for a, _, _ in pairs], action_space),
            segment_features([b for _, b, _ in pairs], action_space),
        ).mean(axis=0)
        model_prob_a = {p.query_id: float(prob) for p, prob in zip(labeled, probabilities, strict=True)}
    overrides = store.labeler_weight_overrides()
    qualities = estimate_labeler_quality(labeled, model_prob_a, overrides)
    store.record_labeler_quality(qualities)
    try:
        weights = label_weights(labeled, qualities)
    except ConfigError:
        if overrides:  # the operator's weights leave nothing to train on: say so
            raise
        print("labeler weights: every labeler looks no better than chance; training unweighted", file=sys.stderr)
        return preference_data(pairs, action_space)
    return preference_data(pairs, action_space, weights=weights)


def run_rlhf(config: RLHFConfig, on_store_ready: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Run the loop into the run folder; return summary.json's content.

    With ``--teacher human`` the loop is asynchronous: each round queues pairs (with their clips) in the store and
    PPO goes on with the current reward model; the model is retrained whenever ``human_retrain_labels`` new labels
    are in. ``on_store_ready(out)`` is called once the store exists (the CLI starts the labeling service there).
    """
    world = init_world()  # gloo: the reward model trains on the CPU
    check(
        world.size == 1 or (config.algo == "ppo" and not config.human and config.device == "cpu"),
        "rlhf run under torchrun takes --algo ppo, a simulated teacher and --device cpu",
    )
    resuming = config.resume is not None
    if resuming:  # the labeling service's address may change; the experiment may not
        cfg = resolve_resume(config, extra_resumable={"host", "port", "human_retrain_labels", "human_pace"})
    else:  # under torchrun, rank 0's run folder (its time stamp) is everyone's
        cfg = dataclasses.replace(config, out=world.broadcast_object(config.out or default_run_dir("run", config.env)))
    cfg.validate()
    assert cfg.out is not None
    out = cfg.out
    checkpoint = load_checkpoint(out / "checkpoint.pt") if resuming else None
    if checkpoint is None and world.is_main:
        RunFolder.check_new(out)
    if checkpoint is not None:
        ranks = int(checkpoint["ppo"].get("world_size", 1))
        check(ranks == world.size, f"{out} ran on {ranks} ranks; resume it on as many (here {world.size})")
    ppo_cfg = dataclasses.replace(cfg.ppo(), out=out)
    state = init_ppo(rank_share(ppo_cfg, world), world=world) if world.size > 1 else cfg.learner.init(ppo_cfg)
    if checkpoint is not None:
        cfg.learner.load_state(state, checkpoint["ppo"])
    envs = state.envs
    action_space = envs.single_action_space
    obs_shape = tuple(envs.single_observation_space.shape or ())
    segment_length = cfg.resolved_segment_length
    if not world.is_main:
        return _follow(cfg, state, world, obs_shape, checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    # Simulated labels need no power-loss durability; a person's labels (the labeling service) get FULL.
    store = PreferenceStore(out / "prefs.sqlite", sqlite_synchronous="FULL" if cfg.human else "NORMAL")
    try:
        store.bind_env(cfg.env, obs_shape, describe_action_space(action_space), segment_length)
    except ConfigError:
        envs.close()
        store.close()
        raise
    teacher = cfg.make_teacher()
    labeler_id = store.get_or_create_labeler(f"teacher:{teacher.name}").id if teacher is not None else -1
    if on_store_ready is not None:
        on_store_ready(out)
    rng = np.random.default_rng([cfg.seed, 1])
    model, trainer_cfg, label_filter, l2 = _reward_learning(cfg, obs_shape, action_space)
    learned_reward = LearnedReward(model, absorbing_features(int(np.prod(obs_shape)), action_space), action_space)
    loop = LoopState()
    if checkpoint is not None:
        model, learned_reward = _resumed_reward(out, checkpoint, model, obs_shape, action_space)
        loop = LoopState(**checkpoint["loop"])
        if label_filter is not None and loop.label_filter:
            label_filter.load_state_dict(loop.label_filter)
        if l2 is not None and loop.l2:
            l2.load_state_dict(loop.l2)
        # The store is the record of what was asked and labeled: a round may have queued its pairs and taken its
        # labels after the checkpoint. Counting from the store keeps the label budget exact; such a round is asked
        # again (capped by what is left of the budget), unanswered queries are answered by the next round.
        loop.labels_used = len(store.effective_labels(include_skips=False))  # as training counts them
        loop.queries = store.stats().queries
        status = LoopStatus(loop.round, loop.labels_used, cfg.labels, state.global_step, cfg.total_steps)
        store.record_loop_status(status, rewind_to=state.global_step)  # the admin page's curves, as of then
        rng = np.random.default_rng([cfg.seed, 1, state.global_step])
    folder = RunFolder.create(out, cfg, resume_step=state.global_step if resuming else None)
    reward_fn = as_ppo_reward_fn(learned_reward, actions="env", world=world)
    schedule = label_schedule(cfg.labels, cfg.label_rounds, cfg.initial_label_fraction)
    round_every = max(1, int(cfg.resolved_label_phase * cfg.total_steps / cfg.label_rounds))
    cutter = SegmentCutter(ppo_cfg.num_envs, segment_length, rng)
    pool = SegmentPool(cfg.pool_size)
    segments: dict[str, Segment] = {}
    start_time = time.perf_counter()
    start_step = state.global_step
    next_eval = next_due(state.global_step, cfg.eval_every)
    eval_returns = np.zeros(0)
    metrics_last: dict[str, float] = {}
    next_status = 0.0
    loop_clip: str | None = None
    try:
        with MetricsLogger(folder, cfg, cfg.track) as logger, progress_bar(cfg.total_steps, f"rlhf {cfg.env}") as bar:
            bar.update(state.global_step)
            while state.global_step < cfg.total_steps:
                rollout = collect_rollout(state)
                new_segments = cutter.add(
                    rollout.obs, rollout.env_actions, rollout.true_rewards, rollout.terminated, rollout.truncated
                )
                if world.size > 1:  # every rank's segments, in rank order, reach the store through rank 0
                    new_segments = [segment for part in world.gather_objects(new_segments) for segment in part]
                if new_segments:
                    store.add_segments(new_segments, round=loop.round)
                    pool.extend(new_segments)
                    segments.update((s.id, s) for s in new_segments)
                metrics: dict[str, float] = {}
                rollout_start = state.global_step - rollout.true_rewards.size * world.size  # all ranks' steps
                due = min(len(schedule), rollout_start // round_every + 1)
                wanted = sum(schedule[loop.round : due]) if due > loop.round else 0
                if wanted > 0 and len(pool) >= 2:
                    metrics |= _label_round(
                        cfg, store, teacher, labeler_id, model, pool, wanted, rng, loop, action_space
                    )
                    loop.round = due
                    store.record_loop_status(
                        LoopStatus(loop.round, loop.labels_used, cfg.labels, state.global_step, cfg.total_steps)
                    )
                retrain = wanted > 0
                if cfg.human:
                    # --human-pace wait: pairs still open are a round's (or, resumed, the interrupted round's).
                    paced = cfg.human_pace == "wait" and store.open_label_count() > 0
                    if "labels/queued" in metrics or (paced and loop_clip is None):  # what the policy does now
                        loop_clip = _policy_clip(state, cfg, f"policy-{state.global_step:08d}.mp4") or loop_clip
                    if paced:
                        _save(out, cfg.learner, state, learned_reward, loop)  # --resume goes on from here
                        _wait_for_round(cfg, store, state.global_step, loop, loop_clip, bar)
                    retrain = _human_retrain_due(cfg, store, loop, schedule[0], paced)
                data = None
                if retrain:
                    data = _preference_data(store, segments, action_space, model, trained=bool(loop.history))
                    loop.labels_used = loop.trained_on = 0 if data is None else len(data.targets)
                    data = data if data is not None and len(data.targets) >= 2 else None
                if world.size > 1:  # the other ranks train with rank 0 (``_follow``)
                    world.broadcast_object(data)
                if data is not None:
                    if cfg.reward_warm_start and not loop.history:  # the first training: start it warm
                        segments_so_far = list(pool.segments)
                        metrics["reward/warm_start_mse"] = _warm_start(model, segments_so_far, action_space, rng)
                    if cfg.reward_refit and loop.history:  # each later training starts afresh
                        reinitialize(model, cfg.seed + 7919 * len(loop.history), REFIT_OUTPUT_SCALE)
                    training_rng = _training_rng(world, rng, model)
                    fit = train_reward_model(model, data, trainer_cfg, training_rng, label_filter, l2, world)
                    if label_filter is not None:
                        loop.label_filter = label_filter.state_dict()
                    if l2 is not None:
                        loop.l2 = l2.state_dict()
                        metrics["reward/l2_coefficient"] = l2.coefficient
                    metrics["reward/val_accuracy"] = float(fit["val_accuracy"])
                    metrics["reward/train_loss"] = float(fit["train_loss"])
                    for verdict in ("trusted", "flipped", "dropped", "downweighted"):
                        metrics[f"reward/labels_{verdict}"] = fit[f"labels_{verdict}"]
                    metrics["reward/return_correlation"] = _return_correlation(model, list(pool.segments), action_space)
                    loop.history.append({"step": state.global_step, "round": loop.round, **metrics})
                    save_reward_model(model, out / "reward_model")
                rollout.rewards = reward_fn(rollout)
                metrics |= cfg.learner.update(state, rollout)
                metrics["labels/total"] = loop.labels_used
                metrics["charts/SPS"] = (state.global_step - start_step) / max(time.perf_counter() - start_time, 1e-9)
                if rollout.episode_returns:
                    metrics["charts/episodic_return"] = float(np.mean(rollout.episode_returns))
                metrics["charts/learned_reward_mean"] = float(rollout.rewards.mean())
                if state.global_step >= next_eval or state.global_step >= cfg.total_steps:
                    eval_returns = evaluate_policy(state.policy(), cfg.env, cfg.eval_episodes, cfg.seed)
                    metrics["eval/return_mean"] = float(eval_returns.mean())
                    metrics["eval/return_std"] = float(eval_returns.std())
                    next_eval += cfg.eval_every
                measured = "reward/val_accuracy" in metrics or "eval/return_mean" in metrics
                if measured or time.monotonic() >= next_status:  # a write per rollout would cost an fsync each
                    store.record_loop_status(
                        LoopStatus(
                            loop.round,
                            loop.labels_used,
                            cfg.labels,
                            state.global_step,
                            cfg.total_steps,
                            reward_val_accuracy=metrics.get("reward/val_accuracy"),
                            reward_return_correlation=metrics.get("reward/return_correlation"),
                            policy_true_return=metrics.get("eval/return_mean"),
                        )
                    )
                    next_status = time.monotonic() + STATUS_EVERY_S
                logger.log(metrics, step=state.global_step)
                metrics_last = metrics
                _save(out, cfg.learner, state, learned_reward, loop)
                bar.update(ppo_cfg.rollout_steps)
                bar.set_postfix(labels=loop.labels_used, refresh=False)
        if len(eval_returns) == 0:  # a resumed run that had already finished: evaluate it once more
            eval_returns = evaluate_policy(state.policy(), cfg.env, cfg.eval_episodes, cfg.seed)
        wall = time.perf_counter() - start_time  # the run's time, without the final clip's rendering
        final_clip = _policy_clip(state, cfg, FINAL_CLIP)
        # The run is over: pairs nobody answered are served no more, and the page says how it ended.
        closed = store.close_open_queries()
        final = LoopStatus(loop.round, loop.labels_used, cfg.labels, state.global_step, cfg.total_steps,
                           phase="finished", policy_clip=final_clip)  # fmt: skip
        store.record_loop_status(final)
        if closed and cfg.human:
            print(f"run finished: {closed} queued pairs nobody answered were closed", file=sys.stderr, flush=True)
    finally:
        envs.close()
        store.close()
    accuracy = next((h["reward/val_accuracy"] for h in reversed(loop.history) if "reward/val_accuracy" in h), None)
    warn_if_unmeasured(accuracy, "rlhf run")
    summary = {
        "algo": "rlhf",
        "policy_algo": cfg.algo,
        "env_id": cfg.env,
        "seed": cfg.seed,
        "env_steps": state.global_step,
        "wall_seconds": wall,
        "steps_per_second": (state.global_step - start_step) / max(wall, 1e-9),
        "eval_return_mean": float(eval_returns.mean()) if len(eval_returns) else None,
        "eval_return_std": float(eval_returns.std()) if len(eval_returns) else None,
        "eval_episodes": len(eval_returns),
        "labels_used": loop.labels_used,
        "reward_model_accuracy": accuracy,
        "reward_return_correlation": metrics_last.get("reward/return_correlation")
        or next((h["reward/return_correlation"] for h in reversed(loop.history)), None),
        "teacher": cfg.teacher,
        "query": cfg.query,
        "reward_model": cfg.reward_model,
    }
    folder.write_summary(summary)
    write_report(folder, summary, model, list(pool.segments), action_space, out / CLIPS_DIR / FINAL_CLIP)
    return summary


def _label_round(
    cfg: RLHFConfig,
    store: PreferenceStore,
    teacher: SimulatedTeacher | None,
    labeler_id: int,
    model: Any,
    pool: SegmentPool,
    wanted: int,
    rng: np.random.Generator,
    loop: LoopState,
    action_space: Any,
) -> dict[str, float]:
    """Select ``wanted`` pairs and queue them in the store; a simulated teacher answers them through the store.

    For people (``teacher`` None) the pairs' clips are rendered first, and nobody waits for the answers here.
    """
    wanted = min(wanted, cfg.labels - loop.queries)
    if wanted <= 0:
        return {}
    candidates = pool.sample_pairs(wanted * cfg.candidate_factor, rng, cfg.resolved_ending_pair_share)
    probabilities = None
    if cfg.query != "uniform" and loop.labels_used > 0:
        probabilities = preference_probabilities(
            model,
            segment_features([a for a, _ in candidates], action_space),
            segment_features([b for _, b in candidates], action_space),
        )
    method: QueryMethod = cfg.query if probabilities is not None else "uniform"
    chosen, priorities = select_pairs(method, candidates, wanted, probabilities, rng)
    if teacher is None:
        unrendered = [s for pair in chosen for s in pair if store.get_clip_path(s.id) is None]
        assert cfg.out is not None
        render_segments(store, list({s.id: s for s in unrendered}.values()), cfg.out / CLIPS_DIR, env_id=cfg.env)
    store.add_queries(
        [(a.id, b.id) for a, b in chosen],
        priorities.tolist(),
        (rng.random(len(chosen)) < 0.5).tolist(),
        loop.round,
        labels_wanted=int(store.get_meta("ui.labels_per_pair", 1)) if teacher is None else 1,
    )
    loop.queries += len(chosen)
    if teacher is None:
        return {"labels/queued": float(len(chosen))}
    by_id = {s.id: s for pair in chosen for s in pair}
    answered = 0
    while (query := store.lease_next(labeler_id, lease_seconds=300)) is not None:
        a = by_id.get(query.segment_a) or store.get_segment(query.segment_a)
        b = by_id.get(query.segment_b) or store.get_segment(query.segment_b)
        store.add_label(query.id, labeler_id, teacher.choose(a, b, rng), 0.0)
        answered += 1
    loop.labels_used += answered
    return {"labels/round": float(answered)}


def _wait_for_round(
    cfg: RLHFConfig, store: PreferenceStore, env_steps: int, loop: LoopState, clip: str | None, bar: Any
) -> None:
    """``--human-pace wait``: block until the queued pairs have their labels (skips count as answers), telling
    the labeling page (loop status ``waiting``, with the count) and the terminal how many are still due.

    Ctrl-C here leaves the pairs queued in the store and a checkpoint saved just before: ``--resume`` waits for
    the rest of them, and a labeler's answers given meanwhile count.
    """
    awaited = store.open_label_count()
    if awaited == 0:
        return
    print(
        f"round {loop.round}: waiting for {awaited} labels from the labeling page ({loop.labels_used} of "
        f"{cfg.labels} in so far) ...",
        file=sys.stderr,
        flush=True,
    )
    shown = -1
    while awaited > 0:
        if awaited != shown:
            status = LoopStatus(loop.round, loop.labels_used, cfg.labels, env_steps, cfg.total_steps,
                                phase="waiting", labels_awaited=awaited, policy_clip=clip)  # fmt: skip
            store.record_loop_status(status)
            bar.set_postfix(waiting_for=awaited, refresh=True)
            shown = awaited
        time.sleep(HUMAN_POLL_S)
        awaited = store.open_label_count()
    store.record_loop_status(LoopStatus(loop.round, loop.labels_used, cfg.labels, env_steps, cfg.total_steps))
    bar.set_postfix(labels=loop.labels_used, refresh=False)


def _human_retrain_due(cfg: RLHFConfig, store: PreferenceStore, loop: LoopState, first_round: int, paced: bool) -> bool:
    """Whether to retrain on people's labels now.

    After a round waited for (``paced``): when any new label came in. Otherwise each ``human_retrain_labels`` new
    labels, and the last ones of the budget. With ``--human-pace continue``, before the first model, wait for the
    first labels (PPO on an untrained reward would learn noise); with ``wait`` the rounds already did.
    """
    needed = min(cfg.human_retrain_labels, first_round)
    announced = False
    while True:
        count = sum(1 for p in store.effective_labels() if p.choice != "skip")
        loop.labels_used = count
        if paced:
            return count > loop.trained_on
        if loop.trained_on > 0 or cfg.human_pace == "wait":
            return count - loop.trained_on >= cfg.human_retrain_labels or (
                count > loop.trained_on and (count >= cfg.labels or loop.trained_on == 0)
            )
        if count >= needed:
            return True
        if not announced:
            print(f"waiting for the first {needed} labels from the labeling page ...", file=sys.stderr, flush=True)
            announced = True
        time.sleep(HUMAN_POLL_S)


def _policy_clip(state: PPOState, cfg: RLHFConfig, name: str) -> str | None:
    """Render one episode of the current policy into the run's clips folder (the labeling service's media dir);
    its file name, or None with a warning when the env cannot be rendered (the run goes on without a clip)."""
    assert cfg.out is not None
    folder = cfg.out / CLIPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    try:
        render_policy_clip(state.policy(), cfg.env, folder / name, cfg.seed)
    except ConfigError as error:
        print(f"no clip of the policy: {error}", file=sys.stderr, flush=True)
        return None
    return name


def _reward_learning(
    cfg: RLHFConfig, obs_shape: tuple[int, ...], action_space: Any
) -> tuple[RewardModel, RewardTrainerConfig, LabelFilter | None, AdaptiveL2 | None]:
    """The reward model, its trainer's settings, RIME's filter and the adaptive L2 penalty of ``cfg``."""
    obs_dim = int(np.prod(obs_shape))
    model_cfg = RewardModelConfig(
        ignored_features=action_columns(obs_dim, action_space) if cfg.resolved_reward_inputs == "observations" else (),
        kind=cfg.reward_model,
        feature_dim=obs_dim + action_feature_dim(action_space) + 1,
        ensemble_size=cfg.ensemble_size if cfg.reward_model == "mlp" else 1,
        max_length=cfg.resolved_segment_length,
        seed=cfg.seed,
    )
    trainer_cfg = RewardTrainerConfig(
        epochs=cfg.reward_epochs,
        lr=cfg.reward_lr,
        label_smoothing=cfg.label_smoothing,
        random_answer_rate=cfg.random_answer_rate,
        split_seed=cfg.seed,
        weight_decay=0.0 if cfg.reward_regularization == "adaptive-l2" else RewardTrainerConfig.weight_decay,
    )
    label_filter = LabelFilter() if cfg.label_filter == "rime" else None
    l2 = AdaptiveL2() if cfg.reward_regularization == "adaptive-l2" else None
    return build_reward_model(model_cfg), trainer_cfg, label_filter, l2


# ------------------------------------------------------------------------------------- the loop over ranks
def _resumed_reward(
    out: Path, checkpoint: dict[str, Any], model: RewardModel, obs_shape: tuple[int, ...], action_space: Any
) -> tuple[RewardModel, LearnedReward]:
    """The reward model and learned reward a run saved (its fresh ``model`` if it never trained one)."""
    if (out / "reward_model").exists():  # else it was never trained: the fresh model is the saved state
        model = load_reward_model(out / "reward_model")
    learned_reward = LearnedReward(model, absorbing_features(int(np.prod(obs_shape)), action_space), action_space)
    learned_reward.load_state_dict(checkpoint["learned_reward"])
    return model, learned_reward


def _follow(
    cfg: RLHFConfig,
    state: PPOState,
    world: World,
    obs_shape: tuple[int, ...],
    checkpoint: dict[str, Any] | None,
) -> dict[str, Any]:
    """A rank other than 0 under ``torchrun``: step its envs on the learned reward, send its segments to rank 0
    (which stores them, asks for labels and decides when the reward model trains), train the reward model with
    the other ranks on rank 0's labels, and update the policy with them. Every collective here meets its twin in
    ``run_rlhf``'s loop, in the same order; this rank writes nothing. Resumed, it reads the run folder rank 0
    saved (the same folder, as a resumed ``rlhf ppo`` does): the policy, the reward model and its running scale."""
    action_space = state.envs.single_action_space
    model, trainer_cfg, label_filter, l2 = _reward_learning(cfg, obs_shape, action_space)
    learned_reward = LearnedReward(model, absorbing_features(int(np.prod(obs_shape)), action_space), action_space)
    if checkpoint is not None:
        assert cfg.out is not None
        model, learned_reward = _resumed_reward(cfg.out, checkpoint, model, obs_shape, action_space)
    reward_fn = as_ppo_reward_fn(learned_reward, actions="env", world=world)
    rng = np.random.default_rng([cfg.seed, 1, world.rank, *([state.global_step] if checkpoint is not None else [])])
    cutter = SegmentCutter(state.config.num_envs, cfg.resolved_segment_length, rng)
    try:
        while state.global_step < cfg.total_steps:
            rollout = collect_rollout(state)
            world.gather_objects(
                cutter.add(rollout.obs, rollout.env_actions, rollout.true_rewards, rollout.terminated,
                           rollout.truncated)
            )  # fmt: skip
            data: PreferenceData | None = world.broadcast_object(None)
            if data is not None:
                train_reward_model(model, data, trainer_cfg, _training_rng(world, rng, model), label_filter, l2, world)
            rollout.rewards = reward_fn(rollout)
            cfg.learner.update(state, rollout)
    finally:
        state.envs.close()
    return {"algo": "rlhf", "env_id": cfg.env, "rank": world.rank, "env_steps": state.global_step}


def _training_rng(world: World, rng: np.random.Generator, model: RewardModel) -> np.random.Generator:
    """The generator a reward-model training draws from: ``rng`` in one process; over ranks, one seeded by rank 0,
    after every rank took rank 0's weights (its warm start or refit), so all draw the same minibatches."""
    if world.size == 1:
        return rng
    for tensor in model.state_dict().values():
        world.broadcast_(tensor)
    return np.random.default_rng(world.broadcast_object(int(rng.integers(2**62)) if world.is_main else None))


def _warm_start(model: Any, segments: list[Segment], action_space: Any, rng: np.random.Generator) -> float:
    """RIME's warm start on the real steps of ``segments``: their state-entropy reward, then an MSE fit."""
    features = segment_features(segments, action_space)
    observations = np.stack([s.obs.reshape(s.length, -1) for s in segments]).astype(np.float32)
    targets = state_entropy_rewards(observations, mask=np.stack([s.mask for s in segments]), rng=rng)
    return warm_start(model, features, targets, rng)


def _return_correlation(model: Any, segments: list[Segment], action_space: Any) -> float:
    """Pearson correlation of predicted (ensemble mean) and true segment returns over ``segments``."""
    if len(segments) < 3:
        return float("nan")
    with torch.no_grad():
        predicted = model.segment_returns(torch.from_numpy(segment_features(segments, action_space))).mean(0).numpy()
    true = np.array([s.true_return for s in segments])
    if predicted.std() == 0 or true.std() == 0:
        return float("nan")
    return float(np.corrcoef(predicted, true)[0, 1])


def _save(out: Path, learner: Learner, state: PPOState, learned_reward: LearnedReward, loop: LoopState) -> None:
    save_checkpoint(
        out / "checkpoint.pt",
        {
            "ppo": learner.state_dict(state),
            "learned_reward": learned_reward.state_dict(),
            "loop": dataclasses.asdict(loop),
        },
    )
    write_json(out / "loop_state.json", {"round": loop.round, "labels_used": loop.labels_used})


def write_report(
    folder: RunFolder,
    summary: dict[str, Any],
    model: Any,
    segments: list[Segment],
    action_space: Any,
    policy_clip: Path | None = None,
) -> None:
    """The final policy's clip beside its true return over env steps, labels over time, reward-model accuracy
    per round, training labels per round, predicted vs true returns."""
    rows = folder.read_metrics()
    report = Report(
        f"RLHF on {summary['env_id']}",
        f"teacher {summary['teacher']}, query {summary['query']}, reward model {summary['reward_model']}, seed "
        f"{summary['seed']}: {summary['labels_used']} labels, {summary['env_steps']} env steps in "
        f"{summary['wall_seconds']:.1f} s. Final true eval return {summary['eval_return_mean']}.",
    )

    if policy_clip is not None:
        report.videos([(policy_clip, f"the final policy, first evaluation episode (true return of the "
                                     f"evaluation: {summary['eval_return_mean']})")])  # fmt: skip
    report.returns_figure(rows, "True return of the RLHF policy (training rollouts; evaluations)")
    xs, ys = metric_series(rows, "labels/total")
    report.figure(go.Figure(go.Scatter(x=xs, y=ys, mode="lines")).update_layout(
        title="Labels collected", xaxis_title="env steps", yaxis_title="labels"))  # fmt: skip
    fig = go.Figure()
    for i, key in enumerate(["reward/val_accuracy", "reward/return_correlation"]):
        xs, ys = metric_series(rows, key)
        fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, name=key, mode="lines+markers",
                                 line={"color": color(i)}))  # fmt: skip
    fig.update_layout(title="Reward model per round", xaxis_title="round", yaxis_range=[-1.05, 1.05])
    report.figure(fig)
    fig = go.Figure()
    for i, verdict in enumerate(["trusted", "flipped", "dropped", "downweighted"]):
        xs, ys = metric_series(rows, f"reward/labels_{verdict}")
        fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, name=verdict, mode="lines+markers",
                                 line={"color": color(i)}))  # fmt: skip
    fig.update_layout(title="Training labels per round: trusted, flipped or dropped by the label filter, and "
                      "down-weighted by their labeler's weight", xaxis_title="round", yaxis_title="labels")  # fmt: skip
    report.figure(fig)
    if len(segments) >= 2:
        with torch.no_grad():
            predicted = model.segment_returns(torch.from_numpy(segment_features(segments, action_space))).mean(0)
        true = [s.true_return for s in segments]
        fig = go.Figure(go.Scatter(x=true, y=predicted.numpy(), mode="markers", marker={"size": 5, "opacity": 0.6}))
        fig.update_layout(title="Predicted vs true segment returns (recent segments)", xaxis_title="true return",
                          yaxis_title="predicted return (ensemble mean)")  # fmt: skip
        report.figure(fig)
    report.text(json.dumps({k: v for k, v in summary.items()}, default=str))
    report.write(folder.report_path)
