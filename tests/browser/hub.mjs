// A person on a JupyterHub with nbidle's JupyterLab extension, for
// tests/jupyterhub.rs:
//
//   node hub.mjs HUB_URL SETTINGS_JSON
//
// SETTINGS_JSON: {"user": the Hub user, "shots": a directory for the
// failure's screenshot}. The person signs in on the Hub's login page,
// opens JupyterLab on their server through the Hub's proxy and does
// nothing: the status bar counts down, the warning dialog comes, and
// after the stop the tab says nbidle stopped it, not the Hub's "Server
// unavailable or unreachable". Its "Start it again" leads to the Hub,
// which starts the server and opens JupyterLab on it again.
import { args, failed, launch, report, sleep } from "./driver.mjs";

const UI_TIMEOUT_MS = 90 * 1000;
const LONG_TIMEOUT_MS = 5 * 60 * 1000;
const HUB_LOST = "Server unavailable or unreachable";

const [hub, settings] = args("hub.mjs");
const base = hub.replace(/\/$/, "");

async function person(page) {
  await page.goto(`${base}/hub/login`);
  await page.fill("input[name=username]", settings.user);
  await page.fill("input[name=password]", "any");
  await Promise.all([page.waitForURL(/\/hub\/(home|spawn|spawn-pending)|\/user\//), page.press("input[name=password]", "Enter")]);
  report("signed-in", { url: page.url() });
  await page.goto(`${base}/user/${settings.user}/lab?reset`);
  await page.waitForSelector(".jp-LauncherCard", { timeout: UI_TIMEOUT_MS });
  report("open", { url: page.url(), at: Date.now() / 1000 });

  const countdown = page.locator("#nbidle-status").filter({ hasText: /Stops in \d/ });
  await countdown.waitFor({ timeout: LONG_TIMEOUT_MS });
  report("countdown", { text: (await countdown.textContent()).trim(), at: Date.now() / 1000 });

  const dialog = page.locator(".nbidle-dialog");
  await dialog.waitFor({ timeout: LONG_TIMEOUT_MS });
  report("dialog", {
    text: (await dialog.textContent()).replace(/\s+/g, " ").trim(),
    at: Date.now() / 1000,
  });

  const stopped = page.locator(".nbidle-stopped");
  await stopped.waitFor({ timeout: LONG_TIMEOUT_MS });
  // Whatever else JupyterLab shows a moment later.
  await sleep(3000);
  const link = stopped.locator("a.nbidle-start-link");
  report("stopped", {
    text: (await stopped.textContent()).replace(/\s+/g, " ").trim(),
    href: await link.getAttribute("href"),
    hub_lost_dialogs: await page.getByText(HUB_LOST).count(),
    at: Date.now() / 1000,
  });
  await page.screenshot({ path: `${settings.shots}/hub-stopped.png` });

  // The Hub's spawn page starts the server and sends the person back into
  // JupyterLab.
  await link.click();
  await page.waitForURL(/\/hub\/spawn|\/user\/[^/]+\/lab/, { timeout: UI_TIMEOUT_MS });
  report("hub-spawn", { url: page.url() });
  await page.waitForURL(/\/user\/[^/]+\/lab/, { timeout: LONG_TIMEOUT_MS });
  await page.waitForSelector(".jp-LauncherCard", { timeout: UI_TIMEOUT_MS });
  report("started-again", { url: page.url() });
}

async function main() {
  const browser = await launch();
  report("browser", { version: browser.version() });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  try {
    await person(page);
  } catch (e) {
    await failed(page, "hub-failed.png", e);
    process.exit(1);
  }
  report("done");
  await browser.close();
}

main().catch((e) => {
  report("error", { message: String(e && e.stack ? e.stack : e) });
  process.exit(1);
});
