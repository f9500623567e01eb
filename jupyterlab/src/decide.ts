// What the dialogs should do next, apart from the DOM, so it can be tested.

export type WarningAction = 'open' | 'close' | 'none';

/**
 * The warning dialog for the current warning `key` (null: no warning now):
 * closed once the warning ends (activity, a Keep running, the clearing
 * push), opened once per warning not seen before, and not over the
 * stopped dialog.
 */
export function warningAction(
  key: string | null,
  seen: { has(key: string): boolean },
  open: boolean,
  stoppedShown: boolean
): WarningAction {
  if (key === null) {
    return open ? 'close' : 'none';
  }
  return !open && !stoppedShown && !seen.has(key) ? 'open' : 'none';
}

/**
 * A failed Keep running: the warning dialog again, with why, while the
 * warning lasts, since it is another chance to click.
 */
export function reopenAfterFailedKeep(key: string | null, stoppedShown: boolean): boolean {
  return key !== null && !stoppedShown;
}

/** The stopped dialog: shown until dismissed, then never again in this page. */
export class StoppedPresence {
  shown = false;
  dismissed = false;

  /** 'open' or 'update' when the dialog shows the stop; null once dismissed. */
  show(): 'open' | 'update' | null {
    if (this.shown) {
      return 'update';
    }
    if (this.dismissed) {
      return null;
    }
    this.shown = true;
    return 'open';
  }

  dismiss(): void {
    this.shown = false;
    this.dismissed = true;
  }
}
