// Browser test of the console's statistics page (#/stats, producer/api/static/stats.js) in
// Debian's headless Chromium (playwright-core). Run by tests/blackbox/test_dora.py after a
// run of CONSOLE_SERVICE in CONSOLE_ENV with 2 successes and 1 failure; environment:
//   RELFLEET_API_URL, CONSOLE_ADMIN_TOKEN, CONSOLE_SERVICE, CONSOLE_ENV, CONSOLE_ARTIFACTS.
// Exits 0 when every step passed; prints one line per step.
"use strict";

const lib = require("./lib");

const { env, step } = lib;
const URL_ = env("RELFLEET_API_URL");
const SERVICE = env("CONSOLE_SERVICE");
const ENVNAME = env("CONSOLE_ENV");
const ARTIFACTS = env("CONSOLE_ARTIFACTS");

const shot = (page, name) => lib.shot(page, ARTIFACTS, name);
const expect = (cond, what) => { if (!cond) throw new Error(what); };

lib.run(ARTIFACTS, "failure", async () => {
  const errors = [];
  step("admin logs in and opens Stats from the menu");
  const page = await lib.login(await lib.launch({ height: 900 }), URL_,
    env("CONSOLE_ADMIN_TOKEN"));
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.click("a[data-nav=stats]");
  await page.waitForSelector("svg[data-chart=outcomes]");
  expect(await page.getAttribute("a[data-nav=stats]", "class") === "active", "menu not active");
  for (const chart of ["outcomes", "durations", "failure-rate"])
    expect(await page.$(`svg[data-chart="${chart}"][role=img]`), `no ${chart} chart`);
  const days = await page.$$eval("svg[data-chart=outcomes] text.axis", (t) => t.length);
  expect(days > 5, `the outcomes chart has ${days} labels`);
  await shot(page, "01-stats-fleet");

  step(`the service's numbers: filtered with the form (Enter submits)`);
  await page.fill("#stats-service", SERVICE);
  await page.fill("#stats-env", ENVNAME);
  await page.focus("#stats-env");
  await page.keyboard.press("Enter");
  await page.waitForFunction((s) => location.hash.includes("service=" + s), SERVICE);
  await page.waitForSelector(`#stats-services td a:text-is("${SERVICE}")`);
  const cfr = await page.textContent("#m-cfr");
  expect(cfr.includes("33.3 %") && cfr.includes("1 of 3 changes"), `change failure: ${cfr}`);
  const freq = await page.textContent("#m-frequency");
  expect(freq.includes("2 succeeded releases"), `frequency: ${freq}`);
  const restore = await page.textContent("#m-restore");
  expect(restore.includes("1 outage") && !restore.includes("not restored"), `restore: ${restore}`);
  const today = new Date().toISOString().slice(0, 10);
  const bars = await page.$$eval(`svg[data-chart=outcomes] rect[data-date="${today}"]`,
    (rs) => Object.fromEntries(rs.map((r) => [r.dataset.status, Number(r.dataset.count)])));
  expect(bars.succeeded === 2 && bars.failed === 1, `today's bars: ${JSON.stringify(bars)}`);
  const rate = await page.getAttribute(
    `svg[data-chart=failure-rate] circle[data-date="${today}"]`, "data-value");
  expect(Math.abs(Number(rate) - 0.3333) < 1e-9, `today's failure rate point: ${rate}`);
  const durations = await page.$$(`svg[data-chart=durations] circle[data-date="${today}"]`);
  expect(durations.length === 2, `${durations.length} duration points today (p50, p90)`);
  await shot(page, "02-stats-service");

  step("a bad filter is refused with the API's reason");
  await page.goto(`${URL_}/#/stats?env=PROD`);
  await page.waitForSelector("#stats-error");
  const err = await page.textContent("#stats-error");
  expect(err.includes("env 'PROD' is not an env name"), `error: ${err}`);
  await shot(page, "03-stats-refused");
  expect(!errors.length, `errors in the page: ${errors.join("; ")}`);
  console.log("ok: stats page");
});
