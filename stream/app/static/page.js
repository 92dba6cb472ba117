// leadlag's live page: polls the worker's JSON views and draws them. No figure is computed here
// beyond picking a channel and stacking the MRR movements; the worker's core computes them all.
"use strict";

const REFRESH_MS = 5000;
const STAGES = ["subscriber", "lead", "mql", "sql", "opportunity", "customer"];
const MODELS = ["first_touch", "last_touch", "linear", "u_shaped", "w_shaped", "full_path", "time_decay"];
const CONVERSIONS = ["lead", "opportunity", "customer"];
const COLORS = { sessions: "#3662e3", engaged: "#7ea3ff", leads: "#e8590c", rate: "#2f9e44" };

const state = { charts: {}, data: {}, updates: 0, errors: [] };
window.leadlag = state;  // the browser test reads the charts' data from here

function token() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) sessionStorage.setItem("leadlag-token", decodeURIComponent(match[1]));
  return sessionStorage.getItem("leadlag-token");
}

async function getJson(path) {
  const headers = {};
  const bearer = token();
  if (bearer) headers.Authorization = "Bearer " + bearer;
  const response = await fetch(path, { headers, cache: "no-store" });
  // /api/status answers 503 while the worker is not ready, with the same body saying why
  if (!response.ok && !(path === "/api/status" && response.status === 503)) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

const $ = (id) => document.getElementById(id);
const esc = (text) => String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const num = (value, digits = 0) => value == null ? "–" : Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const pct = (value, digits = 1) => value == null ? "–" : (value * 100).toFixed(digits) + "%";
const signedPct = (value) => value == null ? "–" : (value > 0 ? "+" : "") + (value * 100).toFixed(1) + "%";
const money = (value, currency) => value == null ? "–" : num(value, 2) + " " + currency;
const seconds = (s) => s == null ? "–" : s < 3600 ? num(s / 60, 0) + " min" : s < 172800 ? num(s / 3600, 1) + " h" : num(s / 86400, 1) + " d";

function chartWidth(element) { return Math.max(320, element.clientWidth || element.parentElement.clientWidth - 4); }

// One uPlot per element id, created once and fed with setData afterwards.
function draw(id, series, data, options = {}) {
  const element = $(id);
  const key = JSON.stringify(series.map((s) => s.label));
  const existing = state.charts[id];
  if (existing && existing._key === key) {
    existing.setData(data);
    return existing;
  }
  if (existing) existing.destroy();
  const chart = new uPlot({
    width: chartWidth(element),
    height: element.classList.contains("small") ? 150 : 220,
    series: [{}, ...series],
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    ...options,
  }, data, element);
  chart._key = key;
  state.charts[id] = chart;
  return chart;
}

const line = (label, stroke, extra = {}) => ({ label, stroke, width: 1.5, points: { show: false }, ...extra });
const bars = (label, fill) => ({ label, fill, stroke: fill, width: 0, paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } });

function indicatorCharts(name, series, channel) {
  const columns = channel ? series.by_channel[channel] : series.overall;
  const times = series.times.map((t) => Date.parse(t) / 1000);
  const empty = times.map(() => 0);
  const c = columns || { sessions: empty, engaged_sessions: empty, new_leads: empty, visit_to_lead_rate: times.map(() => null) };
  draw("chart-" + name + "-volume", [
    line("sessions", COLORS.sessions, { scale: "sessions" }),
    line("engaged sessions", COLORS.engaged, { scale: "sessions" }),
    line("new leads", COLORS.leads, { scale: "leads" }),
  ], [times, c.sessions, c.engaged_sessions, c.new_leads], {
    axes: [{}, { scale: "sessions", label: "sessions" }, { scale: "leads", side: 1, label: "leads", grid: { show: false } }],
  });
  draw("chart-" + name + "-rate", [line("visit→lead rate", COLORS.rate, { value: (u, v) => pct(v, 2) })],
    [times, c.visit_to_lead_rate], { axes: [{}, { values: (u, values) => values.map((v) => pct(v, 1)) }] });
}

