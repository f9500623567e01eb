"""The store's bounds, with its clock moved by hand."""

from nbidle_jupyterlab.store import HISTORY_SECONDS, MAX_PENDING, Conflict, Store


class Clock:
    def __init__(self):
        self.now = 1764650000.0

    def __call__(self):
        return self.now


def state(keep_for="4h"):
    return {"version": 1, "phase": "warning", "sent_at": 1764650000.0, "keep_running_for": keep_for}


def test_at_most_four_pending_oldest_dropped_first():
    clock = Clock()
    store = Store(clock)
    ids = []
    for hours in range(1, 7):
        # Change what is offered without a PUT handing the requests out.
        store.state = state(f"{hours}h")
        ids.append(store.keep({"for": f"{hours}h"}, "ada"))
        clock.now += 1
    pending = [r["id"] for r in store.view()["requests"] if r["status"] == "pending"]
    assert pending == ids[-MAX_PENDING:]
    handed = store.put(state("6h"))["requests"]
    assert [r["id"] for r in handed] == ids[-MAX_PENDING:]
    assert [r["for"] for r in handed] == ["3h", "4h", "5h", "6h"]
    assert all(r["by"] == "ada" for r in handed)


def test_unanswered_request_fails_after_ten_minutes_then_leaves_history():
    clock = Clock()
    store = Store(clock)
    store.put(state())
    request_id = store.keep({"for": "4h"}, None)
    store.put(state())
    clock.now += HISTORY_SECONDS
    [request] = store.view()["requests"]
    assert (request["id"], request["status"]) == (request_id, "failed")
    assert "10 minutes" in request["message"]
    # A late result does not revive it.
    store.put({**state(), "results": [{"id": request_id, "ok": True, "message": "late"}]})
    assert store.view()["requests"][0]["message"] != "late"
    clock.now += HISTORY_SECONDS
    assert store.view()["requests"] == []


def test_keep_without_state_is_a_conflict():
    store = Store(Clock())
    try:
        store.keep({"for": "4h"}, "ada")
    except Conflict as e:
        assert e.field == "for"
    else:
        raise AssertionError("keep without state was accepted")
