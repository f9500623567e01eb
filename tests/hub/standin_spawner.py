"""A JupyterHub spawner whose servers are only an address.

Every server it "starts" is one shared HTTP stand-in (a process the
benchmark runs), so a Hub can hold thousands of running servers on a small
machine while its API, database and proxy do their real work: the routes
are added and removed by configurable-http-proxy, the spawns and stops go
through the Hub's own code. Used by benches/jupyterhub.rs.
"""

from jupyterhub.spawner import Spawner
from traitlets import Integer


class StandInSpawner(Spawner):
    standin_port = Integer(help="The stand-in HTTP server's port.").tag(config=True)

    # Not kept across a Hub restart: a restarted Hub sees every server gone.
    _up = False

    async def start(self):
        self._up = True
        return ("127.0.0.1", self.standin_port)

    async def poll(self):
        return None if self._up else 0

    async def stop(self, now=False):
        self._up = False
