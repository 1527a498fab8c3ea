// The chat page in headless Chromium, against a real sluice and its mock upstream.
//
// Run by tests/api/browser.rs, which starts both and passes:
//   BASE_URL   the page's URL, ending with `/`      KEY        a secret key of the workspace
//   MOCK_URL   the mock upstream's base URL (its control API is /__mock/script)
//   SEARCH_URL the fake web search sluice asks (POST /__mode/error makes it fail, /__mode/ok
//              mends it)
//   CHROMIUM   the browser binary (default /usr/bin/chromium)
//   SCREENSHOT optional: where to save a screenshot of an answer with web sources (docs/page.png)
// Exits 0 when every scenario passed; prints one line per scenario.
//
// The browser reaches sluice through a small TCP relay, so that a scenario can cut its
// connections as a network drop would; node talks to sluice directly.
import net from 'node:net';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const KEY = process.env.KEY;
const MOCK = process.env.MOCK_URL;
const SEARCH = process.env.SEARCH_URL;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.SCREENSHOT || '';
const WAIT = 15_000;

if (!BASE || !BASE.endsWith('/') || !KEY || !MOCK || !SEARCH) {
  console.error('BASE_URL (ending with /), KEY, MOCK_URL and SEARCH_URL are required');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

class Failure extends Error {}

function check(condition, message) {
  if (!condition) throw new Failure(message);
}

function equal(actual, expected, what) {
  if (actual !== expected) {
    throw new Failure(`${what}:\n    expected ${JSON.stringify(expected)}\n    got      ${JSON.stringify(actual)}`);
  }
}

/** The API from node, with the key (never through the page). */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${KEY}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(BASE + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, text, json: () => JSON.parse(text) };
}

/** Queues what the mock upstream answers next. */
async function script(body) {
  const response = await fetch(`${MOCK}/__mock/script`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  check(response.ok, `scripting the mock upstream failed: ${response.status}`);
}

/** The stored answer of a chat and its status (a replay of the stream ends with `done`). */
async function storedAnswer(chatId) {
  const list = await api('GET', `conversations/?chat_id=${chatId}`);
  equal(list.status, 200, 'GET conversations/ status');
  const answers = list.json().filter((c) => c.role === 'Assistant');
  const replay = await api('GET', `conversations/inference/${chatId}`);
  const done = replay.text.split('\n\n').find((e) => e.includes('event: done'));
  check(done, `the replayed stream has no done event:\n${replay.text.slice(0, 500)}`);
  const data = done.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
  return { answer: answers[answers.length - 1], status: JSON.parse(data).status };
}

/** Unique words, some of them multi-byte, so that a duplicated or lost piece always shows. */
function words(n, tag) {
  return Array.from({ length: n }, (_, i) => `${tag}${String(i + 1).padStart(2, '0')}${i % 7 === 3 ? 'é🙂' : ''} `);
}

// ---------------------------------------------------------------------------------------------
// The relay between the browser and sluice.

const target = new URL(BASE);
const open = new Set();
const relay = net.createServer((client) => {
  const server = net.connect(Number(target.port), target.hostname);
  for (const [a, b] of [[client, server], [server, client]]) {
    open.add(a);
    a.on('error', () => {});
    a.on('close', () => {
      open.delete(a);
      b.destroy();
    });
    a.pipe(b);
  }
});
await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve));
const PAGE = new URL(BASE);
PAGE.port = String(relay.address().port);

/** Resets every connection between the browser and sluice. */
function dropConnections() {
  for (const socket of open) socket.resetAndDestroy();
}

// ---------------------------------------------------------------------------------------------
// The browser.

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(WAIT);

const requested = [];
const resumedWith = [];
const problems = [];
page.on('request', async (r) => {
  requested.push(r.url());
  if (!r.url().includes('conversations/inference/')) return;
  const lastEventId = (await r.allHeaders().catch(() => ({})))['last-event-id'];
  if (lastEventId) resumedWith.push(lastEventId);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  // A refused request (the 401 of GET session before sign-in) is logged by Chromium itself;
  // anything else, such as a Content-Security-Policy violation, is a problem.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
    problems.push(`console error: ${m.text()}`);
  }
});

/** How many answers the page shows. */
const answerCount = () => page.locator('article.assistant').count();

/** Waits until answer number `n` (from 1) shows more than `chars` characters. */
async function waitForText(n, chars) {
  await page.waitForFunction(([n, chars]) => {
    const answers = document.querySelectorAll('article.assistant');
    return answers.length >= n && answers[n - 1].querySelector('.body').textContent.length > chars;
  }, [n, chars]);
}

