// The dashboard: one page per hash (#overview, #jobs, ...), each drawn from the API's routes
// with the token pasted once (sessionStorage: this tab only), refreshed every 2 s. Data is put
// into the page as text nodes only, never as HTML.

const TOKEN = "infinite-scheduler.token";
const POLL_MS = 2000;
const ROLES = ["READ", "SCHEDULE", "EXECUTE", "ADMIN"];
const $ = (id) => document.getElementById(id);
let me = null;
let page = null;

// -- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`../${path.replace(/^\//, "")}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    signOut("The token was refused (unknown or revoked): sign in again.");
    throw new ApiError(401, await response.json().catch(() => null));
  }
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  return response.status === 204 ? null : response.json();
}

const may = (role) => me !== null && ROLES.indexOf(me.role) >= ROLES.indexOf(role);

// -- building the page ---------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const when = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "—");
const whenMs = (ms) => (ms ? when(new Date(ms).toISOString()) : "—");
const num = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en"));
const ms = (n) => (n === null || n === undefined ? "—" : `${num(n)} ms`);
const pct = (x) => `${(100 * x).toFixed(1)} %`;
const badge = (text) => h("span", { class: `state ${String(text).split(" ")[0]}` }, text);

function table(columns, rows, { onclick, selected } = {}) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([name, , cls]) => h("th", { class: cls }, name)))),
    h("tbody", {}, rows.length === 0
      ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "none"))
      : rows.map((row) => h("tr", {
        class: [onclick ? "clickable" : "", selected && selected(row) ? "selected" : ""].join(" "),
        onclick: onclick ? () => onclick(row) : undefined,
      }, columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row)))))));
}

function card(label, value, id) {
  return h("div", { class: "card", id }, h("div", { class: "label" }, label),
    h("div", { class: "value" }, value));
}

function button(label, onclick, { role, secondary, id } = {}) {
  return h("button", {
    class: secondary ? "secondary" : undefined, id, disabled: role && !may(role),
    title: role && !may(role) ? `needs ${role}` : undefined,
    onclick: async (event) => {
      event.preventDefault();
      event.target.disabled = true;
      try { await onclick(); } catch (e) { flash(e.message, true); } finally {
        event.target.disabled = role ? !may(role) : false;
      }
      await refresh();
    },
  }, label);
}

function flash(text, bad = false) {
  const el = $("status");
  el.textContent = text;
  el.className = bad ? "stale" : "";
}

// The throughput chart: fired (blue) and failed (red) per bucket, hand-drawn SVG.
function chart(series, bucketS) {
  const W = 600, H = 140, pad = 18;
  const top = Math.max(1, ...series.map((b) => b.fired + b.failed));
  const w = (W - pad) / Math.max(1, series.length);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 14}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("preserveAspectRatio", "none");
  const rect = (x, y, width, height, cls) => {
    const r = document.createElementNS(ns, "rect");
    Object.entries({ x, y, width, height, class: cls }).forEach(([k, v]) => r.setAttribute(k, v));
    svg.append(r);
  };
  const text = (x, y, t) => {
    const el = document.createElementNS(ns, "text");
    el.setAttribute("x", x); el.setAttribute("y", y); el.textContent = t;
    svg.append(el);
  };
  series.forEach((b, i) => {
    const hf = (H * b.fired) / top, hx = (H * b.failed) / top;
    rect(pad + i * w + 1, H - hf - hx, w - 2, hf, "fired");
    rect(pad + i * w + 1, H - hx, w - 2, hx, "failed");
  });
  text(0, 10, num(top));
  text(0, H, "0");
  if (series.length) {
    text(pad, H + 12, `${when(series[0].start).slice(11)} UTC`);
    text(W - 60, H + 12, `per ${bucketS} s`);
  }
  return svg;
}

// -- pages ---------------------------------------------------------------------------------
// Each page: mount(el) draws what stays (forms), refresh() what the poll redraws.

const pages = {};

