// Two people in JupyterLab with nbidle's extension, for
// tests/jupyterlab_extension.rs:
//
//   node extension.mjs - SETTINGS_JSON
//
// SETTINGS_JSON: {"token": Jupyter's token, "alpha": BASE_URL, "beta": BASE_URL,
// "shots": the directory for the screenshots of the warning and the stop}.
// In alpha, a person writes in a notebook without saving, sees the status
// bar's countdown and the warning dialog, and answers "Save and keep
// working"; at the next warning "Keep running for 4 h". In beta, a person
// opens JupyterLab and does nothing: countdown, dialog, then the stopped
// dialog and its link to the stopped notebook's page. Events are prefixed
// with the notebook: "alpha:countdown", "beta:stopped", …
import { args, check, failed, launch, report, sleep } from "./driver.mjs";

const UI_TIMEOUT_MS = 90 * 1000;
/// From opening JupyterLab to the stop, with the test's idle time.
const LONG_TIMEOUT_MS = 5 * 60 * 1000;
const DRAFT = "draft_marker = 42";

const [, settings] = args("extension.mjs");

async function openLab(page, base) {
  await page.goto(`${base.replace(/\/$/, "")}/lab?reset&token=${settings.token}`);
  await page.waitForSelector(".jp-LauncherCard", { timeout: UI_TIMEOUT_MS });
}

/// "Stops in 1:05" → 65; "Stops in 1:02:03" → 3723.
function secondsOf(text) {
  const m = /Stops in ((?:\d+:)?\d+:\d\d)/.exec(text);
  if (!m) return null;
  return m[1].split(":").reduce((acc, part) => acc * 60 + Number(part), 0);
}

/// Waits for the status bar's countdown and reports it.
async function countdown(page, nb) {
  const item = page.locator("#nbidle-status").filter({ hasText: /Stops in \d/ });
  await item.waitFor({ timeout: LONG_TIMEOUT_MS });
  const text = (await item.textContent()).trim();
  report(`${nb}:countdown`, { text, seconds: secondsOf(text), at: Date.now() / 1000 });
}

/// Waits for the warning dialog and reports its words and buttons.
async function warningDialog(page, nb, event) {
  const dialog = page.locator(".nbidle-dialog");
  await dialog.waitFor({ timeout: LONG_TIMEOUT_MS });
  const buttons = await dialog.locator("button").allTextContents();
  report(`${nb}:${event}`, {
    text: (await dialog.textContent()).replace(/\s+/g, " ").trim(),
    buttons: buttons.map((b) => b.trim()).filter((b) => b),
    at: Date.now() / 1000,
  });
  return dialog;
}

async function alpha(page) {
  await openLab(page, settings.alpha);
  await page.click('.jp-LauncherCard[data-category="Notebook"]');
  await page.waitForSelector(".jp-NotebookPanel .jp-Cell .cm-content", { timeout: UI_TIMEOUT_MS });
  await page.click(".jp-NotebookPanel .jp-Cell .cm-content");
  await page.keyboard.type(DRAFT);
  const dirty = page.locator(".lm-TabBar-tab.jp-mod-dirty");
  await dirty.first().waitFor({ timeout: UI_TIMEOUT_MS });
  report("alpha:typed", { at: Date.now() / 1000 });

  await countdown(page, "alpha");
  let dialog = await warningDialog(page, "alpha", "dialog");
  await page.screenshot({ path: `${settings.shots}/jupyterlab-warning.png` });
  check((await dirty.count()) > 0, "the draft was saved before the dialog's button");
  await dialog.locator(".nbidle-save").click();
  await dialog.waitFor({ state: "detached", timeout: UI_TIMEOUT_MS });
  await page.waitForFunction(() => !document.querySelector(".lm-TabBar-tab.jp-mod-dirty"), null, {
    timeout: UI_TIMEOUT_MS,
  });
  report("alpha:saved", { at: Date.now() / 1000 });

  // The save was activity: the next warning comes one idle time later.
  dialog = await warningDialog(page, "alpha", "dialog-again");
  await dialog.locator(".nbidle-keep").click();
  const kept = page.getByText(/Kept running until/).first();
  await kept.waitFor({ timeout: UI_TIMEOUT_MS });
  report("alpha:kept", { text: (await kept.textContent()).trim(), at: Date.now() / 1000 });
}

async function beta(page) {
  await openLab(page, settings.beta);
  report("beta:open", { at: Date.now() / 1000 });
  await countdown(page, "beta");
  await warningDialog(page, "beta", "dialog");
  // Nothing is clicked: the stop follows, then the stopped dialog.
  const stopped = page.locator(".nbidle-stopped");
  await stopped.waitFor({ timeout: LONG_TIMEOUT_MS });
  const link = stopped.locator("a.nbidle-start-link");
  const first = (await stopped.textContent()).replace(/\s+/g, " ").trim();
  // The tab may learn of the stop from the lost connection first (what
  // nbidle last told it), then from the stopped notebook's own answer
  // (the stand-in's state): by what, and when.
  await stopped.filter({ hasText: "NotebookIdle" }).waitFor({ timeout: UI_TIMEOUT_MS });
  report("beta:stopped", {
    first,
    text: (await stopped.textContent()).replace(/\s+/g, " ").trim(),
    href: await link.getAttribute("href"),
    at: Date.now() / 1000,
  });
  await page.screenshot({ path: `${settings.shots}/jupyterlab-stopped.png` });
  // The link leads to the stopped notebook's own page, with its Start.
  await link.click();
  await page.waitForSelector("text=was stopped", { timeout: UI_TIMEOUT_MS });
  const start = await page.locator("button", { hasText: "Start" }).count();
  report("beta:start-page", { url: page.url(), start_buttons: start });
}

async function main() {
  const browser = await launch();
  report("browser", { version: browser.version() });
  const pages = {};
  const run = async (nb, act) => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = (pages[nb] = await context.newPage());
    try {
      await act(page);
      report(`${nb}:done`);
    } catch (e) {
      await failed(page, `extension-${nb}-failed.png`, `${nb}: ${e && e.stack ? e.stack : e}`);
      process.exit(1);
    }
  };
  await Promise.all([run("alpha", alpha), run("beta", beta)]);
  report("done");
  await sleep(1000);
  await browser.close();
}

main().catch((e) => {
  report("error", { message: String(e && e.stack ? e.stack : e) });
  process.exit(1);
});
