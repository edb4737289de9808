// What the local pages (review, label) share: DOM helpers, the focused card of a grid, the help dialog and the
// key dispatcher. Every string from the data may be hostile: it only ever reaches the document through
// textContent, Node.append(string) or DOM properties (alt, title) - never as HTML.
"use strict";
window.fvPage = (function () {
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function say(text, kind) {
    const m = $("message");
    m.textContent = text || "";
    m.className = "message" + (kind === "error" ? " error" : "");
    m.hidden = !text;
  }

  function shellQuote(s) {
    return /^[A-Za-z0-9_.\/:=+-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
  }

  // One card of st.cards has the focus (st.focus, -1 for none); it alone is in the tab order.
  function grid(st) {
    function current() {
      return st.focus >= 0 ? st.cards[st.focus] : null;
    }

    function setFocus(i, scroll = true) {
      if (!st.cards.length) return;
      i = Math.max(0, Math.min(st.cards.length - 1, i));
      const old = current();
      if (old) {
        old.classList.remove("focused");
        old.tabIndex = -1;
      }
      st.focus = i;
      const a = st.cards[i];
      a.classList.add("focused");
      a.tabIndex = 0;
      a.focus({ preventScroll: true });
      if (scroll) a.scrollIntoView({ block: "nearest" });
    }

    return { current, setFocus };
  }

  // The page's keys: onKey(key) handles one (lower-cased when a character) and returns false for a key that is
  // not the page's. "?" and the #help dialog are handled here; keys typed into a field in `fields` are left alone.
  // Leaving the page is questioned while st.pending decisions are unsaved.
  function keys(st, onKey, { current, fields = /^(INPUT|TEXTAREA|SELECT)$/ } = {}) {
    const help = $("help");
    const toggleHelp = () => (help.open ? help.close() : help.showModal());
    document.addEventListener("keydown", (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
      const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
      if (help.open) {
        if (key === "?") {
          toggleHelp();
          ev.preventDefault();
        }
        return; // Escape closes the dialog natively
      }
      const t = ev.target;
      if (t && (t.isContentEditable || fields.test(t.tagName))) return;
      if (key === "?") toggleHelp();
      else if (onKey(key) === false) return;
      ev.preventDefault();
    });
    $("help-button").addEventListener("click", toggleHelp);
    $("help-close").addEventListener("click", () => help.close());
    help.addEventListener("close", () => {
      const a = current && current();
      if (a) a.focus({ preventScroll: true });
    });
    window.addEventListener("beforeunload", (ev) => {
      if (st.pending > 0) ev.preventDefault();
    });
  }

  return { $, el, say, shellQuote, grid, keys };
})();
