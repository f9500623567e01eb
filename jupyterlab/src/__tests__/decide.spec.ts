import { reopenAfterFailedKeep, StoppedPresence, warningAction } from '../decide';
import { SeenWarnings } from '../seen';

describe('warningAction', () => {
  it('closes an open warning dialog once the warning ends', () => {
    const seen = new SeenWarnings(null);
    seen.add('k');
    expect(warningAction(null, seen, true, false)).toBe('close');
    expect(warningAction(null, seen, false, false)).toBe('none');
  });
  it('opens once per warning, never over the stopped dialog', () => {
    const seen = new SeenWarnings(null);
    expect(warningAction('k', seen, false, false)).toBe('open');
    expect(warningAction('k', seen, false, true)).toBe('none');
    seen.add('k');
    expect(warningAction('k', seen, false, false)).toBe('none');
    expect(warningAction('k', seen, true, false)).toBe('none');
  });
});

describe('reopenAfterFailedKeep', () => {
  it('reopens while the warning lasts and nothing says stopped', () => {
    expect(reopenAfterFailedKeep('k', false)).toBe(true);
    expect(reopenAfterFailedKeep(null, false)).toBe(false);
    expect(reopenAfterFailedKeep('k', true)).toBe(false);
  });
});

describe('StoppedPresence', () => {
  it('says nothing is shown after a Dismiss, so a lost connection goes to JupyterLab', () => {
    const p = new StoppedPresence();
    expect(p.show()).toBe('open');
    expect(p.show()).toBe('update');
    p.dismiss();
    expect(p.show()).toBeNull();
  });
});
