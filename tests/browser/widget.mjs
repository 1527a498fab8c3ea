// The browser widget of examples/widget/index.html in headless Chromium, served from another
// origin than sluice (so CORS is exercised), with a publishable key and an agent.
//
// Run by tests/api/browser.rs, which passes:
//   SERVER    sluice's base URL          KEY     a publishable key     AGENT   an agent id
//   ORIGIN    where the widget's page is served (another origin than sluice's)
//   EXPECTED  the answer's text          CHROMIUM the browser binary
// Exits 0 when every check passed.
import { chromium } from 'playwright-core';

const { SERVER, KEY, AGENT, ORIGIN, EXPECTED } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 20_000;

const problems = [];
const requests = [];
let page;

async function fail(message) {
  const shown = page ? await page.locator('#status').textContent().catch(() => '') : '';
  console.log(`FAIL ${message}${shown ? ` (the widget says: ${shown})` : ''}`);
  for (const p of problems) console.log(`  ${p}`);
  for (const r of requests) console.log(`  ${r}`);
  if (page) console.log(`  log: ${await page.locator('#log').innerHTML().catch(() => '')}`);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
});
try {
  page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
  });
  page.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
  page.on('requestfailed', (r) => requests.push(`failed ${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    requests.push(`${r.status()} ${r.url()}`);
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });

  const query = new URLSearchParams({ server: SERVER, key: KEY, agent: AGENT });
  await page.goto(`${ORIGIN}/?${query}`);
  await page.waitForSelector('body[data-ready="true"]').catch(async () => fail('the widget did not create its chat'));
  await page.fill('#question', 'Hello widget');
  await page.press('#question', 'Enter');
  await page.waitForFunction(
    () => document.querySelector('.msg.assistant')?.dataset.status,
  ).catch(async () => fail('the answer did not end'));
  const answer = await page.locator('.msg.assistant').last();
  const text = await answer.textContent();
  const status = await answer.getAttribute('data-status');
  if (text !== EXPECTED) await fail(`the widget showed ${JSON.stringify(text)}, not ${JSON.stringify(EXPECTED)}`);
  if (status !== 'complete') await fail(`the answer ended ${status}`);

  // A reload finds the same chat, with the question and its answer.
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  const shown = await page.locator('.msg').allTextContents();
  if (JSON.stringify(shown) !== JSON.stringify(['Hello widget', EXPECTED])) {
    await fail(`after a reload the widget showed ${JSON.stringify(shown)}`);
  }
  if (problems.length) await fail('the page reported problems');
  console.log('widget: 3 passed, 0 failed');
} finally {
  await browser.close();
}
