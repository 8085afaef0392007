// The unit's live dashboard. Polls this unit's admin API once a second and redraws one
// card per host; each card's buttons drain, undrain or disable the host (a same-origin
// POST, which the unit relays to the host's agent). Nothing is loaded from anywhere else.
"use strict";

const POLL_MS = 1000;
// Previous counter samples, for rates: { at: ms, newConnections: Map, packets, heartbeats }.
let previous = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A unit started with an admin token answers 401 until the page sends it; the operator
// types it once per tab (kept in this tab's session storage only).
const TOKEN_KEY = "switchyard-admin-token";

class Unauthorized extends Error {}

async function getJson(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { cache: "no-store", headers });
  if (response.status === 401) throw new Unauthorized(`${path}: the unit needs its admin token`);
  if (!response.ok) {
    let reason = response.statusText;
    try { reason = (await response.json()).error || reason; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${response.status} ${reason}`);
  }
  return response.json();
}

// An act on a host (drain, undrain, disable): the unit relays it to the host's agent.
async function act(hostId, verb) {
  const headers = { Accept: "application/json", "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const note = document.getElementById("act");
  note.dataset.state = "sending";
  note.textContent = `${verb} host ${hostId}…`;
  try {
    const response = await fetch(`/v1/hosts/${encodeURIComponent(hostId)}/${verb}`,
      { method: "POST", cache: "no-store", headers, body: "{}" });
    if (response.status === 401) throw new Unauthorized("the unit needs its admin token");
    let answer = {};
    try { answer = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
    note.dataset.state = "done";
    note.textContent = `${answer.host}: ${verb} taken by the host (${answer.rows} row(s), ` +
      `target ${answer.target}); the current directive follows when every unit holds it`;
  } catch (error) {
    note.dataset.state = "error";
    note.textContent = `${verb} host ${hostId} failed: ${error.message}`;
    if (error instanceof Unauthorized) askForToken();
  }
}

// The act buttons of a host's card: the acts that change something.
function actButtons(host) {
  const targets = new Set(host.rows.map((r) => r.target));
  const acts = [["drain", "draining"], ["undrain", "active"], ["disable", "inactive"]]
    .filter(([, target]) => targets.size !== 1 || !targets.has(target));
  if (!host.rows.length) return null;
  return el("div", { class: "acts" }, ...acts.map(([verb]) => {
    const button = el("button", { type: "button", "data-act": verb, class: `act ${verb}` }, verb);
    button.addEventListener("click", () => act(host.id, verb));
    return button;
  }));
}

// Worst health of a host's rows: failing > unknown > healthy.
function hostHealth(host) {
  const order = { failing: 0, unknown: 1, healthy: 2 };
  let worst = "healthy";
  for (const row of host.rows) {
    if ((order[row.health] ?? 1) < order[worst]) worst = row.health in order ? row.health : "unknown";
  }
  return host.rows.length ? worst : "unknown";
}

// How far a directive change has come: "steady", "pending" (target set, the units have not
// all agreed yet) or "drained" (every unit holds draining: no new connections).
function progress(row) {
  if (row.target !== row.current) return "pending";
  if (row.current === "draining") return "drained";
  return "steady";
}

function directiveText(row, connections) {
  const p = progress(row);
  if (p === "pending") return `${row.target} (now ${row.current}; handshake pending)`;
  if (p === "drained") {
    return connections === null ? "draining: no new connections"
      : `draining: no new connections, ${connections} open`;
  }
  return row.current;
}

function rowKey(vip, protocol, endpoint) { return `${vip}/${protocol}/${endpoint}`; }

function renderRow(row, flowsByEndpoint, ratesByRow) {
  const connections = flowsByEndpoint.has(row.endpoint) ? flowsByEndpoint.get(row.endpoint) : null;
  const rate = ratesByRow.get(rowKey(row.vip, row.protocol, row.endpoint));
  const fill = el("div", { class: row.load >= 90 ? "fill high" : "fill" });
  fill.style.width = `${Math.max(0, Math.min(100, row.load))}%`;
  const p = progress(row);
  return el("div", {
      class: "row", "data-endpoint": row.endpoint, "data-health": row.health,
      "data-load": row.load, "data-capacity": row.capacity, "data-target": row.target,
      "data-current": row.current, "data-progress": p,
      "data-connections": connections, "data-rate": rate === undefined ? null : rate.toFixed(1),
    },
    el("div", { class: "service" },
      `${row.vip}/${row.protocol}${row.info ? ` [${row.info}]` : ""} → ${row.endpoint}`),
    el("div", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100,
                "aria-valuenow": row.load, title: `load ${row.load}% of capacity ${row.capacity}` }, fill),
    el("dl", { class: "numbers" },
      el("dt", {}, "health"), el("dd", { class: "health" }, row.health),
      el("dt", {}, "load"), el("dd", { class: "load" }, `${row.load}% of capacity ${row.capacity}`),
      el("dt", {}, "directive"),
      el("dd", { class: "directive", "data-progress": p }, directiveText(row, connections)),
      el("dt", {}, "target/current"), el("dd", { class: "tc" }, `${row.target}/${row.current}`),
      el("dt", {}, "connections"), el("dd", { class: "connections" }, connections === null ? "–" : connections),
      el("dt", {}, "new conn/s"),
      el("dd", { class: "rate" }, rate === undefined ? "–" : rate.toFixed(1)),
      el("dt", {}, "tokens"), el("dd", {}, `${row.tokens} of 100`)));
}

function renderHost(host, flowsByEndpoint, ratesByRow) {
  const name = host.name || `host ${host.id}`;
  const health = hostHealth(host);
  const drainingRow = host.rows.find((r) => r.target !== "active" || r.current !== "active");
  const badges = [el("span", { class: `badge ${health}` }, health)];
  if (!host.alive) badges.push(el("span", { class: "badge silent" }, "silent"));
  if (drainingRow) {
    const state = drainingRow.target === drainingRow.current ? drainingRow.current
      : `${drainingRow.target}…`;
    badges.push(el("span", { class: `badge ${drainingRow.target}` }, state));
  }
  const heartbeat = `${(host.last_heartbeat_ms / 1000).toFixed(1)} s ago`;
  return el("article", {
      class: "host", "data-host": name, "data-id": host.id, "data-health": health,
      "data-alive": host.alive,
    },
    el("h2", {}, name, el("span", { class: "id" }, `#${host.id}`), ...badges),
    el("div", { class: "meta" },
      `${host.address || "no address"} · heartbeat ${heartbeat}`,
      host.in_sync ? "" : " · resyncing"),
    actButtons(host),
    ...(host.rows.length ? host.rows.map((r) => renderRow(r, flowsByEndpoint, ratesByRow))
      : [el("div", { class: "meta" }, "no rows")]));
}

