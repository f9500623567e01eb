import { fallbackConnectionLost, FallbackDeps, HUB_LOST_TITLE, hubSpawnUrl } from '../connection';

function deps(hubPrefix: string, restart: boolean) {
  const log: string[] = [];
  let answer: (value: boolean) => void = () => {};
  const d: FallbackDeps = {
    hubPrefix,
    baseUrl: '/user/ada/',
    askRestart: (title, body) => {
      log.push(`ask ${title} | ${body}`);
      return new Promise(resolve => {
        answer = resolve;
      });
    },
    restart: async () => {
      log.push('restart');
    },
    setConnected: connected => log.push(`connected ${connected}`),
    plain: async () => {
      log.push('plain');
    }
  };
  return { d, log, answer: () => answer(restart) };
}

describe('fallbackConnectionLost', () => {
  it("shows JupyterLab's plain message outside JupyterHub", async () => {
    const { d, log } = deps('', true);
    await fallbackConnectionLost(d)();
    expect(log).toEqual(['plain']);
  });
  it("under JupyterHub asks to restart, once however many losses, as the hub's dialog does", async () => {
    const { d, log, answer } = deps('/hub/', true);
    const lost = fallbackConnectionLost(d);
    const first = lost();
    await lost();
    expect(log).toEqual([
      'connected false',
      `ask ${HUB_LOST_TITLE} | Your server at /user/ada/ is not running.\nWould you like to restart it?`
    ]);
    answer();
    await first;
    expect(log.slice(2)).toEqual(['connected true', 'restart']);
  });
  it('does not restart on Dismiss', async () => {
    const { d, log, answer } = deps('/hub/', false);
    const shown = fallbackConnectionLost(d)();
    answer();
    await shown;
    expect(log).not.toContain('restart');
  });
});

describe('hubSpawnUrl', () => {
  it("leads to the spawn page of the server's user, and of its named server", () => {
    expect(hubSpawnUrl('', '/hub/', 'ada', '')).toBe('/hub/spawn/ada');
    expect(hubSpawnUrl('', '/hub/', '', '')).toBe('/hub/spawn');
    expect(hubSpawnUrl('', '/hub/', 'a b', 'x/y')).toBe('/hub/spawn/a%20b/x%2Fy');
    expect(hubSpawnUrl('https://hub.example', '/hub/', 'ada', 'gpu')).toBe('https://hub.example/hub/spawn/ada/gpu');
  });
});
