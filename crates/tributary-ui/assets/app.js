// The tributary web view. Everything a run produced is put on the page as
// text (textContent, text nodes, attribute values); no HTML is ever parsed
// from data, and nothing from a run is evaluated.
"use strict";

const ROW = 34;        // lane row height, px (kept in step with app.css)
const MERGED_KEPT = 2000;

// ----- small DOM helpers -----

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      // Through the CSSOM: the Content-Security-Policy refuses style attributes.
      else if (k === "style") for (const decl of String(v).split(";")) {
        const at = decl.indexOf(":");
        if (at > 0) node.style.setProperty(decl.slice(0, at).trim(), decl.slice(at + 1).trim());
      }
      else if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    node.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
}

// Replace a node's children, skipping the absent ones.
function fill(node, ...children) {
  node.replaceChildren(...children.filter((c) => c !== undefined && c !== null && c !== false));
}

const enc = encodeURIComponent;
const main = () => document.getElementById("main");

function badge(status) {
  return el("span", { class: "badge st-" + String(status).replace(/[^a-z_]/g, ""), text: status });
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  const m = Math.floor(ms / 60000);
  return m + " m " + Math.round((ms % 60000) / 1000) + " s";
}
const fmtUs = (us) => (us === null || us === undefined ? "–" : fmtMs(us / 1000));
const fmtTime = (us) => (us ? new Date(us / 1000).toLocaleString() : "–");
const asText = (v) => (v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v, null, 2));

