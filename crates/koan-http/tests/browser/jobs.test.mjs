// The jobs view in headless Chromium against a live koan-demo host: lists by state,
// filters and paging, a search by job id or correlation id, a job's page, retry, cancel,
// delete, retry-all-dead, and a job opened from one of its events.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useDemo, openAt, assertFits, withToken, shot, call, WAIT, WIDE, NARROW } from "./harness.mjs";

let base, browser;
useDemo((started) => ({ base, browser } = started));

const enqueue = (action, params, query = "") =>
  call(base, "POST", `/api/services/TranslationService/actions/${action}?wait=false${query}`, params);

async function untilState(id, state) {
  for (let i = 0; i < 300; i++) {
    const j = await call(base, "GET", "/api/jobs/" + id);
    if (j.state === state) return j;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`job ${id} did not become ${state} within 15 s`);
}

/** The page at `hash`, which accepts every question it asks. */
async function openPage(hash, viewport = WIDE) {
  const page = await browser.newPage({ viewport });
  page.on("dialog", (d) => d.accept());
  await page.goto(base + "/" + hash);
  return page;
}

test("a dead job is listed under dead, and a retry from its page makes it succeed", async () => {
  const { id } = await enqueue("flaky", { failTimes: 1, note: "from the browser" });
  await untilState(id, "dead");
  const page = await openPage("#/jobs?state=dead");
  const row = page.locator(`#jobs tr[data-job="${id}"]`);
  await row.waitFor(WAIT);
  assert.equal(await row.getAttribute("data-state"), "dead");
  await page.locator('#job-tabs [data-count="dead"]').filter({ hasText: /^[1-9]/ }).waitFor(WAIT);
  await page.screenshot({ path: shot("dashboard-jobs.png") });

  await row.locator("a").click();
  await page.locator(`#job-page[data-job="${id}"]`).waitFor(WAIT);
  await page.locator("#job-error").filter({ hasText: "fails on purpose" }).waitFor(WAIT);
  await page.locator('#attempts tr[data-attempt="1"]').waitFor(WAIT);
  await page.locator('button[data-job-action="retry"]').click();
  await page.locator('[data-field="state"]').filter({ hasText: "succeeded" }).waitFor(WAIT);
  await page.locator("#job-result").filter({ hasText: "from the browser" }).waitFor(WAIT);
  await page.locator('#attempts tr[data-attempt="2"]').waitFor(WAIT);
  await page.screenshot({ path: shot("dashboard-job.png"), fullPage: true });
  await page.close();
});

test("a scheduled job is cancelled from the list after a confirmation", async () => {
  const { id } = await enqueue("translate", { fileId: "later.txt", from: "en", to: "es" }, "&delay=1h");
  const page = await openPage("#/jobs?state=scheduled");
  const row = page.locator(`#jobs tr[data-job="${id}"]`);
  await row.waitFor(WAIT);
  let asked = "";
  page.removeAllListeners("dialog");
  page.on("dialog", (d) => { asked = d.message(); d.accept(); });
  await row.locator('button[data-job-action="cancel"]').click();
  await row.waitFor({ state: "detached", ...WAIT });
  assert.match(asked, /Cancel job/);
  assert.equal((await call(base, "GET", "/api/jobs/" + id)).state, "cancelled");
  await page.close();
});

test("a job is opened from one of its events", async () => {
  const page = await openPage("#/");
  await page.locator('tr.row[data-service="TranslationService"]').waitFor(WAIT);
  const { id, correlation_id } = await enqueue("translate", { fileId: "event.txt", from: "en", to: "fr" });
  const item = page.locator(`#events li[data-event="TranslationCompleted"]`).filter({ hasText: "event.txt" }).first();
  await item.waitFor(WAIT);
  await item.locator("a.job-link").click();
  await page.locator(`#job-page[data-job="${id}"]`).waitFor(WAIT);
  await page.locator('[data-field="correlation"]').filter({ hasText: correlation_id }).waitFor(WAIT);
  await page.locator('#job-events li[data-event="TranslationCompleted"]').waitFor(WAIT);
  await page.close();
});

test("retry-all-dead asks first, and does nothing when refused", async () => {
  const a = await enqueue("flaky", { failTimes: 1 });
  const b = await enqueue("flaky", { failTimes: 1 });
  await untilState(a.id, "dead");
  await untilState(b.id, "dead");
  const page = await browser.newPage({ viewport: WIDE });
  let answer = false;
  page.on("dialog", (d) => (answer ? d.accept() : d.dismiss()));
  await page.goto(base + "/#/jobs?state=dead");
  await page.locator(`#jobs tr[data-job="${a.id}"]`).waitFor(WAIT);
  await page.locator("#retry-dead").click();
  assert.equal((await call(base, "GET", "/api/jobs/" + a.id)).state, "dead");
  answer = true;
  await page.locator("#retry-dead").click();
  await untilState(a.id, "succeeded");
  await untilState(b.id, "succeeded");
  await page.locator('#job-tabs [data-count="dead"]').filter({ hasText: /^0$/ }).waitFor(WAIT);
  await page.close();
});

