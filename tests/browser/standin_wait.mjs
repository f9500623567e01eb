// Runs the waiting page's script (src/backend/local/assets/standin.js)
// against one answer of <base>api and prints what it did, as JSON:
// {"redirected": bool, "status": "..."}.
// Usage: node standin_wait.mjs <script> <http status> <marked 0|1> <body>
import { readFileSync } from "node:fs";
import vm from "node:vm";

const [script, code, marked, body] = process.argv.slice(2);
const result = { redirected: false, status: "" };
const statusEl = { set textContent(t) { result.status = t; }, get textContent() { return result.status; } };
const answer = {
  status: Number(code),
  headers: { get: (h) => (h === "x-nbidle-stopped" && marked === "1" ? "1" : null) },
  json: () => new Promise((ok, fail) => { try { ok(JSON.parse(body)); } catch (e) { fail(e); } }),
};
let polls = 0;
const context = {
  document: {
    getElementById: (id) =>
      id === "waiting" ? { dataset: { api: "/user/ada/api", next: "/user/ada/lab" } } : statusEl,
  },
  location: { replace: () => { result.redirected = true; } },
  fetch: () => { polls += 1; return Promise.resolve(answer); },
  // One poll is enough to decide; the retry is not run.
  setTimeout: () => {},
};
vm.runInNewContext(readFileSync(script, "utf8"), context);
setTimeout(() => {
  result.polls = polls;
  console.log(JSON.stringify(result));
}, 100);
