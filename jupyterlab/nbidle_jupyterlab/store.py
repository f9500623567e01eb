"""What nbidle last told this server, and the Keep running requests people made.

Kept in memory in the server process and bounded: a state body of at most
MAX_BODY_BYTES, at most MAX_PENDING requests waiting for nbidle, and requests
remembered for HISTORY_SECONDS.
"""

import time
import uuid

MAX_BODY_BYTES = 16 * 1024
MAX_PENDING = 4
HISTORY_SECONDS = 10 * 60
# A finished request stays visible this long even when the history is full
# of newer ones; beyond MAX_HISTORY the oldest go first.
MAX_HISTORY = 32

PHASES = ("running", "warning", "stopping")


class Invalid(Exception):
    """A body that breaks the contract; the message names the field."""

    def __init__(self, field, problem):
        super().__init__(f"{field}: {problem}")
        self.field = field


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(body, field, required=False):
    value = body.get(field)
    if value is None:
        if required:
            raise Invalid(field, "required, a number")
        return
    if not _is_number(value):
        raise Invalid(field, "must be a number" if required else "must be a number or null")


def _string(body, field, path=None):
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise Invalid(path or field, "must be a string or null")


def validate_state(body):
    """Checks a PUT body; returns its results list. Unknown fields are ignored."""
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Invalid("version", "required, an integer")
    notebook = body.get("notebook")
    if notebook is not None:
        if not isinstance(notebook, dict):
            raise Invalid("notebook", "must be an object or null")
        for key in ("namespace", "name"):
            _string(notebook, key, f"notebook.{key}")
    if body.get("phase") not in PHASES:
        raise Invalid("phase", "required, one of " + ", ".join(PHASES))
    _number(body, "sent_at", required=True)
    for field in ("stops_at", "warn_before_seconds", "idle_after_seconds", "warning_since"):
        _number(body, field)
    kept = body.get("kept_running")
    if kept is not None:
        if not isinstance(kept, dict):
            raise Invalid("kept_running", "must be an object or null")
        if not _is_number(kept.get("until")):
            raise Invalid("kept_running.until", "required, a number")
        _string(kept, "by", "kept_running.by")
    for field in ("keep_running_for", "page_url", "reason"):
        _string(body, field)
    results = body.get("results")
    if results is None:
        return []
    if not isinstance(results, list):
        raise Invalid("results", "must be a list or null")
    for i, result in enumerate(results):
        if not isinstance(result, dict):
            raise Invalid(f"results[{i}]", "must be an object")
        if not isinstance(result.get("id"), str):
            raise Invalid(f"results[{i}].id", "required, a string")
        if not isinstance(result.get("ok"), bool):
            raise Invalid(f"results[{i}].ok", "required, true or false")
        _string(result, "message", f"results[{i}].message")
    return results


class Conflict(Exception):
    """A Keep running request that does not match what nbidle offers."""

    def __init__(self, field, problem):
        super().__init__(f"{field}: {problem}")
        self.field = field


class Store:
    def __init__(self, clock=time.time):
        self._clock = clock
        self.state = None
        self.received_at = None
        # Oldest first. Each: id, kind, for, by, at, status, message, updated.
        self._requests = []

    def put(self, body):
        """Takes nbidle's state (validated) and hands out the pending requests."""
        results = validate_state(body)
        now = self._clock()
        self._expire(now)
        # Pushes can overtake each other (a retried PUT, a "stopping" sent
        # beside a round's push): an older one must not undo a newer state.
        # Its results and the requests handed out still count.
        if self.state is None or body["sent_at"] >= self.state["sent_at"]:
            self.state = {k: v for k, v in body.items() if k != "results"}
            self.received_at = now
        by_id = {r["id"]: r for r in self._requests}
        for result in results:
            request = by_id.get(result["id"])
            if request is None or request["status"] in ("done", "failed"):
                continue
            request["status"] = "done" if result["ok"] else "failed"
            request["message"] = result.get("message")
            request["updated"] = now
        handed = []
        for request in self._requests:
            if request["status"] == "pending":
                request["status"] = "in_flight"
                request["updated"] = now
                handed.append(
                    {
                        "id": request["id"],
                        "kind": request["kind"],
                        "for": request["for"],
                        "by": request["by"],
                        "at": request["at"],
                    }
                )
        return {"requests": handed}

    def keep(self, body, by):
        """A person's Keep running; returns the request's id."""
        if not isinstance(body, dict):
            raise Invalid("body", "must be a JSON object")
        duration = body.get("for")
        if not isinstance(duration, str):
            raise Invalid("for", "required, a string")
        if self.state is None:
            raise Conflict("for", "nbidle has not reported this notebook's state yet")
        offered = self.state.get("keep_running_for")
        if offered is None:
            raise Conflict("for", "nbidle offers no Keep running for this notebook")
        if duration != offered:
            raise Conflict("for", f"nbidle offers {offered!r}, not {duration!r}")
        now = self._clock()
        self._expire(now)
        for request in self._requests:
            if request["status"] == "pending" and request["for"] == duration:
                return request["id"]
        pending = [r for r in self._requests if r["status"] == "pending"]
        while len(pending) >= MAX_PENDING:
            self._requests.remove(pending.pop(0))
        self._requests.append(
            {
                "id": uuid.uuid4().hex,
                "kind": "keep_running",
                "for": duration,
                "by": by,
                "at": now,
                "status": "pending",
                "message": None,
                "updated": now,
            }
        )
        while len(self._requests) > MAX_HISTORY:
            finished = [r for r in self._requests if r["status"] in ("done", "failed")]
            self._requests.remove(finished[0] if finished else self._requests[0])
        return self._requests[-1]["id"]

    def view(self):
        """What the frontend reads: the state, when it came, recent requests."""
        now = self._clock()
        self._expire(now)
        return {
            "state": self.state,
            "received_at": self.received_at,
            "requests": [
                {
                    "id": r["id"],
                    "kind": r["kind"],
                    "for": r["for"],
                    "at": r["at"],
                    "status": r["status"],
                    "message": r["message"],
                }
                for r in self._requests
            ],
        }

    def _expire(self, now):
        kept = []
        for request in self._requests:
            if request["status"] in ("pending", "in_flight"):
                if now - request["at"] >= HISTORY_SECONDS:
                    request["status"] = "failed"
                    request["message"] = "nbidle did not answer within 10 minutes"
                    request["updated"] = now
                kept.append(request)
            elif now - request["updated"] < HISTORY_SECONDS:
                kept.append(request)
        self._requests = kept
