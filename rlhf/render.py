"""Segment frames -> H.264 MP4 clips that a browser plays (Debian's Chromium and Firefox included).

Clips are rendered once, when segments are collected, with the ffmpeg binary that ships inside ``imageio-ffmpeg``
(it has libx264). Raw RGB frames are piped to ffmpeg's stdin; the output is ``yuv420p`` (the only chroma layout every
browser decodes), has ``+faststart`` (the index up front, so playback starts before the whole file arrived) and even
dimensions (libx264 with yuv420p refuses odd ones). A clip is written to a temporary name and renamed into place, so
the labeling service never serves half a file.

Padded steps (after the episode ended inside the segment) are shown as the last real frame, frozen and dimmed: every
clip of one store has ``segment_length`` frames, so two clips of a pair have the same duration and loop together, and
the labeler sees that the episode ended.

Segments need not carry frames: for the classic-control envs, whose picture depends only on the state, the frames are
rebuilt from the stored observations (:func:`frames_from_obs`), so a loop can render clips for just the segments it
queries, after the fact, instead of rendering every step of every rollout.

This module needs numpy, gymnasium and ``imageio-ffmpeg``, never torch.
"""

from __future__ import annotations

import os
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from baselines.common.envs import make_env  # also sets MUJOCO_GL=egl on headless machines
from baselines.common.errors import ConfigError
from rlhf.segments import Segment

# rgb_array rendering needs no display; without this pygame (classic control) looks for one and complains on
# headless machines.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

CLIP_SUFFIX = ".mp4"
DIM_FACTOR = 0.35
"""Brightness of the frozen frame shown on padded steps (1 = unchanged)."""


class ClipStore(Protocol):
    """What :func:`render_segments` needs of a store (:class:`rlhf.store.PreferenceStore` has it)."""

    def set_clip_path(self, segment_id: str, path: str | os.PathLike[str] | None) -> None: ...


@dataclass(frozen=True)
class RenderedClip:
    """One written clip.

    Attributes:
        segment_id: the segment shown.
        path: the clip file.
        frames: frames in the clip (``segment_length``).
        bytes: file size.
        seconds: wall time of the encode.
    """

    segment_id: str
    path: Path
    frames: int
    bytes: int
    seconds: float


def ffmpeg_executable() -> str:
    """Path of the ffmpeg binary shipped in ``imageio-ffmpeg``.

    Raises:
        ConfigError: ``imageio-ffmpeg`` is not installed or ships no binary for this platform.
    """
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]
    except ImportError as error:
        raise ConfigError("rendering clips needs the imageio-ffmpeg package: pip install imageio-ffmpeg") from error
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as error:
        raise ConfigError(f"imageio-ffmpeg found no ffmpeg binary: {error}") from error


