// A person watching nbidle's notebook page while a notebook's idle warning
// fires, in headless Chromium, for tests/warning_banner.rs.
//
//   node banner.mjs BASE_URL SETTINGS_JSON
//
// SETTINGS_JSON: {"admin": an API token, "lab": the notebook's name,
// "shots": where the docs' screenshot goes}. Two tabs of one signed-in
// person: "live" is loaded once and never reloaded (the page's script must
// show the banner, count it down and take it away at the stop); "fresh"
// reloads until the server renders the banner. Steps, each a JSON line
// {"t", "event", ...}: signed-in, banner (the fresh tab's banner: its
// text, the seconds it counts, the row's status, its Keep running
// control), banner-live, ticking, stopped-live, stopped, done. Any failure
// is an "error" line.
// Environment: NBIDLE_BROWSER_MODULES, NBIDLE_CHROMIUM, NBIDLE_BROWSER_SHOTS
// (a directory for a screenshot of a failure).
import path from "node:path";

import { args, check, failed, launch, report, sleep } from "./driver.mjs";

const STEP_TIMEOUT_MS = 150 * 1000;
const [base, s] = args("banner.mjs");

const id = `local/${s.lab}`;
const row = `tr[data-id="${id}"]`;
const banner = `${row} .warning`;

/// "Stops in 1 min 5 s" → 65; "Stops now" → 0; anything else → null.
function secondsIn(text) {
  if (/^Stops now\b/.test(text)) return 0;
  const m = /^Stops in ((\d+) h )?((\d+) min )?((\d+) s )?unless used\b/.exec(text + " ");
  if (!m || !(m[2] || m[4] || m[6])) return null;
  return Number(m[2] ?? 0) * 3600 + Number(m[4] ?? 0) * 60 + Number(m[6] ?? 0);
}

/// What a row's banner shows, read at one instant.
async function readBanner(page) {
  return page.evaluate(
    ([row, banner]) => {
      const b = document.querySelector(banner);
      const keep = b && b.querySelector("button");
      const form = keep && keep.form;
      return {
        at: Date.now() / 1000,
        text: b ? b.textContent.replace(/\s+/g, " ").trim() : null,
        status: document.querySelector(`${row} .status`)?.textContent ?? null,
        keep: keep
          ? {
              label: keep.textContent.trim(),
              aria: keep.getAttribute("aria-label"),
              action: form ? new URL(form.action).pathname : null,
              for: form?.querySelector("[name=for]")?.value ?? null,
              csrf: Boolean(form?.querySelector("[name=csrf]")?.value),
            }
          : null,
      };
    },
    [row, banner],
  );
}

const browser = await launch();
let current = null;
try {
  const desk = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const live = await desk.newPage();
  current = live;
  live.setDefaultTimeout(STEP_TIMEOUT_MS);
  await live.goto(`${base}/`);
  check(new URL(live.url()).pathname === "/sign-in", `/ did not lead to /sign-in: ${live.url()}`);
  await live.fill("#token", s.admin);
  await Promise.all([live.waitForNavigation(), live.click("button[type=submit]")]);
  await live.waitForSelector(row);
  let navigations = 0;
  live.on("framenavigated", (f) => {
    if (f === live.mainFrame()) navigations++;
  });
  report("signed-in", { status: await live.textContent(`${row} .status`), banner: (await live.$(banner)) !== null });

  // The fresh tab reloads until the server renders the banner.
  const fresh = await desk.newPage();
  current = fresh;
  fresh.setDefaultTimeout(STEP_TIMEOUT_MS);
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    await fresh.goto(`${base}/`);
    if ((await fresh.$(banner)) !== null) break;
    const status = await fresh.textContent(`${row} .status`);
    check(status === "running", `${id} is ${status} and never showed a warning`);
    check(Date.now() < deadline, `no warning on ${id} within ${STEP_TIMEOUT_MS} ms`);
    await sleep(1000);
  }
  const shown = await readBanner(fresh);
  const secs = secondsIn(shown.text);
  report("banner", { ...shown, seconds: secs });
  check(secs !== null, `the banner does not say when ${id} stops: ${JSON.stringify(shown.text)}`);
  check(shown.status === "running", `${id} shows ${shown.status} under its warning`);
  check(shown.keep !== null && shown.keep.label === "Keep running", `the banner has no Keep running control: ${JSON.stringify(shown)}`);
  check(shown.keep.action === "/notebooks/keep-running" && shown.keep.csrf, `the banner's Keep running is not the Keep running form: ${JSON.stringify(shown.keep)}`);
  await fresh.screenshot({ path: path.join(s.shots, "page-warning.png") });

  // The live tab, never reloaded: the script shows the banner within its
  // refresh, and counts it down.
  current = live;
  await live.waitForSelector(banner, { timeout: 30000 });
  const first = await readBanner(live);
  report("banner-live", { ...first, seconds: secondsIn(first.text), navigations });
  check(secondsIn(first.text) !== null, `the live banner does not say when ${id} stops: ${JSON.stringify(first.text)}`);
  check(first.keep !== null && first.keep.label === "Keep running", `the live banner has no Keep running control: ${JSON.stringify(first)}`);
  await live.waitForFunction(
    ([banner, before]) => document.querySelector(banner)?.textContent.replace(/\s+/g, " ").trim() !== before,
    [banner, first.text],
    { timeout: 5000 },
  );
  const later = await readBanner(live);
  report("ticking", { ...later, seconds: secondsIn(later.text) });
  check(
    secondsIn(later.text) !== null && secondsIn(later.text) < secondsIn(first.text),
    `the live banner does not count down: ${first.text} → ${later.text}`,
  );

  // The stop: the live tab shows the notebook stopped and no banner.
  await live.waitForFunction((row) => document.querySelector(`${row} .status`)?.textContent === "stopped", row, {
    timeout: STEP_TIMEOUT_MS,
  });
  const gone = await readBanner(live);
  report("stopped-live", { ...gone, navigations });
  check(gone.text === null, `the stopped ${id} still shows its warning: ${gone.text}`);

  // A fresh load says so too, and why.
  await fresh.goto(`${base}/`);
  current = fresh;
  const after = await readBanner(fresh);
  const why = await fresh.textContent(`${row} .why`);
  report("stopped", { ...after, why });
  check(after.status === "stopped" && after.text === null, `after the stop: ${JSON.stringify(after)}`);
  report("done");
} catch (e) {
  await failed(current, "banner-failure.png", e);
} finally {
  await browser.close();
}
