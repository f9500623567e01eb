import {
  formatClock,
  formatDuration,
  keepLabel,
  minutesPhrase,
  pollDelayMs,
  statusView,
  warningKey,
  warningText
} from '../countdown';
import { NOW, warningState as state } from './fixtures';

describe('formatClock', () => {
  it('writes minutes and seconds below an hour, hours above', () => {
    expect(formatClock(272)).toBe('4:32');
    expect(formatClock(59.9)).toBe('0:59');
    expect(formatClock(3600)).toBe('1:00:00');
    expect(formatClock(3723)).toBe('1:02:03');
  });
  it('never goes negative', () => {
    expect(formatClock(-5)).toBe('0:00');
  });
});

describe('formatDuration', () => {
  it('spells nbidle durations for people', () => {
    expect(formatDuration('4h')).toBe('4 h');
    expect(formatDuration('90m')).toBe('90 min');
    expect(formatDuration('4h 30m')).toBe('4 h 30 min');
    expect(formatDuration('2d')).toBe('2 d');
  });
  it('leaves what it does not understand alone', () => {
    expect(formatDuration('until Friday')).toBe('until Friday');
    expect(formatDuration('4x')).toBe('4x');
  });
  it('makes the button label', () => {
    expect(keepLabel('4h')).toBe('Keep running for 4 h');
  });
});

describe('statusView', () => {
  it('counts down while the warning fires', () => {
    const v = statusView(state(), NOW);
    expect(v.visible).toBe(true);
    expect(v.text).toBe('Stops in 4:50');
    expect(v.title).toContain('04:38');
    expect(v.title).toContain('after 30 min without activity');
  });
  it('shows within warn_before of stops_at even before the alert fires', () => {
    expect(statusView(state({ phase: 'running', stops_at: NOW + 299 }), NOW).text).toBe('Stops in 4:59');
  });
  it('hides when the stop is further away, unknown or the state is missing', () => {
    expect(statusView(state({ phase: 'running', stops_at: NOW + 301 }), NOW).visible).toBe(false);
    expect(statusView(state({ phase: 'running', stops_at: null }), NOW).visible).toBe(false);
    expect(statusView(null, NOW).visible).toBe(false);
  });
  it('says kept running when a Keep running lasts', () => {
    const v = statusView(state({ kept_running: { until: NOW + 4 * 3600, by: 'ada via JupyterLab' } }), NOW);
    expect(v.text).toBe('Kept running until 08:33');
    expect(v.title).toContain('ada via JupyterLab');
  });
  it('shows a Keep running in its last hour even with no stop near', () => {
    const kept = { until: NOW + 1800, by: null };
    expect(statusView(state({ phase: 'running', stops_at: null, kept_running: kept }), NOW).text).toBe(
      'Kept running until 05:03'
    );
    const longer = { until: NOW + 7200, by: null };
    expect(statusView(state({ phase: 'running', stops_at: null, kept_running: longer }), NOW).visible).toBe(false);
  });
  it('says stopping while nbidle stops it', () => {
    const v = statusView(state({ phase: 'stopping', reason: 'after 30 min without activity' }), NOW);
    expect(v.text).toBe('Stopping now');
    expect(v.title).toContain('after 30 min without activity');
  });
});

describe('the warning dialog', () => {
  it('counts whole minutes up from stops_at', () => {
    expect(warningText(state(), NOW)).toBe(
      'This notebook will be stopped in 5 minutes because nothing has run. Unsaved changes are lost.'
    );
    expect(minutesPhrase(state({ stops_at: NOW + 60 }), NOW)).toBe('in 1 minute');
    expect(minutesPhrase(state({ stops_at: NOW + 61 }), NOW)).toBe('in 2 minutes');
    expect(minutesPhrase(state({ stops_at: NOW + 30 }), NOW)).toBe('in less than a minute');
    expect(minutesPhrase(state({ stops_at: NOW - 1 }), NOW)).toBe('now');
    expect(minutesPhrase(state({ stops_at: null }), NOW)).toBe('soon');
  });
  it('opens once per warning', () => {
    const first = warningKey(state(), NOW);
    expect(first).not.toBeNull();
    expect(warningKey(state({ sent_at: NOW + 15 }), NOW + 15)).toBe(first);
    expect(warningKey(state({ warning_since: NOW + 600 }), NOW + 600)).not.toBe(first);
  });
  it('does not open outside a warning or when Keep running covers the stop', () => {
    expect(warningKey(state({ phase: 'running' }), NOW)).toBeNull();
    expect(warningKey(state({ kept_running: { until: NOW + 3600 } }), NOW)).toBeNull();
    expect(warningKey(state({ kept_running: { until: NOW + 100 } }), NOW)).not.toBeNull();
  });
});

describe('pollDelayMs', () => {
  it('asks every 10 s, every 2 s within a minute of the stop or while a request waits', () => {
    expect(pollDelayMs(state(), NOW, false)).toBe(10000);
    expect(pollDelayMs(state({ stops_at: NOW + 60 }), NOW, false)).toBe(2000);
    expect(pollDelayMs(state({ stops_at: NOW - 5 }), NOW, false)).toBe(2000);
    expect(pollDelayMs(null, NOW, false)).toBe(10000);
    expect(pollDelayMs(null, NOW, true)).toBe(2000);
  });
  it('goes back to the normal pace a few minutes after a missed stops_at', () => {
    expect(pollDelayMs(state({ stops_at: NOW - 180 }), NOW, false)).toBe(2000);
    expect(pollDelayMs(state({ stops_at: NOW - 181 }), NOW, false)).toBe(10000);
  });
  it('backs off while asks fail', () => {
    expect(pollDelayMs(null, NOW, true, 1)).toBe(4000);
    expect(pollDelayMs(null, NOW, true, 3)).toBe(16000);
    expect(pollDelayMs(null, NOW, true, 10)).toBe(30000);
    expect(pollDelayMs(null, NOW, false, 1)).toBe(10000);
  });
});