/** The newest assistant message on screen. */
const lastAnswer = () => page.locator('article.assistant').last();

/** Types a question and sends it with Enter. */
async function ask(text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** Records every distinct text of the newest answer until it is done. */
async function watchAnswer() {
  await page.evaluate(() => {
    window.__samples = [];
    const seen = new Set();
    window.__observer?.disconnect();
    window.__observer = new MutationObserver(() => {
      const answers = document.querySelectorAll('article.assistant');
      const answer = answers[answers.length - 1];
      if (!answer || answer.dataset.status) return;
      const text = answer.querySelector('.body').textContent;
      if (text && !seen.has(text)) {
        seen.add(text);
        window.__samples.push(text);
      }
    });
    window.__observer.observe(document.getElementById('messages'), {
      childList: true, subtree: true, characterData: true,
    });
  });
}

async function waitForDone(count) {
  await page.waitForFunction(
    (n) => {
      const answers = document.querySelectorAll('article.assistant');
      return answers.length >= n && answers[answers.length - 1].dataset.status;
    },
    count, { timeout: WAIT },
  ).catch(() => {
    throw new Failure(`answer ${count} did not end within ${WAIT} ms`);
  });
  return lastAnswer();
}

async function currentChatId() {
  return page.getAttribute('#chats button[aria-current="true"]', 'data-chat-id');
}

// ---------------------------------------------------------------------------------------------
// The scenarios, in order: each leaves the page where the next one starts.

const results = [];
async function scenario(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name} (${Date.now() - started} ms)\n     ${String(error.message).replaceAll('\n', '\n     ')}`);
    const notice = await page.isVisible('#notice') && await page.textContent('#notice-text');
    if (notice) console.log(`     the page's notice: ${notice}`);
    if (!(error instanceof Failure)) console.log(error.stack);
  }
}

let chatId = null;
let expected = '';

await scenario('signs in with the key through the form, which the page never keeps', async () => {
  await page.goto(PAGE.href);
  await page.waitForSelector('#signin-form', { state: 'visible' });
  await page.fill('#signin-key', KEY);
  await page.click('#signin-submit');
  await page.waitForSelector('#app', { state: 'visible' });
  equal(await page.inputValue('#signin-key'), '', 'the key input after sign-in');
  const visible = await page.evaluate(() => ({
    cookie: document.cookie,
    local: JSON.stringify({ ...localStorage }),
    session: JSON.stringify({ ...sessionStorage }),
  }));
  check(!visible.cookie.includes(KEY) && !visible.cookie.includes('sluice_session'),
    `the session cookie is readable from script: ${visible.cookie}`);
  check(!visible.local.includes(KEY), 'the key is in localStorage');
  check(!visible.session.includes(KEY), 'the key is in sessionStorage');
  const cookie = (await context.cookies()).find((c) => c.name === 'sluice_session');
  check(cookie, 'no sluice_session cookie was set');
  check(cookie.httpOnly, 'the session cookie is not HttpOnly');
  equal(cookie.sameSite, 'Strict', 'the session cookie SameSite');
  check(!cookie.value.includes(KEY), 'the cookie holds the key itself');
  equal(await page.locator('main:visible').count(), 1, 'visible <main> landmarks once signed in');
  equal(await page.locator('main:visible #messages').count(), 1, 'the messages inside the <main> landmark');
});

await scenario('refuses a state-changing request that carries the cookie but no CSRF token', async () => {
  const cookie = (await context.cookies()).find((c) => c.name === 'sluice_session');
  check(cookie, 'no session cookie');
  const headers = { Cookie: `sluice_session=${cookie.value}`, 'Content-Type': 'application/json' };
  const without = await fetch(`${BASE}chats/create`, {
    method: 'POST', headers, body: JSON.stringify({ name: 'forged' }),
  });
  equal(without.status, 403, 'POST chats/create with the cookie and no X-CSRF-Token');
  const info = await (await fetch(`${BASE}session`, { headers })).json();
  check(typeof info.csrf_token === 'string' && info.csrf_token, 'GET session gives no csrf_token');
  const wrong = await fetch(`${BASE}chats/create`, {
    method: 'POST', headers: { ...headers, 'X-CSRF-Token': `${info.csrf_token}x` },
    body: JSON.stringify({ name: 'forged' }),
  });
  equal(wrong.status, 403, 'POST chats/create with a wrong X-CSRF-Token');
});

