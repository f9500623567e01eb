import { NbidleState } from '../state';

// 2025-12-02 04:33:20 UTC
export const NOW = 1764650000;

/** A warning as nbidle pushes it: stops in 290 s, Keep running for 4h offered. */
export function warningState(overrides: Partial<NbidleState> = {}): NbidleState {
  return {
    version: 1,
    notebook: { namespace: 'local', name: 'alpha' },
    phase: 'warning',
    sent_at: NOW,
    stops_at: NOW + 290,
    warn_before_seconds: 300,
    idle_after_seconds: 1800,
    warning_since: NOW - 10,
    kept_running: null,
    keep_running_for: '4h',
    page_url: 'http://127.0.0.1:9877/',
    reason: null,
    ...overrides
  };
}
