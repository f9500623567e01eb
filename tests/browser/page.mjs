// A person using nbidle's notebook page in headless Chromium, for
// tests/page.rs.
//
//   node page.mjs BASE_URL SETTINGS_JSON
//
// SETTINGS_JSON: {"admin", "other", "local": API tokens (every namespace,
// namespace "other" only, namespace "local" only), "jupyterToken",
// "lab", "second": the notebooks' names, "shots": where the docs'
// screenshots go}. Steps, each reported as a JSON line {"t", "event", ...}:
// sign-in refused with a wrong token, the list, a POST without the CSRF
// token refused, Keep running and its cancel, Stop with the keyboard only, Start, Open loads JupyterLab
// with the workspace's files, a phone-width viewport without horizontal
// scroll, and namespace-scoped tokens. Any failure is an "error" line.
// Environment: NBIDLE_BROWSER_MODULES, NBIDLE_CHROMIUM, NBIDLE_BROWSER_SHOTS
// (a directory for a screenshot of a failure).
import path from "node:path";

import { args, check, failed, launch, report, sleep } from "./driver.mjs";

const STEP_TIMEOUT_MS = 90 * 1000;
const [base, s] = args("page.mjs");

const row = (id) => `tr[data-id="${id}"]`;

async function signIn(page, token) {
  await page.goto(`${base}/`);
  check(new URL(page.url()).pathname === "/sign-in", `/ did not lead to /sign-in: ${page.url()}`);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
}

async function rows(page) {
  return page.$$eval("tr[data-id]", (trs) => trs.map((tr) => tr.dataset.id));
}

/// Reloads until the notebook's status reads `status`.
async function waitStatus(page, id, status) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const now = await page.textContent(`${row(id)} .status`);
    if (now === status) return;
    check(Date.now() < deadline, `${id} is still ${now}, not ${status}`);
    await sleep(1000);
    await page.goto(`${base}/`);
  }
}

/// POSTs a form from the page's own origin (cookies and all).
async function postFrom(page, action, fields) {
  return page.evaluate(
    async ([action, fields]) => {
      const r = await fetch(action, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "text/html" },
        body: new URLSearchParams(fields).toString(),
        redirect: "manual",
      });
      return r.status;
    },
    [action, fields],
  );
}

