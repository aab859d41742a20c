"""MLPs whose parameters and gradients live in one flat tensor, with a hand-written backward pass and Adam.

Why: at the sizes classic control uses (64x64, 256x256), a step of PPO or DQN costs far more in framework
overhead (autograd graph, per-parameter optimizer and clipping loops) than in arithmetic. One flat buffer gives
one Adam update and one norm for clipping; the hand-written backward skips autograd entirely. The maths is the
same as ``torch.nn.Linear`` + ``torch.optim.Adam`` + ``clip_grad_norm_`` (tests check it against autograd).

Two array backends over the same memory: torch tensors (any device) and, for parameters on the CPU, NumPy views of
them. ``MLP.forward``/``backward`` follow the type of their input; Adam and clipping use NumPy on the CPU. At these
sizes NumPy's BLAS and elementwise kernels are 2-6x cheaper per call than torch's on the CPUs we measured
(``benchmarks/ppo_vs_sb3.py``), provided BLAS runs one thread (see ``limit_blas_threads``).
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
    Both accept torch tensors, or NumPy arrays when the parameters live on the CPU.
    """

    def __init__(self, spec: MLPSpec, params: list[torch.Tensor], grads: list[torch.Tensor] | None) -> None:
        self.spec = spec
        self.weights = params[0::2]
        self.biases = params[1::2]
        self.weight_grads = grads[0::2] if grads is not None else []
        self.bias_grads = grads[1::2] if grads is not None else []
        self._inputs: list[torch.Tensor] = []
        self.on_cpu = params[0].device.type == "cpu"
        if self.on_cpu:  # NumPy views of the same memory (updates through either are seen by both)
            self._np_weights = [w.numpy() for w in self.weights]
            self._np_biases = [b.numpy() for b in self.biases]
            self._np_weight_grads = [g.numpy() for g in self.weight_grads]
            self._np_bias_grads = [g.numpy() for g in self.bias_grads]
        self._np_inputs: list[np.ndarray] = []
        self._np_ones = np.ones(0, dtype=np.float32)

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        if self.spec.activation == "relu":
            return h.clamp_(min=0.0)
        # tanh(x) = 2 sigmoid(2x) - 1: same values, and torch's sigmoid is several times faster than its tanh on
        # some CPUs.
        return torch.sigmoid(h.mul_(2.0)).mul_(2.0).sub_(1.0)

    @overload
    def forward(self, x: torch.Tensor, cache: bool = True) -> torch.Tensor: ...

    @overload
    def forward(self, x: np.ndarray, cache: bool = True) -> np.ndarray: ...

    def forward(self, x: torch.Tensor | np.ndarray, cache: bool = True) -> torch.Tensor | np.ndarray:
        """Outputs ``(batch, out)`` for inputs ``(batch, in)``."""
        if isinstance(x, np.ndarray):
            return self._forward_numpy(x, cache)
        inputs = [x]
        h = x
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.addmm(bias, h, weight.t())
            if i < last:
                h = self._activate(h)
                inputs.append(h)
        self._inputs = inputs if cache else []
        return h

    def backward(self, grad_out: torch.Tensor | np.ndarray) -> None:
        """Write d(loss)/d(params) for the last cached forward, given ``grad_out`` = d(loss)/d(outputs)."""
        if isinstance(grad_out, np.ndarray):
            self._backward_numpy(grad_out)
            return
        assert self._inputs, "backward needs a forward(cache=True) first"
        g = grad_out
        for i in range(len(self.weights) - 1, -1, -1):
            h_in = self._inputs[i]
            torch.mm(g.t(), h_in, out=self.weight_grads[i])
            torch.sum(g, dim=0, out=self.bias_grads[i])
            if i == 0:
                break
            g = g.mm(self.weights[i])
            if self.spec.activation == "relu":
                g.mul_(h_in > 0)
            else:
                g.mul_(1.0 - h_in * h_in)
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
                if self.spec.activation == "relu":
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
            if self.spec.activation == "relu":
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
        """MLPs over another tensor of the same layout (e.g. a target network), for inference only."""
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
        self.grad.mul_(torch.clamp(max_norm / (norm_t + 1e-6), max=1.0))
        return float(norm_t)


class FlatAdam:
    """Adam (Kingma & Ba 2015, as ``torch.optim.Adam`` without weight decay) on one flat tensor."""

    def __init__(
        self, params: FlatParameters, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.step_count = 0
        self.exp_avg = torch.zeros_like(params.data)
        self.exp_avg_sq = torch.zeros_like(params.data)
        self._denom = torch.zeros_like(params.data)

    def step(self) -> None:
        grad = self.params.grad
        self.step_count += 1
        bias_correction1 = 1.0 - self.beta1**self.step_count
        bias_correction2 = 1.0 - self.beta2**self.step_count
        if grad.device.type == "cpu":
            self._step_numpy(bias_correction1, bias_correction2)
            return
        self.exp_avg.lerp_(grad, 1.0 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
        torch.sqrt(self.exp_avg_sq, out=self._denom)
        self._denom.div_(math.sqrt(bias_correction2)).add_(self.eps)
        self.params.data.addcdiv_(self.exp_avg, self._denom, value=-self.lr / bias_correction1)

    def _step_numpy(self, bias_correction1: float, bias_correction2: float) -> None:
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
