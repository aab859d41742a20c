"""Reward models over per-step features: an MLP ensemble (Christiano et al. 2017) and a Preference Transformer.

Both read the features of ``rlhf.segments.step_features`` (``[obs, action, absorbed flag]``, ``F`` wide) and give

- ``segment_returns(features (N, L, F)) -> (E, N)``: each member's score of each segment, which the Bradley-Terry
  trainer compares (``P(a > b) = sigmoid(R_a - R_b)``);
- ``member_step_rewards(features (..., F)) -> (E, ...)`` and ``step_rewards -> (...)`` (the ensemble mean): the
  reward of each step taken alone, which the policy optimizes;
- ``member_sequence_rewards(features (T, N, F), episode_starts (T, N))``: the reward of each step of time-major
  sequences given the steps before it in its episode. The MLP is Markovian, so this equals the per-step reward.

MLP ensemble (https://arxiv.org/abs/1706.03741): ``E`` independent MLPs, one scalar per step; a segment's return
is the sum of its step rewards. The members' weights are stacked, so all members run in one batched matmul.

Preference Transformer (Kim et al. 2023, https://arxiv.org/abs/2303.00957): a small causal GPT-2 over the
embedded steps of a segment gives a hidden state ``h_t`` per step; a head gives the step reward ``r_t = head(h_t)``
(which depends on the steps ``<= t``), and a preference-attention layer gives weights from queries and keys of
the hidden states, ``w_t = 1/L sum_i softmax_t(q_i . k_t / sqrt(d))``; the segment score is ``sum_t w_t r_t``
(a weighted mean of the step rewards, as in the paper). The policy's reward for a step is ``r_t`` over a sliding
causal window of up to ``max_length`` steps of its episode (``member_sequence_rewards``), matching what the
model saw in training, where step ``t`` of a segment sees the segment's steps before it. ``member_step_rewards``
is the documented Markovian approximation: each step evaluated alone, at position 0.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from einops import pack, rearrange, unpack
from torch import Tensor, nn

from baselines.common.errors import ConfigError, check, check_hidden_sizes

Activation = Literal["leaky_relu", "tanh"]


@dataclass(frozen=True, kw_only=True)
class RewardModelConfig:
    """What a reward model is; with its weights, all that is needed to rebuild it (``io.py`` saves it as JSON)."""

    feature_dim: int
    """Width ``F`` of the per-step features (``rlhf.segments.step_features``)."""
    kind: Literal["mlp", "transformer"] = "mlp"
    """``mlp``: an ensemble of Markovian MLPs; ``transformer``: the Preference Transformer."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """MLP hidden layer widths."""
    activation: Activation = "leaky_relu"
    """MLP hidden activation."""
    ensemble_size: int | None = None
    """Members ``E``; ``None`` gives 3 for the MLP and 1 for the transformer (each member is a whole GPT-2)."""
    embed_dim: int = 64
    """Transformer width (GPT-2 ``n_embd``)."""
    n_layer: int = 1
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads; must divide ``embed_dim``."""
    max_length: int = 50
    """Transformer context: the longest segment it reads (GPT-2 ``n_positions``), and its sliding window."""
    dropout: float = 0.0
    """Transformer dropout (embeddings, residuals, attention)."""
    seed: int = 0
    """Seed of the initial weights."""
    ignored_features: tuple[int, ...] = ()
    """Feature columns the model never reads (zeroed at its input). The loop lists the action columns here for a
    reward of observations alone: what a person judging a clip sees."""

    def __post_init__(self) -> None:
        # JSON gives lists; the frozen config keeps a hashable tuple.
        object.__setattr__(self, "hidden_sizes", tuple(int(size) for size in self.hidden_sizes))
        object.__setattr__(self, "ignored_features", tuple(int(i) for i in self.ignored_features))
        check(
            all(0 <= i < self.feature_dim for i in self.ignored_features),
            f"ignored_features must be columns of the {self.feature_dim} features, got {self.ignored_features}",
        )
        check(
            self.kind in ("mlp", "transformer"), f"reward model kind must be 'mlp' or 'transformer', not {self.kind!r}"
        )
        check(self.feature_dim >= 1, f"feature_dim must be at least 1, got {self.feature_dim}")
        check_hidden_sizes(self.hidden_sizes, inputs=self.feature_dim, what="reward model hidden sizes")
        check(
            self.activation in ("leaky_relu", "tanh"), f"activation must be leaky_relu or tanh, not {self.activation}"
        )
        check(self.members >= 1, f"ensemble_size must be at least 1, got {self.ensemble_size}")
        check(self.max_length >= 1, f"max_length must be at least 1, got {self.max_length}")
        check(self.n_layer >= 1 and self.n_head >= 1, "the transformer needs n_layer >= 1 and n_head >= 1")
        check(
            self.embed_dim % self.n_head == 0,
            f"embed_dim ({self.embed_dim}) must be a multiple of n_head ({self.n_head})",
        )
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")

    def input_mask(self) -> Tensor:
        """``(F,)`` 1 for the columns the model reads, 0 for ``ignored_features``."""
        mask = torch.ones(self.feature_dim)
        mask[list(self.ignored_features)] = 0.0
        return mask

    @property
    def members(self) -> int:
        """The ensemble size ``E`` this config builds."""
        if self.ensemble_size is not None:
            return self.ensemble_size
        return 3 if self.kind == "mlp" else 1


