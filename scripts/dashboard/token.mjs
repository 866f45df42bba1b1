// The secured dashboard in headless Chromium: it asks for a token once (kept for the tab),
// shows the cluster with the admin token, and does not ask again on reload.
// Usage: node token.mjs BASE_URL ADMIN_TOKEN   (run by ../dashboard_token_check.sh)
import { chromium } from "playwright-core";

const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node token.mjs BASE_URL ADMIN_TOKEN");
  process.exit(2);
}
const problems = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) problems.push(what);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  // The cluster's certificate comes from its own CA, which this browser does not know.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const prompts = [];
  page.on("dialog", async (d) => {
    prompts.push(d.message());
    await d.accept(token);
  });
  const shardsShown = () =>
    page.waitForFunction(() => document.querySelectorAll("#shards tbody tr").length >= 2,
                         null, { timeout: 15000 });
  await page.goto(base + "/");
  await shardsShown();
  check(prompts.length === 1, `asked for a token once (${JSON.stringify(prompts)})`);
  const kept = await page.evaluate(() => sessionStorage.getItem("dtc-token") !== null);
  check(kept, "the token is kept for the tab");
  await page.reload();
  await shardsShown();
  check(prompts.length === 1, "not asked again on reload");
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(`${problems.length} problem(s)`);
  process.exit(1);
}
