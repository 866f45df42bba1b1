// The secured dashboard in headless Chromium: it asks for a token once (kept for the tab),
// shows the cluster with the admin token, and does not ask again on reload.
// Usage: node token.mjs BASE_URL ADMIN_TOKEN   (run by ../dashboard_token_check.sh)
import { checks, launch } from "./browser.mjs";

const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node token.mjs BASE_URL ADMIN_TOKEN");
  process.exit(2);
}
const { check, finish } = checks();
const browser = await launch();
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
finish("dashboard token check");
