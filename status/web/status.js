// regmirror status page: polls /_regmirror/status and renders it. Text only
// ever goes in through textContent, so names from the cache cannot inject
// markup.
"use strict";

const POLL_MS = 3000;
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function bytes(v) {
  if (v < 1024) return v + " B";
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return v.toFixed(1) + " " + UNITS[i];
}
function pct(v) { return (v * 100).toFixed(1) + "%"; }
const FORMATS = {
  bytes: bytes,
  pct: pct,
  budget: (v) => (v > 0 ? bytes(v) : "none"),
  free: (v) => (v >= 0 ? bytes(v) : "unknown"),
};
function fmt(kind, v) { return FORMATS[kind] ? FORMATS[kind](v) : String(v); }

function lookup(m, path) {
  return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), m);
}
function duration(secs) {
  secs = Math.max(0, Math.floor(secs));
  const d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60), s = secs % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + s + "s";
  return s + "s";
}
function clock(t) { return new Date(t).toLocaleTimeString([], { hour12: false }); }

function el(tag, opts, ...children) {
  const e = document.createElement(tag);
  if (opts) {
    if (opts.cls) e.className = opts.cls;
    if (opts.text !== undefined) e.textContent = opts.text;
    if (opts.title) e.title = opts.title;
    if (opts.data) for (const k in opts.data) e.dataset[k] = opts.data[k];
  }
  for (const c of children) if (c) e.append(c);
  return e;
}
function bar(frac, cls) {
  const f = el("div", { cls: "fill " + (cls || "") });
  f.style.width = Math.max(0, Math.min(1, frac)) * 100 + "%";
  return el("div", { cls: "bar" }, f);
}
// figure is a cell whose text is a formatted value; data-value keeps it raw.
function figure(tag, name, kind, v, cls) {
  return el(tag, { cls: cls, text: fmt(kind, v), data: { k: name, value: String(v) } });
}
function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
  const empty = tbody.closest("section").querySelector(".empty");
  if (empty) empty.hidden = rows.length > 0;
}
function short(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }
function repoName(x) { return x.registry + "/" + x.repository; }

