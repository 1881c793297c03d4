// The dashboard in a real headless Chromium against a live koan-demo host.
//
// Run by scripts/test.sh (which builds koan-demo and installs Debian's chromium):
//   node --test crates/koan-http/tests/browser/
import { test } from "node:test";
import assert from "node:assert/strict";
import { useDemo, openAt, assertFits, withToken, shot, WAIT, NARROW } from "./harness.mjs";

let base, browser;
useDemo((started) => ({ base, browser } = started));

/** Clicks DataCleanupService's trigger on `page` and waits for its run count to go up. */
async function triggerRaisesRuns(page) {
  const row = page.locator('tr.row[data-service="DataCleanupService"]');
  await row.waitFor(WAIT);
  const runs = row.locator('[data-field="runs"]');
  const before = Number(await runs.textContent());
  await row.locator('button[data-action="trigger"]').click();
  await page.waitForFunction(
    (n) => Number(document.querySelector('tr.row[data-service="DataCleanupService"] [data-field="runs"]').textContent) > n,
    before, WAIT);
}

const SERVICES = ["DataCleanupService", "DatabaseMigrationService", "FlowOrchestrator",
  "HealthProbeScheduler", "MessagingLifecycle", "OutboxProcessor", "SystemHealthMonitor",
  "TranslationService"];

test("the dashboard lists the eight demo services", async () => {
  const page = await openAt(browser, base + "/");
  for (const name of SERVICES) {
    await page.locator(`tr.row[data-service="${name}"]`).waitFor(WAIT);
  }
  assert.equal(await page.locator("tr.row").count(), SERVICES.length);
  await page.locator("#overall-health").filter({ hasText: /healthy|degraded|unhealthy/ }).waitFor();
  await page.close();
});

test("a click on DataCleanupService's trigger makes its run count go up", async () => {
  const page = await openAt(browser, base + "/");
  await triggerRaisesRuns(page);
  await page.close();
});

test("submitting the translate form makes TranslationCompleted appear in the feed", async () => {
  const page = await openAt(browser, base + "/");
  const row = page.locator('tr.row[data-service="TranslationService"]');
  await row.waitFor();
  await row.locator('button[data-action="details"]').click();
  const form = page.locator('tr.detail[data-for="TranslationService"] form[data-action-form="translate"]');
  await form.waitFor();
  await form.locator('input[name="fileId"]').fill("browser.txt");
  await form.locator('input[name="from"]').fill("en");
  await form.locator('input[name="to"]').fill("pt-BR");
  await form.locator('button[type="submit"]').click();
  await form.locator(".result").filter({ hasText: "browser.txt" }).waitFor(WAIT);
  await page.locator('#events li[data-event="TranslationCompleted"]').filter({ hasText: "browser.txt" }).first().waitFor(WAIT);

  // The feed's filters narrow what is shown.
  await page.selectOption("#filter-service", "TranslationService");
  await page.fill("#filter-event", "completed");
  const shown = await page.locator("#events li").evaluateAll((lis) => lis.map((li) => li.dataset.event));
  assert.ok(shown.length > 0 && shown.every((e) => e === "TranslationCompleted"), JSON.stringify(shown));

  // The screenshot linked from the README.
  await page.fill("#filter-event", "");
  await page.selectOption("#filter-service", "");
  await page.locator('svg[data-chart="per-second"] rect.ok').first().waitFor(WAIT);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: shot("dashboard.png"), fullPage: false });
  await page.close();
});

test("the dashboard stays usable on a narrow window", async () => {
  const page = await openAt(browser, base + "/", NARROW);
  await page.locator('tr.row[data-service="DataCleanupService"]').waitFor();
  await assertFits(page, "page");
  assert.ok(await page.locator('tr.row[data-service="DataCleanupService"] button[data-action="trigger"]').isVisible());
  await page.close();
});

test("the dashboard asks for the token when the API needs one", async () => {
  await withToken(browser, "/", triggerRaisesRuns);
});
