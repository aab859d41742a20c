// The labeling page: two clips in sync, four answers by key or button, undo, live progress, the loop's phase
// (waiting for labels, finished) and its latest policy clip on request. No build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SIDES = { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "tie", ArrowDown: "skip" };
  const SAID = { left: "left better", right: "right better", tie: "equally good", skip: "can't tell" };
  const videos = [$("left-video"), $("right-video")];
  const state = {
    pair: null, ready: false, shownAt: 0, busy: false, labelsDone: null, emptyTimer: null, prefetched: new Set(),
    loop: {}, finished: false, progressTimer: null, sessionTimer: null,
  };
  const POLL_MS = 3000;
  const POLL_SOON_MS = 1500; // while the agent waits for labels or is about to finish
  const SHORT_CLIP_S = 1.5; // real parts shorter than this (at the chosen speed) are slowed down, to at most 1/4

  // The personal link carries the token in its fragment (#token=...), which the browser never sends to a server,
  // so it stays out of server and proxy logs; links of older versions carry it as ?token=..., which still works.
  const SESSION_REFRESH_MS = 30 * 60 * 1000; // the clip cookie lasts 12 hours (feedback_ui/sessions.py)
  let token = new URLSearchParams(location.hash.slice(1)).get("token") || new URLSearchParams(location.search).get("token");
  if (token) {
    sessionStorage.setItem("rlhf_token", token);
    history.replaceState(null, "", location.pathname); // keep the token out of the address bar and history
  } else {
    token = sessionStorage.getItem("rlhf_token");
  }

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context; this does not
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // JSON API call; network failures are retried (the idempotency key in the body makes that safe).
  async function api(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch(path, {
          method,
          headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
          body: body ? JSON.stringify(body) : undefined,
          credentials: "same-origin",
        });
      } catch (error) {
        if (attempt >= 3) throw new ApiError(0, "the server cannot be reached; check your connection");
        await new Promise((resolve) => setTimeout(resolve, 300 * 2 ** attempt));
        continue;
      }
      if (response.ok) return response.json();
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      if (response.status >= 500 && attempt < 3) {
        await new Promise((resolve) => setTimeout(resolve, 300 * 2 ** attempt));
        continue;
      }
      throw new ApiError(response.status, detail);
    }
  }

  function say(text) { $("message").textContent = text; }

  function fatal(text) {
    if (state.finished) return; // the run is over: nothing is wrong when its server goes away
    $("fatal").textContent = text;
    $("fatal").hidden = false;
    $("pair").hidden = true;
    $("empty").hidden = true;
    setEnabled(false);
  }

  function setEnabled(on) {
    document.querySelectorAll(".choices button").forEach((b) => { b.disabled = !on; });
    $("replay").disabled = !on;
  }

  // ---------------------------------------------------------------- playback

  function speed() { return Number($("speed").value) || 1; }

  function activeVideos() { return videos.filter((v) => v.getAttribute("src")); }

  // Seconds of the clip before its episode ended, at 1x (the rest is the frozen, dimmed last frame).
  function realSeconds(video) {
    return video.duration * (Number(video.dataset.realSteps) / Number(video.dataset.length));
  }

  // The chosen speed, slowed for short clips: an episode that ends within a fraction of a second is hard to judge,
  // so when the longer real part of the two would last under SHORT_CLIP_S both play slower (down to 1/4).
  function playbackRate() {
    const chosen = speed();
    const reals = activeVideos().map(realSeconds).filter(Number.isFinite);
    if (!reals.length) return chosen;
    const factor = Math.min(1, Math.max(0.25, Math.max(...reals) / chosen / SHORT_CLIP_S));
    return factor >= 1 ? chosen : Math.max(0.0625, Math.round(chosen * factor * 100) / 100);
  }

  function applyRate() {
    const rate = playbackRate();
    for (const v of activeVideos()) v.playbackRate = rate;
    $("speed-note").textContent = rate < speed() ? `slowed to ${rate}× for short clips` : "";
  }

  function restart() {
    applyRate();
    for (const v of activeVideos()) {
      v.currentTime = 0;
      v.play().catch(() => { /* autoplay refused: the replay button starts it */ });
    }
  }

  function setClip(video, clip) {
    const frame = video.parentElement;
    frame.querySelector(".missing").hidden = Boolean(clip.url);
    frame.querySelector(".ended").hidden = true;
    frame.querySelector(".replay-hint").hidden = true;
    video.dataset.realSteps = clip.real_steps;
    video.dataset.length = clip.length;
    const mark = frame.parentElement.querySelector(".end-mark");
    mark.hidden = !(clip.real_steps < clip.length);
    mark.style.left = `${(100 * clip.real_steps) / clip.length}%`;
    if (!clip.url) {
      video.removeAttribute("src");
      video.load();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => { video.removeEventListener("loadeddata", done); video.removeEventListener("error", done); resolve(); };
      video.addEventListener("loadeddata", done);
      video.addEventListener("error", done);
      video.src = clip.url;
      video.load();
    });
  }

  // One clock for both clips: the left (or the only) clip leads; the other follows it and both loop together.
  function tick() {
    const playing = activeVideos();
    if (playing.length === 2) {
      const [lead, follow] = playing;
      if (!lead.paused && Math.abs(follow.currentTime - lead.currentTime) > 0.08) follow.currentTime = lead.currentTime;
    }
    for (const v of videos) {
      const real = Number(v.dataset.realSteps), length = Number(v.dataset.length);
      const endsAt = v.duration * (real / length);
      v.parentElement.querySelector(".ended").hidden = !(real < length && v.currentTime >= endsAt - 0.01);
      // The bar under the clip: where playback is, beside the mark where the episode ended.
      const timeline = v.closest(".clip").querySelector(".timeline");
      const percent = v.getAttribute("src") && v.duration > 0 ? Math.min(100, (100 * v.currentTime) / v.duration) : 0;
      timeline.firstElementChild.style.width = `${percent}%`;
      timeline.setAttribute("aria-valuenow", Math.round(percent));
    }
    if (!state.finished) requestAnimationFrame(tick);
  }

  function onEnded(event) {
    const playing = activeVideos();
    if (event.target !== playing[0]) return;
    // The leader ended: both start over, and the key that replays from the start is shown on the clips.
    for (const v of playing) v.parentElement.querySelector(".replay-hint").hidden = false;
    restart();
  }

  // ---------------------------------------------------------------- pairs

  async function show(next) {
    clearTimeout(state.emptyTimer);
    if (state.finished) return;
    const pair = next ? next.pair : null;
    state.pair = pair;
    state.ready = false;
    if (!pair) {
      $("pair").hidden = true;
      $("empty").hidden = false;
      setEnabled(false);
      state.emptyTimer = setTimeout(loadNext, POLL_MS);
      refreshProgress(true); // an empty queue may mean the run has finished: look now
      return;
    }
    $("empty").hidden = true;
    $("pair").hidden = false;
    $("pair").dataset.queryId = pair.query_id;
    await Promise.all([setClip(videos[0], pair.left), setClip(videos[1], pair.right)]);
    if (state.pair !== pair || state.finished) return; // a newer pair arrived, or the run ended, while these loaded
    restart();
    state.shownAt = performance.now();
    state.ready = true;
    setEnabled(true);
    prefetch(next.prefetch || []);
  }

  // Warm the browser's cache with the clips of the pairs likely to come next, so the next pair shows at once.
  function prefetch(urls) {
    for (const url of urls) {
      if (state.prefetched.has(url)) continue;
      state.prefetched.add(url);
      fetch(url, { credentials: "same-origin" }).then((r) => r.blob()).catch(() => state.prefetched.delete(url));
    }
  }

  async function loadNext() {
    try {
      await show(await api("GET", "/api/queries/next?prefetch=true"));
    } catch (error) {
      handle(error);
    }
  }

  function handle(error) {
    if (state.finished) return; // the run is over and its server may be gone: nothing to report
    if (error.status === 401) return fatal(`This link is not valid: ${error.message}`);
    say(`Could not do that: ${error.message}`);
  }

  async function answer(side) {
    if (state.busy || !state.ready) return;
    state.busy = true;
    const pair = state.pair;
    const button = document.querySelector(`.choices button[data-side="${side}"]`);
    button.classList.add("pressed");
    setEnabled(false);
    const body = {
      query_id: pair.query_id,
      side,
      seconds_taken: Math.round((performance.now() - state.shownAt) / 10) / 100,
      idempotency_key: newKey(),
    };
    try {
      const result = await api("POST", "/api/labels?next=true&prefetch=true", body);
      bumpDone(+1);
      $("undo").disabled = false;
      say(`Saved: ${SAID[side]} (pair ${pair.query_id}). Press z to undo.`);
      if (state.loop.phase === "waiting") refreshProgress(true); // the count of labels to go, at once
      await show(result.next);
    } catch (error) {
      if (error.status === 409 && /the run has finished/.test(error.message)) {
        finish(null); // the pair was closed because the run ended
      } else if (error.status === 409 || error.status === 404) {
        say(`${error.message}. Showing the next pair.`);
        await loadNext();
      } else {
        handle(error);
        setEnabled(true);
      }
    } finally {
      button.classList.remove("pressed");
      state.busy = false;
    }
  }

  async function undo() {
    if (state.busy) return;
    state.busy = true;
    try {
      const result = await api("POST", "/api/labels/undo", { idempotency_key: newKey() });
      if (!result.undone) {
        say("Nothing to undo.");
        $("undo").disabled = true;
      } else {
        bumpDone(-1);
        say(`Undid your answer to pair ${result.undone.query_id} (${SAID[result.undone.side]}): answer it again.`);
        await show({ pair: result.pair, prefetch: [] });
      }
    } catch (error) {
      handle(error);
    } finally {
      state.busy = false;
    }
  }

  // ---------------------------------------------------------------- progress

  function bumpDone(delta) {
    if (state.labelsDone === null) return;
    state.labelsDone = Math.max(0, state.labelsDone + delta);
    $("labels-done").textContent = state.labelsDone;
  }

  function fmt(value, digits, suffix = "") {
    return value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)}${suffix}`;
  }

  async function refreshProgress(force = false) {
    if (document.hidden && !force) return; // a background tab costs the server nothing
    if (state.finished) return;
    try {
      render(await api("GET", "/api/progress"));
    } catch (error) {
      if (error.status === 401) fatal(`This link is not valid: ${error.message}`);
    }
  }

  function render(p) {
    if (state.finished) return;
    state.labelsDone = p.labels_done;
    state.loop = p.loop;
    $("labels-done").textContent = p.labels_done;
    $("queue-size").textContent = p.queue_size;
    $("task").textContent = p.task;
    document.title = `Label clips · ${p.labeler}`;
    $("loop-round").textContent = fmt(p.loop.round, 0);
    $("loop-accuracy").textContent = p.loop.reward_val_accuracy == null ? "–" : fmt(100 * p.loop.reward_val_accuracy, 0, "%");
    $("loop-return").textContent = fmt(p.loop.policy_true_return, 1);
    const waiting = p.loop.phase === "waiting";
    const banner = `The agent is waiting for your labels: ${p.loop.labels_awaited} to go`;
    $("waiting").hidden = !waiting;
    if (waiting && $("waiting").textContent !== banner) $("waiting").textContent = banner; // announced on change only
    $("show-agent").disabled = !p.loop.policy_clip_url;
    if (p.loop.phase === "finished") finish(p);
  }

  // Poll sooner while the agent waits for labels or is about to finish, so the page follows it closely.
  function scheduleProgress() {
    clearTimeout(state.progressTimer);
    if (state.finished) return;
    const loop = state.loop;
    const soon = loop.phase === "waiting" || (loop.total_steps > 0 && loop.env_steps >= 0.9 * loop.total_steps);
    state.progressTimer = setTimeout(async () => {
      await refreshProgress();
      scheduleProgress();
    }, soon ? POLL_SOON_MS : POLL_MS);
  }

  // ---------------------------------------------------------------- the end of the run

  // The run is over: no more pairs, answers or polling; the page says what came of it. Its server stops a few
  // seconds later, and nothing that fails after this point is reported. `p` is the progress that said so, or null
  // when a closed pair said so first.
  function finish(p) {
    if (state.finished) return;
    state.finished = true;
    state.ready = false;
    state.pair = null;
    clearTimeout(state.emptyTimer);
    clearTimeout(state.progressTimer);
    clearInterval(state.sessionTimer);
    closeAgent();
    for (const v of videos) v.pause();
    for (const id of ["pair", "empty", "fatal", "waiting", "choices", "tools"]) $(id).hidden = true;
    setEnabled(false);
    say("");
    $("finished").hidden = false;
    showOutcome(p ? p.loop : state.loop, p ? p.labels_done : state.labelsDone);
    if (!p) confirmFinished(5);
  }

  function showOutcome(loop, labelsDone) {
    $("final-return").textContent = loop.policy_true_return == null ? "not measured" : fmt(loop.policy_true_return, 1);
    $("final-labels-used").textContent = loop.labels_used == null ? "–"
      : loop.label_budget ? `${loop.labels_used} of ${loop.label_budget}` : `${loop.labels_used}`;
    $("final-labels-mine").textContent = labelsDone ?? "–";
    const url = loop.policy_clip_url;
    if (url && $("final-video").getAttribute("src") !== url) {
      $("final-clip").hidden = false;
      $("final-video").src = url;
      $("final-video").play().catch(() => { /* autoplay refused: the clip shows its first frame */ });
    }
  }

  // A closed pair told of the end before a progress answer did: fetch the final figures, a few times at most.
  async function confirmFinished(tries) {
    for (let i = 0; i < tries; i++) {
      try {
        const p = await api("GET", "/api/progress");
        showOutcome(p.loop, p.labels_done);
        if (p.loop.phase === "finished") return;
      } catch (_) {
        return; // the server is gone: the figures stay as they are
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  // ---------------------------------------------------------------- the agent now

  function openAgent() {
    const url = state.loop.policy_clip_url;
    if (!url || state.finished || $("agent").open) return;
    const video = $("agent-video");
    if (video.getAttribute("src") !== url) video.src = url;
    const loop = state.loop;
    $("agent-caption").textContent = `The latest clip of the agent's policy, after ${loop.labels_used ?? 0} labels `
      + `(round ${loop.round ?? 0}): what the answers taught it so far.`;
    for (const v of videos) v.pause();
    $("agent").showModal();
    video.currentTime = 0;
    video.play().catch(() => { /* autoplay refused: the clip shows its first frame */ });
  }

  function closeAgent() {
    if ($("agent").open) $("agent").close();
  }

  $("agent").addEventListener("close", () => {
    $("agent-video").pause();
    if (document.activeElement) document.activeElement.blur(); // keys go to the page's answers again
    if (state.pair && !state.finished) restart();
  });

  // ---------------------------------------------------------------- input

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (state.finished) return; // nothing is left to answer
    const tag = event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || (tag === "SELECT" && event.key.startsWith("Arrow"))) return;
    if ($("agent").open) {
      // While the agent's clip is shown, answers wait (the pair is hidden); p or Escape closes it.
      if (event.key === "p" || event.key === "P") {
        event.preventDefault();
        if (!event.repeat) closeAgent();
      } else if (event.key === " ") {
        event.preventDefault();
        $("agent-video").currentTime = 0;
      } else if (SIDES[event.key] || event.key === "z" || event.key === "Z") {
        event.preventDefault();
      }
      return;
    }
    if (SIDES[event.key]) {
      event.preventDefault();
      if (!event.repeat) answer(SIDES[event.key]);
    } else if (event.key === "z" || event.key === "Z") {
      event.preventDefault();
      if (!event.repeat) undo();
    } else if (event.key === " ") {
      event.preventDefault();
      if (state.pair) restart();
    } else if (event.key === "p" || event.key === "P") {
      event.preventDefault();
      if (!event.repeat) openAgent();
    }
  });
  document.querySelectorAll(".choices button").forEach((b) => b.addEventListener("click", () => answer(b.dataset.side)));
  $("undo").addEventListener("click", undo);
  $("replay").addEventListener("click", restart);
  $("speed").value = localStorage.getItem("rlhf_speed") || "1";
  $("speed").addEventListener("change", () => {
    localStorage.setItem("rlhf_speed", $("speed").value);
    applyRate();
  });
  $("show-agent").addEventListener("click", openAgent);
  $("agent-close").addEventListener("click", closeAgent);
  $("final-video").addEventListener("error", () => { $("final-clip").hidden = true; });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshProgress(); });
  videos.forEach((v) => v.addEventListener("ended", onEnded));

  async function start() {
    if (!token) return fatal("This page needs your personal labeling link (it ends in #token=...). Ask the admin for it.");
    try {
      await api("POST", "/api/session"); // the cookie the clips are fetched with
    } catch (error) {
      return handle(error);
    }
    state.sessionTimer = setInterval(() => api("POST", "/api/session").catch(handle), SESSION_REFRESH_MS);
    $("undo").disabled = false;
    refreshProgress().then(scheduleProgress);
    requestAnimationFrame(tick);
    await loadNext();
  }

  start();
})();
