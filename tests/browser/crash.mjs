// The chat page when the server dies mid-answer and comes back (kill -9, then a restart on the
// same address and database): the text the page showed is kept, and the answer is marked
// interrupted, with how much of it the server saved.
//
// Run by tests/api/browser.rs, which starts sluice as a process and passes:
//   BASE_URL  the page's URL, ending with `/`      KEY  a secret key of the workspace
//   CHROMIUM  the browser binary (default /usr/bin/chromium)
// It prints `crash now` once the page shows part of an answer, and waits for a line on standard
// input saying the server was restarted. Exits 0 when every check passed.
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const KEY = process.env.KEY;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 20_000;

function fail(message) {
  console.log(`FAIL ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
}

const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

  await page.goto(BASE);
  await page.fill('#signin-key', KEY);
  await page.click('#signin-submit');
  await page.waitForSelector('#app', { state: 'visible' });
  await page.fill('#composer-input', 'talk for long');
  await page.press('#composer-input', 'Enter');
  await page.waitForFunction(() => {
    const answer = document.querySelector('article.assistant .body');
    return answer && answer.textContent.length > 300;
  });

  console.log('crash now');
  const restarted = await lines.next();
  check(!restarted.done, 'standard input ended before the restart');

  const answer = page.locator('article.assistant').last();
  await page.waitForFunction(
    () => document.querySelector('article.assistant')?.dataset.status,
    null, { timeout: WAIT },
  ).catch(() => fail('the answer did not end after the restart'));
  const status = await answer.getAttribute('data-status');
  const interrupted = await answer.getAttribute('data-interrupted');
  const shown = await answer.locator('.body').textContent();
  const meta = await answer.locator('.meta').textContent();

  const chatId = await page.getAttribute('#chats button[aria-current="true"]', 'data-chat-id');
  const list = await fetch(`${BASE}conversations/?chat_id=${chatId}`, {
    headers: { Authorization: `Bearer ${KEY}` },
  });
  check(list.ok, `GET conversations/: ${list.status}`);
  const saved = (await list.json()).filter((c) => c.role === 'Assistant').pop();
  check(saved, 'no saved answer');
  const savedBytes = new TextEncoder().encode(saved.message).length;
  const shownBytes = new TextEncoder().encode(shown).length;

  check(status === 'incomplete', `status ${status}`);
  check(interrupted === 'true', `not marked interrupted (data-interrupted=${interrupted})`);
  check(shown.length > saved.message.length, `the page shows ${shown.length} characters, fewer than the ${saved.message.length} saved`);
  check(shown.startsWith(saved.message.trimEnd()), 'the text shown does not start with the saved text');
  check(meta.includes('Interrupted'), `the answer's label: ${meta}`);
  // The label counts the answer's own text; the page's text content may differ by the
  // white space that rendering trims.
  const figures = /(\d+) of its (\d+) bytes were saved/.exec(meta);
  check(figures, `the answer's label gives no figures: ${meta}`);
  check(Number(figures[1]) === savedBytes, `the label's saved bytes: ${meta} (saved ${savedBytes})`);
  check(Math.abs(Number(figures[2]) - shownBytes) <= 2, `the label's shown bytes: ${meta} (shown ${shownBytes})`);
  check(problems.length === 0, problems.join('\n'));
  console.log(`ok   an answer cut by a crash keeps its ${shownBytes} bytes shown and says ${savedBytes} were saved`);
} finally {
  await browser.close();
  input.close();
}
