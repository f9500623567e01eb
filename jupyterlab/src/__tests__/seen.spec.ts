import { SEEN_LIMIT, SeenWarnings } from '../seen';

class MemoryStorage {
  items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
}

describe('SeenWarnings', () => {
  it('remembers a dismissed warning across a reload (a new instance on the same storage)', () => {
    const storage = new MemoryStorage();
    new SeenWarnings(storage).add('local/alpha@1764650000');
    const reloaded = new SeenWarnings(storage);
    expect(reloaded.has('local/alpha@1764650000')).toBe(true);
    expect(reloaded.has('local/alpha@1764659999')).toBe(false);
  });
  it('keeps only the last ones', () => {
    const storage = new MemoryStorage();
    const seen = new SeenWarnings(storage);
    for (let i = 0; i < SEEN_LIMIT + 5; i++) {
      seen.add(`k${i}`);
    }
    const reloaded = new SeenWarnings(storage);
    expect(reloaded.has('k4')).toBe(false);
    expect(reloaded.has('k5')).toBe(true);
    expect(reloaded.has(`k${SEEN_LIMIT + 4}`)).toBe(true);
    expect(JSON.parse(storage.getItem('nbidle-jupyterlab:seen-warnings') as string)).toHaveLength(SEEN_LIMIT);
  });
  it('works with sessionStorage, and without storage or with garbage in it', () => {
    sessionStorage.clear();
    new SeenWarnings(sessionStorage).add('a');
    expect(new SeenWarnings(sessionStorage).has('a')).toBe(true);
    const seen = new SeenWarnings(null);
    seen.add('b');
    expect(seen.has('b')).toBe(true);
    const storage = new MemoryStorage();
    storage.setItem('nbidle-jupyterlab:seen-warnings', '{not json');
    expect(new SeenWarnings(storage).has('a')).toBe(false);
  });
});
