// What the page's browser drivers share (page.mjs, banner.mjs): progress
// as JSON lines {"t", "event", ...} on stdout, their two arguments
// (BASE_URL SETTINGS_JSON), checks, Chromium from NBIDLE_CHROMIUM with
// playwright-core from NBIDLE_BROWSER_MODULES, and the failure's "error"
// line with a screenshot into NBIDLE_BROWSER_SHOTS.
import { createRequire } from "node:module";
import path from "node:path";

const T0 = Date.now();

export function report(event, fields = {}) {
  const line = { t: +((Date.now() - T0) / 1000).toFixed(2), event, ...fields };
  process.stdout.write(JSON.stringify(line) + "\n");
}

/// [BASE_URL, the parsed SETTINGS_JSON], or exits with the usage.
export function args(script) {
  const [base, settingsArg] = process.argv.slice(2);
  if (!base || !settingsArg) {
    report("error", { message: `usage: ${script} BASE_URL SETTINGS_JSON` });
    process.exit(2);
  }
  return [base, JSON.parse(settingsArg)];
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function check(ok, message) {
  if (!ok) throw new Error(message);
}

export async function launch() {
  const modules = process.env.NBIDLE_BROWSER_MODULES;
  const executablePath = process.env.NBIDLE_CHROMIUM ?? "/usr/bin/chromium";
  const { chromium } = createRequire(path.join(modules, "noop.js"))("playwright-core");
  return chromium.launch({ executablePath, args: ["--no-sandbox"] });
}

/// Reports `e` as the "error" line, with a screenshot of `page` (if any)
/// named `shot`.
export async function failed(page, shot, e) {
  if (page && process.env.NBIDLE_BROWSER_SHOTS) {
    await page.screenshot({ path: path.join(process.env.NBIDLE_BROWSER_SHOTS, shot) }).catch(() => {});
  }
  report("error", { message: String(e && e.stack ? e.stack : e) });
}
