// The service page (history as a timeline and a duration chart), the throughput
// graphs, the cluster panel and the recent events, in headless Chromium against a
// live koan-demo host.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useDemo, openAt, assertFits, shot, call, WAIT, WIDE, NARROW } from "./harness.mjs";

let base, browser;
useDemo((started) => ({ base, browser } = started));


test("a page opened after events were emitted shows them at once", async () => {
  // MessagingLifecycle announces itself once, at start.
  const recent = await call(base, "GET", "/api/events/recent?service=MessagingLifecycle");
  assert.ok(recent.some((e) => e.event === "Messaging.Ready"), JSON.stringify(recent));
  const page = await openAt(browser, base + "/");
  await page.locator('#events li[data-event="Messaging.Ready"]').first().waitFor(WAIT);
  await page.close();
});

test("a service's page shows its runs as a timeline, a duration chart and a table", async () => {
  for (let i = 0; i < 3; i++) await call(base, "POST", "/api/services/DataCleanupService/trigger?wait=true");
  const page = await openAt(browser, base + "/");
  await page.locator('tr.row[data-service="DataCleanupService"] a.name').click();
  await page.locator('#service-page[data-service="DataCleanupService"]').waitFor(WAIT);
  await page.locator("#runs tbody tr").nth(2).waitFor(WAIT);
  assert.ok(await page.locator('svg[data-chart="timeline"] rect[data-outcome="success"]').count() >= 3);
  assert.ok(await page.locator('svg[data-chart="durations"] rect').count() >= 3);
  const reasons = await page.locator("#runs tbody tr td:nth-child(2)").allTextContents();
  assert.ok(reasons.slice(0, 3).every((r) => r === "trigger"), JSON.stringify(reasons));
  // "Trigger now" runs it once more; the run and its event show on the page.
  const before = await page.locator("#runs tbody tr").count();
  await page.locator('#service-page button[data-action="trigger"]').click();
  await page.locator("#runs tbody tr").nth(before).waitFor(WAIT);
  await page.locator('#service-events li[data-event="DataCleanup.Completed"]').first().waitFor(WAIT);
  await page.screenshot({ path: shot("dashboard-service.png"), fullPage: true });
  await page.close();
});

test("a background service shows the actions it handled, not zero runs", async () => {
  await call(base, "POST", "/api/services/TranslationService/actions/check-queue");
  const page = await openAt(browser, base + "/");
  await page.locator('tr.row[data-service="TranslationService"] [data-field="runs"]').filter({ hasText: /^[1-9]\d* actions?$/ }).waitFor(WAIT);
  await page.close();
});

test("the throughput graphs count finished work per second and per hour", async () => {
  const page = await openAt(browser, base + "/");
  await call(base, "POST", "/api/services/DataCleanupService/trigger?wait=true");
  await page.locator('svg[data-chart="per-second"] rect.ok').first().waitFor(WAIT);
  await page.locator('svg[data-chart="per-hour"] rect.ok').first().waitFor(WAIT);
  await page.locator('[data-field="per-hour"]').filter({ hasText: /^last day, per hour: [1-9]/ }).waitFor(WAIT);
  await page.close();
});

test("the cluster panel lists this instance with its services and heartbeat", async () => {
  const page = await openAt(browser, base + "/#/cluster");
  const row = page.locator("#instances tbody tr").first();
  await row.waitFor(WAIT);
  assert.equal(await row.getAttribute("data-stale"), "0");
  assert.match(await row.textContent(), /this host/);
  assert.match(await row.textContent(), /TranslationService \(running\)/);
  await page.screenshot({ path: shot("dashboard-cluster.png") });
  await page.close();
});

test("the service page and the cluster panel fit a narrow window", async () => {
  for (const hash of ["#/services/DataCleanupService", "#/cluster", "#/"]) {
    const page = await openAt(browser, base + "/" + hash, NARROW);
    await page.locator(hash === "#/cluster" ? "#instances tbody tr" : hash === "#/" ? "tr.row" : "#service-page dl dt").first().waitFor(WAIT);
    await assertFits(page, hash);
    await page.close();
  }
});

test("in a cluster a service has one row per host, kept across refreshes, and a departed host's row goes", async () => {
  // The host's own list, with TranslationService also on another host (as a
  // cluster host answers): keyed by name alone, the remote row was added again at
  // every refresh (2,962 rows for 10 services in 20 minutes; a probe).
  const local = await call(base, "GET", "/api/services");
  const translation = local.find((s) => s.name === "TranslationService");
  let remote = true;
  let served = 0;
  const waiters = [];
  const servedAtLeast = (n) => new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`/api/services served ${served} times, not ${n}`)), WAIT.timeout);
    waiters.push([n, () => { clearTimeout(timer); ok(); }]);
  });
  const page = await browser.newPage({ viewport: WIDE });
  await page.route("**/api/services", async (route) => {
    const list = remote ? [...local, { ...translation, remote: true, host: "other-4242", stale: true }] : local;
    await route.fulfill({ json: list });
    served++;
    for (const [n, ok] of waiters) if (served >= n) ok();
  });
  await page.goto(base + "/");
  const rows = page.locator('tr.row[data-service="TranslationService"]');
  await page.locator('tr.row[data-service="TranslationService"][data-remote="1"]').waitFor(WAIT);
  // Refreshed every 2 s: three more times, and still one row per host.
  await servedAtLeast(served + 3);
  assert.equal(await rows.count(), 2);
  // Its host's heartbeat is late: said on its row; the filter names each service once.
  assert.match(await page.locator('tr.row[data-service="TranslationService"][data-remote="1"] .desc').last().textContent(), /stale/);
  assert.equal(await page.locator("#filter-service option").count(), local.length + 1);
  // The other host departs: its row goes.
  remote = false;
  await servedAtLeast(served + 2);
  await page.locator('tr.row[data-service="TranslationService"][data-remote="1"]').waitFor({ ...WAIT, state: "detached" });
  assert.equal(await rows.count(), 1);
  await page.close();
});
