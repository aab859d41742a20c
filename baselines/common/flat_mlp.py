"""MLPs whose parameters and gradients live in one flat tensor, with a hand-written backward pass and Adam.

Why: at the sizes classic control uses (64x64, 256x256), a step of PPO or DQN costs far more in framework
overhead (autograd graph, per-parameter optimizer and clipping loops) than in arithmetic. One flat buffer gives
one Adam update and one norm for clipping; the hand-written backward skips autograd entirely. The maths is the
same as ``torch.nn.Linear`` + ``torch.optim.Adam`` + ``clip_grad_norm_`` (tests check it against autograd).

The one engine, with two backends over the same memory:

- NumPy, for parameters on the CPU (``MLP.forward``/``backward`` on arrays, ``FlatAdam.step``,
  ``FlatParameters.clip_grad_norm``). At these sizes NumPy's BLAS and elementwise kernels are 2-6x cheaper per
  call than torch's on the CPUs we measured (``benchmarks/ppo_vs_sb3.py``), provided BLAS runs one thread (see
  ``limit_blas_threads``).
- torch, any device: ``forward_torch``, ``backward_torch_`` and ``clipped_adam_`` (clipping and Adam in one fused
  kernel). They are plain torch functions: ``MLP`` calls them eagerly, autograd differentiates ``forward_torch``,
  and TorchScript compiles all three into a scripted training loop that calls them (``baselines/dqn.py``), where
  the script interpreter dispatches a step's ~30 small ops faster than Python does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
from threadpoolctl import threadpool_limits

Activation = Literal["tanh", "relu"]


def limit_blas_threads(threads: int) -> None:
    """Cap NumPy's BLAS threads (process-wide): small matmuls in several threads fight torch's and lose."""
    threadpool_limits(limits=threads, user_api="blas")


@dataclass(frozen=True)
class MLPSpec:
    """Layer sizes ``(in, hidden..., out)``, hidden activation, and the orthogonal-init gain of the last layer."""

    sizes: tuple[int, ...]
    activation: Activation = "tanh"
    out_gain: float = 1.0

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Weight ``(out, in)`` and bias ``(out,)`` shapes, layer by layer."""
        pairs = zip(self.sizes[:-1], self.sizes[1:], strict=True)
        return [shape for n_in, n_out in pairs for shape in ((n_out, n_in), (n_out,))]