pages.overview = () => {
  const body = h("div");
  return {
    mount: (el) => el.append(h("h1", {}, "Overview"), body),
    async refresh() {
      const o = await api("overview");
      const live = o.nodes.filter((n) => ["ACTIVE", "DRAINING"].includes(n.state) && !n.timed_out);
      const held = o.backlog.reduce((s, b) => s + b.held, 0);
      const pending = o.backlog.reduce((s, b) => s + b.pending, 0);
      const r = o.recent;
      body.replaceChildren(
        h("div", { class: "cards" },
          card("live nodes", num(live.length), "card-nodes"),
          card("fired / s (1 min)", r ? r.fired_per_s.toFixed(1) : "—", "card-rate"),
          card("lateness p99", r ? ms(r.lateness_p99_ms) : "—", "card-p99"),
          card("failures (1 min)", r ? num(r.failed) : "—", "card-failed"),
          card("held (claimed)", num(held), "card-held"),
          card("pending", num(pending), "card-pending")),
        h("div", { class: "panel" }, h("h2", {}, "Fired and failed, last minutes"),
          r === null ? h("p", { class: "muted" }, "The execution history is off.")
            : chart(o.series, o.bucket_s)),
        h("h2", {}, "Nodes"),
        table([
          ["node", (n) => n.node_id], ["epoch", (n) => n.epoch, "num"], ["host", (n) => n.host],
          ["pid", (n) => n.pid, "num"],
          ["state", (n) => badge(n.timed_out ? "TIMED OUT" : n.state)],
          ["heartbeat", (n) => `${(n.heartbeat_age_ms / 1000).toFixed(1)} s ago`, "num"],
          ["started (UTC)", (n) => when(n.started_at)], ["version", (n) => n.version],
        ], o.nodes),
        h("h2", {}, "Backlog by entity type"),
        table([
          ["entity", (b) => b.entity], ["pending", (b) => num(b.pending), "num"],
          ["held", (b) => num(b.held), "num"], ["waiting", (b) => num(b.waiting), "num"],
          ["paused", (b) => num(b.paused), "num"],
        ], o.backlog));
    },
  };
};