await scenario('creates a chat', async () => {
  await page.click('#new-chat');
  await page.waitForSelector('#name-dialog[open]');
  await page.fill('#name-input', 'Browser test');
  await page.click('#name-save');
  await page.waitForSelector('#chats button[aria-current="true"]:has-text("Browser test")');
  equal(await page.textContent('#chat-title'), 'Browser test', 'the chat title');
  chatId = await currentChatId();
  const chat = await api('GET', `chats/${chatId}`);
  equal(chat.status, 200, 'GET chats/{id} of the new chat');
  equal(chat.json().name, 'Browser test', 'the stored chat name');
});

await scenario('streams an answer that grows in steps and ends as the stored text', async () => {
  const chunks = words(45, 'w');
  expected = chunks.join('');
  await script({ chunks, chunk_delay_ms: 40 });
  await watchAnswer();
  await ask('Count for me, please.');
  await page.waitForSelector('article.human:has-text("Count for me, please.")');
  await page.waitForSelector('#stop', { state: 'visible' });
  // The streaming answer is not read out frame by frame; the status region announces the end.
  equal(await page.getAttribute('#messages', 'aria-live'), 'off', 'the log aria-live while streaming');
  const answer = await waitForDone(1);
  equal(await page.getAttribute('#messages', 'aria-live'), 'polite', 'the log aria-live after done');
  equal(await page.textContent('#status'), 'The answer is complete.', 'the status announcement at done');
  const samples = await page.evaluate(() => window.__samples);
  check(samples.length >= 3, `the answer grew in ${samples.length} step(s), expected at least 3`);
  check(samples.every((s, i) => i === 0 || s.startsWith(samples[i - 1].trimEnd())),
    'an intermediate answer text is not a prefix of the next one');
  equal(await answer.getAttribute('data-status'), 'complete', 'the done status');
  const shown = await answer.locator('.body').textContent();
  const stored = await storedAnswer(chatId);
  equal(stored.answer.message, expected, 'the stored answer');
  equal(shown, expected, 'the answer on the page');
  equal(await answer.getAttribute('data-message-id'), stored.answer.id, 'the answer message id');
  check(await page.isHidden('#stop'), 'the Stop button is still shown after done');
  console.log(`     ${samples.length} distinct texts before done`);
});

/** The messages on the page, in order, as `role:message id`. */
const shownMessages = () => page.evaluate(() => [...document.querySelectorAll('#messages article')]
  .map((a) => `${a.classList.contains('human') ? 'Human' : 'Assistant'}:${a.dataset.messageId}`));

await scenario('leaves a finished answer finished: a reload opens no stream and keeps its place', async () => {
  const before = await shownMessages();
  check(before.length >= 2, `the chat shows ${before.length} message(s) before the reload`);
  const from = requested.length;
  await page.reload();
  await page.waitForSelector('#app', { state: 'visible' });
  await page.waitForFunction((n) => {
    const log = document.getElementById('messages');
    return log.querySelectorAll('article').length >= n && !log.hasAttribute('aria-busy');
  }, before.length);
  await page.waitForTimeout(500); // time for a stream to be opened, were one to be
  const streams = requested.slice(from).filter((u) => u.includes('conversations/inference'));
  check(streams.length === 0, `a finished answer was resumed after the reload: ${streams.join(', ')}`);
  equal(JSON.stringify(await shownMessages()), JSON.stringify(before), 'the messages after the reload');
  check(await page.isHidden('#stop'), 'the Stop button is shown after reloading a finished answer');
  equal(await page.evaluate((id) => sessionStorage.getItem(`sluice.stream.${id}`), chatId), null,
    'the stream remembered for the chat after the reload');
});

await scenario('sends a question once when Enter is pressed twice before it is stored', async () => {
  const chunks = words(10, 'e');
  await script({ chunks, chunk_delay_ms: 20 });
  const n = (await answerCount()) + 1;
  const questions = await page.locator('article.human').count();
  const posts = [];
  const onRequest = (r) => {
    if (r.method() === 'POST' && r.url().endsWith('/conversations/create')) posts.push(r.url());
  };
  page.on('request', onRequest);
  // The question takes a while to be stored, as over a slow network.
  await page.route('**/conversations/create', async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 300));
    await route.continue();
  });
  try {
    await page.fill('#composer-input', 'Only once, please.');
    await page.press('#composer-input', 'Enter');
    await page.press('#composer-input', 'Enter');
    const answer = await waitForDone(n);
    equal(await answer.locator('.body').textContent(), chunks.join(''), 'the answer on the page');
  } finally {
    page.off('request', onRequest);
    await page.unroute('**/conversations/create');
  }
  equal(posts.length, 1, 'POST conversations/create requests');
  equal(await page.locator('article.human').count(), questions + 1, 'questions on the page');
  const stored = (await api('GET', `conversations/?chat_id=${chatId}`)).json();
  equal(stored.filter((c) => c.role === 'Human').length, questions + 1, 'stored questions');
});