class RewardModel(nn.Module, ABC):
    """What the trainer, the query selector and the learned-reward wrapper rely on."""

    config: RewardModelConfig

    @property
    def ensemble_size(self) -> int:
        """Members ``E``."""
        return self.config.members

    @property
    def context_length(self) -> int:
        """How many steps (the step itself included) a step's reward may depend on; 1 means Markovian."""
        return 1

    @abstractmethod
    def segment_returns(self, features: Tensor) -> Tensor:
        """Each member's score of each segment.

        Args:
            features: ``(N, L, F)`` per-step features of ``N`` segments of ``L`` steps.

        Returns:
            ``(E, N)`` predicted segment returns (differentiable).
        """

    @abstractmethod
    def member_step_rewards(self, features: Tensor) -> Tensor:
        """Each member's reward of each step, taken alone: ``(..., F) -> (E, ...)`` (differentiable)."""

    @abstractmethod
    def output_parameters(self) -> list[nn.Parameter]:
        """The weights and biases of the layer that gives the step reward (scaled by ``reinitialize``)."""

    def step_rewards(self, features: Tensor) -> Tensor:
        """Ensemble-mean reward of each step, taken alone: ``(..., F) -> (...)``."""
        return self.member_step_rewards(features).mean(dim=0)

    def member_sequence_rewards(self, features: Tensor, episode_starts: Tensor, first_step: int = 0) -> Tensor:
        """Each member's reward of each step of time-major sequences, given the earlier steps of its episode.

        Args:
            features: ``(T, N, F)`` steps of ``N`` sequences in time order.
            episode_starts: ``(T, N)`` bool, True where a step begins an episode (row 0 always begins one).
            first_step: rows before it serve only as context; rewards are returned from it on.

        Returns:
            ``(E, T - first_step, N)`` step rewards.
        """
        return self.member_step_rewards(features[first_step:])


