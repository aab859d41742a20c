// The admin page: labels per labeler, agreement, reward-model accuracy over the run, export. No build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // The admin link carries the token in its fragment (#token=..., never sent to the server; older links: ?token=).
  let token = new URLSearchParams(location.hash.slice(1)).get("token") || new URLSearchParams(location.search).get("token");
  if (token) {
    sessionStorage.setItem("rlhf_admin_token", token);
    history.replaceState(null, "", location.pathname);
  } else {
    token = sessionStorage.getItem("rlhf_admin_token");
  }

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return response;
  }

  const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  function cell(text, numeric = false) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "num";
    return td;
  }
  function row(cells) {
    const tr = document.createElement("tr");
    cells.forEach((c) => tr.appendChild(c));
    return tr;
  }

  // Rotate (a new personal URL, shown once) or revoke a labeler's token. Simulated teachers have no token.
  function tokenCell(l) {
    const td = document.createElement("td");
    td.className = "token";
    if (l.name.startsWith("teacher:")) {
      td.textContent = "–";
      return td;
    }
    if (!l.has_token) td.textContent = "revoked ";
    const rotate = document.createElement("button");
    rotate.type = "button";
    rotate.textContent = "New link";
    rotate.dataset.action = "rotate";
    rotate.addEventListener("click", () => changeToken("rotate", l.name));
    td.append(rotate);
    if (l.has_token) {
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.textContent = "Revoke";
      revoke.dataset.action = "revoke";
      revoke.addEventListener("click", () => {
        if (confirm(`Revoke ${l.name}'s link? Their labels stay.`)) changeToken("revoke", l.name);
      });
      td.append(revoke);
    }
    return td;
  }

  async function changeToken(action, name) {
    try {
      const result = await (await api("POST", `/api/admin/labelers/${action}`, { name })).json();
      if (action === "rotate") {
        const code = document.createElement("code");
        code.className = "url";
        code.textContent = result.url;
        $("new-labeler").replaceChildren(`New personal URL of ${result.name} (shown once; the old one no longer works): `, code);
      } else {
        $("new-labeler").textContent = `Revoked ${result.name}'s link; their labels stay.`;
      }
      refresh();
    } catch (error) {
      $("new-labeler").textContent = `Could not ${action}: ${error.message}`;
    }
  }

  // What the loop does now: trains, waits for people's labels (and how many), or is over.
  function phase(loop) {
    if (loop.phase === "waiting") return `waiting for ${loop.labels_awaited} label${loop.labels_awaited === 1 ? "" : "s"}`;
    return loop.phase ?? "–";
  }

  function render(s) {
    $("task").textContent = `Task: ${s.task} · labels per pair: ${s.labels_per_pair}`;
    const cards = [
      ["Labels", s.store.labels], ["Undone", s.store.labels_voided], ["Pairs waiting", s.store.queries_pending],
      ["Pairs leased", s.store.queries_leased], ["Segments", s.store.segments], ["Run", phase(s.loop)],
      ["Round", s.loop.round ?? "–"],
      ["Reward-model accuracy", s.loop.reward_val_accuracy == null ? "–" : `${fmt(100 * s.loop.reward_val_accuracy, 0)}%`],
      ["Policy return", fmt(s.loop.policy_true_return, 1)],
    ];
    $("cards").replaceChildren(...cards.map(([name, value]) => {
      const div = document.createElement("div");
      div.className = "card";
      const b = document.createElement("b");
      b.textContent = value;
      div.append(b, name);
      return div;
    }));
    const percent = (v) => (v === null || v === undefined ? "–" : `${fmt(100 * v, 0)}%`);
    $("labelers").replaceChildren(...s.labelers.map((l) => {
      const weight = cell(l.weight_set_by_operator ? `${fmt(l.weight)} · set by operator` : fmt(l.weight), true);
      if (l.accuracy !== null) weight.title = `estimated accuracy ${percent(l.accuracy)} from ${l.judged} a/b answers`;
      return row([
        cell(l.name), cell(l.labels, true), cell(l.skips, true), cell(l.ties, true), cell(l.undos, true),
        cell(fmt(l.labels_per_hour, 0), true), cell(fmt(l.median_seconds, 1), true),
        cell(percent(l.model_agreement), true), cell(percent(l.peer_agreement), true), weight, tokenCell(l),
      ]);
    }));
    const a = s.agreement;
    $("agreement-summary").textContent = a.overlapping_pairs
      ? `${a.overlapping_pairs} pairs answered by two or more labelers · Fleiss' κ ${fmt(a.fleiss_kappa)} · `
        + `agreement ${fmt(100 * a.percent_agreement, 0)}%`
      : "No pair has two answers yet (serve with --labels-per-pair 2 or more to measure agreement).";
    $("pairwise").replaceChildren(...a.pairwise.map((p) => row([
      cell(p.labeler_a), cell(p.labeler_b), cell(p.shared_pairs, true),
      cell(`${fmt(100 * p.percent_agreement, 0)}%`, true), cell(fmt(p.cohens_kappa), true),
    ])));
    if (window.Plotly) {
      const x = (points) => points.map((p) => p.labels ?? p.step);
      Plotly.react("curves", [
        { x: x(s.reward_accuracy), y: s.reward_accuracy.map((p) => p.value), name: "reward-model accuracy",
          mode: "lines+markers" },
        { x: x(s.policy_true_return), y: s.policy_true_return.map((p) => p.value), name: "policy return",
          mode: "lines+markers", yaxis: "y2" },
      ], {
        margin: { t: 10, r: 60, l: 50, b: 40 }, legend: { orientation: "h" },
        xaxis: { title: { text: "labels" } }, yaxis: { title: { text: "accuracy" }, range: [0, 1] },
        yaxis2: { title: { text: "return" }, overlaying: "y", side: "right" },
      }, { responsive: true, displayModeBar: false });
    }
  }

  async function refresh() {
    try {
      render(await (await api("GET", "/api/admin/stats")).json());
    } catch (error) {
      $("fatal").hidden = false;
      $("fatal").textContent = error.status === 401 || error.status === 403
        ? "This page needs the admin link (it ends in #token=ADMIN_TOKEN; `rlhf serve` prints it)."
        : `Could not load the statistics: ${error.message}`;
    }
  }

  $("add-labeler").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await (await api("POST", "/api/admin/labelers", { name: $("labeler-name").value })).json();
      $("new-labeler").innerHTML = "";
      const code = document.createElement("code");
      code.className = "url";
      code.textContent = created.url;
      $("new-labeler").append(`Personal URL of ${created.name} (shown once): `, code);
      $("labeler-name").value = "";
      refresh();
    } catch (error) {
      $("new-labeler").textContent = `Could not add: ${error.message}`;
    }
  });

  $("export-jsonl").addEventListener("click", async () => {
    try {
      const blob = await (await api("GET", "/api/admin/export.jsonl")).blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = "preferences.jsonl";
      link.click();
      URL.revokeObjectURL(link.href);
      $("export-result").textContent = "Downloaded preferences.jsonl.";
    } catch (error) {
      $("export-result").textContent = `Export failed: ${error.message}`;
    }
  });

  $("export-hf").addEventListener("click", async () => {
    $("export-result").textContent = "Exporting…";
    try {
      const result = await (await api("POST", "/api/admin/export", { format: "hf" })).json();
      $("export-result").textContent = `Wrote ${result.rows} rows to ${result.path} (load it with datasets.load_from_disk).`;
    } catch (error) {
      $("export-result").textContent = `Export failed: ${error.message}`;
    }
  });

  if (!token) {
    $("fatal").hidden = false;
    $("fatal").textContent = "This page needs the admin link (it ends in #token=ADMIN_TOKEN; `rlhf serve` prints it).";
  } else {
    const session = () => api("POST", "/api/session").catch(() => {});
    session();
    setInterval(session, 30 * 60 * 1000); // the clip cookie lasts 12 hours (feedback_ui/sessions.py)
    refresh();
    setInterval(refresh, 5000);
  }
})();