async function getJson(url) {
  const r = await fetch(url, { headers: { accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

async function post(url) {
  const r = await fetch(url, { method: "POST", headers: { "x-tributary-control": "1" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

function crumbs(...parts) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren();
  parts.forEach((p, i) => {
    if (i) nav.append(" / ");
    nav.append(p.href ? el("a", { href: p.href, text: p.text }) : el("span", { text: p.text }));
  });
}

function setConn(text) {
  document.getElementById("conn").textContent = text;
}

function showError(where, e) {
  where.replaceChildren(el("p", { class: "err", text: String(e.message || e) }));
}

// Destructive actions ask first, in the page's own dialog.
function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const yes = document.getElementById("confirm-yes");
    const no = document.getElementById("confirm-no");
    const done = (answer) => {
      yes.removeEventListener("click", onYes);
      no.removeEventListener("click", onNo);
      dialog.close();
      resolve(answer);
    };
    const onYes = () => done(true);
    const onNo = () => done(false);
    yes.addEventListener("click", onYes);
    no.addEventListener("click", onNo);
    dialog.showModal();
  });
}

// ----- routing -----

let leave = () => {};
// Each navigation has a number; a page whose request answers after the
// user went elsewhere draws nothing.
let navigation = 0;
const current = () => navigation;

function route() {
  leave();
  leave = () => {};
  navigation += 1;
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").slice(1).map(decodeURIComponent);
  if (parts[0] === "run" && parts[1] !== undefined) return runPage(parts[1], parts[2] === "step" ? parts[3] : null);
  if (parts[0] === "live" && parts[1] !== undefined) return livePage(parts[1]);
  return listPage();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// ----- run list -----

const filters = { status: "", partition: "", q: "", since: "", until: "" };

async function listPage() {
  crumbs({ text: "runs" });
  setConn("");
  const root = main();
  root.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  const nav = current();
  let info;
  try {
    info = await getJson("/api/info");
  } catch (e) {
    return showError(root, e);
  }
  if (nav !== current()) return;
  const page = el("div", { id: "runs-page" });
  if (info.live.length) {
    const live = el("div", { class: "card", id: "live-runs" }, el("h2", { text: "Live runs" }));
    for (const run of info.live) {
      const c = run.counts;
      live.append(
        el("div", { class: "row live-run" },
          el("a", { href: "#/live/" + enc(run.name), class: "mono", text: run.name }),
          el("span", { class: "muted", text: `${c.total} tasks · ${c.running} running · ${c.paused} paused · ${c.completed} completed · ${c.failed} failed · ${c.cancelled} cancelled` }),
          run.control ? el("span", { class: "chip", text: "control on" }) : el("span", { class: "chip", text: "read-only" }))
      );
    }
    page.append(live);
  }
  if (!info.database) {
    page.append(el("p", { class: "muted", text: "No recorded database is served here." }));
    root.replaceChildren(page);
    return;
  }
  const status = el("select", { id: "f-status", onchange: (e) => { filters.status = e.target.value; load(); } },
    ...["", "running", "completed", "halted", "failed", "abandoned", "cancelled", "created"].map((s) =>
      el("option", { value: s, text: s || "any status" })));
  status.value = filters.status;
  const partition = el("input", { id: "f-partition", placeholder: "partition", value: filters.partition, onchange: (e) => { filters.partition = e.target.value; load(); } });
  const q = el("input", { id: "f-q", placeholder: "app id contains", value: filters.q, onchange: (e) => { filters.q = e.target.value; load(); } });
  const since = el("input", { id: "f-since", type: "datetime-local", value: filters.since, onchange: (e) => { filters.since = e.target.value; load(); } });
  const until = el("input", { id: "f-until", type: "datetime-local", value: filters.until, onchange: (e) => { filters.until = e.target.value; load(); } });
  const summary = el("div", { class: "counts", id: "status-counts" });
  const table = el("div", { id: "runs-table" });
  page.append(
    el("div", { class: "card" },
      el("div", { class: "row" }, el("h2", { class: "grow", text: "Recorded runs" }), el("button", { onclick: () => load(), text: "Refresh" })),
      el("div", { class: "row" }, status, partition, q, el("label", {}, "from ", since), el("label", {}, "to ", until)),
      summary),
    table);
  root.replaceChildren(page);

  async function load() {
    const params = new URLSearchParams();
    if (filters.status) params.set("status", filters.status);
    if (filters.partition) params.set("partition", filters.partition);
    if (filters.q) params.set("q", filters.q);
    if (filters.since) params.set("since", String(new Date(filters.since).getTime() * 1000));
    if (filters.until) params.set("until", String(new Date(filters.until).getTime() * 1000));
    let list;
    try {
      list = await getJson("/api/runs?" + params);
    } catch (e) {
      return showError(table, e);
    }
    if (nav !== current()) return;
    summary.replaceChildren(...Object.entries(list.by_status).map(([s, n]) => el("span", {}, badge(s), " ", el("b", { text: n }))));
    const rows = list.roots.map((r) => {
      const run = r.run;
      const d = r.descendants;
      const kids = el("td", {}, d.total ? el("span", { class: "chip", text: d.total + " children:" }) : el("span", { class: "muted", text: "–" }));
      for (const [s, n] of Object.entries(d.by_status)) kids.append(el("span", { class: "chip" }, badge(s), " " + n));
      return el("tr", { class: "click run-row", "data-app-id": run.app_id, onclick: () => { location.hash = "#/run/" + enc(run.app_id); } },
        el("td", { class: "mono app-id", text: run.app_id }),
        el("td", { text: run.partition_key || "" }),
        el("td", {}, badge(run.status)),
        el("td", { class: "num", text: run.steps }),
        el("td", { class: "num", text: run.attempts }),
        el("td", { class: "num", text: r.items }),
        el("td", { class: "num active", text: fmtUs(r.duration_us), title: "steps running; wall time " + fmtUs(r.wall_us) }),
        el("td", { text: fmtTime(run.started_at || run.created_at) }),
        kids);
    });
    table.replaceChildren(
      el("table", { id: "runs" },
        el("thead", {}, el("tr", {}, ...["app id", "partition", "status", "steps", "attempts", "items", "active", "started", "subgraphs"].map((h, i) =>
          el("th", { class: i >= 3 && i <= 6 ? "num" : "", text: h })))),
        el("tbody", {}, ...rows)),
      el("p", { class: "muted", text: `${list.matched} root runs match` + (list.matched > list.roots.length ? `; the newest ${list.roots.length} shown` : "") }));
  }
  load();
  // Runs another process is recording show up without a reload.
  const timer = setInterval(load, 3000);
  leave = () => clearInterval(timer);
}

// ----- a recorded run -----

async function runPage(appId, stepSeq) {
  crumbs({ text: "runs", href: "#/" }, { text: appId });
  setConn("");
  const root = main();
  const nav = current();
  let d;
  try {
    d = await getJson("/api/runs/" + enc(appId));
  } catch (e) {
    return showError(root, e);
  }
  if (nav !== current()) return;
  const run = d.run;
  const head = el("div", { class: "card" },
    el("h1", { id: "run-title", text: run.app_id }),
    el("div", { class: "row" }, badge(run.status),
      el("span", { text: `${run.steps} steps · ${run.attempts} attempts · active ${fmtUs(d.duration_us)} (wall ${fmtUs(d.wall_us)})` }),
      run.partition_key ? el("span", { class: "muted", text: "partition " + run.partition_key }) : null,
      run.spawned_by ? el("span", {}, "spawned by ", el("a", { href: "#/run/" + enc(run.spawned_by), class: "mono", text: run.spawned_by }), ` at step ${run.spawn_sequence_id}`) : null,
      run.forked_from ? el("span", {}, "forked from ", el("a", { href: "#/run/" + enc(run.forked_from), class: "mono", text: run.forked_from })) : null));

  // Steps, every attempt.
  const steps = el("table", { id: "steps" },
    el("thead", {}, el("tr", {}, ...["seq", "attempt", "action", "status", "items", "duration", "started"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...d.steps.map((s) =>
      el("tr", { class: "click step-row", onclick: () => { location.hash = `#/run/${enc(appId)}/step/${s.sequence_id}`; } },
        el("td", { class: "num", text: s.sequence_id }), el("td", { class: "num", text: s.attempt }),
        el("td", { class: "mono", text: s.action }), el("td", {}, badge(s.status)),
        el("td", { class: "num", text: s.items }),
        el("td", { class: "num", text: fmtUs(s.ended_at ? s.ended_at - s.started_at : null) }),
        el("td", { text: fmtTime(s.started_at) })))));

  const detail = el("div", { class: "card detail", id: "step-detail" }, el("p", { class: "muted", text: "Pick a step to see its result, error and state diff." }));
  const page = el("div", {}, head,
    el("div", { class: "split" },
      el("div", {}, el("h2", { text: "Steps" }), steps,
        el("h2", { text: "Subgraphs" }), el("div", { class: "card", id: "tree" }, treeView(d.tree)),
        el("h2", { text: `Waterfall (${d.lanes.length} of ${d.lanes_total} subgraphs)` }), waterfall(d)),
      el("div", {}, el("h2", { text: "Step" }), detail)));
  const scroll = window.scrollY;
  root.replaceChildren(page);
  window.scrollTo(0, scroll);
  if (stepSeq !== null && stepSeq !== undefined) stepDetail(appId, stepSeq, detail);
  // A run still being recorded is read again every two seconds.
  if (run.status === "running" || run.status === "created") {
    const timer = setTimeout(() => { if (nav === current()) runPage(appId, stepSeq); }, 2000);
    leave = () => clearTimeout(timer);
  }
}

function treeView(node) {
  const ul = el("ul", { class: "tree" });
  for (const c of node.children) {
    const li = el("li", {},
      badge(c.status), " ",
      el("a", { href: "#/run/" + enc(c.app_id), class: "mono", text: c.app_id }),
      el("span", { class: "muted", text: ` · ${c.steps} steps · ${fmtUs(c.duration_us)} · from step ${c.spawn_sequence_id} (${c.spawn_action || "?"})` }));
    if (c.children.length) li.append(treeView(c));
    if (c.truncated) li.append(el("div", { class: "muted", text: "… more not shown" }));
    ul.append(li);
  }
  if (!node.children.length) ul.append(el("li", { class: "muted", text: "no subgraphs" }));
  return ul;
}

// A waterfall over the run's own steps and its children's, on one time
// axis: retries are stacked attempts, gaps of a second or more are hatched.
function waterfall(d) {
  const rows = [{ name: d.run.app_id + " (parent)", steps: d.steps }].concat(d.lanes.map((l) => ({ name: l.app_id, steps: l.steps, href: "#/run/" + enc(l.app_id) })));
  let t0 = Infinity, t1 = -Infinity;
  for (const r of rows) for (const s of r.steps) { t0 = Math.min(t0, s.started_at); t1 = Math.max(t1, s.ended_at || s.started_at); }
  const box = el("div", { class: "card", id: "waterfall" });
  if (!isFinite(t0)) { box.append(el("p", { class: "muted", text: "no steps" })); return box; }
  const span = Math.max(1, t1 - t0);
  const pct = (t) => ((t - t0) / span) * 100;
  for (const r of rows) {
    const bars = el("div", { class: "wf" });
    let prevEnd = null;
    for (const s of r.steps) {
      const end = s.ended_at || s.started_at;
      if (prevEnd !== null && s.started_at - prevEnd >= 1e6) {
        bars.append(el("div", { class: "bar gap", style: `left:${pct(prevEnd)}%;width:${pct(s.started_at) - pct(prevEnd)}%`, title: `gap ${fmtUs(s.started_at - prevEnd)}` }));
      }
      bars.append(el("div", { class: "bar s-" + s.status, style: `left:${pct(s.started_at)}%;width:${Math.max(0.3, pct(end) - pct(s.started_at))}%`, title: `${s.action} #${s.sequence_id} attempt ${s.attempt}: ${s.status}, ${fmtUs(end - s.started_at)}` }));
      prevEnd = Math.max(prevEnd || 0, end);
    }
    box.append(el("div", { class: "wf-row" }, r.href ? el("a", { class: "name mono", href: r.href, text: r.name }) : el("span", { class: "name mono", text: r.name }), bars));
  }
  box.append(el("p", { class: "muted", text: `from ${fmtTime(t0)} over ${fmtUs(span)}` }));
  return box;
}

function diffTable(changes) {
  if (!changes || !changes.length) return el("p", { class: "muted", text: "no change" });
  return el("table", { class: "diff" },
    el("thead", {}, el("tr", {}, el("th", { text: "" }), el("th", { text: "key" }), el("th", { text: "before" }), el("th", { text: "after" }))),
    el("tbody", {}, ...changes.map((c) => el("tr", {},
      el("td", { class: "op-" + c.op, text: c.op }), el("td", { text: c.path }),
      el("td", { text: c.before === undefined || c.before === null ? "" : JSON.stringify(c.before) }),
      el("td", { text: c.after === undefined || c.after === null ? "" : JSON.stringify(c.after) })))));
}

async function stepDetail(appId, seq, box) {
  let d;
  try {
    d = await getJson(`/api/runs/${enc(appId)}/steps/${enc(seq)}`);
  } catch (e) {
    return showError(box, e);
  }
  const s = d.step;
  fill(box,
    el("h3", { text: `#${s.sequence_id} ${s.action}` }),
    el("div", { class: "row" }, badge(s.status), el("span", { text: `attempt ${s.attempt} · ${fmtUs(d.duration_us)} · ${s.items} items streamed` })),
    el("h3", { text: "Attempts" }),
    el("ul", {}, ...d.attempts.map((a) => el("li", {}, `attempt ${a.attempt}: `, badge(a.status), ` ${fmtUs(a.ended_at ? a.ended_at - a.started_at : null)} `, a.error ? el("span", { class: "err", text: a.error }) : null))),
    el("h3", { text: "Inputs" }), el("pre", { id: "step-inputs", text: d.inputs ? asText(d.inputs) : "–" }),
    s.error ? el("div", {}, el("h3", { text: "Error" }), el("pre", { class: "err", text: s.error })) : null,
    el("h3", { text: "Result" }), el("pre", { text: asText(s.result) || "–" }),
    el("h3", { text: d.tokens && d.tokens_recorded < s.items ? `Tokens (the first ${d.tokens_recorded} of ${s.items})` : "Tokens" }),
    el("pre", { id: "step-tokens", class: "tokens", text: d.tokens ? d.tokens.map((t) => (typeof t === "string" ? t : JSON.stringify(t))).join(" ") : (s.items ? `${s.items} streamed, not recorded` : "–") }),
    el("h3", { text: d.previous_sequence_id === null ? "State change (from empty)" : `State change against step ${d.previous_sequence_id}` }),
    diffTable(d.changes),
    el("h3", { text: "State" }), el("pre", { text: asText(s.state) || "–" }),
    d.spawned.length ? el("div", {}, el("h3", { text: "Spawned" }), el("ul", {}, ...d.spawned.map((id) => el("li", {}, el("a", { href: "#/run/" + enc(id), class: "mono", text: id }))))) : null);
}

// ----- a live run -----

function livePage(name) {
  crumbs({ text: "runs", href: "#/" }, { text: "live: " + name });
  const root = main();
  const state = {
    run: null, lanes: new Map(), order: [], merged: [], selected: null,
    laneFilter: { q: "", status: "" }, mergedFilter: { task: "", kind: "", action: "" },
  };
  let dirty = false;

  const counts = el("div", { class: "counts", id: "live-counts" });
  const controls = el("div", { class: "row", id: "run-controls" });
  const onLaneQ = (e) => { state.laneFilter.q = e.target.value; reorder(); schedule(); };
  const laneQ = el("input", { id: "lane-q", placeholder: "task key contains", oninput: onLaneQ, onchange: onLaneQ });
  const laneStatus = el("select", { id: "lane-status", onchange: (e) => { state.laneFilter.status = e.target.value; reorder(); schedule(); } },
    ...["", "queued", "running", "retrying", "paused", "completed", "failed", "cancelled"].map((s) => el("option", { value: s, text: s || "any state" })));
  const laneInfo = el("span", { class: "muted", id: "lane-info" });
  const lanesBox = el("div", { class: "lanes", id: "lanes" });
  const spacer = el("div", { style: "height:0" });
  lanesBox.append(spacer);
  lanesBox.addEventListener("scroll", () => schedule());
  const onTask = (e) => { state.mergedFilter.task = e.target.value; schedule(); };
  const mTask = el("input", { id: "m-task", placeholder: "task", oninput: onTask, onchange: onTask });
  const mKind = el("select", { id: "m-kind", onchange: (e) => { state.mergedFilter.kind = e.target.value; schedule(); } },
    ...["", "token", "node", "final", "failed", "cancelled"].map((s) => el("option", { value: s, text: s || "any kind" })));
  const onAction = (e) => { state.mergedFilter.action = e.target.value; schedule(); };
  const mAction = el("input", { id: "m-action", placeholder: "action", oninput: onAction, onchange: onAction });
  const mergedBox = el("div", { class: "merged", id: "merged" });
  const mergedInfo = el("span", { class: "muted", id: "merged-info" });
  const laneDetail = el("div", { class: "card detail", id: "lane-detail" }, el("p", { class: "muted", text: "Click a task key to see its steps, state changes and tokens." }));

  root.replaceChildren(
    el("div", { class: "card" },
      el("div", { class: "row" }, el("h1", { class: "grow", id: "live-title", text: name }), controls),
      counts),
    el("div", { class: "split" },
      el("div", {},
        el("div", { class: "row" }, el("h2", { class: "grow", text: "Lanes" }), laneQ, laneStatus, laneInfo),
        el("div", { class: "lanes-head" }, ...["#", "task", "state", "action", "elapsed", "tokens (tail)", "items by round", "steps", ""].map((h) => el("span", { text: h }))),
        lanesBox),
      el("div", {},
        el("div", { class: "row" }, el("h2", { class: "grow", text: "Merged stream" }), mergedInfo),
        el("div", { class: "row" }, mTask, mKind, mAction),
        mergedBox)),
    laneDetail);

  // A lane that was running when the whole run was paused is paused too,
  // though it sends nothing more to say so.
  function shownStatus(l) {
    return l.status === "running" && state.run && state.run.paused ? "paused" : l.status;
  }

  // Lanes in task order, each nested task under its parent.
  function byOrder(a, b) {
    const n = Math.min(a.order.length, b.order.length);
    for (let i = 0; i < n; i++) if (a.order[i] !== b.order[i]) return a.order[i] - b.order[i];
    return a.order.length - b.order.length;
  }

  function reorder() {
    const { q, status } = state.laneFilter;
    state.order = [...state.lanes.values()]
      .filter((l) => (!q || l.key.includes(q)) && (!status || shownStatus(l) === status))
      .sort(byOrder);
  }

  function schedule() {
    if (dirty) return;
    dirty = true;
    requestAnimationFrame(() => { dirty = false; render(); });
  }

  async function command(url, what, destructive) {
    if (destructive && !(await confirmAction(`Cancel ${what}? This cannot be undone.`))) return;
    try {
      await post(url);
    } catch (e) {
      setConn(String(e.message || e));
    }
  }

  function renderHead() {
    const r = state.run;
    if (!r) return;
    const c = r.counts;
    // A policy that finished the run cancels the rest: the run completed.
    const status = r.policy_finished ? "completed" : r.cancelled ? "cancelled" : r.ended ? "completed" : r.paused ? "paused" : "running";
    counts.replaceChildren(...[
      el("span", {}, badge(status)),
      ...[["tasks", c.total], ["pending", c.pending], ["running", c.running], ["paused", c.paused], ["completed", c.completed], ["failed", c.failed], ["cancelled", c.cancelled]]
        .map(([k, v]) => el("span", { "data-count": k }, k + " ", el("b", { text: v }))),
      el("span", { text: `items ${r.merged_total} · ${fmtMs(r.elapsed_ms)}` }),
      r.goal ? goalChip(r.goal, "goal") : null,
      r.policy_finished ? el("span", { class: "winner", text: "finished by its completion policy" }) : null,
    ].filter(Boolean));
    controls.replaceChildren();
    if (r.control && !r.ended) {
      const base = "/api/live/" + enc(r.name);
      controls.append(
        r.paused ? el("button", { id: "run-resume", onclick: () => command(base + "/resume"), text: "Resume run" })
          : el("button", { id: "run-pause", onclick: () => command(base + "/pause"), text: "Pause run" }),
        el("button", { id: "run-cancel", class: "danger", onclick: () => command(base + "/cancel", "the whole run", true), text: "Cancel run" }));
    } else if (!r.control) {
      controls.append(el("span", { class: "chip", text: "read-only" }));
    }
  }

  // The count toward a completion policy (of the run, or of a lane's
  // children).
  function goalChip(g, id) {
    return el("span", { id, class: "chip goal" + (g.met ? " met" : ""), title: g.leading ? "leading answer: " + g.leading : "",
      text: g.kind === "quorum"
        ? `quorum: ${g.reached} of ${g.needed} agree · ${g.answers} answer${g.answers === 1 ? "" : "s"}`
        : `first ${g.needed}: ${g.reached} done` });
  }

  // The step it runs now (with a step watch), else the last it reported;
  // a parent names the parallel action its children run in.
  function actionText(l) {
    const action = l.step || l.action || "";
    const retry = l.status === "retrying" ? ` (attempt ${l.attempt})` : "";
    const children = l.children_action && l.children_action !== action ? ` · children of ${l.children_action}` : "";
    return action + retry + children;
  }
  function actionTitle(l) {
    if (l.waiting) return `paused: ${l.waiting}`;
    return l.last_failure ? `${l.failures} failed attempt(s); last: ${l.last_failure}` : actionText(l);
  }

  function laneRow(l, top, window0) {
    const r = state.run;
    const cols = el("div", { class: "cols" });
    const byRound = new Map(l.columns.map(([seq, kind]) => [seq, kind]));
    for (let s = window0; s < window0 + 8; s++) {
      const kind = byRound.get(s);
      cols.append(el("div", { class: "cell" + (kind ? " k-" + kind : ""), title: kind ? `round ${s}: ${kind}` : `round ${s}` }));
    }
    const wf = el("div", { class: "wf" });
    const span = Math.max(1, r.elapsed_ms);
    const pct = (t) => (t / span) * 100;
    for (const s of l.steps) wf.append(el("div", { class: "bar k-" + s.kind, style: `left:${pct(s.start_ms)}%;width:${Math.max(0.5, pct(s.end_ms) - pct(s.start_ms))}%`, title: `${s.action}: ${fmtMs(s.end_ms - s.start_ms)}` }));
    const lastEnd = l.steps.length ? l.steps[l.steps.length - 1].end_ms : l.start_ms;
    if (l.status === "running" || l.status === "paused" || l.status === "retrying") wf.append(el("div", { class: "bar live", style: `left:${pct(lastEnd)}%;width:${Math.max(0.5, pct(r.elapsed_ms) - pct(lastEnd))}%` }));
    for (const p of l.pauses) wf.append(el("div", { class: "bar pause", style: `left:${pct(p.start)}%;width:${Math.max(0.5, pct(p.end === null ? r.elapsed_ms : p.end) - pct(p.start))}%`, title: "paused" }));
    const ctl = el("span", { class: "ctl" });
    const live = l.status === "running" || l.status === "paused" || l.status === "queued" || l.status === "retrying";
    if (r.control && live && l.control) {
      const base = `/api/live/${enc(r.name)}/lanes/${enc(l.key)}`;
      ctl.append(
        l.paused_here ? el("button", { class: "resume-lane", onclick: () => command(base + "/resume"), text: "resume" })
          : el("button", { class: "pause-lane", onclick: () => command(base + "/pause"), text: "pause" }),
        " ",
        el("button", { class: "cancel-lane danger", onclick: () => command(base + "/cancel", `task ${l.key}`, true), text: "cancel" }));
    }
    const state_ = el("span", {}, badge(shownStatus(l)));
    if (l.winner) state_.append(" ", el("span", { class: "winner", text: "winner" }));
    if (l.lost) state_.append(" ", el("span", { class: "lost", text: "lost" }));
    if (l.goal) state_.append(" ", goalChip(l.goal));
    return el("div", { class: "lane" + (state.selected === l.key ? " sel" : ""), style: `top:${top}px`, "data-key": l.key, "data-status": shownStatus(l) },
      el("span", { class: "muted", text: l.order.join(".") }),
      el("span", { class: "key mono", title: l.key, text: l.key, style: `padding-left:${(l.order.length - 1) * 14}px`, onclick: () => selectLane(l.key) }),
      state_,
      el("span", { class: "act mono", title: actionTitle(l), text: actionText(l) }),
      // A lane with nothing new (a parent whose children stream) is not
      // sent again, so its time goes on from the run's.
      el("span", { class: "muted", text: fmtMs(live ? Math.max(l.elapsed_ms, r.elapsed_ms - l.start_ms) : l.elapsed_ms) }),
      el("span", { class: "tail", title: l.waiting || l.error || l.tail.join(" "), text: l.waiting ? `waits: ${l.waiting}` : l.error && !live ? l.error : l.tail.join(" ") }),
      cols, wf, ctl);
  }

  function render() {
    renderHead();
    const total = state.order.length;
    spacer.style.height = total * ROW + "px";
    const first = Math.max(0, Math.floor(lanesBox.scrollTop / ROW) - 5);
    const last = Math.min(total, Math.ceil((lanesBox.scrollTop + lanesBox.clientHeight) / ROW) + 5);
    const maxSeq = state.run ? state.run.max_seq : 0;
    const window0 = Math.max(0, maxSeq - 7);
    const rows = [];
    for (let i = first; i < last; i++) rows.push(laneRow(state.order[i], i * ROW, window0));
    lanesBox.replaceChildren(spacer, ...rows);
    laneInfo.textContent = `${total} of ${state.lanes.size} lanes`;
    renderMerged();
  }

  function renderMerged() {
    const { task, kind, action } = state.mergedFilter;
    const shown = state.merged.filter((m) => (!task || m.task.includes(task)) && (!kind || m.kind === kind) && (!action || (m.action || "").includes(action)));
    const tail = shown.slice(-300);
    const atBottom = mergedBox.scrollTop + mergedBox.clientHeight >= mergedBox.scrollHeight - 30;
    mergedBox.replaceChildren(...tail.map((m) => el("div", { class: "item", "data-task": m.task, "data-kind": m.kind },
      el("span", { class: "pos", text: "#" + m.pos }),
      el("span", { class: "kind kind-" + m.kind, text: m.kind }),
      el("span", { class: "task", title: m.task, text: m.task }), " ",
      el("span", { class: "muted", text: (m.action || "") + " " }),
      el("span", { text: m.text }))));
    if (atBottom) mergedBox.scrollTop = mergedBox.scrollHeight;
    mergedInfo.textContent = `${shown.length} shown of the last ${state.merged.length} (${state.run ? state.run.merged_total : 0} received)`;
  }

  async function selectLane(key) {
    state.selected = key;
    schedule();
    let d;
    try {
      d = await getJson(`/api/live/${enc(name)}/lanes/${enc(key)}`);
    } catch (e) {
      return showError(laneDetail, e);
    }
    const l = d.lane;
    fill(laneDetail,
      el("h2", { text: "Task " }, el("span", { class: "mono", text: l.key })),
      el("div", { class: "row" }, badge(l.status), el("span", { class: "mono muted", text: d.app_id }), el("span", { text: `${l.items} items · ${l.tokens} tokens · ${fmtMs(l.elapsed_ms)}` })),
      actionText(l) ? el("div", { class: "row" }, el("span", { class: "mono", text: actionText(l) })) : null,
      l.error ? el("pre", { class: "err", text: l.error }) : null,
      l.waiting ? el("div", {}, el("span", { class: "muted", text: "paused, waits for " }), el("span", { class: "err", text: l.waiting })) : null,
      l.last_failure ? el("div", {}, el("span", { class: "muted", text: `${l.failures} failed attempt(s); the last: ` }), el("span", { class: "err", text: l.last_failure })) : null,
      el("h3", { text: "Last tokens" }), el("pre", { text: d.tail.join(" ") || "–" }),
      el("h3", { text: `Steps${d.steps_dropped ? ` (the first ${d.steps_dropped} not kept)` : ""}` }),
      ...d.steps.map((s) => el("div", { class: "card" },
        el("div", { class: "row" }, el("b", { class: "mono", text: s.action }), el("span", { class: "kind-" + s.kind, text: s.kind }),
          el("span", { class: "muted", text: `${fmtMs(s.duration_ms)} · first item after ${s.first_item_ms === null ? "–" : fmtMs(s.first_item_ms)} · ${s.items} tokens` })),
        s.error ? el("pre", { class: "err", text: s.error }) : null,
        el("div", { class: "muted", text: "result" }), el("pre", { text: asText(s.result) || "–" }),
        el("div", { class: "muted", text: "state change" }), diffTable(s.changes))));
  }

  // The live stream: an update per change, a few per second at most; the
  // browser reconnects by itself and the server resumes from Last-Event-ID.
  const source = new EventSource(`/api/live/${enc(name)}/events`);
  source.addEventListener("open", () => setConn("live"));
  source.addEventListener("error", () => setConn("reconnecting…"));
  source.addEventListener("update", (e) => {
    const u = JSON.parse(e.data);
    if (u.reset) { state.lanes.clear(); state.merged = []; }
    state.run = u.run;
    let added = u.reset;
    for (const l of u.lanes) {
      if (!state.lanes.has(l.key)) added = true;
      state.lanes.set(l.key, l);
    }
    state.merged.push(...u.merged);
    if (state.merged.length > MERGED_KEPT) state.merged.splice(0, state.merged.length - MERGED_KEPT);
    if (added || state.laneFilter.status) reorder();
    else state.order = state.order.map((l) => state.lanes.get(l.key) || l);
    document.body.setAttribute("data-version", String(u.version));
    schedule();
  });
  leave = () => source.close();
}
