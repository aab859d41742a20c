"""GPTO's config: PPO's fields (``baselines/ppo_config.py``) and the trust, reuse and auxiliary-phase settings.

Beside ``baselines/gpto.py`` (the trainer). Per env, GPTO starts from PPO's row of ``ENV_DEFAULTS`` and applies its
own overrides (``GPTO_ENV_DEFAULTS``): the defaults are what ``benchmarks/gpto_ablation.py`` measured, see
docs/gpto.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baselines.common.config import flag
from baselines.common.errors import check
from baselines.ppo_config import PPOConfig
from baselines.tasks import TASK_FAMILIES, parse_tasks
from baselines.trust import TRUST_TERMS, TrustName

GPTO_ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    # Chosen on the tuning seeds (benchmarks/gpto_ablation.py --seeds tuning: 0-2 on CartPole and Pendulum, 0-1 on
    # Acrobot and the double pendulum; docs/gpto.md): the trust term that reached PPO's final IQM in the fewest steps
    # at no loss of final return or speed. On Acrobot-v1 every piece ended lower or the same (kl, spo, PPG, reuse;
    # the trust region never bound); on InvertedDoublePendulum-v5 the one piece tried, the trust region, ended lower
    # on seed 1: GPTO runs PPO's update there.
    "CartPole-v1": {"trust": "spo"},
    "Pendulum-v1": {"trust": "kl"},
}
"""Per-env overrides of GPTO's fields over PPO's row; an env not named here runs PPO's update."""


@dataclass(frozen=True)
class GPTOConfig(PPOConfig):
    """GPTO on a gymnasium env: PPO with a pluggable trust term, rollout reuse and PPG's auxiliary phase."""

    trust: TrustName = "clip"
    """Trust term: clip (PPO), kl (adaptive KL penalty), spo (SPO's quadratic penalty; epsilon = --clip-range) or
    trust-region (the clip, each epoch backtracked until the batch KL is within --kl-bound)."""
    kl_penalty_coef: float = 1.0
    """Initial KL penalty coefficient (trust kl); it adapts to hold the update's KL near --kl-penalty-target."""
    kl_penalty_target: float = 0.01
    """KL per update the adaptive penalty aims at (trust kl; not --target-kl, the adaptive learning rate's)."""
    kl_bound: float = 0.02
    """Hard bound on the update's KL from the rollout's policy (trust trust-region)."""
    backtrack_steps: int = 10
    """Halvings of an epoch's policy change above --kl-bound (or the auxiliary phase's above --aux-kl-bound) before
    it is undone (trust-region: and the update ends)."""
    reuse: int = 1
    """Rollouts each update trains on: the newest and reuse - 1 earlier ones, importance-weighted (1: on-policy)."""
    rho_bar: float = 1.0
    """Truncation (>= 1) of the importance weights pi/mu of earlier rollouts (V-trace's rho-bar; it also caps c)."""
    aux_every: int = 0
    """Run PPG's auxiliary phase every this many updates (0: never)."""
    aux_epochs: int = 6
    """Epochs of the auxiliary phase over the states of the last --aux-every rollouts."""
    aux_minibatches: int = 16
    """Minibatches per epoch of the auxiliary phase (PPG's; each holds 1/16 of the stored states)."""
    aux_clone_coef: float = 1.0
    """Weight of the KL to the pre-phase policy in the auxiliary loss (PPG's beta_clone)."""
    aux_kl_bound: float = 0.01
    """The auxiliary phase's policy change is backtracked until its KL from the pre-phase policy is within this."""
    tasks: str | None = None
    """Multi-task: a task family (pendulum-masses, cartpole-poles), FAMILY/held-out, or env ids joined by commas
    sharing --env's spaces; sub-env i runs task i mod the count, with a task input; --normalize-reward scales each
    task by its own return std (None: --env alone)."""
    init_from: Path | None = None
    """Start from the weights and observation statistics of this run folder's checkpoint (fine-tuning: a fresh
    optimizer and step count)."""

    @classmethod
    def defaults_for(cls, env: str, **overrides: Any) -> GPTOConfig:
        """PPO's config for ``env``, then GPTO's row of GPTO_ENV_DEFAULTS, then ``overrides``."""
        config = super().defaults_for(env, **{**GPTO_ENV_DEFAULTS.get(env, {}), **overrides})
        assert isinstance(config, GPTOConfig)
        return config

    def validate(self) -> None:
        super().validate()
        check(self.trust in TRUST_TERMS, f"--trust must be one of {', '.join(TRUST_TERMS)}, got {self.trust!r}")
        for name in ("kl_penalty_coef", "kl_penalty_target", "kl_bound", "aux_clone_coef", "aux_kl_bound"):
            value = getattr(self, name)
            check(math.isfinite(value) and value > 0, f"{flag(name)} must be a positive number, got {value}")
        check(self.reuse >= 1, f"--reuse must be at least 1 (1: on-policy), got {self.reuse}")
        rho_bar = self.rho_bar
        check(math.isfinite(rho_bar) and rho_bar >= 1, f"--rho-bar must be at least 1 (on-policy data), got {rho_bar}")
        check(self.backtrack_steps >= 0, f"--backtrack-steps must be >= 0, got {self.backtrack_steps}")
        check(self.aux_every >= 0, f"--aux-every must be >= 0 (0: no auxiliary phase), got {self.aux_every}")
        check(self.aux_epochs >= 1 and self.aux_minibatches >= 1, "--aux-epochs and --aux-minibatches must be >= 1")
        if self.tasks is not None:
            tasks = parse_tasks(self.tasks)
            family = TASK_FAMILIES.get(self.tasks.partition("/")[0])
            base = family.env_id if family is not None else tasks[0].env_id
            check(base == self.env, f"--tasks {self.tasks} runs {base}: give --env {base} (its settings are used)")
            count = len(tasks)
            check(self.num_envs % count == 0, f"--num-envs {self.num_envs} must be a multiple of the {count} tasks")