pages.jobs = () => {
  const f = { entity: h("select", { id: "job-entity" }),
    state: h("select", { id: "job-state" }, ["", "PENDING", "CLAIMED", "PAUSED", "WAITING", "DONE",
      "FAILED", "CANCELLED", "MISSED"].map((s) => h("option", { value: s }, s || "any state"))),
    category: h("input", { id: "job-category", placeholder: "any category" }),
    schedule: h("input", { id: "job-schedule", placeholder: "any schedule", size: 10 }),
    order: h("select", { id: "job-order" }, h("option", { value: "oldest" }, "soonest first"),
      h("option", { value: "newest" }, "latest first")) };
  const byId = h("input", { id: "job-id", placeholder: "job id", size: 14 });
  const list = h("div"), detail = h("div", { class: "panel", id: "job-detail" }, "Pick a job.");
  // Kept across redraws: a time being typed survives the poll.
  const when_ = h("input", { type: "datetime-local", id: "reschedule-at" });
  let cursors = [null], at = 0, chosen = null, next = null;
  const query = () => {
    const q = new URLSearchParams({ entity: f.entity.value, size: "25", order: f.order.value });
    if (f.state.value) q.append("state", f.state.value);
    if (f.category.value) q.set("category", f.category.value);
    if (f.schedule.value) q.set("schedule", f.schedule.value);
    if (cursors[at]) q.set("cursor", cursors[at]);
    return q;
  };
  const search = () => { cursors = [null]; at = 0; refreshList(); };
  async function refreshList() {
    if (!f.entity.value) return;
    let p;
    try { p = await api(`jobs?${query()}`); } catch (e) {
      list.replaceChildren(h("p", { class: "error" }, e.message)); return;
    }
    next = p.next_cursor;
    list.replaceChildren(table([
      ["id", (j) => j.id], ["state", (j) => badge(j.state)], ["due (UTC)", (j) => when(j.due_at)],
      ["attempts", (j) => j.attempts, "num"], ["category", (j) => j.category],
      ["schedule", (j) => j.schedule ?? "—"],
    ], p.items, { onclick: (j) => { chosen = j; refreshDetail(); refreshList(); },
      selected: (j) => chosen && chosen.id === j.id }),
    h("div", { class: "actions" },
      h("button", { class: "secondary", disabled: at === 0,
        onclick: () => { at -= 1; refreshList(); } }, "◀ newer"),
      h("span", { class: "muted" }, `page ${at + 1}`),
      h("button", { class: "secondary", id: "jobs-next", disabled: !next,
        onclick: () => { cursors[at + 1] = next; at += 1; refreshList(); } }, "older ▶")));
  }
  async function refreshDetail() {
    if (!chosen) return;
    const path = `${encodeURIComponent(chosen.entity)}/${encodeURIComponent(chosen.id)}`;
    let j;
    try { j = await api(`jobs/${path}`); } catch (e) {
      detail.replaceChildren(h("p", { class: "error" }, e.message)); return;
    }
    const attempts = await api(`history/${path}`).catch(() => []);
    const act = (op, body) => async () => {
      chosen = await api(`jobs/${path}/${op}`, { method: "POST", body });
      flash(`${op}: ${chosen.entity} ${chosen.id} is ${chosen.state}`);
    };
    detail.replaceChildren(
      h("h2", {}, `${j.entity} ${j.id}`),
      h("dl", { class: "fields" }, [["state", badge(j.state)], ["due", when(j.due_at)],
        ["scheduled", when(j.scheduled_at)], ["attempts", j.attempts],
        ["claimed by", j.claimed_by ?? "—"], ["fired", when(j.fired_at)],
        ["priority", j.priority], ["category", j.category || "—"],
        ["schedule", j.schedule ?? "— (one-shot)"], ["shard", j.shard],
        ["last error", j.last_error ?? "—"]].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("div", { class: "actions", style: "margin-top:.6rem" },
        button("Cancel", act("cancel"), { role: "SCHEDULE", id: "job-cancel" }),
        button("Pause", act("pause"), { role: "SCHEDULE", id: "job-pause" }),
        button("Resume", act("resume"), { role: "SCHEDULE", id: "job-resume" }),
        button("Run now", act("run-now"), { role: "EXECUTE", id: "job-run-now" }),
        when_,
        button("Reschedule", async () => {
          if (!when_.value) throw new Error("pick a time to reschedule to");
          await act("reschedule", { at: new Date(when_.value).toISOString() })();
        }, { role: "SCHEDULE", secondary: true, id: "job-reschedule" })),
      h("h2", {}, "Attempts"),
      table([["#", (a) => a.attempt, "num"], ["outcome", (a) => badge(a.outcome)],
        ["node", (a) => a.node], ["fired", (a) => whenMs(a.fired_ms)],
        ["late", (a) => ms(a.lateness_ms), "num"], ["took", (a) => ms(a.duration_ms), "num"],
        ["error", (a) => a.error ?? ""]], attempts));
  }
  return {
    async mount(el) {
      const o = await api("shards");
      f.entity.replaceChildren(...o.map((e) => h("option", { value: e.entity }, e.entity)));
      for (const input of Object.values(f)) input.addEventListener("change", search);
      el.append(h("h1", {}, "Jobs"),
        h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); search(); } },
          h("label", {}, "entity type", f.entity), h("label", {}, "state", f.state),
          h("label", {}, "category", f.category), h("label", {}, "schedule id", f.schedule),
          h("label", {}, "order", f.order),
          h("button", { type: "submit", id: "job-search" }, "Search"),
          h("label", {}, "or open one", byId),
          h("button", { type: "button", class: "secondary", id: "job-open",
            onclick: () => { chosen = { entity: f.entity.value, id: byId.value.trim() };
              refreshDetail(); } }, "Open")),
        h("div", { class: "split" }, list, detail));
    },
    async refresh() { await refreshList(); await refreshDetail(); },
  };
};

