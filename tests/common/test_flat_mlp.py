"""Both backends (NumPy, torch) of the hand-written backward, flat Adam and clipping against torch autograd,
nn.Linear, clip_grad_norm_ and torch.optim.Adam."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.common.flat_mlp import FlatAdam, FlatParameters, MLPSpec, clipped_adam_
from tests.cuda import needs_cuda


def _reference(spec: MLPSpec, flat: FlatParameters, index: int) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    mlp = flat.mlps[index]
    for i, (weight, bias) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        layers.append(linear)
        if i < len(mlp.weights) - 1:
            layers.append(torch.nn.Tanh() if spec.activation == "tanh" else torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_forward_and_backward_match_autograd(activation: str, backend: str) -> None:
    specs = [MLPSpec((4, 16, 16, 3), activation, 0.01), MLPSpec((4, 8, 1), activation, 1.0)]  # type: ignore[arg-type]
    flat = FlatParameters(specs, torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(32, 4, dtype=torch.float64)
    grad_out = [torch.randn(32, 3, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)]
    offset = 0
    for index, spec in enumerate(specs):
        ref = _reference(spec, flat, index)
        y_ref = ref(x)
        if backend == "numpy":
            y = torch.from_numpy(flat.mlps[index].forward(x.numpy()))
            flat.mlps[index].backward(grad_out[index].numpy())
        else:
            y = flat.mlps[index].forward(x)
            flat.mlps[index].backward(grad_out[index])
        torch.testing.assert_close(y, y_ref.detach())
        y_ref.backward(grad_out[index])
        expected = torch.cat([p.grad.flatten() for p in ref.parameters() if p.grad is not None])
        torch.testing.assert_close(flat.grad[offset : offset + expected.numel()], expected)
        offset += expected.numel()
    assert offset == flat.grad.numel()


def test_orthogonal_init_gains_and_zero_bias() -> None:
    flat = FlatParameters([MLPSpec((64, 64, 2), "tanh", 0.01)], torch.Generator().manual_seed(0))
    hidden, out = flat.mlps[0].weights
    torch.testing.assert_close(hidden @ hidden.t(), 2.0 * torch.eye(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(out @ out.t(), 1e-4 * torch.eye(2), atol=1e-7, rtol=0)
    assert all(torch.all(b == 0) for b in flat.mlps[0].biases)


def test_flat_adam_and_clipping_match_torch() -> None:
    flat = FlatParameters([MLPSpec((3, 5, 2), "relu")], torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = flat.data.clone().requires_grad_(True)
    ours = FlatAdam(flat, lr=1e-2, eps=1e-5)
    torch_adam = torch.optim.Adam([reference], lr=1e-2, eps=1e-5)
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        grad = torch.randn(flat.data.shape, generator=gen, dtype=torch.float64) * 3
        flat.grad.copy_(grad)
        reference.grad = grad.clone()
        norm = flat.clip_grad_norm(0.5)
        torch_norm = torch.nn.utils.clip_grad_norm_([reference], 0.5)
        assert norm == pytest.approx(float(torch_norm))
        ours.step()
        torch_adam.step()
        torch.testing.assert_close(flat.data, reference.detach())


def test_bind_copy_reads_another_tensor() -> None:
    flat = FlatParameters([MLPSpec((2, 4, 1), "relu")], torch.Generator().manual_seed(0))
    target = flat.data.clone()
    (target_mlp,) = flat.bind_copy(target)
    x = torch.randn(5, 2)
    torch.testing.assert_close(target_mlp.forward(x, cache=False), flat.mlps[0].forward(x))
    flat.data.add_(1.0)
    assert not torch.allclose(target_mlp.forward(x, cache=False), flat.mlps[0].forward(x))


@pytest.mark.parametrize("max_norm", [math.inf, 1.0])
def test_clipped_adam_matches_clip_grad_norm_and_torch_adam(max_norm: float) -> None:
    """The torch backend's optimizer (the fused kernel a scripted loop calls) against clip_grad_norm_ + Adam."""
    flat = FlatParameters([MLPSpec((3, 5, 2), "relu")], torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = flat.data.clone().requires_grad_(True)
    ours = FlatAdam(flat, lr=1e-2, eps=1e-8)
    torch_adam = torch.optim.Adam([reference], lr=1e-2, eps=1e-8)
    gen = torch.Generator().manual_seed(2)
    for scale in (0.01, 10.0, 0.01, 5.0):  # clipping inactive and active
        grad = torch.randn(flat.data.shape, generator=gen, dtype=torch.float64) * scale
        flat.grad.copy_(grad)
        reference.grad = grad.clone()
        norm = clipped_adam_(ours.state, ours.lr, ours.beta1, ours.beta2, ours.eps, max_norm)
        torch.testing.assert_close(norm, torch.nn.utils.clip_grad_norm_([reference], max_norm))
        torch_adam.step()
        torch.testing.assert_close(flat.data, reference.detach())
    assert ours.step_count == 4


def test_clipped_step_is_one_clip_and_one_adam_step() -> None:
    flat = FlatParameters([MLPSpec((3, 5, 2), "tanh")], torch.Generator().manual_seed(1), dtype=torch.float64)
    twin = FlatParameters([MLPSpec((3, 5, 2), "tanh")], torch.Generator().manual_seed(1), dtype=torch.float64)
    ours, reference = FlatAdam(flat, lr=1e-2), FlatAdam(twin, lr=1e-2)
    for params in (flat, twin):
        params.grad.copy_(torch.linspace(-3.0, 2.0, params.grad.numel(), dtype=torch.float64))
    assert ours.clipped_step(0.5) == pytest.approx(twin.clip_grad_norm(0.5))
    reference.step()
    torch.testing.assert_close(flat.data, twin.data)
    assert ours.state_dict()["step"] == 1


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_autograd_differentiates_the_torch_forward(activation: str) -> None:
    """Over a copy of the buffer that requires grad, autograd's gradient is the hand-written backward's."""
    flat = FlatParameters([MLPSpec((4, 16, 8, 3), activation)], torch.Generator().manual_seed(0), dtype=torch.float64)  # type: ignore[arg-type]
    x = torch.randn(32, 4, dtype=torch.float64)
    grad_out = torch.randn(32, 3, dtype=torch.float64)
    flat.mlps[0].forward(x)
    flat.mlps[0].backward(grad_out)
    leaf = flat.data.clone().requires_grad_(True)
    (differentiable,) = flat.bind_copy(leaf)
    assert not differentiable.on_cpu  # no NumPy views of a tensor that requires grad
    torch.autograd.backward((differentiable.forward(x) * grad_out).sum())
    assert leaf.grad is not None
    torch.testing.assert_close(leaf.grad, flat.grad)


# ------------------------------------------------------------------------------------------- on a GPU (else skipped)
@needs_cuda
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_the_torch_backend_on_cuda_matches_the_numpy_backend(activation: str) -> None:
    specs = [MLPSpec((4, 64, 64, 3), activation, 0.01), MLPSpec((4, 64, 64, 1), activation, 1.0)]  # type: ignore[arg-type]
    cpu, cuda = (FlatParameters(specs, torch.Generator().manual_seed(0), device=device) for device in ("cpu", "cuda"))
    torch.testing.assert_close(cuda.data.cpu(), cpu.data)  # initialized on the CPU, then moved
    x = torch.randn(256, 4)
    for index, out_dim in enumerate((3, 1)):
        grad_out = torch.randn(256, out_dim)
        y = torch.from_numpy(cpu.mlps[index].forward(x.numpy()))
        cpu.mlps[index].backward(grad_out.numpy())
        y_cuda = cuda.mlps[index].forward(x.cuda())
        cuda.mlps[index].backward(grad_out.cuda())
        torch.testing.assert_close(y_cuda.cpu(), y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda.grad.cpu(), cpu.grad, rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_clipped_adam_on_cuda_matches_the_numpy_adam(dtype: torch.dtype) -> None:
    """FlatAdam's two backends from the same weights and gradients, clipping inactive and active, then the cuda
    optimizer's state loaded into a CPU one (a checkpoint resumed on the CPU)."""
    spec = MLPSpec((4, 64, 64, 2), "tanh")
    cpu, cuda = (FlatParameters([spec], torch.Generator().manual_seed(1), device, dtype) for device in ("cpu", "cuda"))
    cpu_adam, cuda_adam = FlatAdam(cpu, lr=1e-2, eps=1e-5), FlatAdam(cuda, lr=1e-2, eps=1e-5)
    start = cpu.data.clone()
    gen = torch.Generator().manual_seed(2)
    for scale in (0.01, 10.0, 0.01, 5.0):
        grad = torch.randn(cpu.grad.shape, generator=gen, dtype=dtype) * scale
        cpu.grad.copy_(grad)
        cuda.grad.copy_(grad)
        assert cuda_adam.clipped_step(1.0) == pytest.approx(cpu_adam.clipped_step(1.0), rel=1e-5)
    cuda.grad.copy_(grad)
    cpu.grad.copy_(grad)
    cuda_adam.step()
    cpu_adam.step()
    assert float((cpu.data - start).abs().max()) > 1e-2
    torch.testing.assert_close(cuda.data.cpu(), cpu.data, rtol=1e-5, atol=1e-6)
    assert cuda_adam.step_count == cpu_adam.step_count == 5
    resumed = FlatAdam(FlatParameters([spec], torch.Generator().manual_seed(1), dtype=dtype), lr=0.0)
    saved = {name: v.cpu() if isinstance(v, torch.Tensor) else v for name, v in cuda_adam.state_dict().items()}
    resumed.load_state_dict(saved)
    assert resumed.step_count == 5 and resumed.lr == 1e-2
    # The clip's norm is a float32 sum of thousands of squares, rounded differently by NumPy and CUDA (~5e-6 here).
    torch.testing.assert_close(resumed.exp_avg_sq, cpu_adam.exp_avg_sq, rtol=1e-4, atol=1e-12)
