// lmforge studio, Label page: keyboard labelling. Numbers choose (or toggle / assign a type), s skips,
// u goes back to the last item you labelled, Enter saves. NER: click a token, shift-click another to
// select a span, then a number assigns its type and x removes the entity there.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("label-form");
  if (!form) return;
  const kind = form.dataset.kind;
  const typing = (e) => e.target && (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA");

  let tags = null, anchor = null, focus = null;
  const tokens = Array.from(document.querySelectorAll("#tokens .tok"));
  const types = Array.from(document.querySelectorAll("button.type")).map((b) => b.dataset.type);

  function paint() {
    tokens.forEach((tok, i) => {
      const tag = tags[i];
      tok.className = "tok" + (tag !== "O" ? " ent ent-" + (types.indexOf(tag.slice(2)) % 8) : "") + (tag.startsWith("B-") ? " ent-start" : "");
      tok.title = tag;
      const lo = Math.min(anchor, focus), hi = Math.max(anchor, focus);
      if (anchor !== null && i >= lo && i <= hi) tok.className += " selected";
    });
    document.getElementById("tags").value = JSON.stringify(tags);
  }

  function entityAround(i) {  // [start, end] of the entity covering token i, or null
    if (tags[i] === "O") return null;
    let s = i, e = i;
    while (s > 0 && tags[s].startsWith("I-")) s--;
    while (e + 1 < tags.length && tags[e + 1].startsWith("I-")) e++;
    return [s, e];
  }

  function clear(lo, hi) {  // remove every entity touching [lo, hi]
    for (let i = lo; i <= hi; i++) {
      const span = entityAround(i);
      if (span) for (let j = span[0]; j <= span[1]; j++) tags[j] = "O";
    }
  }

  function assign(type) {
    if (anchor === null) return;
    const lo = Math.min(anchor, focus), hi = Math.max(anchor, focus);
    clear(lo, hi);
    for (let i = lo; i <= hi; i++) tags[i] = (i === lo ? "B-" : "I-") + type;
    if (hi + 1 < tags.length && tags[hi + 1].startsWith("I-")) {  // a cut entity's tail starts anew
      tags[hi + 1] = "B-" + tags[hi + 1].slice(2);
    }
    anchor = focus = null;
    paint();
  }

  if (kind === "ner") {
    tags = JSON.parse(document.getElementById("tags").value);  // the pre-annotations (an attribute: decoded, never run)
    tokens.forEach((tok, i) => tok.addEventListener("click", (e) => {
      if (e.shiftKey && anchor !== null) focus = i; else { anchor = i; focus = i; }
      paint();
    }));
    document.querySelectorAll("button.type").forEach((b) => b.addEventListener("click", () => assign(b.dataset.type)));
    document.getElementById("remove").addEventListener("click", () => {
      if (anchor !== null) { clear(Math.min(anchor, focus), Math.max(anchor, focus)); anchor = focus = null; paint(); }
    });
    paint();
  }

  function toggle(label) {
    const box = document.getElementById("labels");
    const lines = box.value.split("\n").map((x) => x.trim()).filter(Boolean);
    const at = lines.indexOf(label);
    if (at >= 0) lines.splice(at, 1); else lines.push(label);
    box.value = lines.join("\n");
  }
  document.querySelectorAll("button.toggle").forEach((b) => b.addEventListener("click", () => toggle(b.dataset.label)));

  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const n = parseInt(e.key, 10);
    if (n >= 1 && n <= 9) {
      e.preventDefault();
      if (kind === "single") { const b = document.getElementById("choice-" + n); if (b) b.click(); }
      else if (kind === "multi") { const b = document.querySelectorAll("button.toggle")[n - 1]; if (b) b.click(); }
      else if (types[n - 1]) assign(types[n - 1]);
    } else if (e.key === "s") {
      e.preventDefault(); document.getElementById("skip-form").submit();
    } else if (e.key === "u") {
      const undo = document.getElementById("undo"); if (undo) { e.preventDefault(); window.location = undo.href; }
    } else if (e.key === "x" && kind === "ner") {
      e.preventDefault(); document.getElementById("remove").click();
    } else if (e.key === "Enter" && kind !== "single") {
      e.preventDefault(); form.submit();
    }
  });
});
