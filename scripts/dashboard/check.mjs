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