test("a job cancelled then deleted from its page is gone", async () => {
  const { id } = await enqueue("translate", { fileId: "gone.txt", from: "en", to: "es" }, "&delay=1h");
  const page = await openPage("#/jobs/" + id);
  await page.locator(`#job-page[data-job="${id}"]`).waitFor(WAIT);
  // A live job offers no delete (the store refuses it: cancel it first).
  await page.locator('button[data-job-action="cancel"]').waitFor(WAIT);
  assert.equal(await page.locator('button[data-job-action="delete"]').count(), 0);
  await page.locator('button[data-job-action="cancel"]').click();
  await page.locator('button[data-job-action="delete"]').waitFor(WAIT);
  await page.locator('button[data-job-action="delete"]').click();
  await page.waitForFunction(() => location.hash === "#/jobs", null, WAIT);
  const res = await fetch(base + "/api/jobs/" + id);
  assert.equal(res.status, 404);
  await page.close();
});

test("jobs filter by service and action, and page by twenty", async () => {
  for (let i = 0; i < 23; i++) await enqueue("translate", { fileId: `page-${i}.txt`, from: "en", to: "es" }, "&delay=2h");
  const page = await openPage("#/jobs?state=scheduled");
  await page.locator("#jobs tbody tr[data-job]").nth(19).waitFor(WAIT);
  assert.equal(await page.locator("#jobs tbody tr[data-job]").count(), 20);
  const first = await page.locator("#jobs tbody tr[data-job]").first().getAttribute("data-job");
  await page.locator("#jobs-older").click();
  await page.waitForFunction((f) => !document.querySelector(`#jobs tr[data-job="${f}"]`), first, WAIT);
  const rest = await page.locator("#jobs tbody tr[data-job]").count();
  assert.ok(rest >= 3, `second page has ${rest} jobs`);
  await page.locator("#jobs-newer").click();
  await page.locator(`#jobs tr[data-job="${first}"]`).waitFor(WAIT);

  await page.selectOption("#job-service", "TranslationService");
  await page.waitForFunction(() => location.hash.includes("service=TranslationService"), null, WAIT);
  await page.fill("#job-action", "flaky");
  await page.press("#job-action", "Enter");
  await page.waitForFunction(() => location.hash.includes("action=flaky"), null, WAIT);
  await page.locator("#jobs tbody td.desc").filter({ hasText: "no jobs" }).waitFor(WAIT);
  await page.close();
});

test("a job is found by its id, and jobs by their correlation id", async () => {
  const under = async (cid, fileId) => {
    const res = await fetch(base + "/api/services/TranslationService/actions/translate?wait=false&delay=1h", {
      method: "POST",
      headers: { "content-type": "application/json", "x-correlation-id": cid },
      body: JSON.stringify({ fileId, from: "en", to: "es" }),
    });
    const text = await res.text();
    assert.equal(res.status, 202, text);
    return JSON.parse(text).id;
  };
  const cid = "order-" + Date.now();
  const a = await under(cid, "found-a.txt");
  const b = await under(cid, "found-b.txt");
  const page = await openPage("#/jobs");
  await page.locator("#job-find").waitFor(WAIT);

  await page.fill("#job-find", ` ${b} `);
  await page.press("#job-find", "Enter");
  await page.locator(`#job-page[data-job="${b}"]`).waitFor(WAIT);

  await page.goto(base + "/#/jobs");
  await page.fill("#job-find", cid);
  await page.press("#job-find", "Enter");
  // The unfiltered list shows them too (the newest jobs): wait for the filtered one.
  await page.waitForFunction((ids) => {
    const rows = [...document.querySelectorAll("#jobs tbody tr[data-job]")].map((r) => r.dataset.job).sort();
    return location.hash.includes("correlation_id=") && rows.join() === ids.join();
  }, [a, b].sort(), WAIT);
  assert.equal(await page.inputValue("#job-find"), cid);

  // A correlation id that is also the name of another route under /api/jobs/.
  await under("counts", "found-counts.txt");
  await page.fill("#job-find", "counts");
  await page.press("#job-find", "Enter");
  await page.waitForFunction(() => location.hash.includes("correlation_id=counts") || /^#\/jobs\/[0-9a-f-]{36}$/.test(location.hash), null, WAIT);
  assert.ok(!page.url().includes("undefined"), page.url());

  await page.goto(base + "/#/jobs");
  await page.fill("#job-find", "no-such-" + cid);
  await page.press("#job-find", "Enter");
  await page.locator("#jobs tbody td.desc").filter({ hasText: "no job has it as its id" }).waitFor(WAIT);
  await page.close();
});

test("the jobs view and a job's page fit a narrow window", async () => {
  const { id } = await enqueue("translate", { fileId: "narrow.txt", from: "en", to: "es" }, "&delay=1h");
  for (const hash of ["#/jobs", "#/jobs/" + id]) {
    const page = await openPage(hash, NARROW);
    await page.locator(hash === "#/jobs" ? "#jobs tbody tr" : "#job-page dl").first().waitFor(WAIT);
    await assertFits(page, hash);
    await page.close();
  }
});

test("the jobs view asks for the token when the API needs one", async () => {
  await withToken(browser, "/#/jobs", (page) => page.locator('#job-tabs [data-count="dead"]').waitFor(WAIT));
});
