// What the console's browser tests share: settings from the environment, one Chromium per
// user with a fresh profile, login, screenshots, and a run that cleans up after itself.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

function step(text) {
  console.log(`step: ${text}`);
}

// Every Chromium launched, with its profile folder, closed and removed by run().
const browsers = [];

// One Chromium with a fresh profile (--user-data-dir, which playwright passes for a
// persistent context): each user gets a browser of their own, so no cookie is shared.
// bypassCSP: for waitForFunction with a string, which the console's CSP forbids to eval.
async function launch({ height = 800, bypassCSP = false } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "relfleet-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1366, height },
    bypassCSP,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  browsers.push([context, profile]);
  return context;
}

// A new page of context, logged in with token (submitted with Enter: keyboard-usable), on
// the release list.
async function login(context, url, token, timeout = 20000) {
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  await page.goto(url + "/#/login");
  await page.fill("#token", token);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#releases");
  return page;
}

async function shot(page, dir, name) {
  await page.screenshot({ path: path.join(dir, name + ".png"), fullPage: true });
}

// Runs body; when it fails, every open page is saved as <failure>-N.png in dir; the
// browsers are closed and their profiles removed either way. Exits 1 on a failure.
function run(dir, failure, body) {
  const go = async () => {
    fs.mkdirSync(dir, { recursive: true });
    try {
      await body();
    } catch (e) {
      let n = 0;
      for (const [context] of browsers)
        for (const p of context.pages())
          await shot(p, dir, `${failure}-${++n}`).catch(() => {});
      throw e;
    } finally {
      for (const [context, profile] of browsers) {
        await context.close();
        fs.rmSync(profile, { recursive: true, force: true });
      }
    }
  };
  go().catch((e) => {
    console.error(`FAILED: ${e.stack || e}`);
    process.exit(1);
  });
}

module.exports = { env, step, launch, login, shot, run };
