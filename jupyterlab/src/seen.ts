// The warnings already shown in this tab, kept across reloads in
// sessionStorage so a Dismiss is not undone by reloading the page.

/** The part of the Storage API used here. */
export interface KeyStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export const SEEN_LIMIT = 20;
const STORAGE_KEY = 'nbidle-jupyterlab:seen-warnings';

export class SeenWarnings {
  private keys: string[];

  constructor(
    private readonly storage: KeyStore | null,
    private readonly limit = SEEN_LIMIT
  ) {
    this.keys = this.load();
  }

  has(key: string): boolean {
    return this.keys.includes(key);
  }

  add(key: string): void {
    this.keys = [...this.keys.filter(k => k !== key), key].slice(-this.limit);
    try {
      this.storage?.setItem(STORAGE_KEY, JSON.stringify(this.keys));
    } catch {
      // Storage full or refused: remembered for this page only.
    }
  }

  private load(): string[] {
    try {
      const value: unknown = JSON.parse(this.storage?.getItem(STORAGE_KEY) ?? '[]');
      return Array.isArray(value)
        ? value.filter((k): k is string => typeof k === 'string').slice(-this.limit)
        : [];
    } catch {
      return [];
    }
  }
}

/** The tab's sessionStorage, or null where the browser refuses it. */
export function sessionStore(): KeyStore | null {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null;
  }
}
