"""MuJoCo clips: joint positions rebuilt from observations, frames drawn offscreen (EGL), clips that play, and the
one-line errors for a missing MuJoCo or an unusable OpenGL backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlhf.render import MAX_CLIP_FPS, MUJOCO_FRAME_SIZE, MUJOCO_VIEWS, frames_from_obs, render_segments
from rlhf.sample_workspace import collect_segments
from rlhf.segments import describe_action_space
from rlhf.store import PreferenceStore
from tests.render.test_render import _decode


def _rollout(env_id: str, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Observations and true joint positions of a gentle random-policy episode (up to ``steps``), and the env's dt
    (full-strength random actions topple an inverted pendulum within three steps)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    unwrapped = env.unwrapped
    observations, positions = [obs], [unwrapped.data.qpos.copy()]  # type: ignore[attr-defined]
    for _ in range(steps - 1):
        obs, _, terminated, truncated, _ = env.step(0.3 * env.action_space.sample())
        if terminated or truncated:
            break
        observations.append(obs)
        positions.append(unwrapped.data.qpos.copy())  # type: ignore[attr-defined]
    dt = float(unwrapped.dt)  # type: ignore[attr-defined]
    env.close()
    return np.array(observations), np.array(positions), dt


@pytest.mark.parametrize("env_id", list(MUJOCO_VIEWS))
def test_joint_positions_are_rebuilt_from_observations(env_id: str) -> None:
    """Every joint position the picture needs comes back from the observation; the locomotion tasks' forward
    position (not observed) is integrated from the observed velocity, and drifts by under a centimetre over a
    segment."""
    obs, qpos, dt = _rollout(env_id, 50, seed=3)
    assert len(obs) >= 5
    rebuilt = MUJOCO_VIEWS[env_id].qpos(obs.astype(np.float64), qpos.shape[1], dt)
    assert rebuilt.shape == qpos.shape
    if env_id.startswith("Inverted"):
        np.testing.assert_allclose(rebuilt, qpos, atol=1e-9)
    else:
        np.testing.assert_allclose(rebuilt[:, 1:], qpos[:, 1:], atol=1e-9)
        travel = qpos[:, 0] - qpos[0, 0]
        drift = np.abs(rebuilt[:, 0] - travel).max()
        assert drift < 0.015 + 0.05 * np.abs(travel).max(), f"x drifted {drift:.3f} m over {travel[-1]:.3f} m"


def test_hopper_segment_renders_to_a_clip(tmp_path: Path) -> None:
    """A Hopper segment without frames (as the loop keeps them) becomes a clip: drawn offscreen from its
    observations, with the body in view, at a watchable frame rate."""
    (segment,) = collect_segments("Hopper-v5", count=1, segment_length=20, seed=0, frames=False)
    frames = frames_from_obs("Hopper-v5", segment.obs[: segment.real_steps])
    assert frames.shape == (segment.real_steps, *MUJOCO_FRAME_SIZE, 3) and frames.dtype == np.uint8
    assert frames.std() > 20  # a picture, not a blank context
    # The tracking camera keeps the hopper (orange-brown) near the middle of every frame.
    middle = frames[:, :, 110:210].astype(int)
    hopper = (middle[..., 0] > 120) & (middle[..., 0] - middle[..., 2] > 60)
    assert hopper.reshape(len(frames), -1).sum(axis=1).min() > 50
    store = PreferenceStore(tmp_path / "prefs.sqlite")
    env = gym.make("Hopper-v5")
    store.bind_env("Hopper-v5", (11,), describe_action_space(env.action_space), 20)
    env.close()
    store.add_segments([segment])
    (clip,) = render_segments(store, [segment], tmp_path / "clips", env_id="Hopper-v5")
    meta, decoded = _decode(clip.path)
    assert meta["codec"] == "h264" and meta["fps"] == MAX_CLIP_FPS  # Hopper's 125 fps, slowed to watch
    assert len(decoded) == 20 and meta["size"] == (320, 240)
    store.close()


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, env=environment | env
    )


def test_missing_mujoco_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = (
        "import sys; sys.modules['mujoco'] = None\n"  # what a machine without the extra sees: ImportError
        "from rlhf.cli import main\n"
        f"sys.exit(main(['ppo', '--env', 'Hopper-v5', '--out', {str(out)!r}]))"
    )
    result = _run(code)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert 'pip install "rlhf-pipeline[mujoco]"' in result.stderr
    assert not out.exists()


def test_unusable_opengl_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """A person labels clips: `rlhf run --teacher human` on MuJoCo checks rendering before anything is written.
    GLX without an X server fails on every machine."""
    out = tmp_path / "run"
    code = (
        "import sys\nfrom rlhf.cli import main\n"
        f"sys.exit(main(['run', '--env', 'InvertedPendulum-v5', '--teacher', 'human', '--out', {str(out)!r}]))"
    )
    result = _run(code, MUJOCO_GL="glx")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "MuJoCo cannot render (MUJOCO_GL=glx" in result.stderr and "libegl1" in result.stderr
    assert not out.exists()
    invalid = _run("from rlhf.cli import main; import sys; sys.exit(main(['ppo', '--env', 'Hopper-v5']))",
                   MUJOCO_GL="vulkan")  # fmt: skip
    assert invalid.returncode == 2 and "MUJOCO_GL" in invalid.stderr and invalid.stderr.strip().count("\n") == 0


def test_headless_default_is_egl() -> None:
    result = _run("import baselines.common.envs, os; print(os.environ['MUJOCO_GL'])")
    assert result.stdout.strip() == "egl"
    assert (
        _run("import baselines.common.envs, os; print(os.environ['MUJOCO_GL'])", MUJOCO_GL="osmesa").stdout.strip()
        == "osmesa"
    )
