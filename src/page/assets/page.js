// Refreshes the notebooks' states and counts their time left down. The
// page works without it: every action is a plain form.
(function () {
  "use strict";
  var main = document.querySelector("main[data-query]");
  if (!main) return;
  var offset = Number(main.dataset.now) - Date.now() / 1000;
  function now() { return Date.now() / 1000 + offset; }
  function left(deadline) {
    var s = Math.ceil(deadline - now());
    if (s <= 0) return "due now";
    var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60, parts = [];
    if (h) parts.push(h + " h");
    if (m) parts.push(m + " min");
    if (sec || !parts.length) parts.push(sec + " s");
    return parts.join(" ") + " left";
  }
  function tick() {
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      el.textContent = left(Number(el.dataset.deadline));
    });
  }
  function row(id) {
    var rows = document.querySelectorAll("tr[data-id]");
    for (var i = 0; i < rows.length; i++) if (rows[i].dataset.id === id) return rows[i];
    return null;
  }
  function apply(s) {
    var tr = row(s.id);
    if (!tr) return;
    var st = tr.querySelector(".status");
    if (st && st.textContent !== s.status) {
      st.textContent = s.status;
      st.className = "status s-" + s.status;
    }
    var stop = tr.querySelector("form[data-kind=stop]");
    var start = tr.querySelector("form[data-kind=start]");
    if (stop) stop.hidden = !s.can_stop;
    if (start) start.hidden = !s.can_start;
    var d = tr.querySelector("[data-deadline]");
    if (d) {
      if (s.deadline) d.dataset.deadline = s.deadline;
      else d.removeAttribute("data-deadline");
    }
  }
  function refresh() {
    var q = main.dataset.query;
    fetch("/page/states" + (q ? "?" + q : ""), { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) return;
        offset = body.now - Date.now() / 1000;
        body.notebooks.forEach(apply);
        tick();
      })
      .catch(function () {});
  }
  tick();
  setInterval(tick, 1000);
  setInterval(refresh, 10000);
})();
