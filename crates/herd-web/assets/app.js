// herd dashboard: confirmations for action forms, and live regions fed by server-sent events.
// No build step, no framework; the pages work without it (forms then confirm on a page).
"use strict";

document.addEventListener("submit", (ev) => {
  const form = ev.target;
  const msg = form.dataset && form.dataset.confirm;
  if (!msg) return;
  const weight = form.querySelector("input[name=weight]");
  const text = weight ? msg.replace("{weight}", weight.value) : msg;
  if (!window.confirm(text)) {
    ev.preventDefault();
    return;
  }
  if (!form.querySelector("input[name=confirmed]")) {
    const c = document.createElement("input");
    c.type = "hidden";
    c.name = "confirmed";
    c.value = "1";
    form.appendChild(c);
  }
});

(function live() {
  const region = document.getElementById("live");
  const state = document.getElementById("conn");
  if (!region || !region.dataset.page || !window.EventSource) return;
  const es = new EventSource("/events?page=" + encodeURIComponent(region.dataset.page));
  const show = (text, cls) => {
    if (state) {
      state.textContent = text;
      state.className = cls;
    }
  };
  es.addEventListener("open", () => show("live", "ok"));
  es.addEventListener("error", () => {
    // The browser retries by itself unless the server refused the stream (401, 429, …).
    if (es.readyState === EventSource.CLOSED) show("stopped: reload the page", "bad");
    else show("reconnecting…", "warn");
  });
  es.addEventListener("live", (e) => {
    // Someone typing a weight keeps their field: skip this refresh.
    const a = document.activeElement;
    if (a && region.contains(a) && a.tagName === "INPUT") return;
    region.innerHTML = e.data;
    show("live", "ok");
  });
  es.addEventListener("ended", () => {
    es.close();
    window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname);
  });
})();
