// The dashboard in a real headless Chromium against a live koan-demo host.
//
// Run by scripts/test.sh (which builds koan-demo and installs Debian's chromium):
//   node --test crates/koan-http/tests/browser/
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startDemo, launch, shot } from "./harness.mjs";

let demo, base, browser;

before(async () => {
  ({ child: demo, url: base } = await startDemo());
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (demo) demo.kill("SIGTERM");
});

const SERVICES = ["DataCleanupService", "DatabaseMigrationService", "FlowOrchestrator",
  "HealthProbeScheduler", "MessagingLifecycle", "OutboxProcessor", "SystemHealthMonitor",
  "TranslationService"];

test("the dashboard lists the eight demo services", async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(base + "/");
  for (const name of SERVICES) {
    await page.locator(`tr.row[data-service="${name}"]`).waitFor({ timeout: 15_000 });
  }
  assert.equal(await page.locator("tr.row").count(), SERVICES.length);
  await page.locator("#overall-health").filter({ hasText: /healthy|degraded|unhealthy/ }).waitFor();
  await page.close();
});

test("a click on DataCleanupService's trigger makes its run count go up", async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(base + "/");
  const row = page.locator('tr.row[data-service="DataCleanupService"]');
  await row.waitFor();
  const runs = row.locator('[data-field="runs"]');
  const before = Number(await runs.textContent());
  await row.locator('button[data-action="trigger"]').click();
  await page.waitForFunction(
    (n) => Number(document.querySelector('tr.row[data-service="DataCleanupService"] [data-field="runs"]').textContent) > n,
    before, { timeout: 15_000 });
  await page.close();
});

test("submitting the translate form makes TranslationCompleted appear in the feed", async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(base + "/");
  const row = page.locator('tr.row[data-service="TranslationService"]');
  await row.waitFor();
  await row.locator('button[data-action="details"]').click();
  const form = page.locator('tr.detail[data-for="TranslationService"] form[data-action-form="translate"]');
  await form.waitFor();
  await form.locator('input[name="fileId"]').fill("browser.txt");
  await form.locator('input[name="from"]').fill("en");
  await form.locator('input[name="to"]').fill("pt-BR");
  await form.locator('button[type="submit"]').click();
  await form.locator(".result").filter({ hasText: "browser.txt" }).waitFor({ timeout: 15_000 });
  await page.locator('#events li[data-event="TranslationCompleted"]').filter({ hasText: "browser.txt" }).first().waitFor({ timeout: 15_000 });

  // The feed's filters narrow what is shown.
  await page.selectOption("#filter-service", "TranslationService");
  await page.fill("#filter-event", "completed");
  const shown = await page.locator("#events li").evaluateAll((lis) => lis.map((li) => li.dataset.event));
  assert.ok(shown.length > 0 && shown.every((e) => e === "TranslationCompleted"), JSON.stringify(shown));

  // The screenshot linked from the README.
  await page.fill("#filter-event", "");
  await page.selectOption("#filter-service", "");
  await page.locator('svg[data-chart="per-second"] rect.ok').first().waitFor({ timeout: 15_000 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: shot("dashboard.png"), fullPage: false });
  await page.close();
});

test("the dashboard stays usable on a narrow window", async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await page.goto(base + "/");
  await page.locator('tr.row[data-service="DataCleanupService"]').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `page is ${overflow}px wider than the window`);
  assert.ok(await page.locator('tr.row[data-service="DataCleanupService"] button[data-action="trigger"]').isVisible());
  await page.close();
});

test("the dashboard asks for the token when the API needs one", async () => {
  const { child, url } = await startDemo({ KOAN_HTTP_TOKEN: "s3cret" });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    let asked = 0;
    page.on("dialog", async (d) => { asked += 1; await d.accept("s3cret"); });
    await page.goto(url + "/");
    const row = page.locator('tr.row[data-service="DataCleanupService"]');
    await row.waitFor({ timeout: 15_000 });
    const runs = row.locator('[data-field="runs"]');
    const before = Number(await runs.textContent());
    await row.locator('button[data-action="trigger"]').click();
    await page.waitForFunction(
      (n) => Number(document.querySelector('tr.row[data-service="DataCleanupService"] [data-field="runs"]').textContent) > n,
      before, { timeout: 15_000 });
    assert.ok(asked >= 1, "the page should have asked for the token");
    await page.close();
  } finally {
    child.kill("SIGTERM");
  }
});
