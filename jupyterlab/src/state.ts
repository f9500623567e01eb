// What the server extension answers at nbidle/state, and a client for its
// three endpoints. No JupyterLab imports: the requester is passed in, so
// the parsing is testable on its own.

export type Phase = 'running' | 'warning' | 'stopping' | 'stopped';

export interface KeptRunning {
  until: number;
  by?: string | null;
}

/** nbidle's last PUT (or the stopped notebook's stand-in's state). */
export interface NbidleState {
  version: number;
  notebook?: { namespace?: string | null; name?: string | null } | null;
  phase: Phase;
  sent_at?: number | null;
  stops_at?: number | null;
  warn_before_seconds?: number | null;
  idle_after_seconds?: number | null;
  warning_since?: number | null;
  kept_running?: KeptRunning | null;
  keep_running_for?: string | null;
  page_url?: string | null;
  reason?: string | null;
  // Only from the stand-in of a stopped notebook.
  stopped_at?: number | null;
  by?: string | null;
  message?: string | null;
  start_url?: string | null;
}

export type RequestStatus = 'pending' | 'in_flight' | 'done' | 'failed';

export interface RequestView {
  id: string;
  kind: string;
  for: string | null;
  at: number;
  status: RequestStatus;
  message?: string | null;
}

export interface StateView {
  state: NbidleState | null;
  received_at: number | null;
  requests: RequestView[];
}

/** A state older than this (by received_at) is treated as unknown. */
export const STALE_SECONDS = 3 * 60;

const PHASES: Phase[] = ['running', 'warning', 'stopping', 'stopped'];
const STATUSES: RequestStatus[] = ['pending', 'in_flight', 'done', 'failed'];

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/** The state from GET nbidle/state, or null when it is not one we understand. */
export function parseState(value: unknown): NbidleState | null {
  if (!isObject(value) || !PHASES.includes(value.phase as Phase)) {
    return null;
  }
  const kept = isObject(value.kept_running) ? value.kept_running : null;
  const notebook = isObject(value.notebook) ? value.notebook : null;
  return {
    version: num(value.version) ?? 1,
    notebook: notebook
      ? { namespace: str(notebook.namespace), name: str(notebook.name) }
      : null,
    phase: value.phase as Phase,
    sent_at: num(value.sent_at),
    stops_at: num(value.stops_at),
    warn_before_seconds: num(value.warn_before_seconds),
    idle_after_seconds: num(value.idle_after_seconds),
    warning_since: num(value.warning_since),
    kept_running:
      kept && num(kept.until) !== null
        ? { until: num(kept.until) as number, by: str(kept.by) }
        : null,
    keep_running_for: str(value.keep_running_for),
    page_url: str(value.page_url),
    reason: str(value.reason),
    stopped_at: num(value.stopped_at),
    by: str(value.by),
    message: str(value.message),
    start_url: str(value.start_url)
  };
}

export function parseView(value: unknown): StateView {
  const body = isObject(value) ? value : {};
  const requests: RequestView[] = [];
  for (const r of Array.isArray(body.requests) ? body.requests : []) {
    if (
      isObject(r) &&
      typeof r.id === 'string' &&
      STATUSES.includes(r.status as RequestStatus)
    ) {
      requests.push({
        id: r.id,
        kind: str(r.kind) ?? 'keep_running',
        for: str(r.for),
        at: num(r.at) ?? 0,
        status: r.status as RequestStatus,
        message: str(r.message)
      });
    }
  }
  return {
    state: parseState(body.state),
    received_at: num(body.received_at),
    requests
  };
}

/** The view's state when it is recent enough to act on, else null. */
export function currentState(view: StateView, now: number): NbidleState | null {
  if (!view.state || view.received_at === null) {
    return null;
  }
  return now - view.received_at > STALE_SECONDS ? null : view.state;
}

/** Sends a request to a path under Jupyter's base URL, with Jupyter's auth. */
export type Requester = (path: string, init: RequestInit) => Promise<Response>;

async function errorMessage(response: Response): Promise<string> {
  try {
    const body = await response.json();
    if (isObject(body) && typeof body.message === 'string') {
      return body.message;
    }
  } catch {
    // Not JSON: the status says enough.
  }
  return `${response.status} ${response.statusText}`.trim();
}

export class NbidleClient {
  constructor(private readonly request: Requester) {}

  /** The view, or 'absent' when this Jupyter has no nbidle server extension. */
  async getState(): Promise<StateView | 'absent'> {
    const response = await this.request('nbidle/state', { method: 'GET' });
    if (response.status === 404) {
      return 'absent';
    }
    if (!response.ok) {
      throw new Error(await errorMessage(response));
    }
    return parseView(await response.json());
  }

  /** Asks nbidle to keep the notebook running; the request's id. */
  async keep(duration: string): Promise<string> {
    const response = await this.request('nbidle/keep', {
      method: 'POST',
      body: JSON.stringify({ for: duration }),
      headers: { 'Content-Type': 'application/json' }
    });
    if (response.status !== 202) {
      throw new Error(await errorMessage(response));
    }
    const body = await response.json();
    if (!isObject(body) || typeof body.id !== 'string') {
      throw new Error('the server extension answered without a request id');
    }
    return body.id;
  }

  /** Tells nbidle, through Jupyter's own metrics, that someone works here. */
  async activity(): Promise<void> {
    const response = await this.request('nbidle/activity', {
      method: 'POST',
      body: '{}',
      headers: { 'Content-Type': 'application/json' }
    });
    if (response.status !== 204) {
      throw new Error(await errorMessage(response));
    }
  }
}
