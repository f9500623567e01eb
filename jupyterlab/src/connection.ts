// What to do when Jupyter's connection is lost and it was not nbidle's
// stop: what JupyterLab itself does. Under JupyterHub that is the hub
// extension's dialog (its provider is the one this package replaces):
// "Server unavailable or unreachable" with Restart, which runs the hub
// extension's restart command (it opens the hub's spawn page). Elsewhere,
// JupyterLab's plain connection-lost message.

export const HUB_LOST_TITLE = 'Server unavailable or unreachable';
export const HUB_RESTART_COMMAND = 'hub:restart';

export function hubLostBody(baseUrl: string): string {
  return `Your server at ${baseUrl} is not running.\nWould you like to restart it?`;
}

export interface FallbackDeps {
  /** PageConfig's hubPrefix: set when JupyterHub serves this JupyterLab. */
  hubPrefix: string;
  baseUrl: string;
  /** Shows a dialog with Restart and Dismiss; true for Restart. */
  askRestart(title: string, body: string): Promise<boolean>;
  /** Asks the hub to start the server again. */
  restart(): Promise<void>;
  /** Tells JupyterLab whether it is connected, as the hub extension does. */
  setConnected(connected: boolean): void;
  /** JupyterLab's own connection-lost message. */
  plain(): Promise<void>;
}

/** The connection-lost handler JupyterLab would have used. */
export function fallbackConnectionLost(deps: FallbackDeps): () => Promise<void> {
  if (!deps.hubPrefix) {
    return () => deps.plain();
  }
  let showing = false;
  return async () => {
    // One dialog however many requests fail meanwhile.
    if (showing) {
      return;
    }
    showing = true;
    deps.setConnected(false);
    let restart = false;
    try {
      restart = await deps.askRestart(HUB_LOST_TITLE, hubLostBody(deps.baseUrl));
    } finally {
      deps.setConnected(true);
      showing = false;
    }
    if (restart) {
      await deps.restart();
    }
  };
}

/**
 * The hub's page that starts this server again. Unlike the hub extension's
 * `/hub/spawn`, it names the server's user whenever it is known, so an
 * admin or a person the server is shared with starts this server, not
 * one of their own.
 */
export function hubSpawnUrl(
  hubHost: string,
  hubPrefix: string,
  hubUser: string,
  hubServerName: string
): string {
  const join = (...parts: string[]) =>
    parts
      .filter(p => p)
      .map((p, i) => (i === 0 ? p.replace(/\/+$/, '') : p.replace(/^\/+|\/+$/g, '')))
      .join('/');
  const spawn = join(hubPrefix, 'spawn');
  if (!hubUser) {
    return hubHost + spawn;
  }
  const user = encodeURIComponent(hubUser);
  return hubHost + join(spawn, user, hubServerName ? encodeURIComponent(hubServerName) : '');
}
