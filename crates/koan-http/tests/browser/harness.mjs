// What the browser tests share: a live koan-demo host, headless Chromium, and where
// screenshots go.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "../../../..");
const targetDir = process.env.CARGO_TARGET_DIR || join(root, "target");
const demoBin = process.env.KOAN_DEMO_BIN || join(targetDir, "debug/koan-demo");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

// Screenshots go under target/ so a test run leaves the work tree clean; with
// KOAN_REFRESH_SCREENSHOTS=1 they replace the ones in docs/.
const shotDir = process.env.KOAN_REFRESH_SCREENSHOTS === "1"
  ? join(root, "docs") : join(targetDir, "screenshots");

/** The path to write screenshot `name` to. */
export function shot(name) {
  mkdirSync(shotDir, { recursive: true });
  return join(shotDir, name);
}

/** Starts koan-demo on a free port with a fresh database; resolves to { child, url }. */
export function startDemo(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "koan-dashboard-"));
  const child = spawn(demoBin, ["--http", "127.0.0.1:0", "--db", join(dir, "demo.db")], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "warn", ...env },
  });
  return new Promise((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error("koan-demo did not print its address in 60 s:\n" + out)), 60_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) { clearTimeout(timer); ok({ child, url: m[1] }); }
    });
    child.stderr.on("data", (d) => { out += d; });
    child.on("exit", (code) => { clearTimeout(timer); fail(new Error(`koan-demo exited (${code}):\n${out}`)); });
  });
}

/**
 * How long a test waits for what a page should show: a safety net, not a measure
 * (15 s was passed once with the machine's two cores under a soak's load).
 */
export const WAIT = { timeout: 60_000 };
/** A desktop window, and a phone's. */
export const WIDE = { width: 1400, height: 900 };
export const NARROW = { width: 390, height: 844 };

/**
 * Starts a koan-demo host (with `env`) and a browser before the file's tests, hands
 * `{ base, browser }` to `started`, and stops both after the tests.
 */
export function useDemo(started, env = {}) {
  let demo, browser;
  before(async () => {
    const { child, url } = await startDemo(env);
    demo = child;
    browser = await launch();
    started({ base: url, browser });
  });
  after(async () => {
    if (browser) await browser.close();
    if (demo) demo.kill("SIGTERM");
  });
}

/** A new page of `browser` in a `viewport` window, opened at `url`. */
export async function openAt(browser, url, viewport = WIDE) {
  const page = await browser.newPage({ viewport });
  await page.goto(url);
  return page;
}

/** Asserts that `page` (at `what`) is no wider than its window. */
export async function assertFits(page, what) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `${what} is ${overflow}px wider than the window`);
}

/**
 * Opens `path` of a second demo host whose API needs a token, answering the page's
 * prompt with it; runs `check(page)`, then asserts the page asked.
 */
export async function withToken(browser, path, check) {
  const { child, url } = await startDemo({ KOAN_HTTP_TOKEN: "s3cret" });
  try {
    const page = await browser.newPage({ viewport: WIDE });
    let asked = 0;
    page.on("dialog", async (d) => { asked += 1; await d.accept("s3cret"); });
    await page.goto(url + path);
    await check(page);
    assert.ok(asked >= 1, "the page should have asked for the token");
    await page.close();
  } finally {
    child.kill("SIGTERM");
  }
}

/** Headless Chromium (Debian's). */
export function launch() {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** A JSON call to the demo's API; throws with the answer's text unless 2xx. */
export async function call(base, method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