const browser = await launch();
let current = null;
try {
  const desk = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await desk.newPage();
  current = page;
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const lab = `local/${s.lab}`;
  const second = `local/${s.second}`;

  // Sign-in: a wrong token is refused, a right one lists the notebooks.
  await page.goto(`${base}/`);
  await page.screenshot({ path: path.join(s.shots, "page-signin.png") });
  await signIn(page, "not-a-token");
  const refusal = await page.textContent("#sign-in-error");
  check(refusal.includes("That token is not valid"), `wrong token: ${refusal}`);
  check(new URL(page.url()).pathname === "/sign-in", `wrong token left the sign-in page: ${page.url()}`);
  report("wrong-token-refused", { message: refusal });
  await signIn(page, s.admin);
  await page.waitForSelector(row(lab));
  const listed = await rows(page);
  const left = await page.textContent(`${row(lab)} .left`);
  report("list", { rows: listed, left });
  await page.screenshot({ path: path.join(s.shots, "page-list.png"), fullPage: true });

  // Keep running for 4 h: a silence in Alertmanager, shown on the row;
  // Cancel expires it.
  await page.selectOption(`${row(lab)} select[name=for]`, "4h");
  await Promise.all([page.waitForNavigation(), page.click(`${row(lab)} form.keep button`)]);
  const kept = await page.textContent(".flash");
  check(kept.includes(`${lab} is kept running until`), `Keep running: ${kept}`);
  const shown = await page.textContent(`${row(lab)} .kept`);
  check(shown.includes("Kept running until") && shown.includes("by nbidle page"), `row: ${shown}`);
  report("kept-running", { flash: kept, row: shown });
  await Promise.all([page.waitForNavigation(), page.click(`${row(lab)} button[aria-label="Cancel keep running ${lab}"]`)]);
  const cancelled = await page.textContent(".flash");
  check(cancelled.includes("no longer kept running"), `Cancel: ${cancelled}`);
  check((await page.$(`${row(lab)} .kept`)) === null, "still shown as kept running");
  report("keep-running-cancelled", { flash: cancelled });

  // A POST without the CSRF token, or with a wrong one, is refused.
  const without = await postFrom(page, "/notebooks/stop", { namespace: "local", name: s.lab });
  const wrong = await postFrom(page, "/notebooks/stop", { namespace: "local", name: s.lab, csrf: "0".repeat(64) });
  check(without === 403 && wrong === 403, `CSRF: without ${without}, wrong ${wrong}`);
  await page.goto(`${base}/`);
  check((await page.textContent(`${row(lab)} .status`)) === "running", "a refused POST stopped it");
  report("csrf-refused", { without, wrong });

  // Stop with the keyboard only: Tab to the button, Enter.
  let focused = "";
  for (let i = 0; i < 200 && focused !== `Stop ${lab}`; i++) {
    await page.keyboard.press("Tab");
    focused = await page.evaluate(() => document.activeElement?.getAttribute("aria-label") ?? "");
  }
  check(focused === `Stop ${lab}`, `Tab never reached Stop ${lab}`);
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== "none", "the focused button shows no outline");
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")]);
  const flash = await page.textContent(".flash");
  // The stop returns while Jupyter shuts down: the message says so.
  check(flash.includes(`Stopping ${lab}\u2026`) || flash.includes(`Stopped ${lab}.`), `after Stop: ${flash}`);
  await waitStatus(page, lab, "stopped");
  const why = await page.textContent(`${row(lab)} .why`);
  check(why.includes("on nbidle's page at") && why.includes("Files are kept"), `why: ${why}`);
  // Once it is down, the counts line no longer counts it as stopping.
  const summary = await page.textContent(".summary");
  check(summary.includes(" stopped") && !summary.includes("stopping"), `summary: ${summary}`);
  report("stopped-by-keyboard", { flash, why, summary });

  // Start, then Open loads JupyterLab with the workspace's files.
  await Promise.all([page.waitForNavigation(), page.click(`${row(lab)} form[data-kind=start] button`)]);
  report("start-clicked", { flash: await page.textContent(".flash") });
  await waitStatus(page, lab, "running");
  report("running-again");
  let lab_page = null;
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const [popup] = await Promise.all([desk.waitForEvent("page"), page.click(`${row(lab)} a[aria-label="Open ${lab}"]`)]);
    await popup.waitForLoadState();
    const login = await popup.$("input[name=password]");
    if (login) {
      await login.fill(s.jupyterToken);
      await Promise.all([popup.waitForNavigation(), login.press("Enter")]);
    }
    try {
      await popup.waitForSelector(".jp-LauncherCard", { timeout: 20000 });
      lab_page = popup;
      break;
    } catch (e) {
      check(Date.now() < deadline, `JupyterLab did not load: ${e.message}`);
      await popup.close();
    }
  }
  await lab_page.locator(".jp-DirListing-itemText", { hasText: "kept.txt" }).waitFor();
  report("lab-open", { url: lab_page.url().replace(/token=[^&]*/, "token=…") });
  await lab_page.close();

  // A phone-width screen: no horizontal scroll.
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  current = small;
  small.setDefaultTimeout(STEP_TIMEOUT_MS);
  await signIn(small, s.admin);
  await small.waitForSelector(row(lab));
  const widths = await small.evaluate(() => ({ scroll: document.documentElement.scrollWidth, view: window.innerWidth }));
  check(widths.scroll <= widths.view, `horizontal scroll at phone width: ${JSON.stringify(widths)}`);
  await small.screenshot({ path: path.join(s.shots, "page-phone.png") });
  report("phone", widths);
  await phone.close();

  // A token for namespace "other" sees nothing here and may not stop a
  // notebook of "local"; a token for "local" acts on it.
  const team = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const tpage = await team.newPage();
  current = tpage;
  tpage.setDefaultTimeout(STEP_TIMEOUT_MS);
  await signIn(tpage, s.other);
  await tpage.waitForSelector("text=No notebooks match.");
  check((await rows(tpage)).length === 0, "a token for other sees local notebooks");
  const csrf = await tpage.getAttribute("input[name=csrf]", "value");
  const refused = await postFrom(tpage, "/notebooks/stop", { namespace: "local", name: s.lab, csrf });
  check(refused === 403, `a token for other stopping ${lab}: ${refused}`);
  report("other-namespace-refused", { status: refused });
  await Promise.all([tpage.waitForNavigation(), tpage.click("text=Sign out")]);
  await signIn(tpage, s.local);
  await tpage.waitForSelector(row(second));
  await Promise.all([tpage.waitForNavigation(), tpage.click(`${row(second)} form[data-kind=stop] button`)]);
  const stopped = await tpage.textContent(".flash");
  check(stopped.includes(`Stopping ${second}\u2026`) || stopped.includes(`Stopped ${second}.`), `a token for local stopping ${second}: ${stopped}`);
  report("own-namespace-stopped", { flash: stopped, rows: await rows(tpage) });
  await team.close();
  report("done");
} catch (e) {
  await failed(current, "page-failure.png", e);
} finally {
  await browser.close();
}