function sample(flows, counters) {
  const newConnections = new Map();
  for (const e of flows?.classifier?.endpoints || []) {
    newConnections.set(rowKey(e.vip, e.protocol, e.endpoint), e.new_connections);
  }
  const packets = (flows?.forwarder?.vips || []).reduce((sum, v) => sum + v.packets, 0);
  const heartbeats = counters?.cache?.received?.Heartbeat ?? null;
  return { at: performance.now(), newConnections, packets, heartbeats };
}

function rates(now) {
  const byRow = new Map();
  if (!previous) return { byRow, packets: null, heartbeats: null };
  const seconds = (now.at - previous.at) / 1000;
  if (seconds <= 0) return { byRow, packets: null, heartbeats: null };
  for (const [key, count] of now.newConnections) {
    const before = previous.newConnections.get(key);
    if (before !== undefined && count >= before) byRow.set(key, (count - before) / seconds);
  }
  const per = (a, b) => (a === null || b === null || a < b ? null : (a - b) / seconds);
  return {
    byRow,
    packets: per(now.packets, previous.packets),
    heartbeats: per(now.heartbeats, previous.heartbeats),
  };
}

function renderSummary(hosts, flows, counters, r) {
  const metric = (label, value, id) =>
    el("span", { class: "metric", id }, `${label} `, el("b", {}, value));
  const parts = [
    metric("hosts", hosts.hosts.length, "m-hosts"),
    metric("endpoints", hosts.hosts.reduce((n, h) => n + h.rows.length, 0), "m-endpoints"),
  ];
  if (flows?.forwarder) {
    parts.push(metric("flows", flows.forwarder.flows, "m-flows"));
    if (r.packets !== null) parts.push(metric("packets/s", r.packets.toFixed(0), "m-packets"));
  }
  if (flows?.classifier) parts.push(metric("connections", flows.classifier.connections, "m-connections"));
  if (counters) {
    parts.push(metric("messages received", counters.transport.received, "m-received"));
    parts.push(metric("rejected", counters.transport.rejected_total ?? 0, "m-rejected"));
    if (r.heartbeats !== null) parts.push(metric("heartbeats/s", r.heartbeats.toFixed(1), "m-heartbeats"));
  }
  document.getElementById("summary").replaceChildren(...parts);
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const [hosts, flows, counters] = await Promise.all([
      getJson("/v1/hosts"),
      getJson("/v1/flows?top=0").catch(() => null),
      getJson("/v1/counters").catch(() => null),
    ]);
    const now = sample(flows, counters);
    const r = rates(now);
    previous = now;
    const flowsByEndpoint = new Map();
    for (const h of flows?.forwarder?.hosts || []) flowsByEndpoint.set(h.endpoint, h.flows);
    const unit = hosts.unit;
    document.getElementById("unit").textContent =
      `unit ${unit.name} (id ${unit.id}) · roles ${unit.roles.join(", ")}`;
    renderSummary(hosts, flows, counters, r);
    const cards = hosts.hosts.map((h) => renderHost(h, flowsByEndpoint, r.byRow));
    document.getElementById("hosts").replaceChildren(
      ...(cards.length ? cards : [el("p", { class: "empty" }, "no host has reported yet")]));
    status.dataset.state = "live";
    status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    status.dataset.state = "error";
    status.textContent = `no answer: ${error.message}`;
    if (error instanceof Unauthorized) askForToken();
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function askForToken() {
  const form = document.getElementById("token");
  if (!form.hidden) return;
  form.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token-value").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    form.hidden = true;
  }, { once: true });
}

poll();
