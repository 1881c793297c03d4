// What the browser tests share: a live koan-demo host, headless Chromium, and where
// screenshots go.
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
