// Waits until the notebook's own Jupyter answers its origin, then loads it.
// Answers of nbidle's stopped-notebook page carry x-nbidle-stopped.

// Whether an answer of <base>api is Jupyter's: 200, not nbidle's page,
// and Jupyter's JSON ({"version": "2.14.2"}). Anything else (another
// program that took the port, a proxy's error page) is waited out, so it
// never sends the person round in a loop.
function jupyterAnswered(status, stoppedMark, body) {
  return status === 200 && !stoppedMark && body !== null &&
    typeof body === "object" && typeof body.version === "string";
}

(function () {
  if (typeof document === "undefined") {
    return;
  }
  var el = document.getElementById("waiting");
  var api = el.dataset.api, next = el.dataset.next;
  var status = document.getElementById("status");
  var tries = 0;
  // Failed counts once the page has gone away (the start began) and come
  // back: before that it may be the failure this start is repairing.
  var gone = false;
  function again() {
    tries += 1;
    if (tries < 300) {
      setTimeout(poll, 1000);
    } else {
      status.textContent = "The notebook has not answered for 5 minutes; reload to try again.";
    }
  }
  function poll() {
    fetch(api, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        var stopped = !!r.headers.get("x-nbidle-stopped");
        return r.json().catch(function () { return null; }).then(function (j) {
          if (jupyterAnswered(r.status, stopped, j)) {
            location.replace(next);
          } else if (stopped && j && j.reason === "failed" && gone) {
            status.textContent = j.error;
          } else {
            if (!stopped) {
              gone = true;
              status.textContent = "Something other than Jupyter answers at this address (HTTP " +
                r.status + "); waiting for Jupyter.";
            }
            again();
          }
        });
      })
      .catch(function () {
        gone = true;
        again();
      });
  }
  poll();
})();
