// Browser test of the console's wave pages in Debian's headless Chromium (playwright-core).
// Run by tests/blackbox/test_waves.py::test_console_wave_page, which passes in:
//   RELFLEET_API_URL, CONSOLE_ADMIN_TOKEN, CONSOLE_VIEWER_TOKEN, CONSOLE_WAVE (paused, two
//   steps), CONSOLE_WAVE2 (paused), CONSOLE_ARTIFACTS (screenshots).
// Exits 0 when every step passed; prints one line per step.
"use strict";

const lib = require("./lib");

const { env } = lib;
const URL_ = env("RELFLEET_API_URL");
const ARTIFACTS = env("CONSOLE_ARTIFACTS");
const WAVE = env("CONSOLE_WAVE");
const WAVE2 = env("CONSOLE_WAVE2");

async function login(token) {
  return lib.login(await lib.launch(), URL_, token, 30000);
}

lib.run(ARTIFACTS, "wave-failure", async () => {
  const errors = [];
  console.log("step: the wave list links the wave");
  const page = await login(env("CONSOLE_ADMIN_TOKEN"));
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.click("a[data-nav=waves]");
  await page.waitForSelector(`[data-waves] a[href="#/waves/${WAVE}"]`);
  await page.click(`[data-waves] a[href="#/waves/${WAVE}"]`);

  console.log("step: a paused wave shows why, its steps, and resume/abort for a releaser");
  await page.waitForSelector('h1 .badge[data-status="paused"]');
  await page.waitForSelector('[data-reason]:has-text("paused by admin")');
  if ((await page.$$("[data-steps] tbody tr")).length !== 2) throw new Error("not two steps");
  const buttons = await page.$$eval(".actions button", (bs) => bs.map((b) => b.dataset.action));
  if (buttons.join() !== "resume,abort") throw new Error(`buttons: ${buttons}`);
  await lib.shot(page, ARTIFACTS, "wave-paused");

  console.log("step: resume; the page follows the wave to its end, step by step");
  await page.click('.actions button[data-action="resume"]');
  await page.waitForSelector('h1 .badge[data-status="running"]');
  await page.waitForSelector('h1 .badge[data-status="succeeded"]', { timeout: 90000 });
  const progress = await page.textContent("[data-progress]");
  if (!progress.startsWith("2/2 ended: 2 succeeded")) throw new Error(`progress: ${progress}`);
  const states = await page.$$eval("[data-steps] tbody tr", (rs) => rs.map((r) => r.children[3].textContent));
  if (states.join() !== "ended,ended") throw new Error(`step states: ${states}`);
  if (await page.$(".actions button")) throw new Error("buttons on a finished wave");
  await lib.shot(page, ARTIFACTS, "wave-succeeded");

  console.log("step: a viewer sees the other wave without buttons");
  const vpage = await login(env("CONSOLE_VIEWER_TOKEN"));
  await vpage.goto(`${URL_}/#/waves/${WAVE2}`);
  await vpage.waitForSelector('h1 .badge[data-status="paused"]');
  if (await vpage.$(".actions button")) throw new Error("a viewer was offered buttons");

  console.log("step: the admin aborts it with a reason");
  await page.goto(`${URL_}/#/waves/${WAVE2}`);
  await page.waitForSelector('.actions button[data-action="abort"]');
  page.once("dialog", (d) => d.accept("not today"));
  await page.click('.actions button[data-action="abort"]');
  await page.waitForSelector('h1 .badge[data-status="aborted"]');
  await page.waitForSelector('[data-reason]:has-text("aborted by admin: not today")');
  await lib.shot(page, ARTIFACTS, "wave-aborted");
  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  console.log("ok: waves");
});