pages.schedules = () => {
  const body = h("div");
  const act = (s, op) => async () => {
    const out = await api(`schedules/${s.id}/${op}`, { method: "POST" });
    flash(op === "trigger" ? `triggered ${s.name}: job ${out.job_id}` : `${op}d ${s.name}`);
  };
  return {
    mount: (el) => el.append(h("h1", {}, "Schedules"), body),
    async refresh() {
      const items = [];
      let after = 0;
      for (;;) {
        const p = await api(`schedules?after=${after}&limit=500`);
        items.push(...p.items);
        if (p.next_after === null) break;
        after = p.next_after;
      }
      body.replaceChildren(table([
        ["id", (s) => s.id, "num"], ["name", (s) => s.name], ["entity", (s) => s.entity],
        ["trigger", (s) => describeTrigger(s.trigger)], ["state", (s) => badge(s.paused ? "PAUSED" : s.state)],
        ["next fire (UTC)", (s) => when(s.next_fire_at)],
        ["last fire (UTC)", (s) => when(s.last_fire_at)], ["runs", (s) => s.runs, "num"],
        ["owner", (s) => s.owner],
        ["", (s) => h("div", { class: "actions", "data-schedule": s.name },
          s.paused ? button("Resume", act(s, "resume"), { role: "SCHEDULE", id: `resume-${s.id}` })
            : button("Pause", act(s, "pause"), { role: "SCHEDULE", id: `pause-${s.id}` }),
          button("Trigger now", act(s, "trigger"),
            { role: "EXECUTE", secondary: true, id: `trigger-${s.id}` }))],
      ], items));
    },
  };
};

function describeTrigger(t) {
  if (t.kind === "cron") return `cron ${t.cron}${t.zone ? ` (${t.zone})` : ""}`;
  if (t.kind === "rate") return `every ${t.every_s} s`;
  if (t.kind === "delay") return `${t.delay_s} s after the last`;
  return t.kind;
}

pages.shards = () => {
  const body = h("div");
  return {
    mount: (el) => el.append(h("h1", {}, "Shards"), body),
    async refresh() {
      const entities = await api("shards");
      body.replaceChildren(...entities.map((e) => h("div", { class: "panel", id: `shards-${e.entity}` },
        h("h2", {}, `${e.entity}: ${e.shards.length} shard(s), per ${e.granularity},`
          + ` kept ${num(e.retention_s)} s after their end`),
        h("p", {}, e.drops_next === null ? "Retention drops nothing: no shard."
          : [`Retention drops ${e.drops_next.name} next, at ${when(e.drops_next.drops_at)} UTC`,
            e.drops_next.unfinished ? h("span", { class: "error" },
              ` with ${num(e.drops_next.unfinished)} unfinished row(s)`) : " (all rows finished)"]),
        table([["shard", (s) => s.name], ["from (UTC)", (s) => when(s.start)],
          ["to (UTC)", (s) => when(s.end)],
          ["rows by status", (s) => Object.entries(s.rows).map(([k, v]) => `${k} ${num(v)}`).join(", ") || "empty"],
          ["unfinished", (s) => num(s.unfinished), "num"],
          ["dropped at (UTC)", (s) => when(s.drops_at)]], e.shards))));
    },
  };
};

