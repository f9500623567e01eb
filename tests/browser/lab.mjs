// A JupyterLab user in headless Chromium, for tests/browser.rs.
//
//   node lab.mjs BASE_URL TOKEN SCENARIO [SECONDS]
//
// Opens BASE_URL/lab?reset (a fresh workspace), does what SCENARIO says,
// then keeps the page open until it is killed or MAX_LIFETIME_MS passes.
// Progress goes to stdout as JSON lines {"t": seconds since start, "event",
// ...}; the test reads them. Scenarios:
//   cell            run one cell (print), then leave the tab open
//   sleep SECONDS   run `time.sleep(SECONDS)` silently, tab open
//   markdown SECONDS  type into a markdown cell for SECONDS (autosave saves)
//   terminal SECONDS  type a command into a terminal every 2 s for SECONDS
//
// Environment: NBIDLE_BROWSER_MODULES (node_modules with playwright-core),
// NBIDLE_CHROMIUM (the browser), NBIDLE_BROWSER_SHOTS (a directory for a
// screenshot when something fails; optional).
import { createRequire } from "node:module";
import path from "node:path";

const MAX_LIFETIME_MS = 5 * 60 * 1000;
const UI_TIMEOUT_MS = 90 * 1000;
const T0 = Date.now();

function report(event, fields = {}) {
  const line = { t: +((Date.now() - T0) / 1000).toFixed(2), event, ...fields };
  process.stdout.write(JSON.stringify(line) + "\n");
}

const [base, token, scenario, secondsArg] = process.argv.slice(2);
if (!base || !token || !scenario) {
  report("error", { message: "usage: lab.mjs BASE_URL TOKEN SCENARIO [SECONDS]" });
  process.exit(2);
}
const seconds = Number(secondsArg ?? 0);
const modules = process.env.NBIDLE_BROWSER_MODULES;
const executablePath = process.env.NBIDLE_CHROMIUM ?? "/usr/bin/chromium";
if (!modules) {
  report("error", { message: "NBIDLE_BROWSER_MODULES is not set: run `bash scripts/browser-deps.sh`" });
  process.exit(2);
}
const { chromium } = createRequire(path.join(modules, "noop.js"))("playwright-core");

let closing = false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Opens the launcher of a fresh workspace.
async function openLab(page) {
  await page.goto(`${base.replace(/\/$/, "")}/lab?reset&token=${token}`);
  await page.waitForSelector(".jp-LauncherCard", { timeout: UI_TIMEOUT_MS });
  report("lab-open");
}

/// A new notebook from the launcher, its kernel ready, the first cell's
/// editor focused.
async function newNotebook(page) {
  await page.click('.jp-LauncherCard[data-category="Notebook"]');
  await page.waitForSelector(".jp-NotebookPanel .jp-Cell .cm-content", { timeout: UI_TIMEOUT_MS });
  // The status bar reads "No Kernel | Initializing", then "<kernel> |
  // Connecting", then "<kernel> | Idle"; a cell run before that is lost.
  await page
    .locator('.jp-StatusBar-TextItem[title^="Change kernel"]')
    .filter({ hasText: /^(?!No Kernel).* \| Idle$/ })
    .waitFor({ timeout: UI_TIMEOUT_MS });
  await page.click(".jp-NotebookPanel .jp-Cell .cm-content");
  report("notebook-open");
}

/// Types `code` into the focused cell and runs it (Shift+Enter), once the
/// editor shows what was typed (keys typed while JupyterLab moves the focus
/// are lost).
async function runCell(page, code) {
  await page.keyboard.type(code);
  const typed = page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first();
  await typed.filter({ hasText: code }).waitFor({ timeout: 10000 }).catch(async () => {
    throw new Error(`the cell shows ${JSON.stringify(await typed.textContent())} after typing ${JSON.stringify(code)}`);
  });
  await page.keyboard.press("Shift+Enter");
  // Queued or done: "[*]:" or "[1]:", no longer "[ ]:".
  await page
    .locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt")
    .first()
    .filter({ hasText: /\[(\*|\d+)\]/ })
    .waitFor({ timeout: 10000 })
    .catch(() => {
      throw new Error(`the cell ${JSON.stringify(code)} did not run after Shift+Enter`);
    });
}

