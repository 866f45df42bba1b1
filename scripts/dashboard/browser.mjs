// What the dashboard's checks share: headless Debian Chromium launched with the flags this
// closed network needs, and a list of checks that ends the process with their verdict.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/// `check(ok, what)` prints and records each check; `finish(name)` exits non-zero if any failed.
export function checks() {
  const problems = [];
  const check = (ok, what) => {
    console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
    if (!ok) problems.push(what);
  };
  const finish = (name) => {
    if (problems.length) {
      console.error(`${name} failed: ${problems.length} problem(s)`);
      process.exit(1);
    }
    console.log(`${name} passed`);
  };
  return { check, finish };
}
