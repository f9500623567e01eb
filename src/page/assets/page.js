// Refreshes the notebooks' states and counts their time left down. The
// page works without it: every action is a plain form.
(function () {
  "use strict";
  var main = document.querySelector("main[data-query]");
  if (!main) return;
  var offset = Number(main.dataset.now) - Date.now() / 1000;
  function now() { return Date.now() / 1000 + offset; }
  // As the server writes them (render::left, render::stops_in).
  function span(s) {
    var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60, parts = [];
    if (h) parts.push(h + " h");
    if (m) parts.push(m + " min");
    if (sec || !parts.length) parts.push(sec + " s");
    return parts.join(" ");
  }
  function left(deadline) {
    var s = Math.ceil(deadline - now());
    return s <= 0 ? "due now" : span(s) + " left";
  }
  function stopsIn(due) {
    var s = Math.ceil(due - now());
    return s <= 0 ? "Stops now" : "Stops in " + span(s);
  }
  function tick() {
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      el.textContent = left(Number(el.dataset.deadline));
    });
    document.querySelectorAll("[data-stops-at]").forEach(function (el) {
      var c = el.querySelector(".countdown");
      if (c) c.textContent = stopsIn(Number(el.dataset.stopsAt));
    });
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text) e.textContent = text;
    return e;
  }
  // The banner render::warning writes, for a warning that began after the
  // page loaded; its Keep running carries the row's Keep running form's
  // fields (CSRF token included), for an hour.
  function banner(tr, due) {
    var div = el("div", { "class": "warning", role: "status", "data-stops-at": due });
    var strong = el("strong");
    strong.appendChild(el("span", { "class": "countdown" }, stopsIn(due)));
    strong.appendChild(document.createTextNode(" unless used"));
    div.appendChild(strong);
    var keep = tr.querySelector("form.keep");
    if (keep) {
      var f = el("form", { "class": "action", method: "post", action: keep.getAttribute("action") });
      keep.querySelectorAll("input[type=hidden]").forEach(function (i) { f.appendChild(i.cloneNode()); });
      f.appendChild(el("input", { type: "hidden", name: "for", value: "1h" }));
      f.appendChild(el("button", { type: "submit", "aria-label": "Keep running " + tr.dataset.id + " for 1 h" }, "Keep running"));
      div.appendChild(document.createTextNode(" \u2014 "));
      div.appendChild(f);
    }
    return div;
  }
  function warn(tr, due) {
    var w = tr.querySelector(".warning");
    if (due == null) {
      if (w) w.remove();
    } else if (w) {
      w.dataset.stopsAt = due;
    } else {
      var cell = tr.querySelector(".status");
      if (cell) cell.parentNode.appendChild(banner(tr, due));
    }
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
    var pending = tr.querySelector(".pending");
    if (pending) pending.textContent = s.pending || "";
    var d = tr.querySelector("[data-deadline]");
    if (d) {
      if (s.deadline) d.dataset.deadline = s.deadline;
      else d.removeAttribute("data-deadline");
    }
    warn(tr, s.warning_due);
  }
  function refresh() {
    var q = main.dataset.query;
    fetch("/page/states" + (q ? "?" + q : ""), { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) return;
        offset = body.now - Date.now() / 1000;
        var summary = document.querySelector(".summary");
        if (summary && body.summary) summary.textContent = body.summary;
        body.notebooks.forEach(apply);
        tick();
      })
      .catch(function () {});
  }
  tick();
  setInterval(tick, 1000);
  setInterval(refresh, 10000);
})();
