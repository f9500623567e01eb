/**
 * @jest-environment node
 */
import { currentState, NbidleClient, parseView, STALE_SECONDS } from '../state';
import { NOW, warningState } from './fixtures';

const VIEW = {
  state: {
    ...warningState({ kept_running: { until: NOW + 3600, by: 'ada via JupyterLab' } }),
    future_field: [1, 2]
  },
  received_at: NOW,
  requests: [
    { id: 'a1', kind: 'keep_running', for: '4h', at: NOW, status: 'done', message: 'Kept running until 16:05 UTC' },
    { id: 'b2', status: 'lost' },
    'junk'
  ]
};

describe('parseView', () => {
  it('reads the server extension answer', () => {
    const view = parseView(VIEW);
    expect(view.state?.phase).toBe('warning');
    expect(view.state?.kept_running).toEqual({ until: NOW + 3600, by: 'ada via JupyterLab' });
    expect(view.state?.stops_at).toBe(NOW + 290);
    expect(view.requests).toEqual([
      { id: 'a1', kind: 'keep_running', for: '4h', at: NOW, status: 'done', message: 'Kept running until 16:05 UTC' }
    ]);
  });
  it('reads the stopped notebook stand-in', () => {
    const view = parseView({
      state: {
        version: 1,
        phase: 'stopped',
        stopped_at: NOW,
        by: 'NotebookIdle',
        message: 'alpha was stopped at 21:07 UTC by NotebookIdle',
        start_url: '/user/alpha/'
      },
      received_at: NOW,
      requests: []
    });
    expect(view.state?.phase).toBe('stopped');
    expect(view.state?.start_url).toBe('/user/alpha/');
  });
  it('turns what it does not understand into no state', () => {
    expect(parseView(null)).toEqual({ state: null, received_at: null, requests: [] });
    expect(parseView({ state: { phase: 'asleep' }, received_at: NOW }).state).toBeNull();
    expect(parseView({ state: { phase: 'warning', stops_at: 'soon' } }).state?.stops_at).toBeNull();
  });
});

describe('currentState', () => {
  it('treats a state older than three minutes as unknown', () => {
    const view = parseView(VIEW);
    expect(currentState(view, NOW + STALE_SECONDS)).not.toBeNull();
    expect(currentState(view, NOW + STALE_SECONDS + 1)).toBeNull();
  });
});

describe('NbidleClient', () => {
  // Node's own fetch Response: what ServerConnection.makeRequest resolves to.
  const answering =
    (status: number, body: unknown, seen: Array<[string, RequestInit]> = []) =>
    async (path: string, init: RequestInit) => {
      seen.push([path, init]);
      return new Response(body === null ? null : JSON.stringify(body), {
        status,
        headers: { 'Content-Type': 'application/json' }
      });
    };

  it('reports an absent server extension on 404', async () => {
    expect(await new NbidleClient(answering(404, { message: 'Not Found' })).getState()).toBe('absent');
  });
  it('posts Keep running with the offered duration and returns the id', async () => {
    const seen: Array<[string, RequestInit]> = [];
    const id = await new NbidleClient(answering(202, { id: 'abc' }, seen)).keep('4h');
    expect(id).toBe('abc');
    expect(seen[0][0]).toBe('nbidle/keep');
    expect(seen[0][1].method).toBe('POST');
    expect(JSON.parse(String(seen[0][1].body))).toEqual({ for: '4h' });
  });
  it("raises the server extension's message", async () => {
    const client = new NbidleClient(answering(409, { message: "for: nbidle offers '4h', not '8h'" }));
    await expect(client.keep('8h')).rejects.toThrow("for: nbidle offers '4h', not '8h'");
  });
  it('posts activity and expects 204', async () => {
    const seen: Array<[string, RequestInit]> = [];
    await new NbidleClient(answering(204, null, seen)).activity();
    expect(seen[0][0]).toBe('nbidle/activity');
  });
});