# ------------------------------------------------------------------------------------------------ torch backend
def forward_torch(
    x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], relu: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Outputs ``(batch, out)`` for inputs ``(batch, in)`` (ReLU or tanh hidden layers), and the activations
    ``backward_torch_`` needs: the input and each hidden output.

    ``linear``, not ``addmm``: TorchScript splits ``addmm`` into a product and a separate bias addition. The
    in-place ReLU is one autograd can differentiate (its backward reads only its output)."""
    activations = [x]
    h = x
    for i in range(len(weights)):
        h = torch.nn.functional.linear(h, weights[i], biases[i])
        if i < len(weights) - 1:
            h = torch.relu_(h) if relu else torch.tanh(h)
            activations.append(h)
    return h, activations


def backward_torch_(
    grad_out: torch.Tensor,
    activations: list[torch.Tensor],
    weights: list[torch.Tensor],
    weight_grads: list[torch.Tensor],
    bias_grads: list[torch.Tensor],
    relu: bool,
) -> None:
    """Write d(loss)/d(params) into the gradient views, given ``grad_out`` = d(loss)/d(outputs) and the
    activations of ``forward_torch``."""
    grad = grad_out
    for i in range(len(weights) - 1, 0, -1):
        torch.mm(grad.t(), activations[i], out=weight_grads[i])
        torch.sum(grad, dim=[0], out=bias_grads[i])
        grad = grad.mm(weights[i])
        if relu:  # the ReLU mask and the product in one kernel
            grad = torch.ops.aten.threshold_backward(grad, activations[i], 0.0)
        else:
            grad = grad.mul_(1.0 - activations[i] * activations[i])
    # The first layer's weight gradient as a transposed product: ~60 us less a DQN step (a narrow input).
    weight_grads[0].copy_(torch.mm(activations[0].t(), grad).t())
    torch.sum(grad, dim=[0], out=bias_grads[0])


def clip_divisor(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """What ``clip_grad_norm_(max_norm)`` divides the gradient by: ``(norm + 1e-6) / max_norm``, at least 1."""
    return torch.clamp_min((norm + 1e-6) / max_norm, 1.0)


def clipped_adam_(
    state: list[list[torch.Tensor]], lr: float, beta1: float, beta2: float, eps: float, max_grad_norm: float
) -> torch.Tensor:
    """``clip_grad_norm_(max_grad_norm)`` (``inf``: no clipping) then Adam (Kingma & Ba 2015), in one norm and one
    fused kernel: the clip enters as the kernel's ``grad_scale``, which divides the gradient. Returns the norm.

    ``state`` is ``FlatAdam.state``: ``[params], [grads], [exp_avgs], [exp_avg_sqs], [steps]``, the lists the
    fused kernel takes, made once by the caller (TorchScript drops a mutating op whose list arguments it built).
    """
    norm = torch.linalg.vector_norm(state[1][0])
    grad_scale = clip_divisor(norm, max_grad_norm)
    if grad_scale.dtype != torch.float32:  # the kernel takes a float32 scale whatever the parameters' dtype
        grad_scale = grad_scale.float()
    state[4][0].add_(1)
    torch._fused_adam_(
        state[0], state[1], state[2], state[3], [], state[4], lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0,
        eps=eps, amsgrad=False, maximize=False, grad_scale=grad_scale, found_inf=None,
    )  # fmt: skip
    return norm


# ------------------------------------------------------------------------------------------------ the MLP
def _views(flat: torch.Tensor, shapes: Sequence[tuple[int, ...]], offset: int) -> tuple[list[torch.Tensor], int]:
    views = []
    for shape in shapes:
        numel = math.prod(shape)
        views.append(flat[offset : offset + numel].view(shape))
        offset += numel
    return views, offset


class MLP:
    """A view of one MLP inside a flat parameter tensor (and, when trained, a flat gradient tensor).

    ``forward`` caches what ``backward`` needs; ``backward(grad_out)`` overwrites this MLP's slice of the gradient.
    Both accept torch tensors, or NumPy arrays when the parameters live on the CPU. Over a tensor that requires
    grad (``FlatParameters.bind_copy``), the torch forward is differentiable by autograd.
    """

    def __init__(self, spec: MLPSpec, params: list[torch.Tensor], grads: list[torch.Tensor] | None) -> None:
        self.spec = spec
        self.relu = spec.activation == "relu"
        self.weights = params[0::2]
        self.biases = params[1::2]
        self.weight_grads = grads[0::2] if grads is not None else []
        self.bias_grads = grads[1::2] if grads is not None else []
        self._inputs: list[torch.Tensor] = []
        self.on_cpu = params[0].device.type == "cpu" and not params[0].requires_grad
        if self.on_cpu:  # NumPy views of the same memory (updates through either are seen by both)
            self._np_weights = [w.numpy() for w in self.weights]
            self._np_biases = [b.numpy() for b in self.biases]
            self._np_weight_grads = [g.numpy() for g in self.weight_grads]
            self._np_bias_grads = [g.numpy() for g in self.bias_grads]
        self._np_inputs: list[np.ndarray] = []
        self._np_ones = np.ones(0, dtype=np.float32)

    @overload
    def forward(self, x: torch.Tensor, cache: bool = True) -> torch.Tensor: ...

    @overload
    def forward(self, x: np.ndarray, cache: bool = True) -> np.ndarray: ...

    def forward(self, x: torch.Tensor | np.ndarray, cache: bool = True) -> torch.Tensor | np.ndarray:
        """Outputs ``(batch, out)`` for inputs ``(batch, in)``."""
        if isinstance(x, np.ndarray):
            return self._forward_numpy(x, cache)
        out, activations = forward_torch(x, self.weights, self.biases, self.relu)
        self._inputs = activations if cache else []
        return out

    def backward(self, grad_out: torch.Tensor | np.ndarray) -> None:
        """Write d(loss)/d(params) for the last cached forward, given ``grad_out`` = d(loss)/d(outputs)."""
        if isinstance(grad_out, np.ndarray):
            self._backward_numpy(grad_out)
            return
        assert self._inputs, "backward needs a forward(cache=True) first"
        backward_torch_(grad_out, self._inputs, self.weights, self.weight_grads, self.bias_grads, self.relu)
        self._inputs = []

    def _forward_numpy(self, x: np.ndarray, cache: bool) -> np.ndarray:
        assert self.on_cpu, "NumPy inputs need parameters on the CPU"
        inputs = [x]
        h = x
        last = len(self._np_weights) - 1
        for i, (weight, bias) in enumerate(zip(self._np_weights, self._np_biases, strict=True)):
            h = h @ weight.T
            h += bias
            if i < last:
                if self.relu:
                    np.maximum(h, 0.0, out=h)
                else:
                    np.tanh(h, out=h)
                inputs.append(h)
        self._np_inputs = inputs if cache else []
        return h

    def _backward_numpy(self, grad_out: np.ndarray) -> None:
        assert self._np_inputs, "backward needs a forward(cache=True) first"
        g = grad_out
        if self._np_ones.shape[0] != g.shape[0] or self._np_ones.dtype != g.dtype:
            self._np_ones = np.ones(g.shape[0], dtype=g.dtype)
        ones = self._np_ones
        for i in range(len(self._np_weights) - 1, -1, -1):
            h_in = self._np_inputs[i]
            np.matmul(g.T, h_in, out=self._np_weight_grads[i])
            np.matmul(ones, g, out=self._np_bias_grads[i])  # the column sums, as a matrix-vector product (faster)
            if i == 0:
                break
            # A one-column gradient (a critic's output) is an outer product: broadcasting beats a BLAS call.
            g = g * self._np_weights[i][0] if g.shape[1] == 1 else g @ self._np_weights[i]
            if self.relu:
                g *= h_in > 0
            else:
                g *= 1.0 - h_in * h_in
        self._np_inputs = []


class FlatParameters:
    """Several MLPs in one flat parameter tensor ``data`` with one flat gradient ``grad``."""

    def __init__(
        self,
        specs: Sequence[MLPSpec],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        extras: Sequence[tuple[str, int, float]] = (),
    ) -> None:
        """``extras``: further parameter vectors ``(name, size, initial value)`` (e.g. a policy's log-std)."""
        self.specs = list(specs)
        self.extra_specs = list(extras)
        total = sum(math.prod(shape) for spec in specs for shape in spec.shapes)
        total += sum(size for _, size, _ in extras)
        self.data = torch.zeros(total, dtype=dtype)
        self.grad = torch.zeros(total, dtype=dtype)
        self._bind_all()
        for mlp in self.mlps:  # orthogonal init (SB3 / CleanRL): gain sqrt(2) hidden, spec.out_gain last; bias 0
            for i, weight in enumerate(mlp.weights):
                gain = mlp.spec.out_gain if i == len(mlp.weights) - 1 else math.sqrt(2.0)
                weight.copy_(torch.nn.init.orthogonal_(torch.empty_like(weight), gain=gain, generator=generator))
        for name, _, value in extras:
            self.extra[name].fill_(value)
        self.data = self.data.to(device)
        self.grad = self.grad.to(device)
        self._bind_all()

    def _bind_all(self) -> None:
        self.mlps = self._bind(self.data, self.grad)
        offset = self.data.numel() - sum(size for _, size, _ in self.extra_specs)
        self.extra: dict[str, torch.Tensor] = {}
        self.extra_grad: dict[str, torch.Tensor] = {}
        for name, size, _ in self.extra_specs:
            self.extra[name] = self.data[offset : offset + size]
            self.extra_grad[name] = self.grad[offset : offset + size]
            offset += size

    def _bind(self, data: torch.Tensor, grad: torch.Tensor | None) -> list[MLP]:
        mlps: list[MLP] = []
        offset = 0
        for spec in self.specs:
            params, end = _views(data, spec.shapes, offset)
            grads = _views(grad, spec.shapes, offset)[0] if grad is not None else None
            mlps.append(MLP(spec, params, grads))
            offset = end
        return mlps

    def bind_copy(self, data: torch.Tensor) -> list[MLP]:
        """MLPs over another tensor of the same layout, for inference only: e.g. a target network, or a copy of
        ``data`` that requires grad, whose torch forward autograd then differentiates."""
        assert data.shape == self.data.shape
        return self._bind(data, None)

    def clip_grad_norm(self, max_norm: float) -> float:
        """Scale ``grad`` so its global L2 norm is at most ``max_norm`` (as ``clip_grad_norm_``); return the norm."""
        if self.grad.device.type == "cpu":
            grad = self.grad.numpy()
            norm = float(np.sqrt(np.dot(grad, grad)))
            if norm > max_norm:
                grad *= max_norm / (norm + 1e-6)
            return norm
        norm_t = torch.linalg.vector_norm(self.grad)
        self.grad.div_(clip_divisor(norm_t, max_norm))
        return float(norm_t)


class FlatAdam:
    """Adam (Kingma & Ba 2015, as ``torch.optim.Adam`` without weight decay) on one flat tensor.

    ``step`` runs NumPy on the CPU and ``clipped_adam_`` (fused, no clipping) elsewhere; ``clipped_step`` clips
    the gradient first. A scripted loop calls ``clipped_adam_(optimizer.state, ...)`` itself.
    """

    def __init__(
        self, params: FlatParameters, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = torch.zeros_like(params.data)
        self.exp_avg_sq = torch.zeros_like(params.data)
        self.steps = torch.zeros((), device=params.data.device)  # a float tensor, as the fused kernel takes it
        self.state = [[params.data], [params.grad], [self.exp_avg], [self.exp_avg_sq], [self.steps]]
        self._numpy = params.data.device.type == "cpu"
        if self._numpy:
            self._steps_np = self.steps.numpy()
            self._denom = torch.zeros_like(params.data)

    @property
    def step_count(self) -> int:
        return int(self.steps.item())

    @step_count.setter
    def step_count(self, value: int) -> None:
        self.steps.fill_(value)

    def step(self) -> None:
        """One Adam update from ``params.grad``."""
        if self._numpy:
            self._step_numpy()
        else:
            clipped_adam_(self.state, self.lr, self.beta1, self.beta2, self.eps, math.inf)

    def clipped_step(self, max_grad_norm: float) -> float:
        """``clip_grad_norm(max_grad_norm)`` then ``step()``; returns the gradient norm before clipping."""
        if self._numpy:
            norm = self.params.clip_grad_norm(max_grad_norm)
            self._step_numpy()
            return norm
        return float(clipped_adam_(self.state, self.lr, self.beta1, self.beta2, self.eps, max_grad_norm))

    def _step_numpy(self) -> None:
        self._steps_np += 1
        step = float(self._steps_np)
        bias_correction1 = 1.0 - self.beta1**step
        bias_correction2 = 1.0 - self.beta2**step
        grad, data = self.params.grad.numpy(), self.params.data.numpy()
        exp_avg, exp_avg_sq, scratch = self.exp_avg.numpy(), self.exp_avg_sq.numpy(), self._denom.numpy()
        exp_avg *= self.beta1
        np.multiply(grad, 1.0 - self.beta1, out=scratch)
        exp_avg += scratch
        exp_avg_sq *= self.beta2
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - self.beta2
        exp_avg_sq += scratch
        np.sqrt(exp_avg_sq, out=scratch)
        scratch /= math.sqrt(bias_correction2)
        scratch += self.eps
        np.divide(exp_avg, scratch, out=scratch)
        scratch *= self.lr / bias_correction1
        data -= scratch

    def state_dict(self) -> dict[str, torch.Tensor | int | float]:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": self.step_count, "lr": self.lr}

    def load_state_dict(self, state: dict[str, torch.Tensor | int | float]) -> None:
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        assert isinstance(exp_avg, torch.Tensor) and isinstance(exp_avg_sq, torch.Tensor)
        self.exp_avg.copy_(exp_avg)
        self.exp_avg_sq.copy_(exp_avg_sq)
        self.step_count = int(state["step"])
        self.lr = float(state["lr"])
