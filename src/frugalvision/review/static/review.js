// frugalvision review page (after kit.js, the pages' shared helpers).
// Every string from the data (file names, labels, reasons, group ids) may be hostile: it only ever reaches the
// document through textContent, Node.append(string) or DOM properties (alt, title) - never as HTML.
"use strict";
(function () {
  const { $, el, say, shellQuote } = window.fvPage;
  const DONE = { accept: "Accepted", keep: "Kept", exclude: "Excluded" };
  const st = {
    cards: [],            // every card element, page order
    byRow: new Map(),     // row -> [card elements] (a row may be in several grids)
    info: new Map(),      // row -> card fields from the server
    shown: new Set(),     // rows on the page
    decisions: new Map(), // row -> "accept" | "keep" | "exclude"
    total: 0,
    focus: -1,
    undo: [],             // {row, prev, idx}: the decisions of this visit, last on top
    pending: 0,
    failed: false,
    chain: Promise.resolve(),
  };

  async function getItems() {
    const r = await fetch("/api/items", { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!r.ok) throw new Error("the server answered " + r.status);
    return r.json();
  }

  // -- building the page ------------------------------------------------------------------------------
  function statusSpan(status) {
    const s = el("span", "audit-status", status || "keep");
    if (status === "exclude" || status === "review") s.classList.add(status);
    return s;
  }

  function button(decision, text, key) {
    const b = el("button", null, text + " (" + key + ")");
    b.type = "button";
    b.tabIndex = -1; // the keyboard path is the card and its keys; buttons are for the mouse
    b.dataset.decision = decision;
    b.setAttribute("aria-pressed", "false");
    return b;
  }

  function card(row) {
    const c = st.info.get(row);
    const idx = st.cards.length;
    const a = el("article", "card");
    a.tabIndex = -1;
    a.dataset.row = String(row);
    a.dataset.idx = String(idx);
    a.setAttribute("aria-label", c.name);
    const img = el("img", "thumb");
    img.alt = c.name;
    img.loading = "lazy";
    img.decoding = "async";
    img.width = 256;
    img.height = 256;
    img.src = "/image/" + Number(row);
    const name = el("div", "name", c.name);
    name.title = c.path;
    const meta = el("div", "meta");
    meta.append(el("span", "label", c.label), " · ", el("span", "split", c.split || "no split"), " · audit: ",
                statusSpan(c.status));
    a.append(img, name, meta);
    if (c.suggested) {
      const s = el("div", "suggest", "suggested: ");
      s.append(el("span", "bidi suggested", c.suggested));
      a.append(s);
    }
    if (c.reason) a.append(el("div", "reason", c.reason));
    a.append(el("div", "decision"));
    const actions = el("div", "actions");
    if (c.suggested) actions.append(button("accept", "Accept", "a"));
    actions.append(button("keep", "Keep", "o"), button("exclude", "Exclude", "x"));
    a.append(actions);
    a.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-decision]");
      setFocus(idx, false);
      if (b) decide(b.dataset.decision);
    });
    st.cards.push(a);
    if (!st.byRow.has(row)) st.byRow.set(row, []);
    st.byRow.get(row).push(a);
    return a;
  }

  function render(data) {
    const main = $("sections");
    main.replaceChildren();
    st.cards = [];
    st.byRow = new Map();
    st.info = new Map(data.cards.map((c) => [c.row, c]));
    st.shown = new Set(data.cards.map((c) => c.row));
    st.total = data.total;
    $("reviewed-file").textContent = data.reviewed_path;
    $("train-command").textContent = "frugalvision train " + shellQuote(data.reviewed_path);
    $("train-hint").hidden = false;
    if (!data.sections.length) {
      main.append(el("p", "empty", "Nothing to review: the audit flagged no image."));
    }
    for (const sec of data.sections) {
      const section = el("section", "kind");
      section.dataset.kind = sec.kind;
      section.append(el("h2", null, sec.title + " (" + sec.count + ")"));
      const grid = el("div", "grid");
      for (const set of sec.sets) {
        if (set.rows.length > 1 || set.group) {
          const box = el("div", "set");
          box.setAttribute("role", "group");
          box.setAttribute("aria-label", set.rows.length + " copies of one image");
          const title = el("p", "set-title", set.rows.length + " copies · group ");
          title.append(el("span", "bidi group", set.group));
          const inner = el("div", "set-cards");
          for (const r of set.rows) inner.append(card(r));
          box.append(title, inner);
          grid.append(box);
        } else {
          grid.append(card(set.rows[0]));
        }
      }
      section.append(grid);
      main.append(section);
    }
    setDecisions(data.decisions);
  }

  function setDecisions(obj) {
    st.decisions = new Map(Object.entries(obj || {}).map(([k, v]) => [Number(k), v]));
    for (const row of st.byRow.keys()) paint(row);
    progress();
  }

  // -- showing decisions ------------------------------------------------------------------------------
  function paint(row) {
    const d = st.decisions.get(row) || "";
    const c = st.info.get(row);
    for (const a of st.byRow.get(row) || []) {
      a.classList.remove("d-accept", "d-keep", "d-exclude");
      if (d) a.classList.add("d-" + d);
      a.dataset.decision = d;
      const box = a.querySelector(".decision");
      box.replaceChildren();
      if (d === "accept") {
        box.append(DONE.accept + ": ", el("span", "bidi", c.label), " → ", el("span", "bidi", c.suggested));
      } else if (d) {
        box.textContent = DONE[d];
      }
      for (const b of a.querySelectorAll("button[data-decision]")) {
        b.setAttribute("aria-pressed", b.dataset.decision === d ? "true" : "false");
      }
    }
  }

  function progress() {
    let n = 0;
    for (const row of st.decisions.keys()) if (st.shown.has(row)) n += 1;
    $("progress").textContent = "Reviewed " + n + " of " + st.total;
    const bar = $("progress-bar");
    bar.max = Math.max(st.total, 1);
    bar.value = n;
  }

  function saveStatus() {
    const s = $("save-status");
    if (st.pending > 0) s.textContent = "Saving…";
    else if (st.failed) s.textContent = "Some decisions were not saved";
    else s.textContent = st.undo.length ? "All decisions saved" : "";
  }

  // -- focus ------------------------------------------------------------------------------------------
  const { current, setFocus } = window.fvPage.grid(st);

  function move(step) {
    setFocus(st.focus < 0 ? 0 : st.focus + step);
  }

  function nextUndecided() {
    const n = st.cards.length;
    for (let k = 1; k <= n; k += 1) {
      const j = (Math.max(st.focus, 0) + k) % n;
      if (!st.decisions.has(Number(st.cards[j].dataset.row))) return setFocus(j);
    }
    say("Every image has a decision.");
  }

  function advance(row) {
    for (let j = st.focus + 1; j < st.cards.length; j += 1) {
      if (Number(st.cards[j].dataset.row) !== row) return setFocus(j);
    }
  }

  // -- deciding ---------------------------------------------------------------------------------------
  function send(row, decision) {
    st.pending += 1;
    saveStatus();
    st.chain = st.chain
      .then(async () => {
        const r = await fetch("/api/decision", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ row: row, decision: decision }),
        });
        if (!r.ok) {
          let detail = "the server answered " + r.status;
          try { detail = String((await r.json()).detail || detail); } catch (e) { /* keep the status */ }
          throw new Error(detail);
        }
        await r.json();
      })
      .catch(async (err) => {
        st.failed = true;
        say("Not saved: " + err.message + ". The page now shows the decisions the server has.", "error");
        try { setDecisions((await getItems()).decisions); } catch (e) { /* the server is gone */ }
      })
      .finally(() => {
        st.pending -= 1;
        saveStatus();
      });
  }

  function set(row, decision) {
    if (decision) st.decisions.set(row, decision);
    else st.decisions.delete(row);
    paint(row);
    progress();
    send(row, decision);
  }

  function decide(decision) {
    const a = current();
    if (!a) return;
    const row = Number(a.dataset.row);
    if (decision === "accept" && !st.info.get(row).suggested) {
      say("This image has no suggested label: press o to keep it or x to exclude it.");
      return;
    }
    say("");
    st.undo.push({ row: row, prev: st.decisions.get(row) || null, idx: st.focus });
    set(row, decision);
    advance(row);
  }

  function undo() {
    const u = st.undo.pop();
    if (!u) {
      say("Nothing to undo.");
      return;
    }
    set(u.row, u.prev);
    setFocus(u.idx);
    say("Undone: " + (st.info.get(u.row) || { name: "" }).name);
  }

  // -- help and keys ----------------------------------------------------------------------------------
  function onKey(key) {
    switch (key) {
      case "j": case "ArrowRight": case "ArrowDown": move(1); break;
      case "k": case "ArrowLeft": case "ArrowUp": move(-1); break;
      case "Home": setFocus(0); break;
      case "End": setFocus(st.cards.length - 1); break;
      case "n": nextUndecided(); break;
      case "a": decide("accept"); break;
      case "o": decide("keep"); break;
      case "x": decide("exclude"); break;
      case "u": undo(); break;
      default: return false;
    }
    return true;
  }

  async function start() {
    window.fvPage.keys(st, onKey, { current });
    let data;
    try {
      data = await getItems();
    } catch (err) {
      $("progress").textContent = "Could not load the review";
      say("Could not load the review: " + err.message + ". Is 'frugalvision review' still running?", "error");
      return;
    }
    render(data);
    if (st.cards.length) {
      const first = st.cards.findIndex((a) => !st.decisions.has(Number(a.dataset.row)));
      setFocus(first < 0 ? 0 : first, first > 0);
    }
    document.body.dataset.ready = "1";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
