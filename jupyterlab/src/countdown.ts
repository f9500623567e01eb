// When to show what: the status bar's countdown, the warning dialog's
// words, how often to ask the server extension. Times are unix seconds.
import { NbidleState } from './state';

/** "4:32", or "1:02:03" from an hour on; never negative. */
export function formatClock(seconds: number): string {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

const UNITS: Record<string, string> = {
  y: 'y',
  w: 'w',
  d: 'd',
  h: 'h',
  m: 'min',
  s: 's',
  ms: 'ms'
};

/** A duration as nbidle writes it ("4h", "90m", "4h 30m") for people: "4 h". */
export function formatDuration(duration: string): string {
  const compact = duration.replace(/\s+/g, '');
  const parts = [...compact.matchAll(/(\d+)(ms|[ywdhms])/g)];
  if (parts.length === 0 || parts.map(p => p[0]).join('') !== compact) {
    return duration;
  }
  return parts.map(p => `${p[1]} ${UNITS[p[2]]}`).join(' ');
}

/** The local wall-clock time, "16:05". */
export function formatTime(unix: number): string {
  const d = new Date(unix * 1000);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/** True when a Keep running lasts past the moment the notebook would stop. */
export function keptCovers(state: NbidleState, now: number): boolean {
  const kept = state.kept_running;
  if (!kept || kept.until <= now) {
    return false;
  }
  return state.stops_at === null || state.stops_at === undefined || kept.until >= state.stops_at;
}

export interface StatusView {
  visible: boolean;
  text: string;
  title: string;
}

const HIDDEN: StatusView = { visible: false, text: '', title: '' };
const KEPT_SHOWN_SECONDS = 3600;

function idleWords(state: NbidleState): string {
  const idle = state.idle_after_seconds;
  return idle ? ` after ${Math.round(idle / 60)} min without activity` : ' when nothing has run';
}

/** The status bar item for `state` at `now`. */
export function statusView(state: NbidleState | null, now: number): StatusView {
  if (!state || state.phase === 'stopped') {
    return HIDDEN;
  }
  const stopsAt = state.stops_at ?? null;
  const warnBefore = state.warn_before_seconds ?? 0;
  const kept = state.kept_running && state.kept_running.until > now ? state.kept_running : null;
  const soon =
    state.phase === 'warning' ||
    state.phase === 'stopping' ||
    (stopsAt !== null && stopsAt - now <= warnBefore);
  const keptEnding = kept !== null && kept.until - now <= KEPT_SHOWN_SECONDS;
  if (!soon && !keptEnding) {
    return HIDDEN;
  }
  if (kept && state.phase !== 'stopping') {
    const by = kept.by ? ` by ${kept.by}` : '';
    return {
      visible: true,
      text: `Kept running until ${formatTime(kept.until)}`,
      title: `nbidle keeps this notebook running until ${formatTime(kept.until)} (asked${by}); after that it stops it${idleWords(state)}.`
    };
  }
  if (state.phase === 'stopping') {
    const why = state.reason ? ` ${state.reason}` : '';
    return {
      visible: true,
      text: 'Stopping now',
      title: `nbidle is stopping this notebook${why}. Your files are kept.`
    };
  }
  if (stopsAt === null) {
    return {
      visible: true,
      text: 'Stops soon',
      title: `nbidle will stop this notebook soon${idleWords(state)}. Run something to keep it going.`
    };
  }
  return {
    visible: true,
    text: `Stops in ${formatClock(stopsAt - now)}`,
    title: `nbidle stops this notebook at ${formatTime(stopsAt)}${idleWords(state)}. Run a cell, or use "Save and keep working", to start the clock again.`
  };
}

/** "in 5 minutes" until stops_at. */
export function minutesPhrase(state: NbidleState, now: number): string {
  if (state.stops_at === null || state.stops_at === undefined) {
    return 'soon';
  }
  const left = state.stops_at - now;
  if (left < 60) {
    return left <= 0 ? 'now' : 'in less than a minute';
  }
  const minutes = Math.ceil(left / 60);
  return minutes === 1 ? 'in 1 minute' : `in ${minutes} minutes`;
}

export const WARNING_TITLE = 'This notebook will be stopped';

export function warningText(state: NbidleState, now: number): string {
  return `This notebook will be stopped ${minutesPhrase(state, now)} because nothing has run. Unsaved changes are lost.`;
}

export function keepLabel(duration: string): string {
  return `Keep running for ${formatDuration(duration)}`;
}

/**
 * The warning this state is, when its dialog should show: one key per
 * warning (its warning_since), none when a Keep running covers the stop.
 */
export function warningKey(state: NbidleState | null, now: number): string | null {
  if (!state || state.phase !== 'warning' || keptCovers(state, now)) {
    return null;
  }
  const name = state.notebook ? `${state.notebook.namespace}/${state.notebook.name}` : '';
  return `${name}@${state.warning_since ?? 'unknown'}`;
}

/**
 * How long after stops_at a passed deadline still means "being stopped":
 * past this, the deadline was missed (nbidle away, a silence elsewhere) and
 * says nothing any more.
 */
export const OVERDUE_SECONDS = 3 * 60;

/** True when stops_at has passed, recently, and no Keep running covers it. */
export function overdue(state: NbidleState, now: number): boolean {
  const stopsAt = state.stops_at;
  return (
    stopsAt !== null &&
    stopsAt !== undefined &&
    stopsAt <= now &&
    now - stopsAt <= OVERDUE_SECONDS &&
    !keptCovers(state, now)
  );
}

export const POLL_MS = 10000;
export const POLL_NEAR_MS = 2000;
/** The longest wait between asks while they keep failing. */
export const POLL_ERROR_MAX_MS = 30000;
const NEAR_SECONDS = 60;

/**
 * How long to wait before asking for the state again; `errors` is how many
 * asks in a row failed, each doubling the wait up to POLL_ERROR_MAX_MS.
 */
export function pollDelayMs(
  state: NbidleState | null,
  now: number,
  waitingForRequest: boolean,
  errors = 0
): number {
  let delay = POLL_MS;
  const stopsAt = state?.stops_at;
  if (
    waitingForRequest ||
    (stopsAt !== null &&
      stopsAt !== undefined &&
      stopsAt - now <= NEAR_SECONDS &&
      now - stopsAt <= OVERDUE_SECONDS)
  ) {
    delay = POLL_NEAR_MS;
  }
  if (errors > 0) {
    delay = Math.max(delay, Math.min(POLL_NEAR_MS * 2 ** errors, POLL_ERROR_MAX_MS));
  }
  return delay;
}
