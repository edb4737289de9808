// The page's script. It builds the DOM with createElement/textContent only: labels, file names, notes
// and error messages come from data and are never parsed as HTML.
"use strict";

const results = document.getElementById("results");
// The server sends its own one-line help (cams_help); this is the fallback.
const CAM_HELP = "The coloured map shows which parts of the image pushed the model towards this label.";
const PARALLEL = 2;        // requests in flight at once; more files wait in the page
const MAX_RETRIES = 5;     // on 503 (server busy), after the Retry-After it gives

function text(tag, s, cls) {
  const e = document.createElement(tag);
  e.textContent = String(s);
  if (cls) e.className = cls;
  return e;
}

function figure(src, caption, cls) {
  const f = document.createElement("figure");
  if (cls) f.className = cls;
  const i = document.createElement("img");
  if (typeof src === "string" && src.startsWith("data:image/png;base64,")) i.src = src;
  i.alt = caption;
  f.append(i, text("figcaption", caption));
  return f;
}

// A class below p = 0.05 gets no map: scaled up, its near-zero evidence would look like signal.
function noMap(caption, note) {
  const f = document.createElement("figure");
  f.className = "nomap";
  f.append(text("div", note || "no map: too unlikely", "nomap-box"), text("figcaption", caption));
  return f;
}

// The two colour scales, drawn by app.css: evidence (shared by the class maps) and the difference map.
function legend(diff) {
  const box = document.createElement("div");
  box.className = "legend";
  const item = (cls, left, right) => {
    const span = document.createElement("span");
    span.className = "scale";
    span.append(text("span", left, "end"), text("span", "", "bar " + cls), text("span", right, "end"));
    return span;
  };
  box.append(item("evidence", "no evidence", "strongest in this image"));
  if (diff) box.append(item("difference", "for " + (diff.against || "top-2"), "for " + (diff.for || "top-1")));
  return box;
}

function pText(p) {
  const v = Number(p);
  return v >= 0.01 ? "p=" + v.toFixed(2) : "p<0.01";
}

function percent(p) {
  const v = Number(p);
  return Number.isFinite(v) ? Math.max(0, Math.min(100, 100 * v)) : 0;
}

function showModel() {
  const el = document.getElementById("model");
  fetch("/model")
    .then(r => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
    .then(m => {
      el.textContent = `Model: ${m.backbone} · classes: ${(m.classes || []).join(", ")}`;
      if (m.report) {
        el.append(" · ");
        const a = document.createElement("a");
        a.href = "/report";
        a.textContent = "model report";
        el.append(a);
      }
    })
    .catch(e => { el.textContent = "Could not load the model description: " + e.message; });
}

async function readJson(r) {
  try { return await r.json(); } catch (e) { return {detail: `${r.status} ${r.statusText}`}; }
}

function sleep(ms) { return new Promise(resolve => setTimeout(resolve, ms)); }

async function post(file, status) {
  for (let attempt = 0; ; attempt++) {
    const body = new FormData();
    body.append("file", file);
    const r = await fetch("/explain", {method: "POST", body});
    if (r.status !== 503 || attempt >= MAX_RETRIES) return [r, await readJson(r)];
    const wait = Math.min(60, Math.max(1, parseInt(r.headers.get("Retry-After"), 10) || 2));
    status.textContent = `Server busy; retrying in ${wait} s…`;
    await sleep(wait * 1000);
    status.textContent = "Analysing…";
  }
}

function topTable(top) {
  const table = document.createElement("table");
  table.className = "top";
  for (const t of top || []) {
    const tr = document.createElement("tr");
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = percent(t.probability).toFixed(1) + "%";
    bar.append(fill);
    const td = document.createElement("td");
    td.append(bar);
    tr.append(text("td", t.label, "label"), td, text("td", percent(t.probability).toFixed(1) + " %", "pct"));
    table.append(tr);
  }
  return table;
}

async function analyse(file, card, status) {
  try {
    const [r, data] = await post(file, status);
    if (!r.ok) {
      status.replaceWith(text("p", `Rejected (${r.status}): ${data.detail}`, "err"));
      return;
    }
    const parts = [];
    if (data.unknown) {
      // The "none of these" score: the image looks unlike every class the model was trained on. No class bars:
      // its probabilities only rank classes it does not belong to.
      const closest = data.most_probable ? `${data.most_probable.label} (${pText(data.most_probable.probability)})` : "";
      parts.push(text("p", `None of these: this image looks unlike the trained classes (unusualness score ` +
        `${Number(data.ood_score).toFixed(2)}). Closest class, not trusted: ${closest}.`, "unknown"));
    } else {
      const ru = data.runner_up ? `; runner-up: ${data.runner_up.label} (${pText(data.runner_up.probability)})` : "";
      parts.push(text("p", `Decision: ${data.label} (${pText(data.probability)}), by ${data.rule}${ru}.`, "decision"));
    }
    parts.push(topTable(data.top));
    const cams = Array.isArray(data.cams) ? data.cams : [];
    if (cams.length) {
      const row = document.createElement("div");
      row.className = "row";
      if (data.image) row.append(figure(data.image, "image"));
      for (const c of cams) {
        const caption = c.caption || `CAM ${c.label} (${pText(c.probability)})`;
        row.append(c.hidden || !c.overlay ? noMap(caption, c.note) : figure(c.overlay, caption));
      }
      const diff = data.difference && data.difference.overlay ? data.difference : null;
      if (diff) row.append(figure(diff.overlay, diff.caption || diff.label, "diff"));
      parts.push(row, legend(diff), text("p", data.cams_help || CAM_HELP, "note cam-help"));
      if (data.cams_note) parts.push(text("p", "Maps: " + data.cams_note, "muted"));
    } else {
      parts.push(text("p", "No maps for this model: " + (data.cams_note || "not available") + ".", "note cams-note"));
    }
    status.replaceWith(...parts);
  } catch (e) {
    status.replaceWith(text("p", "Request failed: " + e, "err"));
  }
}

// Files wait here and at most PARALLEL are sent at once, so dropping 50 images does not flood the server.
const waiting = [];
let running = 0;

function pump() {
  while (running < PARALLEL && waiting.length) {
    const job = waiting.shift();
    running++;
    job.status.textContent = "Analysing…";
    analyse(job.file, job.card, job.status).finally(() => { running--; pump(); });
  }
}

function enqueue(file) {
  const card = document.createElement("div");
  card.className = "card";
  card.append(text("h3", file.name));
  const status = text("p", "Waiting…", "muted");
  card.append(status);
  results.prepend(card);
  waiting.push({file, card, status});
  pump();
}

function init() {
  showModel();
  const input = document.getElementById("files");
  input.addEventListener("change", () => { for (const f of input.files) enqueue(f); input.value = ""; });
  const drop = document.getElementById("drop");
  drop.addEventListener("click", e => { if (e.target === drop) input.click(); });
  drop.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", e => {
    e.preventDefault();
    drop.classList.remove("over");
    for (const f of e.dataTransfer.files) enqueue(f);
  });
}

init();
