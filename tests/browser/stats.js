// Browser test of the console's statistics page (#/stats, producer/api/static/stats.js) in
// Debian's headless Chromium (playwright-core). Run by tests/blackbox/test_dora.py after a
// run of CONSOLE_SERVICE in CONSOLE_ENV with 2 successes and 1 failure; environment:
//   RELFLEET_API_URL, CONSOLE_ADMIN_TOKEN, CONSOLE_SERVICE, CONSOLE_ENV, CONSOLE_ARTIFACTS.
// Exits 0 when every step passed; prints one line per step.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const URL_ = env("RELFLEET_API_URL");
const SERVICE = env("CONSOLE_SERVICE");
const ENVNAME = env("CONSOLE_ENV");
const ARTIFACTS = env("CONSOLE_ARTIFACTS");

const step = (text) => console.log(`step: ${text}`);
const shot = (page, name) =>
  page.screenshot({ path: path.join(ARTIFACTS, name + ".png"), fullPage: true });
const expect = (cond, what) => { if (!cond) throw new Error(what); };

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "relfleet-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1366, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.setDefaultTimeout(20000);
  try {
    step("admin logs in and opens Stats from the menu");
    await page.goto(URL_ + "/#/login");
    await page.fill("#token", env("CONSOLE_ADMIN_TOKEN"));
    await page.keyboard.press("Enter");
    await page.waitForSelector("#releases");
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
  } catch (e) {
    await page.screenshot({ path: path.join(ARTIFACTS, "failure.png"), fullPage: true })
      .catch(() => {});
    throw e;
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