# ------------------------------------------------------------------------------------------------ MLP ensemble
class MLPEnsemble(RewardModel):
    """``E`` independent MLPs ``feature -> scalar``, their weights stacked as ``(E, in, out)``."""

    def __init__(self, config: RewardModelConfig) -> None:
        super().__init__()
        check(config.kind == "mlp", f"MLPEnsemble needs kind='mlp', got {config.kind!r}")
        self.config = config
        self.input_mask: Tensor
        self.register_buffer("input_mask", config.input_mask(), persistent=False)
        generator = torch.Generator().manual_seed(config.seed)
        sizes = (config.feature_dim, *config.hidden_sizes, 1)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            # nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn independently for each member.
            bound = 1.0 / math.sqrt(fan_in)
            weight = (torch.rand(config.members, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            bias = (torch.rand(config.members, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))

    def member_step_rewards(self, features: Tensor) -> Tensor:
        if self.config.ignored_features:
            features = features * self.input_mask
        flat, batch_shape = pack([features], "* feature")
        # First layer: one input shared by all members, (M, F) x (E, F, H) -> (E, M, H), without copying it E times.
        hidden = torch.einsum("mf,efh->emh", flat, self.weights[0]) + self.biases[0]
        for weight, bias in zip(self.weights[1:], self.biases[1:], strict=True):
            hidden = self._activate(hidden)
            hidden = torch.baddbmm(bias, hidden, weight)
        return unpack(rearrange(hidden, "member step 1 -> member step"), batch_shape, "member *")[0]

    def segment_returns(self, features: Tensor) -> Tensor:
        _check_segments(features, self.config)
        return self.member_step_rewards(features).sum(dim=-1)

    def output_parameters(self) -> list[nn.Parameter]:
        return [self.weights[-1], self.biases[-1]]

    def _activate(self, x: Tensor) -> Tensor:
        if self.config.activation == "tanh":
            return torch.tanh(x)
        return nn.functional.leaky_relu(x, negative_slope=0.01)


# ---------------------------------------------------------------------------------------- Preference Transformer
class PreferenceTransformer(nn.Module):
    """One member: linear step embedding -> causal GPT-2 -> step rewards and preference-attention weights."""

    def __init__(self, config: RewardModelConfig) -> None:
        super().__init__()
        # Imported here: transformers takes seconds to import, and only this model needs it.
        from transformers import GPT2Config, GPT2Model

        gpt2_config = GPT2Config(
            n_embd=config.embed_dim,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_positions=config.max_length,
            vocab_size=1,
            bos_token_id=None,
            eos_token_id=None,
            activation_function="gelu",
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=config.dropout,
            use_cache=False,
        )
        self.embed = nn.Linear(config.feature_dim, config.embed_dim)
        self.gpt2 = GPT2Model(gpt2_config)
        # Steps come in as embeddings; the token table is never read, so it does not train.
        self.gpt2.wte.weight.requires_grad_(False)
        self.reward_head = nn.Linear(config.embed_dim, 1)
        self.query = nn.Linear(config.embed_dim, config.embed_dim)
        # A key bias adds the same score to every step of a row, which softmax ignores: leave it out.
        self.key = nn.Linear(config.embed_dim, config.embed_dim, bias=False)
        self.ignored = bool(config.ignored_features)
        self.input_mask: Tensor
        self.register_buffer("input_mask", config.input_mask(), persistent=False)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Step rewards and preference-attention weights.

        Args:
            features: ``(N, L, F)``.

        Returns:
            ``r_t`` of shape ``(N, L)`` (each from the steps ``<= t``), and weights ``w_t`` ``(N, L)`` summing to 1.
        """
        if self.ignored:
            features = features * self.input_mask
        hidden = self.gpt2(inputs_embeds=self.embed(features)).last_hidden_state  # (N, L, D)
        rewards = self.reward_head(hidden).squeeze(-1)
        scores = self.query(hidden) @ self.key(hidden).transpose(1, 2) / math.sqrt(hidden.shape[-1])  # (N, L, L)
        weights = torch.softmax(scores, dim=-1).mean(dim=1)
        return rewards, weights


class TransformerRewardModel(RewardModel):
    """An ensemble of ``E`` Preference Transformers (``E = 1`` by default); members run one after the other."""

    window_batch = 1024
    """Windows per forward pass in ``member_sequence_rewards`` (bounds memory)."""

    def __init__(self, config: RewardModelConfig) -> None:
        super().__init__()
        check(config.kind == "transformer", f"TransformerRewardModel needs kind='transformer', got {config.kind!r}")
        self.config = config
        # GPT-2 initializes (on the CPU) from torch's global CPU generator: seed that one alone, and put the caller's
        # state back afterwards. torch.manual_seed would also reseed the CUDA generators, which fork_rng leaves alone.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(config.seed)
            self.transformers = nn.ModuleList(PreferenceTransformer(config) for _ in range(config.members))

    @property
    def context_length(self) -> int:
        return self.config.max_length

    def segment_returns(self, features: Tensor) -> Tensor:
        _check_segments(features, self.config)
        returns = []
        for member in self.transformers:
            rewards, weights = member(features)
            returns.append((weights * rewards).sum(dim=-1))
        return torch.stack(returns)

    def member_step_rewards(self, features: Tensor) -> Tensor:
        flat, batch_shape = pack([features], "* feature")
        single_steps = rearrange(flat, "step feature -> step 1 feature")  # each step a one-step segment
        rewards = torch.stack([member(single_steps)[0] for member in self.transformers])
        return unpack(rearrange(rewards, "member step 1 -> member step"), batch_shape, "member *")[0]

    def output_parameters(self) -> list[nn.Parameter]:
        members = [member for member in self.transformers if isinstance(member, PreferenceTransformer)]
        return [parameter for member in members for parameter in member.reward_head.parameters()]

    @torch.no_grad()
    def member_sequence_rewards(self, features: Tensor, episode_starts: Tensor, first_step: int = 0) -> Tensor:
        """Sliding causal window: step ``t`` is read at the end of a window of the (up to) ``max_length - 1``
        steps before it in its episode, as step ``t`` of a segment is read in training. Inference only."""
        steps, num_seqs, _ = features.shape
        length = self.config.max_length
        time = torch.arange(steps, device=features.device)[:, None].expand(steps, num_seqs)
        starts = episode_starts.clone().to(torch.bool)
        starts[0] = True
        last_start = torch.cummax(torch.where(starts, time, 0), dim=0).values
        window_start = torch.maximum(last_start, time - length + 1)[first_step:]  # (Q, N)
        query_time = time[first_step:]
        position = (query_time - window_start).reshape(-1)  # where each queried step sits in its window
        # Window slots after the queried step repeat it; causal attention never lets earlier slots see them.
        slots = torch.arange(length, device=features.device)
        slot_time = torch.minimum(window_start[..., None] + slots, query_time[..., None]).reshape(-1, length)
        seq_index = torch.arange(num_seqs, device=features.device).repeat(steps - first_step)[:, None]
        rewards = torch.empty(self.ensemble_size, slot_time.shape[0], device=features.device)
        for start in range(0, slot_time.shape[0], self.window_batch):
            chunk = slice(start, start + self.window_batch)
            windows = features[slot_time[chunk], seq_index[chunk]]  # (windows, L, F)
            for index, member in enumerate(self.transformers):
                window_rewards = member(windows)[0]
                rewards[index, chunk] = window_rewards.gather(1, position[chunk, None]).squeeze(1)
        return rearrange(rewards, "member (query seq) -> member query seq", seq=num_seqs)


def build_reward_model(config: RewardModelConfig) -> RewardModel:
    """The model ``config.kind`` names, with freshly initialized weights (seeded by ``config.seed``)."""
    if config.kind == "mlp":
        return MLPEnsemble(config)
    return TransformerRewardModel(config)


def reinitialize(model: RewardModel, seed: int, output_scale: float = 1.0) -> None:
    """Give ``model`` fresh weights in place: those ``build_reward_model`` draws for ``seed``, the output layer's
    (the MLP's last layer, the transformer's reward head) multiplied by ``output_scale``.

    A small ``output_scale`` starts every segment's return near 0, where every label pulls at full strength; from a
    full-scale start the returns of long segments are spread by several units, and under the random-answer
    likelihood a label contradicted that confidently hardly pulls at all (``rlhf.reward.trainer``).
    """
    check(math.isfinite(output_scale) and output_scale > 0, f"output_scale must be > 0, got {output_scale}")
    fresh = build_reward_model(dataclasses.replace(model.config, seed=seed))
    with torch.no_grad():
        for parameter in fresh.output_parameters():
            parameter.mul_(output_scale)
    model.load_state_dict(fresh.state_dict())


def _check_segments(features: Tensor, config: RewardModelConfig) -> None:
    if features.ndim != 3 or features.shape[-1] != config.feature_dim:
        raise ConfigError(
            f"segment features must be (N, L, {config.feature_dim}), got {tuple(features.shape)}; "
            "build them with rlhf.segments.segment_features for the env the model was made for"
        )
    if config.kind == "transformer" and features.shape[1] > config.max_length:
        raise ConfigError(
            f"segments of {features.shape[1]} steps exceed the transformer's max_length {config.max_length}; "
            "build the model with max_length >= segment_length"
        )