function banner(snapshot) {
  const firing = snapshot.divergence.filter((v) => v.firing);
  const element = $("divergence-banner");
  element.hidden = firing.length === 0;
  element.innerHTML = firing.length === 0 ? "" : "<strong>Traffic up, conversion down</strong>" + firing.map((v) =>
    `<div class="verdict" data-key="${esc(v.scope === "overall" ? "overall" : "channel:" + v.channel)}"
      data-sessions-change="${v.sessions_change}" data-conversion-change="${v.conversion_change}"
      data-z="${v.z}" data-p-value="${v.p_value}" data-sessions-now="${v.sessions_now}" data-sessions-baseline="${v.sessions_baseline}">
      ${esc(v.scope === "overall" ? "overall" : v.channel)}: sessions ${signedPct(v.sessions_change)}
      (${num(v.sessions_now)} vs ${num(v.sessions_baseline)}) while visit→lead ${signedPct(v.conversion_change)}
      (${pct(v.conversion_now, 2)} vs ${pct(v.conversion_baseline, 2)}; leads ${num(v.leads_now)} vs ${num(v.leads_baseline)});
      z = ${v.z == null ? "–" : v.z.toFixed(2)}, p = ${v.p_value == null ? "–" : v.p_value.toPrecision(3)}</div>`).join("");
}

function headline(snapshot) {
  const rows = snapshot.divergence.map((v) => `<tr class="${v.firing ? "firing" : ""}">
    <td>${esc(v.scope === "overall" ? "all channels" : v.channel)}</td>
    <td>${num(v.sessions_now)}</td><td>${num(v.sessions_baseline)}</td>
    <td class="${v.sessions_change > 0 ? "up" : ""}">${signedPct(v.sessions_change)}</td>
    <td>${pct(v.conversion_now, 2)}</td><td>${pct(v.conversion_baseline, 2)}</td>
    <td class="${v.conversion_change < 0 ? "down" : ""}">${signedPct(v.conversion_change)}</td>
    <td>${v.z == null ? "–" : v.z.toFixed(2)}</td><td>${v.p_value == null ? "–" : v.p_value.toPrecision(3)}</td>
    <td title="${esc(v.reason)}">${v.firing ? "FIRING" : "ok"}</td></tr>`);
  $("headline").tBodies[0].innerHTML = rows.join("");
  const first = snapshot.divergence[0];
  $("headline-windows").textContent = first ? `window ${first.window_start} → ${first.window_end}, baseline from ${first.baseline_start}` : "";
}

function funnel(snapshot, windowName, channel) {
  const win = snapshot.windows[windowName];
  const f = channel ? win.funnel.by_channel[channel] : win.funnel;
  const cohorts = Object.values(snapshot.lead_cohorts).map((c) => (channel ? c.by_channel[channel] : c)).filter(Boolean);
  const reached = {}; let size = 0;
  for (const cohort of cohorts) { size += cohort.size; for (const [stage, n] of Object.entries(cohort.reached)) reached[stage] = (reached[stage] || 0) + n; }
  const stages = STAGES.filter((s) => f && f.stages[s]);
  $("funnel").tBodies[0].innerHTML = stages.map((stage, i) => {
    const flow = f.stages[stage];
    const pair = i > 0 ? stages[i - 1] + "_to_" + stage : null;
    const inStage = f.time_in_stage[stage];
    const cohort = stage === "lead" ? (size ? 1 : null) : reached[stage] != null && size ? reached[stage] / size : null;
    return `<tr><td>${stage}</td><td>${num(flow.entries)}</td><td>${pair ? pct(f.period_conversion[pair]) : ""}</td>
      <td>${STAGES.indexOf(stage) >= 1 ? pct(cohort) : ""}</td><td>${pct(flow.drop_off_rate)}</td><td>${num(flow.in_stage)}</td>
      <td>${inStage ? seconds(inStage.mean_seconds) : "–"}</td></tr>`;
  }).join("");
  const x = stages.map((_, i) => i);
  draw("chart-funnel", [bars("stage entries", "#3662e3"), bars("drop-offs", "#f79009")],
    [x, stages.map((s) => f.stages[s].entries), stages.map((s) => f.stages[s].drop_offs)], {
      scales: { x: { time: false, range: [-0.5, stages.length - 0.5] } },
      axes: [{ values: (u, values) => values.map((v) => stages[v] || ""), splits: () => x }, {}],
    });
}

