// Drives the dtc dashboard in headless Chromium against a loaded cluster and fails on
// anything wrong: console errors, no shards or leaders, a throughput figure that does not
// move, a submitted task whose result does not appear, a page wider than a narrow window.
// Usage: node check.mjs BASE_URL SCREENSHOT_DIR   (run by ../dashboard_check.sh)
import { checks, launch } from "./browser.mjs";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node check.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}
const { check, finish } = checks();
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const outside = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) outside.push(r.url()); });

  await page.goto(base + "/");
  await page.waitForFunction(() => document.querySelectorAll("#shards tbody tr").length >= 2,
                             null, { timeout: 15000 });
  const roles = await page.$$eval("#shards tbody tr", (rows) =>
    rows.map((r) => [r.cells[0]?.textContent, r.cells[2]?.textContent]));
  const shards = new Set(roles.map(([s]) => s));
  const leaders = new Set(roles.filter(([, role]) => role === "leader").map(([s]) => s));
  check(shards.size === 2, `two shards shown (${[...shards].join(", ")})`);
  check(leaders.size === shards.size, `every shard shows its leader (${[...leaders].join(", ")})`);
  const workers = await page.$$eval("#workers tbody tr", (rows) => rows.length);
  check(workers > 0, `workers listed (${workers})`);

  // The throughput figure: non-zero under load, and moving from one second to the next.
  const tput = async () => Number((await page.textContent("#tput")).replace(/[^0-9]/g, ""));
  await page.waitForFunction(() => /[1-9]/.test(document.getElementById("tput").textContent),
                             null, { timeout: 15000 });
  const seen = [await tput()];
  for (let i = 0; i < 4; i++) {
    await page.waitForTimeout(1100);
    seen.push(await tput());
  }
  check(seen.every((v) => v > 0), `throughput non-zero under load (${seen.join(", ")} tasks/s)`);
  check(new Set(seen).size > 1, "throughput figure moves");
  await page.screenshot({ path: `${shots}/dashboard.png` });

  // A task submitted through the form: its result appears, and the lookup finds it.
  await page.selectOption("#kind", "wordcount");
  await page.fill("#payload", "one two three four five six");
  await page.click("#submitForm button");
  await page.waitForFunction(() => document.getElementById("submitOut").textContent.includes('"result": "6"'),
                             null, { timeout: 15000 }).catch(() => {});
  const submitted = await page.textContent("#submitOut");
  check(submitted.includes('"result": "6"'), "a submitted wordcount shows its result (6)");
  await page.click("#lookupForm button");
  await page.waitForFunction(() => document.getElementById("lookupOut").textContent.includes("succeeded"),
                             null, { timeout: 15000 }).catch(() => {});
  check((await page.textContent("#lookupOut")).includes('"result": "6"'), "the lookup by id finds it");
  await page.screenshot({ path: `${shots}/dashboard-task.png` });

  // The tasks view: a task that failed for good is listed with its error and retried from
  // its row; a delayed one is listed as scheduled and cancelled from its row.
  await page.selectOption("#kind", "fail");
  await page.fill("#payload", "fatal: dashboard demo");
  await page.click("#submitForm button");
  await page.waitForFunction(() => document.getElementById("submitOut").textContent.includes('"state": "failed"'),
                             null, { timeout: 15000 }).catch(() => {});
  await page.selectOption("#taskState", "failed");
  const failedRow = page.locator("#tasks tbody tr", { hasText: "dashboard demo" }).first();
  await failedRow.waitFor({ timeout: 15000 }).catch(() => {});
  check(await failedRow.count() > 0, "the failed task is listed with its error");
  await page.waitForFunction(() => /failed [1-9]/.test(document.getElementById("counts").textContent),
                             null, { timeout: 5000 }).catch(() => {});
  check(/failed [1-9]/.test(await page.textContent("#counts")), "the failed count shows it");
  await page.screenshot({ path: `${shots}/dashboard-tasks.png` });
  await failedRow.locator("button", { hasText: "retry" }).click().catch(() => {});
  await page.waitForFunction(() => document.body.textContent.includes("retried"), null, { timeout: 10000 }).catch(() => {});
  check((await page.textContent("#tasks")).includes("retried") || (await page.textContent("body")).includes("retried"),
        "its retry button runs it again");
  await page.selectOption("#kind", "noop");
  await page.fill("#payload", "");
  await page.fill("#delay", "600");
  await page.uncheck("#wait");
  await page.click("#submitForm button");
  await page.waitForFunction(() => document.getElementById("submitOut").textContent.includes('"state": "scheduled"'),
                             null, { timeout: 15000 }).catch(() => {});
  await page.fill("#delay", "");
  await page.selectOption("#taskState", "scheduled");
  const scheduledRow = page.locator("#tasks tbody tr", { hasText: "noop" }).first();
  await scheduledRow.waitFor({ timeout: 15000 }).catch(() => {});
  check(await scheduledRow.count() > 0, "the delayed task is listed as scheduled");
  await scheduledRow.locator("button", { hasText: "cancel" }).click().catch(() => {});
  await page.waitForFunction(() => document.body.textContent.includes("cancelled"), null, { timeout: 10000 }).catch(() => {});
  check((await page.textContent("body")).includes("cancelled"), "its cancel button cancels it");

  // A narrow window: nothing wider than the window but the tables' own scrolling.
  await page.setViewportSize({ width: 420, height: 900 });
  await page.waitForTimeout(1200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `fits a 420 px window (overflow ${overflow} px)`);
  await page.screenshot({ path: `${shots}/dashboard-narrow.png`, fullPage: true });

  check(errors.length === 0, `no console errors${errors.length ? ": " + errors.join(" | ") : ""}`);
  check(outside.length === 0, `no requests outside the router${outside.length ? ": " + outside.join(", ") : ""}`);
} finally {
  await browser.close();
}
finish("dashboard check");
