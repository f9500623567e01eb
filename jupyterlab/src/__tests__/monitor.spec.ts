/**
 * @jest-environment node
 */
import { Monitor, WAIT_SECONDS } from '../monitor';
import { NbidleClient, STALE_SECONDS } from '../state';
import { NOW, warningState } from './fixtures';

// Answers like the server extension, through Node's own fetch Response;
// `reply` is changed by the tests, null means the server is away.
class Server {
  reply: { status: number; body: unknown } | null = { status: 200, body: { state: null, received_at: null, requests: [] } };
  asks = 0;
  requester = async (): Promise<Response> => {
    this.asks += 1;
    if (this.reply === null) {
      throw new TypeError('Failed to fetch');
    }
    return new Response(JSON.stringify(this.reply.body), {
      status: this.reply.status,
      headers: { 'Content-Type': 'application/json' }
    });
  };
  answer(state: unknown, receivedAt: number, requests: unknown[] = []): void {
    this.reply = { status: 200, body: { state, received_at: receivedAt, requests } };
  }
}

function setup(): { server: Server; monitor: Monitor; clock: { now: number } } {
  const server = new Server();
  const clock = { now: NOW };
  const monitor = new Monitor(new NbidleClient(server.requester), () => {}, () => clock.now);
  return { server, monitor, clock };
}

describe('Monitor', () => {
  it('forgets the last known state when an answer says none', async () => {
    const { server, monitor } = setup();
    server.answer(warningState({ phase: 'stopping' }), NOW);
    await monitor.poll();
    expect(monitor.lastKnown?.phase).toBe('stopping');
    server.answer(null, null as unknown as number);
    await monitor.poll();
    expect(monitor.lastKnown).toBeNull();
    monitor.stop();
  });
  it('keeps the last known state while the server is away, only while it is fresh', async () => {
    const { server, monitor, clock } = setup();
    server.answer(warningState({ phase: 'stopping' }), NOW);
    await monitor.poll();
    server.reply = null;
    clock.now += 30;
    await monitor.poll();
    expect(monitor.errors).toBe(1);
    expect(monitor.lastKnown?.phase).toBe('stopping');
    clock.now = NOW + STALE_SECONDS + 1;
    expect(monitor.lastKnown).toBeNull();
    monitor.stop();
  });
  it('stops waiting for a request the server no longer lists', async () => {
    const { server, monitor, clock } = setup();
    server.answer(warningState(), NOW, [{ id: 'r1', kind: 'keep_running', for: '4h', at: NOW, status: 'in_flight' }]);
    monitor.waitingFor = 'r1';
    clock.now += 1;
    await monitor.poll();
    expect(monitor.waitingFor).toBe('r1');
    server.answer(warningState(), NOW + 1, []);
    await monitor.poll();
    expect(monitor.waitingFor).toBeNull();
    monitor.stop();
  });
  it('stops waiting after eleven minutes', async () => {
    const { server, monitor, clock } = setup();
    server.reply = null;
    monitor.waitingFor = 'r1';
    clock.now += WAIT_SECONDS;
    expect(monitor.waitingFor).toBe('r1');
    clock.now += 1;
    await monitor.poll();
    expect(monitor.waitingFor).toBeNull();
    monitor.stop();
  });
  it('counts failed asks in a row, and starts again at the first answer', async () => {
    const { server, monitor } = setup();
    server.reply = null;
    await monitor.poll();
    await monitor.poll();
    expect(monitor.errors).toBe(2);
    server.answer(null, NOW);
    await monitor.poll();
    expect(monitor.errors).toBe(0);
    monitor.stop();
  });
});
