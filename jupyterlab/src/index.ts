// nbidle in JupyterLab: the countdown in the status bar, the warning
// dialog (Save and keep working, Keep running), and the stopped notebook's
// dialog in place of JupyterLab's "connection lost".
import {
  ConnectionLost,
  IConnectionLost,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { keepLabel, statusView, WARNING_TITLE, warningKey, warningText } from './countdown';
import { StoppedDialog, WarningDialog } from './dialog';
import { Monitor, unixNow } from './monitor';
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
  private stoppedDismissed = false;
  private readonly warned = new Set<string>();
  private readonly baseUrl: string;

  constructor(
    private readonly app: JupyterFrontEnd,
    private readonly docManager: IDocumentManager | null,
    statusBar: IStatusBar | null
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

  /** For JupyterLab's connection-lost hook: true when it was nbidle's stop. */
  connectionLost(): boolean {
    const view = stoppedView(this.monitor.lastKnown, 'connection', unixNow(), this.baseUrl);
    if (!view) {
      return false;
    }
    this.showStopped(view);
    return true;
  }

  private changed(): void {
    const now = unixNow();
    const state = this.monitor.state;
    const stopped = stoppedView(state, 'state', now, this.baseUrl);
    if (stopped) {
      this.showStopped(stopped);
    }
    const key = warningKey(state, now);
    if (key !== null && !this.warned.has(key) && !this.stopped) {
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
      this.tell(`Could not ask nbidle: ${String((e as Error)?.message ?? e)}`, 'error');
    }
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
      this.tell(request.message || 'nbidle could not keep it running.', 'error');
      if (this.warning) {
        this.warning.keepButton.disabled = false;
      }
    }
  }

  private showStopped(view: StoppedView): void {
    this.closeWarning();
    if (this.stopped) {
      this.stopped.update(view);
      return;
    }
    if (this.stoppedDismissed) {
      return;
    }
    const dialog = new StoppedDialog(document, view, () => {
      dialog.node.remove();
      this.stopped = null;
      this.stoppedDismissed = true;
    });
    this.stopped = dialog;
    document.body.appendChild(dialog.node);
    dialog.link.focus();
  }
}

const controllers = new WeakMap<JupyterFrontEnd, Controller>();

const status: JupyterFrontEndPlugin<void> = {
  id: 'nbidle-jupyterlab:status',
  description: 'Shows when nbidle stops this notebook, and lets people keep it running.',
  autoStart: true,
  optional: [IDocumentManager, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    docManager: IDocumentManager | null,
    statusBar: IStatusBar | null
  ) => {
    controllers.set(app, new Controller(app, docManager, statusBar));
  }
};

const connectionLost: JupyterFrontEndPlugin<IConnectionLost> = {
  id: 'nbidle-jupyterlab:connectionlost',
  description: "Says so when the server went away because nbidle stopped it; JupyterLab's dialog otherwise.",
  autoStart: true,
  provides: IConnectionLost,
  activate: (app: JupyterFrontEnd): IConnectionLost => {
    return async (manager, err, translator) => {
      if (controllers.get(app)?.connectionLost()) {
        return;
      }
      return ConnectionLost(manager, err, translator);
    };
  }
};

export default [status, connectionLost];
