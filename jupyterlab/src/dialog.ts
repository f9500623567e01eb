// The two dialogs, as plain DOM styled like JupyterLab's own (jp-Dialog),
// so they can stay open while a request's answer arrives.
import { STOPPED_TITLE, START_LABEL, StoppedView } from './stopped';

function el<K extends keyof HTMLElementTagNameMap>(
  doc: Document,
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = doc.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

const BUTTON = 'jp-Dialog-button jp-mod-styled';

interface Frame {
  root: HTMLElement;
  body: HTMLElement;
  footer: HTMLElement;
}

function frame(doc: Document, className: string, title: string): Frame {
  // jp-ThemedContainer: JupyterLab 4's theme and dialog styles apply only inside it.
  const root = el(doc, 'div', `jp-Dialog jp-ThemedContainer ${className}`);
  root.setAttribute('role', 'dialog');
  root.setAttribute('aria-modal', 'true');
  const content = el(doc, 'div', 'jp-Dialog-content');
  const header = el(doc, 'div', 'jp-Dialog-header');
  header.appendChild(el(doc, 'div', 'jp-Dialog-title', title));
  const body = el(doc, 'div', 'jp-Dialog-body');
  const footer = el(doc, 'div', 'jp-Dialog-footer');
  content.append(header, body, footer);
  root.appendChild(content);
  root.setAttribute('aria-label', title);
  return { root, body, footer };
}

export interface WarningActions {
  save(): void;
  keep(): void;
  dismiss(): void;
}

export type MessageKind = 'info' | 'ok' | 'error';

export class WarningDialog {
  readonly node: HTMLElement;
  private readonly text: HTMLElement;
  private readonly message: HTMLElement;
  readonly saveButton: HTMLButtonElement;
  readonly keepButton: HTMLButtonElement;
  readonly dismissButton: HTMLButtonElement;

  constructor(doc: Document, title: string, actions: WarningActions) {
    const { root, body, footer } = frame(doc, 'nbidle-dialog', title);
    this.node = root;
    this.text = el(doc, 'p', 'nbidle-dialog-text');
    this.message = el(doc, 'p', 'nbidle-dialog-message');
    this.message.setAttribute('aria-live', 'polite');
    this.message.hidden = true;
    body.append(this.text, this.message);
    this.saveButton = el(doc, 'button', `${BUTTON} jp-mod-accept nbidle-save`, 'Save and keep working');
    this.keepButton = el(doc, 'button', `${BUTTON} jp-mod-accept nbidle-keep`);
    this.dismissButton = el(doc, 'button', `${BUTTON} jp-mod-reject nbidle-dismiss`, 'Dismiss');
    for (const b of [this.saveButton, this.keepButton, this.dismissButton]) {
      b.type = 'button';
    }
    this.saveButton.addEventListener('click', () => actions.save());
    this.keepButton.addEventListener('click', () => actions.keep());
    this.dismissButton.addEventListener('click', () => actions.dismiss());
    root.addEventListener('keydown', event => {
      if (event.key === 'Escape') {
        event.stopPropagation();
        actions.dismiss();
      }
    });
    footer.append(this.saveButton, this.keepButton, this.dismissButton);
  }

  /** The body's words; the Keep running button when `keepLabel` is given. */
  update(text: string, keepLabel: string | null): void {
    this.text.textContent = text;
    if (keepLabel === null) {
      this.keepButton.hidden = true;
      this.keepButton.style.display = 'none';
    } else {
      this.keepButton.hidden = false;
      this.keepButton.style.display = '';
      this.keepButton.textContent = keepLabel;
    }
  }

  setMessage(text: string, kind: MessageKind): void {
    this.message.textContent = text;
    this.message.hidden = false;
    this.message.dataset.kind = kind;
  }

  get messageText(): string | null {
    return this.message.hidden ? null : this.message.textContent;
  }
}

export class StoppedDialog {
  readonly node: HTMLElement;
  private readonly message: HTMLElement;
  private readonly linkLine: HTMLElement;
  readonly link: HTMLAnchorElement;
  readonly dismissButton: HTMLButtonElement;

  constructor(doc: Document, view: StoppedView, dismiss: () => void) {
    const { root, body, footer } = frame(doc, 'nbidle-stopped', STOPPED_TITLE);
    this.node = root;
    this.message = el(doc, 'p', 'nbidle-stopped-message');
    this.link = el(doc, 'a', 'nbidle-start-link', START_LABEL);
    this.linkLine = el(doc, 'p', 'nbidle-start');
    this.linkLine.appendChild(this.link);
    body.append(this.message, this.linkLine);
    this.dismissButton = el(doc, 'button', `${BUTTON} jp-mod-reject nbidle-stopped-dismiss`, 'Dismiss');
    this.dismissButton.type = 'button';
    this.dismissButton.addEventListener('click', () => dismiss());
    footer.appendChild(this.dismissButton);
    this.update(view);
  }

  update(view: StoppedView): void {
    this.message.textContent = view.message;
    if (view.href === null) {
      this.link.removeAttribute('href');
      this.linkLine.hidden = true;
    } else {
      this.link.href = view.href;
      this.linkLine.hidden = false;
    }
  }

  /** The link when it is shown, else the Dismiss button. */
  focus(): void {
    (this.linkLine.hidden ? this.dismissButton : this.link).focus();
  }
}
