import { WarningDialog, StoppedDialog } from '../dialog';
import { NbidleState } from '../state';
import { stoppedView } from '../stopped';

const NOW = 1764650000;
const BASE = 'http://127.0.0.1:8888/';

function state(overrides: Partial<NbidleState>): NbidleState {
  return {
    version: 1,
    notebook: { namespace: 'local', name: 'alpha' },
    phase: 'running',
    sent_at: NOW,
    stops_at: null,
    page_url: 'http://127.0.0.1:9877/',
    ...overrides
  };
}

describe('stoppedView', () => {
  it("shows the stand-in's words and start URL", () => {
    const v = stoppedView(
      state({ phase: 'stopped', message: 'alpha was stopped at 21:07 UTC by NotebookIdle', start_url: '/nb/alpha/' }),
      'state',
      NOW,
      BASE
    );
    expect(v).toEqual({ message: 'alpha was stopped at 21:07 UTC by NotebookIdle', href: '/nb/alpha/' });
  });
  it('takes a lost connection after "stopping" for the stop', () => {
    const v = stoppedView(
      state({ phase: 'stopping', reason: 'after 30 min without activity' }),
      'connection',
      NOW,
      BASE
    );
    expect(v).toEqual({
      message: 'alpha was stopped by nbidle after 30 min without activity; your files are kept.',
      href: 'http://127.0.0.1:9877/'
    });
  });
  it('takes a lost connection past stops_at for the stop, unless kept running', () => {
    expect(stoppedView(state({ phase: 'warning', stops_at: NOW - 1 }), 'connection', NOW, BASE)).not.toBeNull();
    expect(
      stoppedView(
        state({ phase: 'warning', stops_at: NOW - 1, kept_running: { until: NOW + 3600 } }),
        'connection',
        NOW,
        BASE
      )
    ).toBeNull();
  });
  it('leaves other lost connections to JupyterLab', () => {
    expect(stoppedView(state({ phase: 'warning', stops_at: NOW + 100 }), 'connection', NOW, BASE)).toBeNull();
    expect(stoppedView(null, 'connection', NOW, BASE)).toBeNull();
    expect(stoppedView(state({ phase: 'stopping' }), 'state', NOW, BASE)).toBeNull();
  });
  it("falls back to the base URL only for the stand-in's answer", () => {
    expect(stoppedView(state({ phase: 'stopping', page_url: null }), 'connection', NOW, BASE)?.href).toBeNull();
    expect(stoppedView(state({ phase: 'stopped', page_url: null }), 'state', NOW, BASE)?.href).toBe(BASE);
  });
  it('links only http(s) or same-origin relative URLs, else the next candidate', () => {
    const origin = 'http://127.0.0.1:8888';
    const stopped = (o: Partial<NbidleState>) => stoppedView(state({ phase: 'stopped', ...o }), 'state', NOW, BASE, origin);
    expect(stopped({ start_url: 'javascript:alert(1)' })?.href).toBe('http://127.0.0.1:9877/');
    expect(stopped({ start_url: '//evil.example/', page_url: 'data:text/html,x' })?.href).toBe(BASE);
    expect(stopped({ start_url: '/nb/alpha/' })?.href).toBe('/nb/alpha/');
    expect(stopped({ start_url: 'https://hub.example/spawn' })?.href).toBe('https://hub.example/spawn');
    const lost = stoppedView(state({ phase: 'stopping', page_url: 'javascript:x' }), 'connection', NOW, BASE, origin);
    expect(lost?.href).toBeNull();
  });
  it("links a hub's server to the hub's spawn page, before nbidle's page", () => {
    const origin = 'http://hub.example';
    const hub = '/hub/spawn/ada/gpu';
    const lost = (o: Partial<NbidleState>, start: string | null) =>
      stoppedView(state({ phase: 'stopping', ...o }), 'connection', NOW, BASE, origin, start)?.href;
    expect(lost({}, hub)).toBe(hub);
    expect(lost({ page_url: null }, hub)).toBe(hub);
    expect(lost({}, null)).toBe('http://127.0.0.1:9877/');
    expect(lost({}, 'javascript:x')).toBe('http://127.0.0.1:9877/');
  });
  it('reads a passed stops_at as the stop only for a few minutes', () => {
    expect(stoppedView(state({ stops_at: NOW - 170 }), 'connection', NOW, BASE)).not.toBeNull();
    expect(stoppedView(state({ stops_at: NOW - 181 }), 'connection', NOW, BASE)).toBeNull();
  });
});

describe('the dialogs in the DOM', () => {
  it('has the warning dialog hooks and calls back on clicks', () => {
    const clicked: string[] = [];
    const d = new WarningDialog(document, 'This notebook will be stopped', {
      save: () => clicked.push('save'),
      keep: () => clicked.push('keep'),
      dismiss: () => clicked.push('dismiss')
    });
    d.update('This notebook will be stopped in 5 minutes because nothing has run.', 'Keep running for 4 h');
    document.body.appendChild(d.node);
    const root = document.querySelector('.nbidle-dialog') as HTMLElement;
    expect(root.textContent).toContain('This notebook will be stopped in 5 minutes');
    const buttons = [...root.querySelectorAll('button')].map(b => [b.className.split(' ').pop(), b.textContent]);
    expect(buttons).toEqual([
      ['nbidle-save', 'Save and keep working'],
      ['nbidle-keep', 'Keep running for 4 h'],
      ['nbidle-dismiss', 'Dismiss']
    ]);
    (root.querySelector('.nbidle-save') as HTMLElement).click();
    (root.querySelector('.nbidle-keep') as HTMLElement).click();
    (root.querySelector('.nbidle-dismiss') as HTMLElement).click();
    root.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape' }));
    expect(clicked).toEqual(['save', 'keep', 'dismiss', 'dismiss']);
    d.setMessage('Saved. nbidle sees the activity within a minute.', 'ok');
    expect(d.messageText).toBe('Saved. nbidle sees the activity within a minute.');
    d.update('later', null);
    expect(d.keepButton.hidden).toBe(true);
    d.node.remove();
  });
  it('has the stopped dialog hooks', () => {
    const d = new StoppedDialog(document, { message: 'alpha was stopped', href: 'http://x/start' }, () => {});
    document.body.appendChild(d.node);
    const root = document.querySelector('.nbidle-stopped') as HTMLElement;
    expect(root.textContent).toContain('This notebook was stopped');
    expect(root.textContent).toContain('alpha was stopped');
    const link = root.querySelector('a.nbidle-start-link') as HTMLAnchorElement;
    expect(link.textContent).toBe('Start it again');
    expect(link.href).toBe('http://x/start');
    d.update({ message: 'now stopped', href: 'http://y/' });
    expect(link.href).toBe('http://y/');
    d.update({ message: 'no link', href: null });
    expect(link.hasAttribute('href')).toBe(false);
    expect((link.parentElement as HTMLElement).hidden).toBe(true);
    d.node.remove();
  });
});