function render(m) {
  for (const e of document.querySelectorAll("[data-field]")) {
    const f = e.dataset.field;
    if (f === "uptime") {
      e.textContent = duration((Date.parse(m.generated_at) - Date.parse(m.started_at)) / 1000);
      continue;
    }
    const v = lookup(m, f);
    if (v === undefined) continue;
    e.textContent = fmt(e.dataset.fmt, v);
    e.dataset.value = String(v);
  }

  const c = m.cache;
  const total = c.budget_bytes > 0 ? c.budget_bytes : (c.free_bytes >= 0 ? c.used_bytes + c.free_bytes : c.used_bytes);
  const cb = document.getElementById("cache-bar");
  cb.querySelector(".used").style.width = (total > 0 ? Math.min(1, c.used_bytes / total) * 100 : 0) + "%";
  cb.querySelector(".pinned").style.width = (total > 0 ? Math.min(1, c.pinned_bytes / total) * 100 : 0) + "%";
  cb.title = bytes(c.used_bytes) + " of " + (c.budget_bytes > 0 ? "a budget of " + bytes(c.budget_bytes) : bytes(total) + " (used + free disk)");

  let degraded = false;
  fill(document.querySelector("#registries tbody"), m.registries.map((r) => {
    const state = r.out
      ? el("span", { cls: "badge bad", text: "out until " + clock(r.out_until) + (r.out_reason ? " — " + r.out_reason : "") })
      : el("span", { cls: "badge ok", text: m.offline ? "offline" : "ok" });
    let budget = el("span", { cls: "muted small", text: "not announced" });
    if (r.rate_limit) {
      const rl = r.rate_limit;
      const frac = rl.limit > 0 ? rl.remaining / rl.limit : 0;
      budget = el("div", { cls: "budget" },
        bar(frac, rl.shielded ? "low" : ""),
        el("span", null, figure("b", "remaining", "", rl.remaining), " / ", figure("span", "limit", "", rl.limit), " left"),
        el("span", { cls: "muted small", text: "read " + clock(rl.read_at) }),
        rl.shielded ? el("span", { cls: "badge warn", text: "shield up: serving tags stale", title: "below the reserve of " + rl.reserve + " pulls" }) : null);
    }
    degraded = degraded || r.out || (r.rate_limit && r.rate_limit.shielded);
    const sources = r.sources ? el("div", { cls: "sources" }, ...r.sources.map((s) =>
      el("span", { cls: s.out_until ? "out" : "", text: (s.mirror ? "mirror " : "origin ") + s.url + (s.out_until ? " — out until " + clock(s.out_until) : "") }))) : null;
    degraded = degraded || (r.sources || []).some((s) => s.out_until);
    return el("tr", { data: { key: r.name } },
      el("td", null, el("b", { text: r.name }), sources),
      figure("td", "requests", "", r.requests, "num"),
      figure("td", "hit_ratio", "pct", r.hit_ratio, "num"),
      figure("td", "upstream_errors", "", r.upstream_errors, "num"),
      el("td", null, state),
      el("td", null, budget));
  }));

  document.getElementById("dl-count").textContent = m.downloads.length ? "(" + m.downloads.length + ")" : "";
  fill(document.querySelector("#downloads tbody"), m.downloads.map((d) => {
    const frac = d.size > 0 ? d.bytes_done / d.size : 0;
    const of = d.size >= 0 ? bytes(d.size) : "?";
    return el("tr", { data: { key: d.digest } },
      el("td", { cls: "mono", text: d.digest.slice(0, 19) + "…", title: d.digest }),
      el("td", { text: repoName(d) }),
      el("td", null, el("div", { cls: "progress" }, bar(frac, "dl"),
        el("span", null, figure("span", "bytes_done", "bytes", d.bytes_done), " / " + of + (d.size > 0 ? " (" + Math.floor(frac * 100) + "%)" : "")))),
      el("td", { cls: "num", text: bytes(Math.round(d.bytes_per_second)) + "/s" }),
      figure("td", "clients", "", d.clients, "num"));
  }));

  document.getElementById("watch-card").hidden = m.watch.length === 0;
  document.getElementById("watch-count").textContent = m.watch.length ? "(" + m.watch.length + ")" : "";
  const WATCH_BADGE = { ok: "ok", warmed: "ok", moved: "miss", deferred: "warn", failed: "bad" };
  fill(document.querySelector("#watch tbody"), m.watch.map((w) =>
    el("tr", { data: { key: w.image } },
      el("td", { text: w.image }),
      el("td", null, el("span", { cls: "badge " + (WATCH_BADGE[w.result] || ""), text: w.result || "pending" })),
      el("td", { cls: "mono", text: w.digest ? w.digest.slice(0, 19) + "…" : "—", title: w.digest || "" }),
      el("td", { cls: "mono", text: w.last_run ? clock(w.last_run) : "—" }),
      el("td", { cls: "mono", text: w.next_run ? clock(w.next_run) : "—" }),
      figure("td", "moves", "", w.moves, "num"),
      figure("td", "failures", "", w.failures, "num"))));

  fill(document.querySelector("#top-bytes tbody"), m.top_by_bytes.map((r) =>
    el("tr", { data: { key: repoName(r) } }, el("td", { text: repoName(r) }),
      figure("td", "bytes", "bytes", r.bytes, "num"), figure("td", "pulls", "", r.pulls, "num"))));
  fill(document.querySelector("#top-pulls tbody"), m.top_by_pulls.map((r) =>
    el("tr", { data: { key: repoName(r) } }, el("td", { text: repoName(r) }),
      figure("td", "pulls", "", r.pulls, "num"), figure("td", "bytes", "bytes", r.bytes, "num"))));
  fill(document.querySelector("#recent tbody"), m.recent_pulls.map((p) =>
    el("tr", null,
      el("td", { cls: "mono", text: clock(p.time) }),
      el("td", { cls: "mono", text: p.client }),
      el("td", { text: repoName(p) + (p.ref.includes(":") ? "@" + p.ref.slice(0, 19) + "…" : ":" + short(p.ref, 40)), title: p.ref }),
      el("td", null, el("span", { cls: "badge " + p.outcome.replace(" ", ""), text: p.outcome + (p.outcome === "error" ? " " + p.status : "") })))));

  const health = document.getElementById("health");
  health.textContent = degraded ? "degraded" : "healthy";
  health.className = "pill " + (degraded ? "warn" : "ok");
  window.__status = m;
  document.body.dataset.generated = m.generated_at;
}

let lastOK = 0;
async function poll() {
  try {
    const resp = await fetch("/_regmirror/status", { cache: "no-store" });
    if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
    render(await resp.json());
    lastOK = Date.now();
    tick();
  } catch (err) {
    const health = document.getElementById("health");
    health.textContent = "unreachable";
    health.className = "pill bad";
    health.title = String(err);
  }
}
function tick() {
  document.getElementById("updated").textContent = lastOK ? (Date.now() - lastOK < 1500 ? "just now" : Math.round((Date.now() - lastOK) / 1000) + "s ago") : "—";
}
poll();
setInterval(poll, POLL_MS);
setInterval(tick, 1000);
