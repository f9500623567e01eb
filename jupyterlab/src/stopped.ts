// The stopped notebook's dialog: what it says and the link to start again.
import { overdue } from './countdown';
import { NbidleState } from './state';

export const STOPPED_TITLE = 'This notebook was stopped';
export const START_LABEL = 'Start it again';

export interface StoppedView {
  message: string;
  /** Where "Start it again" leads; null hides the link. */
  href: string | null;
}

/**
 * `candidate` when it is safe as a link from this page: an http(s) URL, or
 * a relative one that stays on `origin`; else null.
 */
export function safeLink(candidate: string | null | undefined, origin: string): string | null {
  if (!candidate) {
    return null;
  }
  let absolute: URL | null = null;
  try {
    absolute = new URL(candidate);
  } catch {
    // Relative: checked against the page's origin below.
  }
  if (absolute) {
    return absolute.protocol === 'http:' || absolute.protocol === 'https:' ? candidate : null;
  }
  try {
    const resolved = new URL(candidate, origin);
    return resolved.origin === new URL(origin).origin ? candidate : null;
  } catch {
    return null;
  }
}

/** The first of `candidates` safe as a link, or null. */
export function firstSafeLink(
  candidates: (string | null | undefined)[],
  origin: string
): string | null {
  for (const candidate of candidates) {
    const link = safeLink(candidate, origin);
    if (link !== null) {
      return link;
    }
  }
  return null;
}

function name(state: NbidleState): string {
  return state.notebook?.name || 'This notebook';
}

/**
 * What to show when the stand-in reports the notebook stopped ('state'), or
 * when Jupyter's connection is lost ('connection') and `last` (the last
 * recent state) says nbidle was stopping it; null means "not stopped by
 * nbidle as far as we know". `hubStart`: the JupyterHub page that starts
 * this server again, when a Hub serves this JupyterLab.
 */
export function stoppedView(
  last: NbidleState | null,
  cause: 'state' | 'connection',
  now: number,
  baseUrl: string,
  origin: string = globalThis.location?.origin ?? 'http://localhost',
  hubStart: string | null = null
): StoppedView | null {
  if (!last) {
    return null;
  }
  if (last.phase === 'stopped') {
    return {
      message: last.message || `${name(last)} was stopped by nbidle; your files are kept.`,
      // The stand-in answers on the notebook's own address, so Jupyter's
      // base URL is the notebook's, and is where its Start lives.
      href: firstSafeLink([last.start_url, last.page_url, baseUrl], origin)
    };
  }
  if (cause !== 'connection') {
    return null;
  }
  if (last.phase !== 'stopping' && !overdue(last, now)) {
    return null;
  }
  const why = last.reason ? ` ${last.reason}` : ' because nothing had run';
  return {
    message: `${name(last)} was stopped by nbidle${why}; your files are kept.`,
    // Not Jupyter's base URL: where the notebook ran (a pod, a hub's
    // server) has nothing to start it. Under JupyterHub its spawn page
    // does, with the sign-in the person already has (nbidle's page wants
    // a token of nbidle's); elsewhere only nbidle's page does.
    href: firstSafeLink([hubStart, last.page_url], origin)
  };
}
