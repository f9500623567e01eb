// Polls the server extension and remembers what it said.
import { pollDelayMs } from './countdown';
import {
  currentState,
  NbidleClient,
  NbidleState,
  RequestView,
  STALE_SECONDS,
  StateView
} from './state';

export type Clock = () => number;

export const unixNow: Clock = () => Date.now() / 1000;

/** How long a Keep running's answer is waited for (the server gives up at 10 min). */
export const WAIT_SECONDS = 11 * 60;

interface Known {
  state: NbidleState | null;
  at: number;
}

interface Waiting {
  id: string;
  since: number;
}

export class Monitor {
  /** The last answer. */
  view: StateView | null = null;
  /** Its state, when it was recent at the time it was read. */
  state: NbidleState | null = null;
  /** This Jupyter has no nbidle server extension: polling stopped. */
  absent = false;
  /** Asks in a row that failed. */
  errors = 0;
  // What the last successful answer said (null included), and when it came.
  private known: Known | null = null;
  private waiting: Waiting | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(
    readonly client: NbidleClient,
    private readonly changed: () => void,
    private readonly now: Clock = unixNow
  ) {}

  start(): void {
    void this.poll();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Asks again right away (after a click). */
  refresh(): void {
    if (!this.absent && !this.stopped) {
      this.schedule(0);
    }
  }

  /**
   * The state of the last successful answer, kept while the server is
   * away, but only while that answer is recent.
   */
  get lastKnown(): NbidleState | null {
    if (!this.known || this.now() - this.known.at > STALE_SECONDS) {
      return null;
    }
    return this.known.state;
  }

  /** A request whose answer is awaited: polled often until it comes. */
  get waitingFor(): string | null {
    if (this.waiting && this.now() - this.waiting.since > WAIT_SECONDS) {
      this.waiting = null;
    }
    return this.waiting?.id ?? null;
  }

  set waitingFor(id: string | null) {
    this.waiting = id === null ? null : { id, since: this.now() };
  }

  request(id: string): RequestView | undefined {
    return this.view?.requests.find(r => r.id === id);
  }

  /** Asks once now, then schedules the next ask. */
  async poll(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    let answer: StateView | 'absent' | null = null;
    const askedAt = this.now();
    try {
      answer = await this.client.getState();
      this.errors = 0;
    } catch {
      // The server is away or failed: keep asking, less and less often;
      // the stand-in of a stopped notebook may answer on the same address.
      this.errors += 1;
    }
    if (this.stopped) {
      return;
    }
    if (answer === 'absent') {
      this.absent = true;
      this.state = null;
      this.changed();
      return;
    }
    if (answer) {
      this.view = answer;
      this.state = currentState(answer, this.now());
      this.known = { state: this.state, at: this.now() };
      const id = this.waitingFor;
      // An answer to an ask sent before the request was made may not list it yet.
      const after = this.waiting !== null && askedAt >= this.waiting.since;
      if (id !== null && after && !answer.requests.some(r => r.id === id)) {
        // The server no longer knows it (restarted, or it aged out).
        this.waitingFor = null;
      }
    }
    this.changed();
    if (this.timer === null) {
      this.schedule(pollDelayMs(this.state, this.now(), this.waitingFor !== null, this.errors));
    }
  }

  private schedule(delayMs: number): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => void this.poll(), delayMs);
  }
}
