"""nbidle's endpoints in Jupyter: nbidle pushes state, the browser reads it.

Paths under Jupyter's base_url: nbidle/state (PUT by nbidle, GET by the
frontend), nbidle/keep (POST: a person's Keep running), nbidle/activity
(POST: "Save and keep working"). All use Jupyter's own authentication. Only
nbidle/activity counts as activity: the others are polled and pushed all
the time and must not keep a notebook alive.
"""

import json

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .store import MAX_BODY_BYTES, Conflict, Invalid, Store


class _NbidleHandler(APIHandler):
    def initialize(self, store):
        self.store = store

    def _json_body(self):
        if len(self.request.body) > MAX_BODY_BYTES:
            raise web.HTTPError(413, f"body: larger than {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(self.request.body or b"null")
        except ValueError:
            raise web.HTTPError(400, "body: not JSON") from None

    def _reply(self, status, payload):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))


class _Untracked(_NbidleHandler):
    # jupyter_server 2.x reads `_track_activity`; 1.23 too, but both call
    # update_api_activity from finish(), so overriding it covers both.
    _track_activity = False

    def update_api_activity(self):
        return


def _user_name(user):
    # jupyter_server 2's User has both: username is the login, name the
    # display name (which may be a full name or empty).
    for attr in ("username", "name"):
        value = getattr(user, attr, None)
        if isinstance(value, str) and value:
            return value
    if isinstance(user, dict):
        value = user.get("username") or user.get("name")
        if isinstance(value, str):
            return value
    return user if isinstance(user, str) else None


class StateHandler(_Untracked):
    @web.authenticated
    def get(self):
        self._reply(200, self.store.view())

    @web.authenticated
    def put(self):
        body = self._json_body()
        try:
            answer = self.store.put(body)
        except Invalid as e:
            raise web.HTTPError(400, str(e)) from None
        self._reply(200, answer)


class KeepHandler(_Untracked):
    @web.authenticated
    def post(self):
        body = self._json_body()
        try:
            request_id = self.store.keep(body, _user_name(self.current_user))
        except Invalid as e:
            raise web.HTTPError(400, str(e)) from None
        except Conflict as e:
            raise web.HTTPError(409, str(e)) from None
        self._reply(202, {"id": request_id})


class ActivityHandler(_NbidleHandler):
    @web.authenticated
    def post(self):
        # The request itself is the signal: jupyter_server counts it in its
        # http_request_duration_seconds metric and in last_activity.
        self.set_status(204)
        self.finish()


def setup_handlers(web_app):
    store = Store()
    base_url = web_app.settings.get("base_url", "/")
    args = {"store": store}
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base_url, "nbidle/state"), StateHandler, args),
            (url_path_join(base_url, "nbidle/keep"), KeepHandler, args),
            (url_path_join(base_url, "nbidle/activity"), ActivityHandler, args),
        ],
    )
    return store
