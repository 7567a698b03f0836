// lmforge studio: sortable and filterable tables, live progress of running trainings. Plain JS, no library.
"use strict";

function cellValue(row, index, kind) {
  const cell = row.children[index];
  if (!cell) return "";
  const raw = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
  if (kind === "number") {
    const n = parseFloat(raw);
    return Number.isNaN(n) ? -Infinity : n;
  }
  return raw.toLowerCase();
}

function makeSortable(table) {
  const headers = table.querySelectorAll("thead th");
  headers.forEach((th, index) => {
    const kind = th.dataset.sort;
    if (!kind || kind === "none") return;
    th.addEventListener("click", () => {
      const dir = th.dataset.dir === "asc" ? "desc" : "asc";
      headers.forEach((h) => delete h.dataset.dir);
      th.dataset.dir = dir;
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = cellValue(a, index, kind), y = cellValue(b, index, kind);
        return (x < y ? -1 : x > y ? 1 : 0) * (dir === "asc" ? 1 : -1);
      });
      rows.forEach((r) => body.appendChild(r));
    });
  });
}

function makeFilter(input) {
  const table = document.querySelector(input.dataset.filter);
  if (!table) return;
  input.addEventListener("input", () => {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    Array.from(table.tBodies[0].rows).forEach((row) => {
      const text = row.textContent.toLowerCase();
      row.hidden = !words.every((w) => text.includes(w));
    });
  });
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
  return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
}

function progressText(p) {
  const parts = ["step " + (p.step || 0) + (p.total_steps ? " of " + p.total_steps : "")];
  if (typeof p.loss === "number") parts.push("loss " + p.loss.toFixed(4));
  if (typeof p.tokens_per_s === "number") parts.push(Math.round(p.tokens_per_s) + " tok/s");
  if (typeof p.eta_s === "number") parts.push("ETA " + fmtSeconds(p.eta_s));
  if (p.status !== "running") parts.push(p.status + " (reload for the results)");
  return parts.join(" · ");
}

function pollProgress() {
  const cells = Array.from(document.querySelectorAll("[data-live]")).filter((c) => c.dataset.live);
  if (!cells.length) return;
  const ids = Array.from(new Set(cells.map((c) => c.dataset.live)));
  const query = ids.map((id) => "id=" + encodeURIComponent(id)).join("&");
  fetch("/api/progress?" + query, { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((data) => {
      if (!data) return;
      const byId = {};
      data.runs.forEach((p) => { byId[p.id] = p; });
      cells.forEach((cell) => {
        const p = byId[cell.dataset.live];
        if (!p) return;
        cell.textContent = progressText(p);  // text, never HTML
        if (p.status !== "running") cell.dataset.live = "";
      });
    })
    .catch(() => {})
    .finally(() => setTimeout(pollProgress, 2000));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  document.querySelectorAll("input[data-filter]").forEach(makeFilter);
  pollProgress();
});

// Playground: a generation model streams its completion (server-sent events over fetch); the text is
// appended as text, never as HTML. Without JavaScript the form posts and the completion comes whole.
function setUpPlayground() {
  const form = document.querySelector("form.playground");
  if (!form) return;
  const select = document.getElementById("source");
  const isGeneration = () => select.selectedOptions[0] && select.selectedOptions[0].dataset.generation === "yes";
  const toggle = () => {
    document.querySelectorAll(".for-generate").forEach((el) => { el.hidden = !isGeneration(); });
    document.querySelectorAll(".for-classify").forEach((el) => { el.hidden = isGeneration(); });
  };
  select.addEventListener("change", toggle);
  toggle();
  form.addEventListener("submit", async (event) => {
    if (!isGeneration()) return;
    event.preventDefault();
    const out = document.getElementById("streamed"), status = document.getElementById("stream-status");
    document.getElementById("stream").hidden = false;
    out.textContent = "";
    status.textContent = "generating…";
    const old = document.getElementById("result");
    if (old) old.remove();
    const response = await fetch("/api/generate", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": form.querySelector("input[name=csrf]").value },
      body: JSON.stringify({ source: select.value, prompt: document.getElementById("text").value,
                             max_new_tokens: parseInt(document.getElementById("max-new-tokens").value, 10) || 64 }),
    });
    if (!response.ok) { status.textContent = "refused (" + response.status + "); reload the page"; return; }
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).replace(/^data: /, "");
        buffer = buffer.slice(cut + 2);
        const data = JSON.parse(line);
        if (data.text !== undefined) out.textContent += data.text;
        if (data.error) status.textContent = data.error;
        if (data.done) status.textContent = data.pieces + " pieces · " + data.model_version;
      }
    }
  });
}
document.addEventListener("DOMContentLoaded", setUpPlayground);