await scenario('finishes an answer after a reload mid-answer, nothing lost or doubled', async () => {
  const chunks = words(60, 'r');
  const full = chunks.join('');
  await script({ chunks, chunk_delay_ms: 40 });
  const n = (await answerCount()) + 1;
  await ask('Again, after a reload.');
  await waitForText(n, 60);
  const before = requested.length;
  await page.reload();
  await page.waitForSelector('#app', { state: 'visible' });
  const answer = await waitForDone(n);
  const resumed = requested.slice(before).find((u) => u.includes('conversations/inference/'));
  check(resumed && /[?&]last_event_id=[^&]+%3A\d+/.test(resumed),
    `after the reload the stream was not resumed with last_event_id: ${resumed}`);
  equal(await answerCount(), n, 'answers on the page after the reload');
  equal(await page.locator('article.human').count(), n, 'questions on the page after the reload');
  const shown = await answer.locator('.body').textContent();
  const stored = await storedAnswer(chatId);
  equal(stored.answer.message, full, 'the stored answer');
  equal(shown, full, 'the answer on the page after the reload');
  equal(await page.locator('article.assistant').first().locator('.body').textContent(), expected,
    'the first answer after the reload');
  // The saved text (checkpointed every 100 ms in the test) was shown and the stream resumed
  // after it: not a replay from the start.
  const offset = decodeURIComponent(resumed.split('last_event_id=')[1]).split(':')[1];
  check(Number(offset) > 0, 'the stream was resumed at byte 0: a replay, not a resume');
  console.log(`     resumed at byte ${offset} of ${Buffer.byteLength(full)}`);
});

await scenario('reconnects by itself after a network drop and resumes exactly', async () => {
  const chunks = words(60, 'n');
  const full = chunks.join('');
  await script({ chunks, chunk_delay_ms: 40 });
  const n = (await answerCount()) + 1;
  resumedWith.length = 0;
  await ask('Keep going through a network drop.');
  await waitForText(n, 40);
  dropConnections();
  await page.waitForSelector('article.assistant:last-of-type .meta:has-text("reconnecting")', { timeout: 2_000 })
    .catch(() => {
      throw new Failure('the page did not say it was reconnecting');
    });
  const answer = await waitForDone(n);
  check(resumedWith.length > 0, 'the EventSource did not reconnect with Last-Event-ID');
  equal(await answer.locator('.body').textContent(), full, 'the answer on the page after the drop');
  equal((await storedAnswer(chatId)).answer.message, full, 'the stored answer');
  console.log(`     reconnected with Last-Event-ID ${resumedWith[0].split(':')[1]}`);
});

await scenario('stops an answer: it ends, shows cancelled, and is stored cancelled', async () => {
  await script({ chunks: words(80, 's'), chunk_delay_ms: 50 });
  const n = (await answerCount()) + 1;
  await ask('Talk for a long time.');
  await waitForText(n, 20);
  await page.click('#stop');
  const answer = await waitForDone(n);
  equal(await answer.getAttribute('data-status'), 'cancelled', 'the done status after Stop');
  check(/cancel/i.test(await answer.locator('.meta').textContent()), 'the page does not say cancelled');
  const stored = await storedAnswer(chatId);
  equal(stored.status, 'cancelled', 'the stored status');
  equal(await answer.locator('.body').textContent(), stored.answer.message, 'the partial answer on the page');
  check(stored.answer.message.length < words(80, 's').join('').length, 'the stopped answer is as long as the full one');
});

await scenario('shows an upstream failure to the person', async () => {
  await script({ chunks: ['Half ', 'an ', 'answer ', 'and then'], error_after: 2 });
  const n = (await answerCount()) + 1;
  await ask('Fail, please.');
  const answer = await waitForDone(n);
  equal(await answer.getAttribute('data-status'), 'incomplete', 'the done status after an upstream error');
  await page.waitForSelector('#notice', { state: 'visible' });
  const notice = await page.textContent('#notice-text');
  check(/upstream/i.test(notice), `the notice does not name the upstream failure: ${notice}`);
  await page.click('#notice-close');
});

const MARKDOWN = [
  '# Release notes\n\n',
  'Some **bold** and *italic* text, `inline code`, and a [link](https://example.com/docs).\n\n',
  '- first item\n- second item\n\n',
  '1. one\n2. two\n\n',
  '> quoted\n\n',
  '```rust\nfn main() {\n    println!("<b>hi</b>");\n}\n```\n\n',
  'Raw HTML: <script>window.__pwned = 1</script> and <img src=x onerror="window.__pwned = 2">',
  ' and [a trap](javascript:window.__pwned=3).',
];