const scenarios = {
  async cell(page) {
    await newNotebook(page);
    await runCell(page, 'print("hello from the browser")');
    await page.waitForSelector('.jp-OutputArea-output:has-text("hello from the browser")', {
      timeout: UI_TIMEOUT_MS,
    });
    report("ran");
  },

  async sleep(page) {
    await newNotebook(page);
    await runCell(page, `import time; time.sleep(${seconds})`);
    await page.waitForSelector('.jp-CodeCell .jp-InputPrompt:has-text("[*]")', { timeout: UI_TIMEOUT_MS });
    report("running", { seconds });
    // Told, not awaited: the page stays open either way.
    page
      .waitForSelector('.jp-CodeCell .jp-InputPrompt:has-text("[1]")', { timeout: MAX_LIFETIME_MS })
      .then(() => report("finished"))
      .catch(() => {});
  },

  async markdown(page) {
    let saves = 0;
    page.on("response", (r) => {
      const req = r.request();
      if (req.method() === "PUT" && new URL(req.url()).pathname.includes("/api/contents/")) {
        saves += 1;
        report("saved", { status: r.status(), saves });
      }
    });
    await newNotebook(page);
    await page.keyboard.press("Escape");
    await page.keyboard.press("m");
    await page.waitForSelector(".jp-NotebookPanel .jp-MarkdownCell", { timeout: UI_TIMEOUT_MS });
    await page.keyboard.press("Enter");
    report("typing", { seconds });
    const until = Date.now() + seconds * 1000;
    let words = 0;
    while (Date.now() < until) {
      await page.keyboard.type(`word${words} `, { delay: 40 });
      words += 1;
      await sleep(1000);
    }
    await page
      .locator(".jp-NotebookPanel .jp-MarkdownCell .cm-content")
      .filter({ hasText: "word0 word1" })
      .waitFor({ timeout: 10000 })
      .catch(() => {
        throw new Error("the markdown cell does not show the typed words");
      });
    report("typed", { words, saves });
  },

  async terminal(page) {
    await page.click('.jp-LauncherCard:has-text("Terminal")');
    await page.waitForSelector(".jp-Terminal .xterm", { timeout: UI_TIMEOUT_MS });
    await page.click(".jp-Terminal .xterm");
    report("typing", { seconds });
    const until = Date.now() + seconds * 1000;
    let lines = 0;
    while (Date.now() < until) {
      await page.keyboard.type(`echo line ${lines}\n`, { delay: 30 });
      lines += 1;
      await sleep(2000);
    }
    report("typed", { lines });
  },
};

async function main() {
  const act = scenarios[scenario];
  if (!act) throw new Error(`unknown scenario ${scenario}`);
  // Playwright's own SIGTERM handler closes the browser but leaves this
  // process running; the test ends the driver with SIGTERM.
  const browser = await chromium.launch({ executablePath, handleSIGTERM: false, handleSIGINT: false });
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => {
      closing = true;
      report("closing", { signal });
      browser.close().finally(() => process.exit(0));
    });
  }
  report("browser", { version: browser.version() });
  const page = await browser.newPage();
  try {
    await openLab(page);
    await act(page);
  } catch (e) {
    const shots = process.env.NBIDLE_BROWSER_SHOTS;
    if (shots) {
      await page.screenshot({ path: path.join(shots, `${scenario}-failed.png`) }).catch(() => {});
    }
    throw e;
  }
  report("idle-tab");
  await sleep(MAX_LIFETIME_MS - (Date.now() - T0));
  report("lifetime-over");
  await browser.close();
}

main().catch((e) => {
  if (closing) return;
  report("error", { message: String(e && e.message ? e.message : e).split("\n")[0] });
  process.exit(1);
});