function revenue(snapshot, revenueView, channel) {
  const currency = snapshot.reporting_currency;
  const now = snapshot.revenue;
  const monthNames = Object.keys(snapshot.months);
  const latest = monthNames.length ? snapshot.months[monthNames[monthNames.length - 1]] : null;
  const month = snapshot.windows.month;
  const kpis = [
    ["MRR", money(now.mrr, currency)], ["ARR", money(now.arr, currency)],
    ["ARPA", money(now.average_revenue_per_account, currency)], ["paying customers", num(now.paying_customers)],
    ["customer churn (month)", pct(latest && latest.revenue.customer_churn_rate, 2)],
    ["NRR (month)", pct(latest && latest.revenue.net_revenue_retention, 1)],
    ["LTV", money(latest && latest.revenue.lifetime_value, currency)],
    ["CAC payback", month.acquisition.cac_payback_months == null ? "–" : num(month.acquisition.cac_payback_months, 1) + " months"],
  ];
  $("revenue-kpis").innerHTML = kpis.map(([name, value]) => `<div class="kpi"><b>${value}</b><span>${name}</span></div>`).join("");
  // stacked bars: each series is a running sum, drawn tallest first so the smaller ones sit on top of it
  const months = Object.values(revenueView.months);
  const m = (key) => months.map((r) => r.movements[key]);
  const add = (a, b) => a.map((v, i) => v + b[i]);
  const up1 = m("new_business_mrr"), up2 = add(up1, m("expansion_mrr")), up3 = add(up2, m("reactivation_mrr"));
  const down1 = m("contraction_mrr").map((v) => -v), down2 = add(down1, m("churned_mrr").map((v) => -v));
  const x = months.map((_, i) => i);
  const labels = Object.keys(revenueView.months);
  draw("chart-mrr", [
    bars("reactivation", "#12b76a"), bars("expansion", "#7ea3ff"), bars("new business", "#3662e3"),
    bars("churn", "#d92d20"), bars("contraction", "#f79009"),
    line("MRR at end", "#1d2330", { scale: "mrr", width: 2, points: { show: true, size: 4 } }),
  ], [x, up3, up2, up1, down2, down1, months.map((r) => r.mrr_at_end)], {
    scales: { x: { time: false, range: [-0.5, Math.max(months.length, 1) - 0.5] } },
    axes: [{ values: (u, values) => values.map((v) => labels[v] || ""), splits: () => x.filter((i) => (x.length - 1 - i) % Math.ceil(x.length / 8) === 0) },
      { label: "movements" }, { scale: "mrr", side: 1, label: "MRR", grid: { show: false } }],
  });
}

