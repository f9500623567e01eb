// Waits until the notebook's own Jupyter answers its origin, then loads it.
// Answers of nbidle's stopped-notebook page carry x-nbidle-stopped.
(function () {
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
        if (!r.headers.get("x-nbidle-stopped")) {
          location.replace(next);
          return;
        }
        return r.json().then(function (j) {
          if (j.reason === "failed" && gone) {
            status.textContent = j.error;
          } else {
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
