// The stopped notebook's dialog: what it says and the link to start again.
import { keptCovers } from './countdown';
import { NbidleState } from './state';

export const STOPPED_TITLE = 'This notebook was stopped';
export const START_LABEL = 'Start it again';

export interface StoppedView {
  message: string;
  href: string;
}

function name(state: NbidleState): string {
  return state.notebook?.name || 'This notebook';
}

/**
 * What to show when the stand-in reports the notebook stopped ('state'), or
 * when Jupyter's connection is lost ('connection') and `last` (the last
 * recent state) says nbidle was stopping it; null means "not stopped by
 * nbidle as far as we know".
 */
export function stoppedView(
  last: NbidleState | null,
  cause: 'state' | 'connection',
  now: number,
  baseUrl: string
): StoppedView | null {
  if (!last) {
    return null;
  }
  if (last.phase === 'stopped') {
    return {
      message: last.message || `${name(last)} was stopped by nbidle; your files are kept.`,
      href: last.start_url || last.page_url || baseUrl
    };
  }
  if (cause !== 'connection') {
    return null;
  }
  const overdue =
    last.stops_at !== null &&
    last.stops_at !== undefined &&
    last.stops_at <= now &&
    !keptCovers(last, now);
  if (last.phase !== 'stopping' && !overdue) {
    return null;
  }
  const why = last.reason ? ` ${last.reason}` : ' because nothing had run';
  return {
    message: `${name(last)} was stopped by nbidle${why}; your files are kept.`,
    href: last.page_url || baseUrl
  };
}
