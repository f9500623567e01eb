// A JupyterLab user whose notebook is stopped, in headless Chromium, for
// tests/standin.rs.
//
//   node standin.mjs BASE_URL TOKEN stopped
//
// Opens BASE_URL/lab?token=TOKEN and reports "lab-open"; the test then
// stops the notebook. Once nbidle's page answers on the notebook's origin,
// it counts the 503 answers JupyterLab's own requests got, reloads the tab
// and reports "stopped-page" with the page's heading and reason, saves a
// screenshot to $NBIDLE_BROWSER_SHOTS/stopped-notebook.png, types the token
// where the page asks for it, clicks Start, and reports "lab-again" once
// JupyterLab has loaded again. Progress goes to stdout as JSON lines
// {"t", "event", ...}; a failure is an "error" line.
//
// Environment: NBIDLE_BROWSER_MODULES (node_modules with playwright-core),
// NBIDLE_CHROMIUM (the browser), NBIDLE_BROWSER_SHOTS (a directory).
import { createRequire } from "node:module";
import path from "node:path";

const UI_TIMEOUT_MS = 90 * 1000;
const MAX_LIFETIME_MS = 5 * 60 * 1000;
const T0 = Date.now();

function report(event, fields = {}) {
  const line = { t: +((Date.now() - T0) / 1000).toFixed(2), event, ...fields };
  process.stdout.write(JSON.stringify(line) + "\n");
}

const [baseArg, token, scenario] = process.argv.slice(2);
const shots = process.env.NBIDLE_BROWSER_SHOTS;
if (!baseArg || !token || scenario !== "stopped" || !shots) {
  report("error", { message: "usage: NBIDLE_BROWSER_SHOTS=DIR standin.mjs BASE_URL TOKEN stopped" });
  process.exit(2);
}
const screenshot = path.join(shots, "stopped-notebook.png");
const base = baseArg.endsWith("/") ? baseArg : `${baseArg}/`;
const modules = process.env.NBIDLE_BROWSER_MODULES;
const executablePath = process.env.NBIDLE_CHROMIUM ?? "/usr/bin/chromium";
const { chromium } = createRequire(path.join(modules, "noop.js"))("playwright-core");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

setTimeout(() => {
  report("error", { message: "standin.mjs ran past its lifetime" });
  process.exit(1);
}, MAX_LIFETIME_MS).unref();

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 560 } });
  const page = await context.newPage();
  // JupyterLab's own requests once the notebook is stopped.
  let stoppedAnswers = 0;
  let jsonAnswers = 0;
  page.on("response", (r) => {
    if (r.headers()["x-nbidle-stopped"] && r.status() === 503) {
      stoppedAnswers += 1;
      if ((r.headers()["content-type"] ?? "").startsWith("application/json")) jsonAnswers += 1;
    }
  });
  await page.goto(`${base}lab?token=${token}`);
  await page.waitForSelector(".jp-LauncherCard", { timeout: UI_TIMEOUT_MS });
  report("lab-open");

  // Wait until nbidle's page answers on the notebook's origin.
  const deadline = Date.now() + UI_TIMEOUT_MS;
  for (;;) {
    const stopped = await page
      .evaluate(async (u) => {
        try {
          const r = await fetch(u, { cache: "no-store" });
          return r.headers.get("x-nbidle-stopped") !== null;
        } catch (e) {
          return false;
        }
      }, `${base}api`)
      .catch(() => false);
    if (stopped) break;
    if (Date.now() > deadline) throw new Error("the stopped-notebook page never answered");
    await sleep(250);
  }
  // Let JupyterLab poll the stopped notebook a little.
  await sleep(3000);
  report("lab-polled", { stoppedAnswers, jsonAnswers });

  await page.reload();
  const heading = await page.textContent("h1");
  const reason = await page.textContent(".reason");
  report("stopped-page", { heading, reason });
  await page.screenshot({ path: screenshot });
  report("screenshot", { path: screenshot });

  // JupyterLab took the token out of the address bar once it had loaded:
  // the reloaded page asks for it, and the person types it in.
  const asked = (await page.$("input#token")) !== null;
  report("token-asked", { asked, url: page.url() });
  if (asked) await page.fill("input#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#waiting", { timeout: UI_TIMEOUT_MS });
  report("waiting");
  await page.waitForSelector(".jp-LauncherCard", { timeout: UI_TIMEOUT_MS });
  report("lab-again", { url: page.url() });
} catch (e) {
  const pages = browser.contexts().flatMap((c) => c.pages());
  const where = pages.length ? pages[0].url() : "";
  const text = pages.length ? await pages[0].innerText("body").catch(() => "") : "";
  if (pages.length) await pages[0].screenshot({ path: path.join(shots, "failure.png") }).catch(() => {});
  report("error", { message: String(e?.stack ?? e), url: where, text: text.slice(0, 500) });
} finally {
  await browser.close();
}