await scenario('renders Markdown safely: structure as elements, HTML as text', async () => {
  await page.click('#new-chat');
  await page.waitForSelector('#name-dialog[open]');
  await page.fill('#name-input', 'Markdown');
  await page.press('#name-input', 'Enter');
  await page.waitForSelector('#chats button[aria-current="true"]:has-text("Markdown")');
  chatId = await currentChatId();
  await script({ chunks: MARKDOWN, chunk_delay_ms: 30 });
  await ask('Show me some Markdown.');
  const answer = await waitForDone(1);
  const body = answer.locator('.body');
  equal(await body.locator('h1').textContent(), 'Release notes', 'the heading');
  equal(await body.locator('ul > li').count(), 2, 'unordered list items');
  equal(await body.locator('ol > li').count(), 2, 'ordered list items');
  check((await body.locator('pre > code').textContent()).includes('println!("<b>hi</b>");'),
    'the fenced code block');
  equal(await body.locator('p code').first().textContent(), 'inline code', 'inline code');
  equal(await body.locator('strong').first().textContent(), 'bold', 'bold');
  equal(await body.locator('em').first().textContent(), 'italic', 'italic');
  equal(await body.locator('blockquote').textContent(), 'quoted', 'the blockquote');
  const link = body.locator('a[href="https://example.com/docs"]');
  equal(await link.count(), 1, 'the https link');
  equal(await link.getAttribute('rel'), 'noopener noreferrer', 'the link rel');
  equal(await link.getAttribute('target'), '_blank', 'the link target');
  equal(await body.locator('a[href^="javascript"]').count(), 0, 'javascript: links');
  const text = await body.textContent();
  check(text.includes('<script>window.__pwned = 1</script>'), 'the <script> is not shown as text');
  check(text.includes('<img src=x onerror="window.__pwned = 2">'), 'the <img> is not shown as text');
  equal(await page.evaluate(() => typeof window.__pwned), 'undefined', 'typeof window.__pwned');
  equal(await page.locator('article script, article img, article iframe').count(), 0,
    'script/img/iframe elements inside messages');
  const scripts = await page.evaluate(() => [...document.scripts].map((s) => s.src));
  check(scripts.length === 1 && scripts[0].endsWith('/assets/app.js'),
    `the page has other scripts than app.js: ${scripts}`);
  equal(await page.locator('img').count(), 0, 'img elements on the page');
});

await scenario('starts the answer on coming back to a chat left while its question was sent', async () => {
  const home = chatId;
  const other = await page.evaluate((id) => [...document.querySelectorAll('#chats button')]
    .map((b) => b.dataset.chatId).find((c) => c !== id), home);
  check(other, 'no other chat to switch to');
  const chunks = words(12, 'b');
  await script({ chunks, chunk_delay_ms: 20 });
  const n = (await answerCount()) + 1;
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await page.route('**/conversations/create', async (route) => {
    await held;
    await route.continue();
  });
  try {
    const posted = page.waitForResponse(
      (r) => r.url().endsWith('/conversations/create') && r.request().method() === 'POST');
    await ask('Answer me while I look elsewhere.');
    await page.click(`#chats button[data-chat-id="${other}"]`);
    await page.waitForSelector(`#chats button[aria-current="true"][data-chat-id="${other}"]`);
    release();
    await posted;
  } finally {
    release();
    await page.unroute('**/conversations/create');
  }
  await page.waitForFunction((id) => sessionStorage.getItem(`sluice.stream.${id}`) !== null, home,
    { timeout: 5_000 }).catch(() => {
    throw new Failure('the answer to start was not remembered for the chat that was left');
  });
  equal(await page.locator('article.human:has-text("Answer me while I look elsewhere.")').count(), 0,
    'the question shown in the other chat');
  await page.click(`#chats button[data-chat-id="${home}"]`);
  const answer = await waitForDone(n);
  equal(await answer.locator('.body').textContent(), chunks.join(''), 'the answer on coming back');
  equal(await page.locator('article.human').count(), n, 'questions on coming back');
  equal((await storedAnswer(home)).answer.message, chunks.join(''), 'the stored answer');
});