def pad_frames(frames: np.ndarray, segment_length: int, dim_factor: float = DIM_FACTOR) -> np.ndarray:
    """The ``(segment_length, H, W, 3)`` frames of a clip: the real frames, then the last one frozen and dimmed.

    Args:
        frames: ``(L_real, H, W, 3)`` uint8 frames of the segment's real steps, ``1 <= L_real <= segment_length``.
        segment_length: frames in the clip.
        dim_factor: brightness of the padded frames.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"clip frames are (steps, height, width, 3) uint8, got {frames.shape} {frames.dtype}")
    real_steps = frames.shape[0]
    if not 1 <= real_steps <= segment_length:
        raise ConfigError(
            f"a clip of {segment_length} frames needs 1 to {segment_length} real frames, got {real_steps}"
        )
    if real_steps == segment_length:
        return frames
    frozen = (frames[-1].astype(np.float32) * dim_factor).astype(np.uint8)
    padding = np.broadcast_to(frozen, (segment_length - real_steps, *frozen.shape))
    return np.concatenate([frames, padding])


def render_clip(
    frames: np.ndarray,
    segment_length: int,
    path: str | os.PathLike[str],
    fps: float,
    max_width: int | None = 320,
    crf: int = 30,
) -> RenderedClip:
    """Encode one segment's frames as an H.264 MP4 (yuv420p, faststart, even dimensions).

    Args:
        frames: ``(L_real, H, W, 3)`` uint8 frames of the real steps.
        segment_length: frames in the clip; steps past ``L_real`` show the last frame frozen and dimmed.
        path: output file (``.mp4``); its folder must exist. Replaced atomically if present.
        fps: playback frame rate (the env's ``render_fps``; the page changes speed with ``playbackRate``).
        max_width: downscale wider frames to this width (keeps clips a few kB and encodes fast); None keeps them.
        crf: libx264 quality (lower is better and bigger).

    Returns:
        What was written, with the encode's wall time.

    Raises:
        ConfigError: bad frames, fps or folder, or ffmpeg failed (its message is included).
    """
    started = time.perf_counter()
    if not (np.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be positive, not {fps}")
    clip = np.ascontiguousarray(pad_frames(frames, segment_length))
    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(f"cannot write clip {target}: folder {target.parent} does not exist")
    _, height, width, _ = clip.shape
    scale = f"scale='min({max_width},iw)':-2," if max_width is not None else ""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp{CLIP_SUFFIX}")
    command = [
        ffmpeg_executable(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        f"{fps:g}",
        "-i",
        "-",
        "-an",
        "-vf",
        f"{scale}pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        str(crf),
        # One thread per clip: render_segments runs several encodes at once, which uses the cores better.
        "-threads",
        "1",
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(temporary),
    ]
    try:
        result = subprocess.run(command, input=clip.data.cast("B"), capture_output=True, check=False)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip()
            raise ConfigError(f"ffmpeg could not encode {target}: {message or f'exit code {result.returncode}'}")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return RenderedClip(
        segment_id=target.stem,
        path=target,
        frames=len(clip),
        bytes=target.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def _pendulum_state(obs: np.ndarray) -> np.ndarray:
    return np.array([np.arctan2(obs[1], obs[0]), obs[2]])


def _acrobot_state(obs: np.ndarray) -> np.ndarray:
    return np.array([np.arctan2(obs[1], obs[0]), np.arctan2(obs[3], obs[2]), obs[4], obs[5]])


# Env id -> observation to the ``state`` its ``render()`` draws from.
STATE_FROM_OBS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "CartPole-v1": np.asarray,
    "CartPole-v0": np.asarray,
    "Pendulum-v1": _pendulum_state,
    "Acrobot-v1": _acrobot_state,
    "MountainCar-v0": np.asarray,
    "MountainCarContinuous-v0": np.asarray,
}


MAX_CLIP_FPS = 50.0
"""Clips play at the env's ``render_fps`` up to this: MuJoCo's 125 fps Hopper would show a 50-step segment in 0.4 s,
too short to judge; at 50 fps it lasts 1 s (2.5x slow motion), and the classic-control envs (30-50 fps) are
unchanged."""


def env_fps(env_id: str) -> float:
    """A clip's frame rate: the env's ``render_fps`` (30 if it declares none), at most :data:`MAX_CLIP_FPS`."""
    env = gym.make(env_id)
    try:
        return min(float(env.metadata.get("render_fps") or 30), MAX_CLIP_FPS)
    finally:
        env.close()


# MuJoCo: the picture depends on the joint positions (qpos) alone, which the v5 tasks observe, except that the
# locomotion tasks leave out the forward position x. It is integrated from the observed x velocity: the camera
# tracks the body, so x shows only as the floor scrolling by; its drift over a clip is under a centimetre.
def _qpos_observed(obs: np.ndarray, nq: int, dt: float) -> np.ndarray:
    return obs[:, :nq]


def _qpos_double_pendulum(obs: np.ndarray, nq: int, dt: float) -> np.ndarray:
    """obs = [cart x, sin(hinges), cos(hinges), ...]."""
    return np.stack([obs[:, 0], np.arctan2(obs[:, 1], obs[:, 3]), np.arctan2(obs[:, 2], obs[:, 4])], axis=1)


def _qpos_locomotion(obs: np.ndarray, nq: int, dt: float) -> np.ndarray:
    """obs = [qpos without x, x velocity, ...]; x starts at 0 on the segment's first step and follows the
    trapezoid rule (a fifth of the drift of the end-of-step velocity alone on Hopper and Walker2d)."""
    x_velocity = obs[:, nq - 1]
    x = np.concatenate([[0.0], np.cumsum((x_velocity[1:] + x_velocity[:-1]) / 2) * dt])
    return np.concatenate([x[:, None], obs[:, : nq - 1]], axis=1)


@dataclass(frozen=True)
class MujocoView:
    """How a MuJoCo task's clips are drawn: its joint positions from an observation, and the camera.

    Attributes:
        qpos: ``(obs (T, obs_dim), nq, dt) -> qpos (T, nq)``.
        camera: ``mjvCamera`` fields (distance, elevation, azimuth, lookat); ``trackbodyid`` makes it a tracking
            camera that follows that body (gymnasium's own renderer keeps the camera still, so a hopper that hops
            two metres leaves the picture).
    """

    qpos: Callable[[np.ndarray, int, float], np.ndarray]
    camera: dict[str, Any]


_WALKER_CAMERA = {"trackbodyid": 1, "distance": 3.0, "elevation": -20.0}
MUJOCO_VIEWS: dict[str, MujocoView] = {
    "InvertedPendulum-v5": MujocoView(_qpos_observed, {"distance": 2.04}),
    "InvertedDoublePendulum-v5": MujocoView(
        _qpos_double_pendulum, {"distance": 2.6, "elevation": -5.0, "lookat": (0.0, 0.0, 0.55)}
    ),
    "Hopper-v5": MujocoView(_qpos_locomotion, _WALKER_CAMERA),
    "Walker2d-v5": MujocoView(_qpos_locomotion, {**_WALKER_CAMERA, "distance": 4.0}),
    "HalfCheetah-v5": MujocoView(_qpos_locomotion, {**_WALKER_CAMERA, "distance": 4.0}),
}
MUJOCO_FRAME_SIZE = (240, 320)
"""Height and width of MuJoCo clip frames (software EGL renders Hopper at this size at ~30 fps on one core)."""


def mujoco_gl_error(error: BaseException) -> ConfigError:
    """The one-line error for a MuJoCo that cannot render: what to install or set."""
    backend = os.environ.get("MUJOCO_GL") or "default"
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return ConfigError(
        f"MuJoCo cannot render (MUJOCO_GL={backend}: {reason}); headless machines need EGL: "
        "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri, and MUJOCO_GL=egl (set by default when no DISPLAY is)"
    )


def check_mujoco_rendering() -> None:
    """Raise the one-line :func:`mujoco_gl_error` unless MuJoCo can open an offscreen OpenGL context here."""
    try:
        import mujoco  # type: ignore[import-untyped]

        renderer = _offscreen_renderer(mujoco, mujoco.MjModel.from_xml_string("<mujoco/>"), (16, 16))
        renderer.close()
    except Exception as error:  # GL backends fail with ImportError, RuntimeError, AttributeError...
        raise mujoco_gl_error(error) from None


def _offscreen_renderer(mujoco: Any, model: Any, size: tuple[int, int]) -> Any:
    """``mujoco.Renderer`` of ``size`` (height, width); the GLFW backend's warnings (one per failed call, several
    lines each) are silenced, since a failure becomes the one-line :func:`mujoco_gl_error`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mujoco.Renderer(model, *size)


