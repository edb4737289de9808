// frugalvision label page (after kit.js, the pages' shared helpers).
// Every string from the data (file names, folder names, class names) may be hostile: it only ever reaches the
// document through textContent, Node.append(string) or DOM properties (alt, title) - never as HTML.
"use strict";
(function () {
  const { $, el, say, shellQuote } = window.fvPage;
  const st = {
    classes: [],
    batch: [],          // items from the server: {id, name, folder, guess, p, why, decided}
    cards: [],
    focus: -1,
    pending: 0,
    failed: false,
    chain: Promise.resolve(),
    page: 0,
    pages: 1,
    polling: null,
    sent: new Map(),    // id -> label: decided on the page, not yet confirmed by the server
  };

  function pct(x) { return (100 * x).toFixed(0) + " %"; }

  async function call(url, body) {
    const opts = body === undefined ? { headers: { Accept: "application/json" }, cache: "no-store" } : {
      method: "POST", cache: "no-store",
      headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body) };
    const r = await fetch(url, opts);
    if (!r.ok) {
      let detail = "the server answered " + r.status;
      try { detail = String((await r.json()).detail || detail); } catch (e) { /* keep the status */ }
      throw new Error(detail);
    }
    return r.json();
  }

  function label(name) {
    if (name === "none") return "none of these";
    if (name === "skip") return "skipped";
    return name;
  }

  // -- state: progress, counts, estimate ----------------------------------------------------------------
  function showState(s) {
    st.classes = s.classes;
    const c = s.counts;
    $("progress").textContent = "Labelled " + c.labelled + " · decided " + c.decided + " of " +
      (c.images - c.unreadable);
    $("manifest-file").textContent = s.manifest;
    if (s.manifest && c.labelled > 0) {
      $("train-command").textContent = "frugalvision train " + shellQuote(s.manifest);
      $("train-hint").hidden = false;
    }
    const prep = $("preparing");
    prep.hidden = s.ready && !s.error;
    if (!s.ready) {
      const p = s.progress;
      $("prepare-text").textContent = p.stage === "embedding"
        ? "Computing embeddings (once; cached): " + p.done + " of " + p.total + " images"
        : "Preparing the images (" + p.stage + ")…";
      $("prepare-bar").max = Math.max(p.total, 1);
      $("prepare-bar").value = p.done;
    }
    if (s.error) say(s.error, "error");
    const ul = $("counts");
    ul.replaceChildren();
    s.classes.forEach((name, i) => {
      const li = el("li");
      if (i < 9) li.append(el("kbd", null, String(i + 1)), " ");
      li.append(el("span", "bidi", name), ": " + c.per_class[name]);
      ul.append(li);
    });
    ul.append(el("li", null, "none of these: " + c.none), el("li", null, "skipped: " + c.skip));
    const e = s.estimate;
    if (e && e.accuracy !== null && e.accuracy !== undefined && e.ci) {
      $("estimate").textContent = "Estimated accuracy " + pct(e.accuracy) + " (95 % interval " + pct(e.ci[0]) +
        "–" + pct(e.ci[1]) + ") from " + e.n + " labels, cross-validated" + (s.estimating ? " · updating…" : "");
    } else {
      $("estimate").textContent = s.estimating ? "Estimating…" : "No estimate yet.";
    }
    $("advice").textContent = e && e.advice ? e.advice : "";
    const wait = !s.ready || s.estimating;
    if (wait && !st.polling) st.polling = setTimeout(poll, 700);
  }

  async function poll() {
    st.polling = null;
    try {
      const s = await call(st.batch.length ? "/api/state" : "/api/batch");
      showState(s);
      if (s.batch && s.ready) showBatch(s.batch);
    } catch (err) {
      say("Lost the server: " + err.message + ". Is 'frugalvision label' still running?", "error");
    }
  }

  // -- the batch ------------------------------------------------------------------------------------------
  function button(text, value) {
    const b = el("button", null, text);
    b.type = "button";
    b.tabIndex = -1; // the keyboard path is the page's keys; buttons are for the mouse
    b.dataset.label = value;
    return b;
  }

  function card(it, idx) {
    const a = el("article", "card");
    a.tabIndex = -1;
    a.dataset.id = String(it.id);
    a.dataset.idx = String(idx);
    a.setAttribute("aria-label", it.name);
    const img = el("img", "thumb");
    img.alt = it.name;
    img.loading = "lazy";
    img.decoding = "async";
    img.width = 256;
    img.height = 256;
    img.src = "/image/" + Number(it.id);
    const name = el("div", "name", it.name);
    name.title = it.folder;
    const guess = el("div", "guess");
    if (it.guess) {
      guess.append("guess: ", el("span", "bidi", label(it.guess)));
      if (it.p !== null && it.p !== undefined) guess.append(" (" + it.p.toFixed(2) + ")");
    } else {
      guess.textContent = "no guess yet";
    }
    const why = el("div", "why", it.why === "uncertain" ? "the model is unsure" :
      it.why === "typical" ? "typical of a group" : it.why === "random" ? "random pick" : "");
    const actions = el("div", "actions");
    st.classes.forEach((c, i) => actions.append(button((i < 9 ? (i + 1) + " " : "") + c, c)));
    actions.append(button("n none", "none"), button("s skip", "skip"));
    a.append(img, name, guess, why, el("div", "decision"), actions);
    a.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-label]");
      setFocus(idx, false);
      if (b) decide(b.dataset.label);
    });
    return a;
  }

  function paint(a, it) {
    const box = a.querySelector(".decision");
    a.classList.toggle("decided", it.decided !== null && it.decided !== undefined);
    a.classList.remove("d-none", "d-skip");
    if (it.decided === "none" || it.decided === "skip") a.classList.add("d-" + it.decided);
    a.dataset.decided = it.decided || "";
    box.replaceChildren();
    if (it.decided) box.append("✓ ", el("span", "bidi", label(it.decided)));
  }

  function showBatch(items) {
    for (const it of items) {  // answers to earlier keys must not undo the decisions made since
      if (!it.decided && st.sent.has(it.id)) it.decided = st.sent.get(it.id);
    }
    const same = items.length === st.batch.length && items.every((it, i) => it.id === st.batch[i].id);
    st.batch = items;
    const main = $("batch");
    if (!same) {
      main.replaceChildren();
      st.cards = [];
      if (!items.length) {
        main.append(el("p", "empty", "Nothing left to label."));
      } else {
        const grid = el("div", "grid");
        items.forEach((it, i) => {
          const a = card(it, i);
          st.cards.push(a);
          grid.append(a);
        });
        main.append(grid);
      }
      st.focus = -1;
    }
    items.forEach((it, i) => paint(st.cards[i], it));
    const a = current();
    if (!same || !a || a.dataset.decided) focusFirstOpen(!same);
    document.body.dataset.ready = "1";
  }

  function focusFirstOpen(scroll) {
    const i = st.batch.findIndex((it) => !it.decided);
    if (i >= 0) setFocus(i, scroll);
    else if (st.focus < 0 && st.cards.length) setFocus(0, scroll);
  }

  const { current, setFocus } = window.fvPage.grid(st);

  // -- deciding -------------------------------------------------------------------------------------------
  function saveStatus() {
    const s = $("save-status");
    if (st.pending > 0) s.textContent = "Saving…";
    else if (st.failed) s.textContent = "Some decisions were not saved";
    else s.textContent = "All decisions saved";
  }

  function send(url, body, after) {
    st.pending += 1;
    saveStatus();
    st.chain = st.chain
      .then(async () => {
        const s = await call(url, body);
        if (body && body.id !== undefined) st.sent.delete(body.id);
        showState(s);
        showBatch(s.batch);
        if (after) after(s);
      })
      .catch(async (err) => {
        st.failed = true;
        st.sent.clear();
        say("Not saved: " + err.message + ". The page now shows what the server has.", "error");
        try { const s = await call("/api/batch"); showState(s); showBatch(s.batch); } catch (e) { /* gone */ }
      })
      .finally(() => {
        st.pending -= 1;
        saveStatus();
      });
  }

  function decide(value) {
    const a = current();
    if (!a) return;
    const it = st.batch[st.focus];
    if (it.decided) {
      say("This image already has a decision: press u to undo it.");
      return;
    }
    if (value === "guess") {
      if (!it.guess) {
        say("No guess yet: pick a class with 1–" + Math.min(9, st.classes.length) + ", n (none) or s (skip).");
        return;
      }
      value = it.guess;
    }
    say("");
    it.decided = value; // at once on the page; the server's answer follows
    st.sent.set(it.id, value);
    paint(a, it);
    const next = st.batch.findIndex((x) => !x.decided);
    if (next >= 0) setFocus(next);
    send("/api/label", { id: it.id, label: value });
  }

  function undo() {
    send("/api/undo", {}, (s) => {
      if (s.undone === null || s.undone === undefined) say("Nothing to undo.");
      else say("Undone: " + (s.batch.find((x) => x.id === s.undone) || { name: "" }).name);
    });
  }

  // -- labelled so far (pages) -----------------------------------------------------------------------------
  async function showLabelled(page) {
    const d = await call("/api/labelled?page=" + Number(page));
    st.page = d.page;
    st.pages = d.pages;
    $("page-info").textContent = "page " + (d.page + 1) + " of " + d.pages + " (" + d.total + " decisions)";
    $("newer").disabled = d.page <= 0;
    $("older").disabled = d.page >= d.pages - 1;
    const grid = $("labelled-grid");
    grid.replaceChildren();
    for (const it of d.items) {
      const a = el("figure", "card decided");
      const img = el("img", "thumb");
      img.alt = it.name;
      img.loading = "lazy";
      img.width = 128;
      img.height = 128;
      img.src = "/image/" + Number(it.id);
      const cap = el("figcaption", "decision");
      cap.append(el("span", "bidi", label(it.decided)));
      a.append(img, el("div", "name", it.name), cap);
      grid.append(a);
    }
  }

  function toggleLabelled() {
    const box = $("labelled");
    const open = box.hidden;
    box.hidden = !open;
    $("labelled-toggle").setAttribute("aria-expanded", open ? "true" : "false");
    $("labelled-toggle").textContent = open ? "Hide labelled images" : "Show labelled images";
    if (open) showLabelled(0).catch((err) => say("Could not load the labelled images: " + err.message, "error"));
  }

  // -- keys -----------------------------------------------------------------------------------------------
  function onKey(key) {
    if (/^[1-9]$/.test(key)) {
      const c = st.classes[Number(key) - 1];
      if (c === undefined) return false;
      decide(c);
      return true;
    }
    switch (key) {
      case "Enter": case " ": decide("guess"); break;
      case "n": decide("none"); break;
      case "s": decide("skip"); break;
      case "u": undo(); break;
      case "j": case "ArrowRight": setFocus(st.focus + 1); break;
      case "k": case "ArrowLeft": setFocus(st.focus - 1); break;
      default: return false;
    }
    return true;
  }

  async function start() {
    window.fvPage.keys(st, onKey, { current, fields: /^(INPUT|TEXTAREA|SELECT|BUTTON)$/ });
    $("labelled-toggle").addEventListener("click", toggleLabelled);
    $("newer").addEventListener("click", () => showLabelled(st.page - 1));
    $("older").addEventListener("click", () => showLabelled(st.page + 1));
    let s;
    try {
      s = await call("/api/batch");
    } catch (err) {
      $("progress").textContent = "Could not load";
      say("Could not load the page: " + err.message + ". Is 'frugalvision label' still running?", "error");
      return;
    }
    const table = $("help-keys");
    s.classes.slice(0, 9).forEach((c, i) => {
      const tr = el("tr");
      const th = el("th");
      th.scope = "row";
      th.append(el("kbd", null, String(i + 1)));
      const td = el("td");
      td.append("label as ", el("span", "bidi", c));
      tr.append(th, td);
      table.append(tr);
    });
    showState(s);
    if (s.ready) showBatch(s.batch);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
