// nbidle in JupyterLab: the countdown in the status bar, the warning
// dialog (Save and keep working, Keep running), and the stopped notebook's
// dialog in place of JupyterLab's "connection lost".
import {
  ConnectionLost,
  IConnectionLost,
  JupyterFrontEnd,
  JupyterFrontEndPlugin,
  JupyterLab
} from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { fallbackConnectionLost, HUB_RESTART_COMMAND, hubSpawnUrl } from './connection';
import { keepLabel, statusView, WARNING_TITLE, warningKey, warningText } from './countdown';
import { reopenAfterFailedKeep, StoppedPresence, warningAction } from './decide';
import { StoppedDialog, WarningDialog } from './dialog';
import { Monitor, unixNow } from './monitor';
import { SeenWarnings, sessionStore } from './seen';
import { NbidleClient, Requester } from './state';
import { stoppedView, StoppedView } from './stopped';

const SAVED = 'Saved. nbidle sees the activity within a minute.';

class StatusItem extends Widget {
  readonly activeChanged = new Signal<this, void>(this);
  visible = false;

  constructor() {
    super();
    this.id = 'nbidle-status';
    this.addClass('nbidle-status');
  }

  set(visible: boolean, text: string, title: string): void {
    this.node.textContent = text;
    this.node.title = title;
    if (visible !== this.visible) {
      this.visible = visible;
      this.activeChanged.emit();
    }
  }
}

class Controller {
  readonly monitor: Monitor;
  private readonly status: StatusItem | null = null;
  private warning: WarningDialog | null = null;
  private stopped: StoppedDialog | null = null;
  private readonly stoppedPresence = new StoppedPresence();
  private readonly warned = new SeenWarnings(sessionStore());
  private readonly baseUrl: string;

  constructor(
    private readonly app: JupyterFrontEnd,
    private readonly docManager: IDocumentManager | null,
    statusBar: IStatusBar | null,
    /** The hub's page that starts this server again, under JupyterHub. */
    private readonly hubStart: string | null
  ) {
    const settings = app.serviceManager.serverSettings;
    this.baseUrl = settings.baseUrl;
    const requester: Requester = (path, init) =>
      ServerConnection.makeRequest(URLExt.join(settings.baseUrl, path), init, settings);
    this.monitor = new Monitor(new NbidleClient(requester), () => this.changed());
    if (statusBar) {
      const status = new StatusItem();
      statusBar.registerStatusItem('nbidle-jupyterlab:status', {
        item: status,
        align: 'right',
        rank: 1000,
        priority: 1,
        isActive: () => status.visible,
        activeStateChanged: status.activeChanged
      });
      this.status = status;
    }
    this.monitor.start();
    setInterval(() => this.render(), 1000);
  }

  /**
   * For JupyterLab's connection-lost hook: true when it was nbidle's stop
   * and its dialog is showing; false leaves the loss to JupyterLab's dialog.
   */
  connectionLost(): boolean {
    const view = stoppedView(
      this.monitor.lastKnown,
      'connection',
      unixNow(),
      this.baseUrl,
      undefined,
      this.hubStart
    );
    return view !== null && this.showStopped(view);
  }

  private changed(): void {
    const now = unixNow();
    const state = this.monitor.state;
    const stopped = stoppedView(state, 'state', now, this.baseUrl);
    if (stopped) {
      this.showStopped(stopped);
    }
    const key = warningKey(state, now);
    const action = warningAction(key, this.warned, this.warning !== null, this.stopped !== null);
    if (action === 'close') {
      this.closeWarning();
    } else if (action === 'open' && key !== null) {
      this.warned.add(key);
      this.openWarning();
    }
    this.deliverKeepResult();
    this.render();
  }

  private render(): void {
    const now = unixNow();
    const state = this.monitor.state;
    const view = statusView(state, now);
    this.status?.set(view.visible, view.text, view.title);
    if (this.warning && state && state.phase !== 'stopped') {
      const duration = state.keep_running_for ?? null;
      this.warning.update(warningText(state, now), duration ? keepLabel(duration) : null);
    }
  }

  private openWarning(): void {
    if (this.warning) {
      return;
    }
    const dialog = new WarningDialog(document, WARNING_TITLE, {
      save: () => void this.saveAndKeepWorking(),
      keep: () => void this.keepRunning(),
      dismiss: () => this.closeWarning()
    });
    this.warning = dialog;
    this.render();
    document.body.appendChild(dialog.node);
    dialog.saveButton.focus();
  }

  private closeWarning(): void {
    this.warning?.node.remove();
    this.warning = null;
  }

  /** Shows `text` in the warning dialog, or as a notification once it is closed. */
  private tell(text: string, kind: 'info' | 'ok' | 'error'): void {
    if (this.warning) {
      this.warning.setMessage(text, kind);
    } else if (kind === 'error') {
      Notification.error(text, { autoClose: 10000 });
    } else if (kind === 'ok') {
      Notification.success(text, { autoClose: 10000 });
    } else {
      Notification.info(text, { autoClose: 10000 });
    }
  }

  // The dialog closes at once, as JupyterLab's own do: the person goes
  // back to work, and the outcome comes as a notification.
  private async saveAndKeepWorking(): Promise<void> {
    this.closeWarning();
    let failed: string | null = null;
    try {
      await this.saveDirtyDocuments();
    } catch (e) {
      failed = `Could not save: ${String((e as Error)?.message ?? e)}.`;
    }
    try {
      await this.monitor.client.activity();
      this.tell(failed ? `${failed} nbidle sees the activity within a minute.` : SAVED, failed ? 'error' : 'ok');
    } catch (e) {
      this.tell(`Could not tell nbidle: ${String((e as Error)?.message ?? e)}`, 'error');
    }
  }

