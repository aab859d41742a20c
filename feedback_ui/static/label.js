// The labeling page: two clips in sync, four answers by key or button, undo, live progress. No build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SIDES = { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "tie", ArrowDown: "skip" };
  const SAID = { left: "left better", right: "right better", tie: "equally good", skip: "can't tell" };
  const videos = [$("left-video"), $("right-video")];
  const state = { pair: null, ready: false, shownAt: 0, busy: false, labelsDone: null, emptyTimer: null, prefetched: new Set() };

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

  function restart() {
    for (const v of activeVideos()) {
      v.playbackRate = speed();
      v.currentTime = 0;
      v.play().catch(() => { /* autoplay refused: the replay button starts it */ });
    }
  }

  function setClip(video, clip) {
    const frame = video.parentElement;
    frame.querySelector(".missing").hidden = Boolean(clip.url);
    frame.querySelector(".ended").hidden = true;
    video.dataset.realSteps = clip.real_steps;
    video.dataset.length = clip.length;
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
    }
    requestAnimationFrame(tick);
  }

  function onEnded(event) {
    const playing = activeVideos();
    if (event.target === playing[0]) restart(); // the leader ended: both start over
  }

  // ---------------------------------------------------------------- pairs

  async function show(next) {
    clearTimeout(state.emptyTimer);
    const pair = next ? next.pair : null;
    state.pair = pair;
    state.ready = false;
    if (!pair) {
      $("pair").hidden = true;
      $("empty").hidden = false;
      setEnabled(false);
      state.emptyTimer = setTimeout(loadNext, 3000);
      return;
    }
    $("empty").hidden = true;
    $("pair").hidden = false;
    $("pair").dataset.queryId = pair.query_id;
    await Promise.all([setClip(videos[0], pair.left), setClip(videos[1], pair.right)]);
    if (state.pair !== pair) return; // a newer pair arrived while these loaded
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
      await show(result.next);
    } catch (error) {
      if (error.status === 409 || error.status === 404) {
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

  async function refreshProgress() {
    if (document.hidden) return; // a background tab costs the server nothing
    try {
      const p = await api("GET", "/api/progress");
      state.labelsDone = p.labels_done;
      $("labels-done").textContent = p.labels_done;
      $("queue-size").textContent = p.queue_size;
      $("task").textContent = p.task;
      document.title = `Label clips · ${p.labeler}`;
      $("loop-round").textContent = fmt(p.loop.round, 0);
      $("loop-accuracy").textContent = p.loop.reward_val_accuracy == null ? "–" : fmt(100 * p.loop.reward_val_accuracy, 0, "%");
      $("loop-return").textContent = fmt(p.loop.policy_true_return, 1);
    } catch (error) {
      if (error.status === 401) fatal(`This link is not valid: ${error.message}`);
    }
  }

  // ---------------------------------------------------------------- input

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || (tag === "SELECT" && event.key.startsWith("Arrow"))) return;
    if (SIDES[event.key]) {
      event.preventDefault();
      if (!event.repeat) answer(SIDES[event.key]);
    } else if (event.key === "z" || event.key === "Z") {
      event.preventDefault();
      if (!event.repeat) undo();
    } else if (event.key === " ") {
      event.preventDefault();
      if (state.pair) restart();
    }
  });
  document.querySelectorAll(".choices button").forEach((b) => b.addEventListener("click", () => answer(b.dataset.side)));
  $("undo").addEventListener("click", undo);
  $("replay").addEventListener("click", restart);
  $("speed").value = localStorage.getItem("rlhf_speed") || "1";
  $("speed").addEventListener("change", () => {
    localStorage.setItem("rlhf_speed", $("speed").value);
    for (const v of videos) v.playbackRate = speed();
  });
  videos.forEach((v) => v.addEventListener("ended", onEnded));

  async function start() {
    if (!token) return fatal("This page needs your personal labeling link (it ends in #token=...). Ask the admin for it.");
    try {
      await api("POST", "/api/session"); // the cookie the clips are fetched with
    } catch (error) {
      return handle(error);
    }
    setInterval(() => api("POST", "/api/session").catch(handle), SESSION_REFRESH_MS);
    $("undo").disabled = false;
    refreshProgress();
    setInterval(refreshProgress, 3000);
    requestAnimationFrame(tick);
    await loadNext();
  }

  start();
})();
