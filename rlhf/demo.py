"""`rlhf demo`: the whole product in one command.

1. PPO on the env's true reward, as the reference;
2. the labeling service on 127.0.0.1 (its URL and a labeler link are printed: open it and label alongside);
3. the RLHF loop, with a simulated labeler that labels through the service's HTTP API exactly as the browser does
   (same endpoints, same store), or only people with ``--teacher human``;
4. reward model and PPO on the learned reward;
5. one HTML report comparing RLHF PPO with true-reward PPO.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import plotly.graph_objects as go

from baselines.common.checkpoint import load_checkpoint
from baselines.common.errors import ConfigError
from baselines.common.report import Report, color, metric_series
from baselines.common.runs import RunFolder, write_json
from baselines.ppo import PPOConfig, init_ppo, load_state, train_ppo
from rlhf.cli import let_labelers_see_the_end
from rlhf.loop import CLIPS_DIR, FINAL_CLIP, RLHFConfig, run_rlhf
from rlhf.render import render_policy_clip
from rlhf.store import PreferenceStore
from rlhf.teachers import SimulatedTeacher, make_teacher


@dataclass(frozen=True)
class DemoConfig:
    """Reference PPO, then RLHF with labels given through the labeling service, then one comparison report."""

    env: Literal["Pendulum-v1", "CartPole-v1"] = "Pendulum-v1"
    """Env of the demo."""
    labels: int = 200
    """Label budget of the RLHF run."""
    total_steps: int | None = None
    """Env steps of each PPO run (default: 50k for Pendulum, 100k for CartPole)."""
    teacher: Literal["simulated", "human"] = "simulated"
    """simulated: an oracle labels through the HTTP API (you may label alongside); human: only you label."""
    seed: int = 0
    """Seed of both runs."""
    port: int = 8000
    """Port of the labeling service on 127.0.0.1."""
    out: Path = Path("runs/demo")
    """Folder of the demo: reference/, rlhf/ and report.html."""
    resume: bool = False
    """Continue an interrupted demo in --out (the reference run is reused when finished)."""

    @property
    def steps(self) -> int:
        if self.total_steps is not None:  # 0 is refused by PPO's checks, not replaced by the default
            return self.total_steps
        return 50_000 if self.env == "Pendulum-v1" else 100_000


class HttpLabeler:
    """A simulated person: leases pairs and submits answers over the service's HTTP API, like the page does.

    It decides with a B-Pref teacher on the segments' true rewards (read from the store, as a person would read
    the clips); the request path (auth, leases, sides, idempotency keys) is the browser's.
    """

    def __init__(self, url: str, token: str, store_path: Path, teacher: SimulatedTeacher, seed: int) -> None:
        self.url, self.token, self.store_path, self.teacher = url, token, store_path, teacher
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.answered = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="http-labeler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self._label()
        except BaseException as error:  # reported by the demo, never lost in a thread
            self.error = error

    def _label(self) -> None:
        store = PreferenceStore(self.store_path)
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
                while not self.stop.is_set():
                    response = client.get("/api/queries/next")
                    response.raise_for_status()
                    pair = response.json()["pair"]
                    if pair is None:
                        self.stop.wait(0.2)
                        continue
                    query = store.get_query(pair["query_id"])
                    left, right = store.get_segment(query.left_segment), store.get_segment(query.right_segment)
                    choice = self.teacher.choose(left, right, self.rng)
                    side = {"a": "left", "b": "right", "tie": "tie", "skip": "skip"}[choice]
                    body = {"query_id": pair["query_id"], "side": side, "seconds_taken": 0.0,
                            "idempotency_key": f"sim-{pair['query_id']}"}  # fmt: skip
                    client.post("/api/labels", json=body).raise_for_status()
                    self.answered += 1
        finally:
            store.close()


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the demo; return its summary (also written to OUT/summary.json)."""
    from feedback_ui.server import ServerHandle, bind_socket, labeler_url, start_server_in_background

    out = config.out
    reference_dir, rlhf_dir = out / "reference", out / "rlhf"
    if out.exists() and not config.resume and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; pass --resume to continue that demo, or choose another --out")
    rlhf_config = RLHFConfig(
        env=config.env,
        teacher="human",
        labels=config.labels,
        total_steps=config.steps,
        seed=config.seed,
        human_retrain_labels=max(5, config.labels // 20),
        port=config.port,
        out=rlhf_dir,
    )
    rlhf_config.validate()  # before anything is written
    if config.port:  # a port in use is found now, not after the reference run
        bind_socket("127.0.0.1", config.port).close()
    out.mkdir(parents=True, exist_ok=True)

    print(f"[1/4] PPO on the true reward of {config.env} (the reference)", file=sys.stderr, flush=True)
    if (reference_dir / "summary.json").exists():
        reference = json.loads((reference_dir / "summary.json").read_text())
    else:
        ppo_config = replace(rlhf_config.ppo(), out=reference_dir, resume=None)
        if config.resume and (reference_dir / "checkpoint.pt").exists():
            ppo_config = replace(ppo_config, resume=reference_dir)
        reference = train_ppo(ppo_config)

    handles: list[ServerHandle] = []
    labelers: list[HttpLabeler] = []
    machine_names: set[str] = set()  # labelers that are not people

    def start_service(workspace: Path) -> None:
        handle = start_server_in_background(workspace, "127.0.0.1", config.port)
        handles.append(handle)
        store = PreferenceStore(workspace / "prefs.sqlite")
        try:
            you = labeler_url(handle.url, store.add_labeler(f"you-{len(store.labelers())}")[1])
            simulated = f"simulated-{len(store.labelers())}"
            machine_names.add(simulated)
            token = store.add_labeler(simulated)[1]
        finally:
            store.close()
        print(f"[2/4] labeling service: {handle.url}  admin: {handle.admin_url}", file=sys.stderr, flush=True)
        print(f"      label alongside here: {you}", file=sys.stderr, flush=True)
        if config.teacher == "simulated":
            labeler = HttpLabeler(handle.url, token, workspace / "prefs.sqlite", make_teacher("oracle"), config.seed)
            labeler.start()
            labelers.append(labeler)
        print("[3/4] RLHF: queries -> labels over HTTP -> reward model -> PPO", file=sys.stderr, flush=True)

    resume = config.resume and (rlhf_dir / "checkpoint.pt").exists()
    try:
        rlhf_summary = run_rlhf(replace(rlhf_config, resume=rlhf_dir if resume else None), on_store_ready=start_service)
        for labeler in labelers:
            labeler.close()
        if handles:
            let_labelers_see_the_end(rlhf_dir / "prefs.sqlite", machines=machine_names)
    finally:
        for labeler in labelers:
            labeler.close()
        for handle in handles:
            handle.stop()
    for labeler in labelers:
        if labeler.error is not None:
            raise RuntimeError(f"the simulated labeler failed: {labeler.error}") from labeler.error

    print("[4/4] report", file=sys.stderr, flush=True)
    summary = {
        "algo": "demo",
        "env_id": config.env,
        "seed": config.seed,
        "reference_eval_return": reference["eval_return_mean"],
        "eval_return_mean": rlhf_summary["eval_return_mean"],
        "labels_used": rlhf_summary["labels_used"],
        "reward_model_accuracy": rlhf_summary["reward_model_accuracy"],
        "reference_seconds": reference["wall_seconds"],
        "rlhf_seconds": rlhf_summary["wall_seconds"],
        "report": str(out / "report.html"),
    }
    write_json(out / "summary.json", summary)
    reference_clip = final_policy_clip(replace(rlhf_config.ppo(), out=reference_dir, resume=None), reference_dir)
    write_report(out, reference_dir, rlhf_dir, summary, reference_clip)
    print(
        f"RLHF policy true return {summary['eval_return_mean']:.1f} with {summary['labels_used']} labels "
        f"(reference PPO on the true reward: {summary['reference_eval_return']:.1f}); report: {summary['report']}",
        file=sys.stderr,
        flush=True,
    )
    return summary


def final_policy_clip(config: PPOConfig, folder: Path) -> Path | None:
    """The clip of a finished PPO run's final policy (its checkpoint), rendered once into FOLDER/clips as the
    labeling page's clips are; None, with a warning, when there is no checkpoint or the env cannot be rendered."""
    path = folder / CLIPS_DIR / FINAL_CLIP
    if path.is_file():
        return path
    if not (folder / "checkpoint.pt").is_file():
        print(f"no clip of the policy in {folder}: it has no checkpoint", file=sys.stderr, flush=True)
        return None
    state = init_ppo(config)
    try:
        load_state(state, load_checkpoint(folder / "checkpoint.pt"))
        path.parent.mkdir(parents=True, exist_ok=True)
        render_policy_clip(state.policy(), config.env, path, config.seed)
    except ConfigError as error:
        print(f"no clip of the policy in {folder}: {error}", file=sys.stderr, flush=True)
        return None
    finally:
        state.envs.close()
    return path


def write_report(
    out: Path, reference_dir: Path, rlhf_dir: Path, summary: dict[str, Any], reference_clip: Path | None = None
) -> None:
    """One page: both final policies as clips, true return of both over env steps, labels, reward-model accuracy,
    predicted vs true returns."""
    reference_rows = RunFolder(reference_dir).read_metrics()
    rlhf_rows = RunFolder(rlhf_dir).read_metrics()

    report = Report(
        f"RLHF demo on {summary['env_id']}",
        f"RLHF PPO reached a true return of {summary['eval_return_mean']:.1f} from {summary['labels_used']} labels "
        f"given through the labeling service; PPO on the true reward reached {summary['reference_eval_return']:.1f}.",
    )
    clips = [] if reference_clip is None else [(reference_clip, "PPO on the true reward (the reference)")]
    report.videos(
        [*clips, (rlhf_dir / CLIPS_DIR / FINAL_CLIP, "RLHF PPO, taught by the labels")],
        "Final policies, first evaluation episode (the clips are rendered as the labeling page's are).",
    )
    fig = go.Figure()
    for i, (name, rows) in enumerate([("PPO on the true reward", reference_rows), ("RLHF PPO", rlhf_rows)]):
        xs, ys = metric_series(rows, "charts/episodic_return")
        fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{name} (training episodes)", line={"color": color(i)}, opacity=0.5))
        xs, ys = metric_series(rows, "eval/return_mean")
        fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{name} (eval)", mode="lines+markers", line={"color": color(i)}))
    fig.update_layout(title="True return over env steps", xaxis_title="env steps", yaxis_title="true return")
    report.figure(fig)
    xs, ys = metric_series(rlhf_rows, "labels/total")
    report.figure(
        go.Figure(go.Scatter(x=xs, y=ys, mode="lines")).update_layout(
            title="Labels over time", xaxis_title="env steps", yaxis_title="labels"
        )
    )
    xs, ys = metric_series(rlhf_rows, "reward/val_accuracy")
    report.figure(
        go.Figure(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers")).update_layout(
            title="Reward-model held-out accuracy per round", xaxis_title="round", yaxis_range=[0, 1.05]
        )
    )
    store = PreferenceStore(rlhf_dir / "prefs.sqlite")
    try:
        labeled = store.effective_labels(include_skips=False)
        ids = sorted({i for p in labeled for i in (p.segment_a, p.segment_b)})
        segments = store.get_segments(ids)
        binding = store.env()
    finally:
        store.close()
    if segments and binding is not None and (rlhf_dir / "reward_model").exists():
        import gymnasium as gym
        import torch

        from rlhf.reward import load_reward_model
        from rlhf.segments import segment_features

        model = load_reward_model(rlhf_dir / "reward_model")
        features = segment_features(segments, gym.make(binding.env_id).action_space)
        with torch.no_grad():
            predicted = model.segment_returns(torch.from_numpy(features)).mean(0).numpy()
        fig = go.Figure(go.Scatter(x=[s.true_return for s in segments], y=predicted, mode="markers",
                                   marker={"size": 5, "opacity": 0.6}))  # fmt: skip
        fig.update_layout(title="Predicted vs true returns of the labeled segments (final reward model)",
                          xaxis_title="true return", yaxis_title="predicted return")  # fmt: skip
        report.figure(fig)
    report.raw_html(
        "<p>Run folders: "
        f"<a href='{reference_dir.name}/report.html'>reference PPO</a>, "
        f"<a href='{rlhf_dir.name}/report.html'>RLHF run</a> (predicted vs true segment returns, all metrics).</p>"
    )
    report.table(["figure", "value"], [[k, v] for k, v in summary.items()])
    report.write(out / "report.html")