def mujoco_frames(env_id: str, obs: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` frames of a MuJoCo task's observations (:data:`MUJOCO_VIEWS`), without shadows (software
    OpenGL draws them at a quarter of the speed)."""
    import mujoco

    view = MUJOCO_VIEWS[env_id]
    env = make_env(env_id)
    try:
        unwrapped: Any = env.unwrapped
        model, data = unwrapped.model, unwrapped.data
        qpos = view.qpos(np.asarray(obs, dtype=np.float64), model.nq, float(unwrapped.dt))
        try:
            renderer = _offscreen_renderer(mujoco, model, MUJOCO_FRAME_SIZE)
        except Exception as error:  # see check_mujoco_rendering
            raise mujoco_gl_error(error) from None
        try:
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            camera = mujoco.MjvCamera()
            mujoco.mjv_defaultFreeCamera(model, camera)
            for key, value in view.camera.items():
                if key == "lookat":
                    camera.lookat[:] = value
                else:
                    setattr(camera, key, value)
            if "trackbodyid" in view.camera:
                camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            frames = []
            for position in qpos:
                data.qpos[:] = position
                data.qvel[:] = 0.0
                mujoco.mj_forward(model, data)
                renderer.update_scene(data, camera)
                frames.append(renderer.render().copy())
        finally:
            renderer.close()
    finally:
        env.close()
    return np.stack(frames)


def frames_from_obs(env_id: str, obs: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
    """Rebuild ``rgb_array`` frames from observations, for envs whose picture depends only on the state.

    Args:
        env_id: one of :data:`STATE_FROM_OBS` (the frames equal ``env.render()``'s) or :data:`MUJOCO_VIEWS`
            (:func:`mujoco_frames`: a tracking camera, no shadows).
        obs: ``(T, *obs_shape)`` observations of the real steps.
        actions: ``(T, ...)`` env actions; Pendulum draws the previous step's torque, taken from here.

    Returns:
        ``(T, H, W, 3)`` uint8 frames (for classic control, equal to what ``env.render()`` showed at those steps).

    Raises:
        ConfigError: the env is not one whose frames can be rebuilt (record frames during rollouts instead).
    """
    if env_id in MUJOCO_VIEWS:
        return mujoco_frames(env_id, obs)
    to_state = STATE_FROM_OBS.get(env_id)
    if to_state is None:
        known = ", ".join([*STATE_FROM_OBS, *MUJOCO_VIEWS])
        raise ConfigError(
            f"frames of {env_id} cannot be rebuilt from observations (known: {known}); "
            "record them during rollouts (Segment.frames)"
        )
    env = gym.make(env_id, render_mode="rgb_array")
    try:
        env.reset(seed=0)
        unwrapped: Any = env.unwrapped
        frames = []
        for step, observation in enumerate(np.asarray(obs, dtype=np.float64)):
            unwrapped.state = to_state(observation)
            if env_id == "Pendulum-v1":
                unwrapped.last_u = None if actions is None or step == 0 else float(np.ravel(actions[step - 1])[0])
            frames.append(np.asarray(env.render(), dtype=np.uint8))
    finally:
        env.close()
    return np.stack(frames)


def clip_name(segment_id: str) -> str:
    """File name of a segment's clip, relative to the clips folder (the store records this)."""
    return f"{segment_id}{CLIP_SUFFIX}"


def render_segments(
    store: ClipStore,
    segments: Sequence[Segment],
    clips_dir: str | os.PathLike[str],
    fps: float | None = None,
    max_width: int | None = 320,
    workers: int = 2,
    env_id: str | None = None,
) -> list[RenderedClip]:
    """Render the clips of ``segments`` into ``clips_dir`` and record each clip's file name in the store.

    A segment's frames are its ``frames``, or, when it has none and ``env_id`` is given, rebuilt from its
    observations (:func:`frames_from_obs`); segments with neither are skipped (their clip path stays unset). ffmpeg
    runs in ``workers`` processes at a time; each clip is recorded once written, so the store never names a clip
    that is not on disk.

    Args:
        store: records ``SEGMENT_ID.mp4`` (relative to ``clips_dir``, the service's media dir) per segment.
        segments: segments, with ``frames`` (``(L_real, H, W, 3)`` uint8) of their real steps or not.
        clips_dir: output folder, created if missing.
        fps: playback frame rate (default: the env's ``render_fps``, else 30).
        max_width: see :func:`render_clip`.
        workers: concurrent ffmpeg processes.
        env_id: the env, to rebuild missing frames from observations.

    Returns:
        The clips written, in the order of ``segments`` (skipped segments left out).
    """
    folder = Path(clips_dir)
    folder.mkdir(parents=True, exist_ok=True)
    frame_rate = fps if fps is not None else (env_fps(env_id) if env_id is not None else 30.0)
    jobs: list[tuple[Segment, np.ndarray]] = []
    for segment in segments:
        frames = segment.frames
        if frames is None and env_id is not None:
            # pygame drawing is not thread-safe: frames are rebuilt here, one after another; only encodes overlap.
            frames = frames_from_obs(env_id, segment.obs[: segment.real_steps], segment.actions[: segment.real_steps])
        if frames is None:
            continue
        if len(frames) != segment.real_steps:
            raise ConfigError(f"segment {segment.id} has {segment.real_steps} real steps but {len(frames)} frames")
        jobs.append((segment, frames))

    def render(job: tuple[Segment, np.ndarray]) -> RenderedClip:
        segment, frames = job
        rendered = render_clip(frames, segment.length, folder / clip_name(segment.id), frame_rate, max_width)
        store.set_clip_path(segment.id, clip_name(segment.id))
        return rendered

    if workers <= 1 or len(jobs) <= 1:
        return [render(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(render, jobs))


POLICY_CLIP_STEPS = 300
"""Most steps of a policy clip (:func:`render_policy_clip`): 6-10 s at the classic-control envs' frame rates."""


def render_policy_clip(
    act: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    path: str | os.PathLike[str],
    seed: int,
    max_steps: int = POLICY_CLIP_STEPS,
    max_width: int | None = 320,
) -> RenderedClip:
    """Play one episode of a policy and encode it as the labeling page's clips are (:func:`render_clip`).

    The env renders each step live (``rgb_array``), so any env that renders works, not only those whose frames
    :func:`frames_from_obs` rebuilds. The episode is the first evaluation episode of a run with ``seed``
    (``evaluate_policy``'s seeding), cut at ``max_steps``.

    Args:
        act: a batch of observations ``(1, *obs_shape)`` -> env actions ``(1, ...)`` (e.g. ``PPOState.policy()``).
        env_id: gymnasium id.
        path: output ``.mp4``; its folder must exist.
        seed: the run's seed.
        max_steps: most frames.
        max_width: see :func:`render_clip`.

    Raises:
        ConfigError: the env cannot render ``rgb_array`` frames, or ffmpeg failed.
    """
    from baselines.common.evaluation import EVAL_SEED_OFFSET

    mujoco = env_id in MUJOCO_VIEWS  # drawn afterwards from the observations, as the labeling page's clips are
    env = gym.make(env_id, render_mode=None if mujoco else "rgb_array")
    try:
        obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET)
        frames, observations = [], []
        for _ in range(max_steps):
            observations.append(np.asarray(obs))
            if not mujoco:
                frame = env.render()
                if not isinstance(frame, np.ndarray) or frame.ndim != 3:
                    raise ConfigError(f"{env_id} renders no rgb_array frames; its policy cannot be shown as a clip")
                frames.append(np.asarray(frame, dtype=np.uint8))
            obs, _, terminated, truncated, _ = env.step(act(np.asarray(obs)[None])[0])
            if terminated or truncated:
                break
    finally:
        env.close()
    clip = mujoco_frames(env_id, np.stack(observations)) if mujoco else np.stack(frames)
    return render_clip(clip, len(clip), path, env_fps(env_id), max_width)
