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


def test_older_push_keeps_the_newer_state_but_still_hands_out_requests():
    clock = Clock()
    store = Store(clock)
    newer = dict(state(), phase="stopping", sent_at=1764650100.0, reason="after 30 min without activity")
    store.put(newer)
    request_id = store.keep({"for": "4h"}, "ada")
    clock.now += 5
    older = dict(state(), phase="warning", sent_at=1764650050.0)
    handed = store.put(older)["requests"]
    assert [r["id"] for r in handed] == [request_id]
    view = store.view()
    assert view["state"]["phase"] == "stopping"
    assert view["state"]["sent_at"] == 1764650100.0
    assert view["received_at"] == 1764650000.0
    # A push as new as the stored one replaces it.
    store.put(dict(state(), phase="running", sent_at=1764650100.0))
    assert store.view()["state"]["phase"] == "running"
    assert store.view()["received_at"] == clock.now


def test_user_name_prefers_the_login_over_the_display_name():
    from jupyter_server.auth import User

    from nbidle_jupyterlab.handlers import _user_name

    assert _user_name(User(username="ada", name="Ada Lovelace")) == "ada"
    assert _user_name(User(username="ada")) == "ada"
    assert _user_name({"username": "bob", "name": "Bob B"}) == "bob"
    assert _user_name({"name": "carol"}) == "carol"
    assert _user_name("dan") == "dan"