await scenario('shows the question once and starts one answer on coming back before the history loads', async () => {
  const home = chatId;
  const other = await page.evaluate((id) => [...document.querySelectorAll('#chats button')]
    .map((b) => b.dataset.chatId).find((c) => c !== id), home);
  check(other, 'no other chat to switch to');
  const chunks = words(12, 'r');
  await script({ chunks, chunk_delay_ms: 20 });
  const questions = await page.locator('article.human').count();
  const n = (await answerCount()) + 1;
  const streamsBefore = requested.length;
  // The question's POST and the history's GET are both held: the person leaves the chat and
  // comes back while the question posts, and the history read (from before the question) is
  // answered after it.
  let releasePost;
  let releaseList;
  const postHeld = new Promise((resolve) => { releasePost = resolve; });
  const listHeld = new Promise((resolve) => { releaseList = resolve; });
  const stale = [];
  await page.route('**/conversations/create', async (route) => {
    await postHeld;
    await route.continue();
  });
  await page.route(`**/conversations/?chat_id=${home}`, async (route) => {
    if (stale.length === 0) {
      // The first history read after coming back: answered as it was before the question.
      stale.push(await route.fetch());
      await listHeld;
      await route.fulfill({ response: stale[0] });
    } else {
      await route.continue();
    }
  });
  try {
    const posted = page.waitForResponse(
      (r) => r.url().endsWith('/conversations/create') && r.request().method() === 'POST');
    await ask('Ask once, come back early.');
    await page.click(`#chats button[data-chat-id="${other}"]`);
    await page.waitForSelector(`#chats button[aria-current="true"][data-chat-id="${other}"]`);
    await page.click(`#chats button[data-chat-id="${home}"]`);
    for (let waited = 0; stale.length === 0; waited += 10) {
      check(waited < WAIT, 'the history was not read on coming back');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    releasePost();
    await posted;
    releaseList();
  } finally {
    releasePost();
    releaseList();
    await page.unroute('**/conversations/create');
    await page.unroute(`**/conversations/?chat_id=${home}`);
  }
  const answer = await waitForDone(n);
  equal(await answer.locator('.body').textContent(), chunks.join(''), 'the answer');
  equal(await page.locator('article.human:has-text("Ask once, come back early.")').count(), 1,
    'the question shown');
  equal(await page.locator('article.human').count(), questions + 1, 'questions shown');
  equal(await answerCount(), n, 'answers shown');
  const streams = requested.slice(streamsBefore)
    .filter((url) => url.includes('conversations/inference') && url.includes(home));
  equal(streams.length, 1, `streams opened for the answer (${streams.join(', ')})`);
  equal((await storedAnswer(home)).answer.message, chunks.join(''), 'the stored answer');
});

// ---------------------------------------------------------------------------------------------
// The "Search the web" toggle: the internet variant, against the fake SearXNG.

/** Switches the fake search service between answering and failing. */
async function searchMode(mode) {
  const response = await fetch(`${SEARCH}/__mode/${mode}`, { method: 'POST' });
  equal(response.status, 204, `switching the fake search to ${mode}`);
}

const toggle = () => page.getByRole('checkbox', { name: 'Search the web' });

/** What the newest answer shows of its web search. */
const shownSearch = () => page.evaluate(() => {
  const answers = document.querySelectorAll('article.assistant');
  const answer = answers[answers.length - 1];
  return {
    status: answer.dataset.status || null,
    items: [...answer.querySelectorAll('.sources li')].map((li) => ({
      value: li.value,
      links: [...li.querySelectorAll('a')].map((a) => ({
        href: a.getAttribute('href'), text: a.textContent, target: a.target, rel: a.rel,
      })),
    })),
    cites: [...answer.querySelectorAll('.body a.cite')].map((a) => ({
      href: a.getAttribute('href'), text: a.textContent, target: a.target, rel: a.rel,
      label: a.getAttribute('aria-label'),
    })),
    note: answer.querySelector('.note')?.textContent ?? null,
    text: answer.querySelector('.body').textContent,
  };
});

const CITED = ['Rust 1.95 stabilises several long awaited ', 'language features [1] ',
  'and speeds up incremental ', 'compilation for large ', 'workspaces [1, 2]. ',
  'Cargo reports clearer errors ', 'when a workspace mixes ', 'editions [2]. ',
  'Older releases [9] are not covered here, ', 'and `v[1]` in code is indexing.'];

await scenario('has a labelled "Search the web" toggle, remembered in the tab', async () => {
  await page.click('#new-chat');
  await page.waitForSelector('#name-dialog[open]');
  await page.fill('#name-input', 'Web search');
  await page.press('#name-input', 'Enter');
  await page.waitForSelector('#chats button[aria-current="true"]:has-text("Web search")');
  chatId = await currentChatId();
  equal(await toggle().count(), 1, 'checkboxes named "Search the web"');
  equal(await toggle().isChecked(), false, 'the toggle at first');
  await toggle().check();
  await page.reload();
  await page.waitForSelector('#app', { state: 'visible' });
  await page.waitForSelector(`#chats button[aria-current="true"][data-chat-id="${chatId}"]`);
  equal(await toggle().isChecked(), true, 'the toggle after a reload');
  equal(await page.evaluate(() => sessionStorage.getItem('sluice.internet')), 'true',
    'the toggle remembered in sessionStorage');
});

let webAnswer = null;

await scenario('with the toggle on, lists the web sources as the answer streams, and marks citations', async () => {
  await script({ chunks: CITED, chunk_delay_ms: 120 });
  const from = requested.length;
  await ask('What is new in the Rust release?');
  // The sources come first: the list is there while the answer is still streaming.
  await page.waitForSelector('article.assistant:last-of-type .sources li a');
  const early = await shownSearch();
  equal(early.status, null, 'the answer status when the sources appeared (still streaming)');
  check(early.text.length < CITED.join('').length,
    `the whole answer had arrived when the sources appeared: ${early.text}`);
  const streams = requested.slice(from).filter((u) => u.includes('conversations/inference'));
  check(streams.length === 1 && streams[0].includes('conversations/inference_internet/'),
    `the question was not streamed through the internet variant: ${streams.join(', ')}`);
  await waitForDone(1);
  const shown = await shownSearch();
  equal(shown.status, 'complete', 'the done status');
  equal(shown.text, CITED.join('').replaceAll('`', ''), 'the answer on the page (markers keep their text)');
  const stored = await storedAnswer(chatId);
  equal(stored.answer.message, CITED.join(''), 'the stored answer');
  check(shown.items.length >= 2, `the page lists ${shown.items.length} source(s), expected at least 2`);
  shown.items.forEach((item, i) => {
    equal(item.value, i + 1, `the number of source ${i + 1}`);
    equal(item.links.length, 1, `links in source ${i + 1}`);
    const [source] = item.links;
    check(source.href.startsWith('http://127.0.0.1:'), `source ${i + 1} links to ${source.href}`);
    check(source.text.trim(), `source ${i + 1} has no title`);
    equal(source.target, '_blank', `source ${i + 1} link target`);
    equal(source.rel, 'noopener noreferrer', `source ${i + 1} link rel`);
  });
  // [1], [1, 2] and [2] resolve: four links; [9] names no source and v[1] is code.
  equal(JSON.stringify(shown.cites.map((c) => c.text)), JSON.stringify(['1', '1', '2', '2']),
    'the citation links');
  for (const cite of shown.cites) {
    equal(cite.href, shown.items[Number(cite.text) - 1].links[0].href, `citation [${cite.text}] href`);
    equal(cite.target, '_blank', 'a citation link target');
    equal(cite.rel, 'noopener noreferrer', 'a citation link rel');
    check(cite.label.startsWith(`Source ${cite.text}: `), `citation label: ${cite.label}`);
  }
  equal(await lastAnswer().locator('.body code').textContent(), 'v[1]', 'the code span');
  equal(shown.note, null, 'a search notice after a good search');
  check(await page.isHidden('#notice'), 'an error notice is shown after a good search');
  webAnswer = shown;
  if (SCREENSHOT) {
    await page.evaluate(() => {
      document.activeElement.blur();
      const m = document.getElementById('messages');
      m.scrollTop = m.scrollHeight;
    });
    await page.screenshot({ path: SCREENSHOT });
    console.log(`     screenshot saved to ${SCREENSHOT}`);
  }
});

await scenario('shows the sources of a web answer again after a reload (kept in the tab)', async () => {
  check(webAnswer, 'no web answer to reload');
  await page.reload();
  await page.waitForSelector('#app', { state: 'visible' });
  await page.waitForFunction(() => {
    const log = document.getElementById('messages');
    return log.querySelector('article.assistant') && !log.hasAttribute('aria-busy');
  });
  const shown = await shownSearch();
  equal(shown.text, webAnswer.text, 'the answer after the reload');
  equal(JSON.stringify(shown.items), JSON.stringify(webAnswer.items), 'the sources after the reload');
  equal(JSON.stringify(shown.cites), JSON.stringify(webAnswer.cites), 'the citations after the reload');
});

await scenario('resumes a web answer after a reload on the internet path, its sources kept', async () => {
  const chunks = ['Cited [1]. ', ...words(50, 'i')];
  const full = chunks.join('');
  await script({ chunks, chunk_delay_ms: 40 });
  const n = (await answerCount()) + 1;
  await ask('Tell me more about the release.');
  await waitForText(n, 60);
  const sources = (await shownSearch()).items;
  check(sources.length > 0, 'no sources before the reload');
  const before = requested.length;
  await page.reload();
  await page.waitForSelector('#app', { state: 'visible' });
  const answer = await waitForDone(n);
  const streams = requested.slice(before).filter((u) => u.includes('conversations/inference'));
  check(streams.length > 0 && streams.every((u) => u.includes('conversations/inference_internet/')),
    `after the reload the answer was not resumed on the internet path: ${streams.join(', ')}`);
  check(/[?&]last_event_id=[^&]+%3A\d+/.test(streams[0]),
    `after the reload the stream was not resumed with last_event_id: ${streams[0]}`);
  equal(await answer.locator('.body').textContent(), full, 'the answer on the page after the reload');
  equal((await storedAnswer(chatId)).answer.message, full, 'the stored answer');
  const shown = await shownSearch();
  equal(JSON.stringify(shown.items), JSON.stringify(sources), 'the sources after the resume');
  equal(shown.cites.length, 1, 'citation links after the resume');
});

await scenario('says so when the web search fails, and the answer still completes', async () => {
  await searchMode('error');
  try {
    const chunks = words(12, 'f');
    await script({ chunks, chunk_delay_ms: 20 });
    const n = (await answerCount()) + 1;
    await ask('And if the search fails?');
    await waitForDone(n);
    const shown = await shownSearch();
    equal(shown.status, 'complete', 'the done status after a failed search');
    equal(shown.text, chunks.join(''), 'the answer after a failed search');
    check(shown.note && /search/i.test(shown.note) && /without sources/i.test(shown.note),
      `the answer does not say that the search failed: ${shown.note}`);
    equal(shown.items.length, 0, 'sources listed after a failed search');
    check(await page.isHidden('#notice'), 'a failed search was shown as a fatal error');
    equal(await lastAnswer().locator('.meta').isVisible(), false, 'the answer meta after a failed search');
  } finally {
    await searchMode('ok');
  }
  await toggle().uncheck();
  equal(await page.evaluate(() => sessionStorage.getItem('sluice.internet')), 'false',
    'the toggle remembered off');
});

await scenario('renames a chat', async () => {
  await page.click('#rename-chat');
  await page.waitForSelector('#name-dialog[open]');
  await page.fill('#name-input', 'Renamed in the browser');
  await page.press('#name-input', 'Enter');
  await page.waitForSelector('#chats button[aria-current="true"]:has-text("Renamed in the browser")');
  equal(await page.textContent('#chat-title'), 'Renamed in the browser', 'the chat title');
  equal((await api('GET', `chats/${chatId}`)).json().name, 'Renamed in the browser', 'the stored name');
});

await scenario('deletes a chat after confirmation', async () => {
  const shown = await page.evaluate(() => [...document.querySelectorAll('article')].map((a) => a.dataset.messageId));
  check(shown.length > 0, 'the chat shows no messages before delete');
  await page.click('#delete-chat');
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-cancel');
  equal((await api('GET', `chats/${chatId}`)).status, 200, 'the chat after Cancel');
  await page.click('#delete-chat');
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-ok');
  await page.waitForSelector(`#chats button[data-chat-id="${chatId}"]`, { state: 'detached' });
  equal((await api('GET', `chats/${chatId}`)).status, 404, 'GET chats/{id} after delete');
  const after = await page.evaluate(() => [...document.querySelectorAll('article')].map((a) => a.dataset.messageId));
  check(!after.some((id) => shown.includes(id)), 'messages of the deleted chat are still shown');
  check((await currentChatId()) !== chatId, 'the deleted chat is still selected');
});

await scenario('signs out: the session ends and the form is back', async () => {
  await page.click('#sign-out');
  await page.waitForSelector('#signin-form', { state: 'visible' });
  check(!(await context.cookies()).some((c) => c.name === 'sluice_session' && c.value),
    'the session cookie is still set after sign-out');
  await page.reload();
  await page.waitForSelector('#signin-form', { state: 'visible' });
});

await scenario('never puts the key in a URL and logs no page errors', async () => {
  const leaks = requested.filter((u) => u.includes(KEY) || /[?&]key=/.test(u));
  check(leaks.length === 0, `the key appeared in requested URLs: ${leaks.join(', ')}`);
  check(problems.length === 0, `the page reported errors:\n${problems.join('\n')}`);
});

await browser.close();
relay.close();
const failed = results.filter((r) => !r.ok).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