  private async saveDirtyDocuments(): Promise<void> {
    if (!this.docManager) {
      return;
    }
    const paths = new Set<string>();
    const saves: Promise<void>[] = [];
    for (const widget of this.app.shell.widgets('main')) {
      const context = this.docManager.contextForWidget(widget);
      if (context && !paths.has(context.path) && context.model.dirty) {
        paths.add(context.path);
        saves.push(context.save());
      }
    }
    await Promise.all(saves);
  }

  private async keepRunning(): Promise<void> {
    const duration = this.monitor.state?.keep_running_for;
    if (!duration || !this.warning) {
      return;
    }
    this.closeWarning();
    try {
      this.monitor.waitingFor = await this.monitor.client.keep(duration);
      this.tell('Asked nbidle to keep it running; the answer comes within a minute.', 'info');
      this.monitor.refresh();
    } catch (e) {
      this.keepFailed(`Could not ask nbidle: ${String((e as Error)?.message ?? e)}`);
    }
  }

  /**
   * A Keep running that did not work: the warning dialog again, with why,
   * while the warning lasts, as it is another chance to click; else a
   * notification.
   */
  private keepFailed(text: string): void {
    if (reopenAfterFailedKeep(warningKey(this.monitor.state, unixNow()), this.stopped !== null)) {
      this.openWarning();
    }
    this.tell(text, 'error');
  }

  private deliverKeepResult(): void {
    const id = this.monitor.waitingFor;
    const request = id ? this.monitor.request(id) : undefined;
    if (!request || (request.status !== 'done' && request.status !== 'failed')) {
      return;
    }
    this.monitor.waitingFor = null;
    if (request.status === 'done') {
      this.tell(request.message || 'Kept running.', 'ok');
    } else {
      this.keepFailed(request.message || 'nbidle could not keep it running.');
    }
  }

  /** Shows (or updates) the stopped dialog; false when it was dismissed before. */
  private showStopped(view: StoppedView): boolean {
    this.closeWarning();
    const action = this.stoppedPresence.show();
    if (action === null) {
      return false;
    }
    if (this.stopped) {
      this.stopped.update(view);
      return true;
    }
    const dialog = new StoppedDialog(document, view, () => {
      dialog.node.remove();
      this.stopped = null;
      this.stoppedPresence.dismiss();
    });
    this.stopped = dialog;
    document.body.appendChild(dialog.node);
    dialog.focus();
    return true;
  }
}

const controllers = new WeakMap<JupyterFrontEnd, Controller>();

const status: JupyterFrontEndPlugin<void> = {
  id: 'nbidle-jupyterlab:status',
  description: 'Shows when nbidle stops this notebook, and lets people keep it running.',
  autoStart: true,
  optional: [IDocumentManager, IStatusBar, JupyterFrontEnd.IPaths],
  activate: (
    app: JupyterFrontEnd,
    docManager: IDocumentManager | null,
    statusBar: IStatusBar | null,
    paths: JupyterFrontEnd.IPaths | null
  ) => {
    controllers.set(app, new Controller(app, docManager, statusBar, hubStartUrl(paths)));
  }
};

/** The hub's spawn page for this server, or null when no hub serves it. */
function hubStartUrl(paths: JupyterFrontEnd.IPaths | null): string | null {
  const urls = paths?.urls;
  const hubPrefix = urls?.hubPrefix || PageConfig.getOption('hubPrefix');
  if (!hubPrefix) {
    return null;
  }
  return hubSpawnUrl(
    urls?.hubHost || PageConfig.getOption('hubHost'),
    hubPrefix,
    urls?.hubUser || PageConfig.getOption('hubUser'),
    urls?.hubServerName || PageConfig.getOption('hubServerName')
  );
}

// Replaces @jupyterlab/hub-extension:connectionlost, JupyterLab 4's
// provider (package.json disables it), and does what it does when the
// loss was not nbidle's stop.
const connectionLost: JupyterFrontEndPlugin<IConnectionLost> = {
  id: 'nbidle-jupyterlab:connectionlost',
  description: "Says so when the server went away because nbidle stopped it; JupyterLab's dialog otherwise.",
  autoStart: true,
  optional: [JupyterLab.IInfo, JupyterFrontEnd.IPaths],
  provides: IConnectionLost,
  activate: (
    app: JupyterFrontEnd,
    info: JupyterLab.IInfo | null,
    paths: JupyterFrontEnd.IPaths | null
  ): IConnectionLost => {
    const urls = paths?.urls;
    let lastArgs: Parameters<IConnectionLost> | null = null;
    // The page config's values, as the hub extension reads them.
    const hubPrefix = urls?.hubPrefix || PageConfig.getOption('hubPrefix');
    const fallback = fallbackConnectionLost({
      hubPrefix,
      baseUrl: urls?.base ?? PageConfig.getOption('baseUrl'),
      askRestart: async (title, body) => {
        const result = await showDialog({
          title,
          body,
          buttons: [Dialog.okButton({ label: 'Restart' }), Dialog.cancelButton({ label: 'Dismiss' })]
        });
        return result.button.accept;
      },
      restart: async () => {
        if (app.commands.hasCommand(HUB_RESTART_COMMAND)) {
          await app.commands.execute(HUB_RESTART_COMMAND);
        } else {
          window.open(hubStartUrl(paths) ?? hubPrefix, '_blank');
        }
      },
      setConnected: connected => {
        if (info) {
          info.isConnected = connected;
        }
      },
      plain: () => (lastArgs ? ConnectionLost(...lastArgs) : Promise.resolve())
    });
    return async (...args) => {
      if (controllers.get(app)?.connectionLost()) {
        return;
      }
      lastArgs = args;
      return fallback();
    };
  }
};

export default [status, connectionLost];
