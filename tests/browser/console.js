// Browser test of the Relfleet web console in Debian's headless Chromium (playwright-core).
// Run by tests/blackbox/test_console.py, which prepares a stack and passes in the environment:
//   RELFLEET_API_URL, CONSOLE_ADMIN_TOKEN, CONSOLE_RELEASER_TOKEN, CONSOLE_SERVICE,
//   CONSOLE_ENV, CONSOLE_VERSIONS (two, comma-separated), CONSOLE_ARTIFACTS (screenshots),
//   CONSOLE_APPROVER_TOKEN and CONSOLE_AWAITING (two ids of admin's releases awaiting one
//   approval).
// Exits 0 when every step passed; prints one line per step.
"use strict";

const lib = require("./lib");

const { env, step } = lib;
const URL_ = env("RELFLEET_API_URL");
const SERVICE = env("CONSOLE_SERVICE");
const ENVNAME = env("CONSOLE_ENV");
const [V1, V2] = env("CONSOLE_VERSIONS").split(",");
const ARTIFACTS = env("CONSOLE_ARTIFACTS");

const shot = (page, name) => lib.shot(page, ARTIFACTS, name);
const login = (context, token) => lib.login(context, URL_, token);
const launch = () => lib.launch({ bypassCSP: true });

// Creates a release with the console's form and returns its id (the page then shows it).
async function newRelease(page, version, description) {
  await page.click("a[data-nav=new]");
  await page.waitForSelector("#new-form");
  await page.selectOption("#n-env", ENVNAME);
  await page.selectOption("#n-service", SERVICE);
  await page.waitForSelector(`#n-version option[value="${version}"]`, { state: "attached" });
  await page.selectOption("#n-version", version);
  await page.fill("#n-description", description);
  await page.click("#new-form button[type=submit]");
  await page.waitForFunction(() => /^#\/releases\/[0-9a-f-]{36}$/.test(location.hash));
  await page.waitForSelector("#timeline");
  return page.evaluate(() => location.hash.split("/")[2]);
}

// Waits for the detail page to show status; with live, it must get there through the
// event stream: the page was loaded while the release still ran.
async function watchUntil(page, status, live) {
  if (live) {
    const before = await page.getAttribute("#status .badge", "data-status");
    if (["succeeded", "failed", "cancelled", "superseded", "rejected"].includes(before))
      throw new Error(`the release had already ended (${before}) when its page opened`);
    await page.waitForSelector("#live.on", { state: "attached" });
  }
  await page.waitForSelector(`#status .badge[data-status="${status}"]`);
  if (live) {
    await page.waitForSelector("#live:not(.on)", { state: "attached" });
    const text = await page.textContent("#live");
    if (text !== "finished") throw new Error(`live indicator says '${text}' at the end`);
    await page.waitForSelector(`#timeline-rows tr[data-event="${status}"]`);
  }
}

lib.run(ARTIFACTS, "failure", async () => {
  const errors = [];
  const admin = await launch();
  step("admin logs in and sees the release list");
  const page = await login(admin, env("CONSOLE_ADMIN_TOKEN"));
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.waitForSelector("#who-name");
  const who = await page.textContent("#who-name");
  if (!who.startsWith("admin")) throw new Error(`logged in as '${who}'`);
  await shot(page, "01-release-list");

  step(`new release ${V1} through the form, watched live until it succeeds`);
  const first = await newRelease(page, V1, "first from the console");
  await watchUntil(page, "succeeded", true);
  // Opened while queued: the template it rendered with shows up live, as relctl show has it.
  await page.waitForFunction(() => /Template\s*web @ [0-9a-f]{12}/.test(
    document.querySelector("#params").textContent));
  await shot(page, "02-release-succeeded");

  step(`new release ${V2}, watched live`);
  const second = await newRelease(page, V2, "second from the console");
  await watchUntil(page, "succeeded", true);
  const progress = await page.getAttribute("#progress progress", "value");
  if (progress === null) throw new Error("no progress bar on the finished release");

  step("the list shows both, with status colours, durations and descriptions");
  await page.click("a[data-nav=releases]");
  await page.waitForSelector(`tr[data-id="${second}"]`);
  await page.waitForSelector(`tr[data-id="${first}"] .badge.st-succeeded`);
  const row = await page.textContent(`tr[data-id="${second}"]`);
  if (!row.includes("second from the console") || !/\d (ms|s|min)/.test(row))
    throw new Error(`list row lacks description or duration: ${row}`);

  step(`rollback to ${V1} from its release page, the new release succeeds`);
  await page.click(`tr[data-id="${first}"] a`);
  await page.waitForSelector('#actions button[data-action="rollback"]');
  page.once("dialog", (d) => d.accept());
  await page.click('#actions button[data-action="rollback"]');
  await page.waitForFunction((id) => location.hash.startsWith("#/releases/") &&
    !location.hash.endsWith(id), first);
  await page.waitForSelector("#timeline");
  await page.waitForSelector('#status .badge[data-status="succeeded"]');
  const kind = await page.textContent("#params");
  if (!kind.includes("rollback of") || !kind.includes(first))
    throw new Error(`the new release is not a rollback of ${first}: ${kind}`);
  await shot(page, "03-rollback-succeeded");

  step("admin edits the service configuration; the history shows the change");
  await page.goto(`${URL_}/#/services/${SERVICE}/${ENVNAME}`);
  await page.waitForSelector("#svc-form");
  await page.fill("#s-replicas", "3");
  await page.click("#svc-form button[type=submit]");
  await page.waitForSelector('#config dd[data-key="replicas"]:text-is("3")');
  await page.waitForSelector('#history td:text-is("replicas")');
  await shot(page, "04-admin-edits-config");

  step("a releaser sees no editor and the API refuses its change (403)");
  const rel = await launch();
  const rpage = await login(rel, env("CONSOLE_RELEASER_TOKEN"));
  await rpage.goto(`${URL_}/#/services/${SERVICE}/${ENVNAME}`);
  await rpage.waitForSelector("#svc-readonly");
  if (await rpage.$("#svc-form")) throw new Error("a releaser was shown the editor");
  const refused = await rpage.evaluate(async ([svc, e]) => {
    const s = await (await fetch("/api/v1/session")).json();
    const r = await fetch(`/api/v1/services/${svc}/${e}`, { method: "PATCH",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": s.csrf_token },
      body: JSON.stringify({ replicas: 5 }) });
    return [r.status, (await r.json()).error];
  }, [SERVICE, ENVNAME]);
  if (refused[0] !== 403) throw new Error(`a releaser's PATCH answered ${refused}`);
  await rpage.goto(`${URL_}/#/releases/${second}`);
  await rpage.waitForSelector("#actions");
  const buttons = await rpage.$$eval("#actions button", (bs) => bs.map((b) => b.dataset.action));
  if (!buttons.includes("rollback")) throw new Error(`releaser buttons: ${buttons}`);
  await shot(rpage, "05-releaser-readonly");

  const [toApprove, toDeny] = env("CONSOLE_AWAITING").split(",");
  step("the requester of a release awaiting approval gets no approve button (four eyes)");
  await page.goto(`${URL_}/#/releases/${toApprove}`);
  await page.waitForSelector('#status .badge[data-status="awaiting_approval"]');
  await page.waitForSelector("#approvals h2");
  const own = await page.$$eval("#actions button", (bs) => bs.map((b) => b.dataset.action));
  if (own.includes("approve") || own.includes("deny"))
    throw new Error(`the requester was offered ${own}`);

  step("an approver approves one: it runs to success, the approval on the page");
  const appr = await launch();
  const apage = await login(appr, env("CONSOLE_APPROVER_TOKEN"));
  apage.on("pageerror", (e) => errors.push(String(e)));
  await apage.goto(`${URL_}/#/releases/${toApprove}`);
  await apage.waitForSelector('#actions button[data-action="approve"]');
  apage.once("dialog", (d) => d.accept());
  await apage.click('#actions button[data-action="approve"]');
  await apage.waitForSelector('#status .badge[data-status="succeeded"]', { timeout: 60000 });
  await apage.waitForSelector('#approvals td:text-is("approved")');
  if (await apage.$('#actions button[data-action="approve"]'))
    throw new Error("the approve button stayed after the approval");
  await shot(apage, "06-approval-approved");

  step("and denies the other with a reason: it ends cancelled with it");
  await apage.goto(`${URL_}/#/releases/${toDeny}`);
  await apage.waitForSelector('#actions button[data-action="deny"]');
  apage.once("dialog", (d) => d.accept("not this week"));
  await apage.click('#actions button[data-action="deny"]');
  await apage.waitForSelector('#status .badge[data-status="cancelled"]');
  await apage.waitForSelector('#error:has-text("not this week")');
  await apage.waitForSelector('#approvals td:text-is("denied")');
  await shot(apage, "07-approval-denied");
  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  console.log(`ok: first=${first} second=${second}`);
});
