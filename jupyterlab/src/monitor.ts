// Polls the server extension and remembers what it said.
import { pollDelayMs } from './countdown';
import {
  currentState,
  NbidleClient,
  NbidleState,
  RequestView,
  StateView
} from './state';

export type Clock = () => number;

export const unixNow: Clock = () => Date.now() / 1000;

export class Monitor {
  /** The last answer. */
  view: StateView | null = null;
  /** Its state, when it was recent at the time it was read. */
  state: NbidleState | null = null;
  /** The last recent state ever read; kept while the server is away. */
  lastKnown: NbidleState | null = null;
  /** This Jupyter has no nbidle server extension: polling stopped. */
  absent = false;
  /** A request whose answer is awaited: poll often until it comes. */
  waitingFor: string | null = null;
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

  request(id: string): RequestView | undefined {
    return this.view?.requests.find(r => r.id === id);
  }

  private async poll(): Promise<void> {
    this.timer = null;
    let answer: StateView | 'absent' | null = null;
    try {
      answer = await this.client.getState();
    } catch {
      // The server is away or failed: keep asking; the stand-in of a
      // stopped notebook may answer on the same address.
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
      if (this.state) {
        this.lastKnown = this.state;
      }
    }
    this.changed();
    if (this.timer === null) {
      this.schedule(pollDelayMs(this.state, this.now(), this.waitingFor !== null));
    }
  }

  private schedule(delayMs: number): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => void this.poll(), delayMs);
  }
}