pages.history = () => {
  const window_ = h("select", { id: "sla-window" },
    ["15m", "1h", "24h", "7d"].map((w) => h("option", { value: w, selected: w === "1h" }, w)));
  const outcome = h("select", { id: "history-outcome" }, ["", "ok", "failed", "timeout", "retry",
    "missed", "cancelled"].map((o) => h("option", { value: o }, o || "any outcome")));
  const sla = h("div"), rows = h("div");
  const pct_ = (s) => `${pct(s.late_share)} / ${pct(s.failed_share)}`;
  return {
    mount(el) {
      window_.addEventListener("change", () => this.refresh());
      outcome.addEventListener("change", () => this.refresh());
      el.append(h("h1", {}, "History and SLA"),
        h("form", { class: "filters" }, h("label", {}, "SLA window", window_),
          h("label", {}, "attempts", outcome)), sla, h("h2", {}, "Latest attempts"), rows);
    },
    async refresh() {
      const r = await api(`sla?window=${window_.value}`);
      sla.replaceChildren(table([
        ["entity", (s) => s.entity], ["category", (s) => s.category || "—"],
        ["fired", (s) => num(s.fired), "num"], ["ok", (s) => num(s.ok), "num"],
        ["failed", (s) => num(s.failed + s.timeout), "num"], ["missed", (s) => num(s.missed), "num"],
        ["late / failed share", pct_, "num"], ["lateness p50", (s) => ms(s.lateness_p50_ms), "num"],
        ["lateness p99", (s) => ms(s.lateness_p99_ms), "num"],
        ["duration p99", (s) => ms(s.duration_p99_ms), "num"],
      ], [...r.groups, r.total]));
      const q = new URLSearchParams({ limit: "50" });
      if (outcome.value) q.set("outcome", outcome.value);
      const p = await api(`history?${q}`);
      rows.replaceChildren(table([
        ["ended (UTC)", (a) => whenMs(a.finished_ms)], ["entity", (a) => a.entity],
        ["id", (a) => a.id], ["#", (a) => a.attempt, "num"], ["outcome", (a) => badge(a.outcome)],
        ["node", (a) => a.node], ["late", (a) => ms(a.lateness_ms), "num"],
        ["took", (a) => ms(a.duration_ms), "num"], ["error", (a) => a.error ?? ""]], p.rows));
    },
  };
};

pages.audit = () => {
  const body = h("div");
  let before = [null], at = 0, next = null;
  return {
    mount: (el) => el.append(h("h1", {}, "Audit log"), body),
    async refresh() {
      const p = await api(`audit?limit=50${before[at] ? `&before=${before[at]}` : ""}`);
      next = p.next_before;
      const change = (a) => h("details", {}, h("summary", {}, "before / after"),
        h("pre", {}, JSON.stringify(a.before, null, 1)), h("pre", {}, JSON.stringify(a.after, null, 1)));
      body.replaceChildren(table([
        ["at (UTC)", (a) => when(a.at)], ["actor", (a) => a.actor], ["action", (a) => a.action],
        ["target", (a) => a.target], ["change", change], ["request", (a) => a.request_id],
      ], p.items), h("div", { class: "actions" },
        h("button", { class: "secondary", disabled: at === 0, onclick: () => { at -= 1; this.refresh(); } }, "◀ newer"),
        h("button", { class: "secondary", disabled: !next,
          onclick: () => { before[at + 1] = next; at += 1; this.refresh(); } }, "older ▶")));
    },
  };
};

// -- the shell: sign in, route, poll -------------------------------------------------------

async function refresh() {
  if (!page) return;
  try {
    await page.refresh();
    flash(`updated ${new Date().toISOString().slice(11, 19)} UTC`);
  } catch (e) {
    flash(`not updated: ${e.message}`, true);
  }
}

async function route() {
  if (me === null) return;
  const name = (location.hash.slice(1) || "overview");
  const make = pages[name] || pages.overview;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
  }
  const main = $("main");
  main.replaceChildren();
  page = make();
  try {
    await page.mount(main);
  } catch (e) {
    main.append(h("p", { class: "error" }, e.message));
  }
  await refresh();
}

function signOut(reason = "") {
  sessionStorage.removeItem(TOKEN);
  me = null;
  page = null;
  $("main").hidden = true;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = reason;
}

async function signIn() {
  try {
    me = await api("me");
  } catch (e) {
    if (e.status !== 401) signOut(e.message);
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("nav-audit").hidden = !may("ADMIN");
  $("who").textContent = `${me.name} (${me.role})`;
  await route();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN, $("token").value.trim());
  $("token").value = "";
  await signIn();
});
$("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
setInterval(refresh, POLL_MS);
if (sessionStorage.getItem(TOKEN)) signIn(); else signOut();