function attribution(snapshot, windowName) {
  const byConversion = snapshot.windows[windowName].attribution.by_conversion;
  $("attribution").innerHTML = CONVERSIONS.filter((c) => byConversion[c]).map((conversion) => {
    const a = byConversion[conversion];
    const channels = [...new Set(MODELS.flatMap((model) => Object.keys(a.credits[model] || {})))].sort();
    return `<h3>${conversion} <span class="muted">(${num(a.conversions)} conversions)</span></h3>
      <table data-conversion="${conversion}"><thead><tr><th>channel</th>${MODELS.map((m) => `<th>${m.replace("_", "-")}</th>`).join("")}</tr></thead>
      <tbody>${channels.map((ch) => `<tr><td>${esc(ch)}</td>${MODELS.map((m) => `<td>${num((a.credits[m] || {})[ch], 1)}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
  }).join("");
}

function health(alerts, status) {
  const firing = alerts.checks.filter((c) => c.firing);
  $("alerts").innerHTML = firing.length === 0 ? '<li class="okay">no other alert is firing</li>' :
    firing.map((c) => `<li class="firing">${esc(c.alert_name)} ${esc(Object.values(c.labels || {}).join(" "))}: ${esc(c.reason)}</li>`).join("");
  const runtime = status.runtime;
  const lag = Object.values(runtime.consumer_lag).flatMap((p) => Object.values(p)).reduce((a, b) => a + b, 0);
  const dead = Object.values(runtime.deadletters).reduce((a, b) => a + b, 0);
  const events = Object.values(runtime.events_in).reduce((a, b) => a + b, 0);
  const rows = [
    ["ready", status.ready ? "yes" : "no: " + esc((status.not_ready || []).map((c) => c.reason).join("; "))],
    ["recovering", runtime.recovering ? "yes" : "no"],
    ["consumer lag (messages)", num(lag)], ["dead letters", num(dead) + (dead ? " (" + Object.entries(runtime.deadletters).map(([k, v]) => k + " " + v).join(", ") + ")" : "")],
    ["events read", num(events)], ["partitions assigned", num(runtime.partitions_assigned)],
    ["snapshot build", num(runtime.snapshot_seconds * 1000, 0) + " ms"],
  ];
  $("health").tBodies[0].innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
}

function fillSelect(id, values, label = (v) => v) {
  const select = $(id);
  const keep = select.value;
  const known = [...select.options].map((o) => o.value);
  for (const value of values) if (!known.includes(value)) select.add(new Option(label(value), value));
  if (keep) select.value = keep;
}

function render() {
  const { snapshot, hourly, daily, revenueView, alerts, status } = state.data;
  if (!snapshot) return;
  if (!$("window").options.length) {
    fillSelect("window", Object.keys(snapshot.windows));
    $("window").value = "30d";
  }
  fillSelect("channel", Object.keys(daily.by_channel));
  const channel = $("channel").value;
  const windowName = $("window").value || "30d";
  document.querySelectorAll(".window-name").forEach((e) => { e.textContent = windowName + (channel ? " · " + channel : ""); });
  $("as-of").textContent = "as of " + (snapshot.as_of || "–") + " · " + num(snapshot.input.accepted) + " events counted";
  banner(snapshot);
  headline(snapshot);
  indicatorCharts("hourly", hourly, channel);
  indicatorCharts("daily", daily, channel);
  funnel(snapshot, windowName, channel);
  revenue(snapshot, revenueView, channel);
  attribution(snapshot, windowName);
  health(alerts, status);
  if (state.updates === 0) performance.mark("leadlag-first-render");  // the page's first paint with data
  state.updates += 1;
}

async function refresh() {
  try {
    const [snapshot, hourly, daily, revenueView, alerts, status] = await Promise.all([
      getJson("/api/snapshot"), getJson("/api/series/hourly"), getJson("/api/series/daily"),
      getJson("/api/revenue"), getJson("/api/alerts"), getJson("/api/status"),
    ]);
    state.data = { snapshot, hourly, daily, revenueView, alerts, status };
    $("error").hidden = true;
    render();
  } catch (error) {
    state.errors.push(String(error));
    $("error").hidden = false;
    $("error").textContent = "Waiting for the worker: " + error.message;
  }
}

$("channel").addEventListener("change", render);
$("window").addEventListener("change", render);
$("csv").addEventListener("click", async (event) => {
  if (!token()) return;  // a plain link works without a token
  event.preventDefault();
  const response = await fetch("/api/months.csv", { headers: { Authorization: "Bearer " + token() } });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = "leadlag-months.csv";
  link.click();
});
window.addEventListener("resize", () => {
  for (const [id, chart] of Object.entries(state.charts)) chart.setSize({ width: chartWidth($(id)), height: chart.height });
});
refresh();
setInterval(refresh, REFRESH_MS);
