// sluice chat page: sign-in, chats, messages and streamed answers over the conversations API.
//
// No framework and no build step. Every string that comes from the server or the model becomes
// DOM text (createElement / textContent / append(string)), never HTML. Every URL is relative to
// the page, so the page works wherever sluice is mounted.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) Object.assign(node, props);
    node.append(...children);
    return node;
  }

  // ------------------------------------------------------------------------------------------
  // The API. Cookies carry the session; state-changing requests add the CSRF token.

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const session = { csrf: null, kind: null, workspace: null };

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (method !== 'GET' && method !== 'HEAD' && session.csrf) {
      headers['X-CSRF-Token'] = session.csrf;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `network error (${e.message})`);
    }
    const text = await response.text().catch(() => '');
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message = data && typeof data.message === 'string'
        ? data.message
        : (text.slice(0, 200) || response.statusText);
      throw new ApiError(response.status, message, data && data.error);
    }
    return data;
  }

  // ------------------------------------------------------------------------------------------
  // Telling the person what happened.

  function describe(what, error) {
    if (error instanceof ApiError) {
      return error.status
        ? `${what} failed: ${error.status} ${error.message}`
        : `${what} failed: ${error.message}`;
    }
    return `${what} failed: ${error && error.message ? error.message : error}`;
  }

  function showError(text) {
    $('notice-text').textContent = text;
    $('notice').hidden = false;
  }

  function announce(text) {
    $('status').textContent = text;
  }

  /** Runs an API action; reports a failure (a 401 means the session is over) and returns undefined. */
  async function attempt(what, action) {
    try {
      return await action();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401 && session.csrf !== null) {
        signedOut('Your session has ended. Sign in again.');
      } else {
        showError(describe(what, error));
      }
      return undefined;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Markdown, rendered to DOM nodes. Raw HTML in the text stays text.

  const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)/;
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}> ?(.*)$/;
  const BULLET = /^( {0,3})([-*+])[ \t]+(.*)$/;
  const ORDERED = /^( {0,3})(\d{1,9})([.)])[ \t]+(.*)$/;
  const MAX_DEPTH = 8;

  function renderMarkdown(text) {
    const fragment = document.createDocumentFragment();
    appendBlocks(fragment, text.split('\n'), 0);
    return fragment;
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)
      || BULLET.test(line) || ORDERED.test(line);
  }

  function isFenceEnd(line, fence) {
    const t = line.trim();
    return t.length >= fence.length && [...t].every((c) => c === fence[0]);
  }

  function appendBlocks(parent, lines, depth) {
    if (depth > MAX_DEPTH) {
      parent.append(el('p', {}, lines.join('\n')));
      return;
    }
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) {
        i += 1;
      } else if ((m = FENCE.exec(line))) {
        const body = [];
        i += 1;
        while (i < lines.length && !isFenceEnd(lines[i], m[1])) body.push(lines[i++]);
        i += 1; // the closing fence (or the end of a still-streaming block)
        const code = el('code', {}, body.join('\n'));
        if (/^[\w+#.-]{1,32}$/.test(m[2])) code.className = `language-${m[2]}`;
        parent.append(el('pre', {}, code));
      } else if ((m = HEADING.exec(line))) {
        const heading = el(`h${m[1].length}`);
        appendInline(heading, m[2] || '', 0);
        parent.append(heading);
        i += 1;
      } else if (RULE.test(line)) {
        parent.append(el('hr'));
        i += 1;
      } else if (QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
          inner.push(m[1]);
          i += 1;
        }
        const quote = el('blockquote');
        appendBlocks(quote, inner, depth + 1);
        parent.append(quote);
      } else if (BULLET.test(line) || ORDERED.test(line)) {
        i = appendList(parent, lines, i, ORDERED.test(line) && !BULLET.test(line), depth);
      } else {
        const paragraph = [];
        while (i < lines.length && lines[i].trim() && (paragraph.length === 0 || !startsBlock(lines[i]))) {
          paragraph.push(lines[i]);
          i += 1;
        }
        const p = el('p');
        appendInline(p, paragraph.join('\n'), 0);
        parent.append(p);
      }
    }
  }

  /** One list from line `i`; items hold their indented continuation lines. Returns the next line. */
  function appendList(parent, lines, i, ordered, depth) {
    const marker = ordered ? ORDERED : BULLET;
    const list = el(ordered ? 'ol' : 'ul');
    const first = marker.exec(lines[i]);
    if (ordered && first[2] !== '1') list.start = Number(first[2]);
    while (i < lines.length) {
      const m = marker.exec(lines[i]);
      if (!m) break;
      const column = lines[i].length - m[m.length - 1].length;
      const item = [m[m.length - 1]];
      i += 1;
      while (i < lines.length) {
        const line = lines[i];
        if (!line.trim()) {
          let next = i;
          while (next < lines.length && !lines[next].trim()) next += 1;
          if (next < lines.length && /^(?: {2,}|\t)/.test(lines[next])) {
            while (i < next) item.push(lines[i++]);
            continue;
          }
          break;
        }
        if (/^(?: {2,}|\t)/.test(line)) {
          item.push(line.replace(new RegExp(`^(?:\\t| {1,${column}})`), ''));
        } else if (!startsBlock(line)) {
          item.push(line); // a lazy continuation of the item's paragraph
        } else {
          break;
        }
        i += 1;
      }
      const li = el('li');
      appendBlocks(li, item, depth + 1);
      // A tight item shows its text directly, not inside a paragraph.
      if (li.childNodes.length === 1 && li.firstChild.nodeName === 'P') {
        li.replaceChildren(...li.firstChild.childNodes);
      }
      list.append(li);
      // Blank lines between items of the same list keep the list going.
      let next = i;
      while (next < lines.length && !lines[next].trim()) next += 1;
      if (next < lines.length && next > i && marker.test(lines[next])) i = next;
    }
    parent.append(list);
    return i;
  }

  const SAFE_PROTOCOLS = new Set(['http:', 'https:', 'mailto:']);
  const LINK = /^\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\]\(\s*<?([^\s<>()]+(?:\([^\s<>()]*\)[^\s<>()]*)*)>?(?:\s+"[^"\n]*")?\s*\)/;
  const AUTOLINK = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/;
  const BARE_URL = /^https?:\/\/[^\s<>"]+/;
  const EMPHASIS = [['**', 'strong'], ['__', 'strong'], ['~~', 'del'], ['*', 'em'], ['_', 'em']];
  const ESCAPABLE = /[\\`*_{}\[\]()#+\-.!<>~|"']/;
  // How far an inline mark looks for its closing mark: stray marks cannot make a paragraph
  // quadratic (thousands of unmatched `*a` would otherwise freeze the tab).
  const LOOK_AHEAD = 2048;

  function safeUrl(raw) {
    try {
      const url = new URL(raw);
      return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
    } catch {
      return null;
    }
  }

  function link(href, parent) {
    const a = el('a', { href, rel: 'noopener noreferrer', target: '_blank' });
    parent.append(a);
    return a;
  }

  /** Where the emphasis opened at `start` with `mark` closes, or -1. */
  function closing(text, start, mark) {
    const ahead = text.slice(start, start + LOOK_AHEAD);
    let from = mark.length + 1;
    while (from <= ahead.length) {
      const k = ahead.indexOf(mark, from);
      if (k < 0) return -1;
      const j = start + k;
      const doubled = mark.length === 1 && text[j + 1] === mark;
      if (!doubled && !/\s/.test(text[j - 1])
          && !(mark[0] === '_' && /[\p{L}\p{N}]/u.test(text[j + mark.length] || ''))) {
        return j;
      }
      from = k + (doubled ? 2 : 1);
    }
    return -1;
  }

  function appendInline(parent, text, depth) {
    if (depth > MAX_DEPTH) {
      parent.append(text);
      return;
    }
    let plain = '';
    const flush = () => {
      if (plain) parent.append(plain);
      plain = '';
    };
    let i = 0;
    outer: while (i < text.length) {
      const c = text[i];
      // What the patterns below look at (a bounded window: a pattern never spans more).
      const rest = '`[<h'.includes(c) ? text.slice(i, i + LOOK_AHEAD) : '';
      let m;
      if (c === '\\' && ESCAPABLE.test(text[i + 1] || '')) {
        plain += text[i + 1];
        i += 2;
        continue;
      }
      if (c === '`') {
        const ticks = /^`+/.exec(rest)[0];
        const end = rest.indexOf(ticks, ticks.length); // within the window, relative to i
        if (end > 0) {
          let code = rest.slice(ticks.length, end);
          if (code.length > 1 && code.startsWith(' ') && code.endsWith(' ')) code = code.slice(1, -1);
          flush();
          parent.append(el('code', {}, code));
          i += end + ticks.length;
        } else {
          plain += ticks;
          i += ticks.length;
        }
        continue;
      }
      if (c === '[' && (m = LINK.exec(rest))) {
        const href = safeUrl(m[2]);
        if (href) {
          flush();
          appendInline(link(href, parent), m[1], depth + 1);
        } else {
          plain += m[0]; // an unsafe or relative link is shown as written
        }
        i += m[0].length;
        continue;
      }
      if (c === '<' && (m = AUTOLINK.exec(rest))) {
        const href = safeUrl(m[1]);
        if (href) {
          flush();
          link(href, parent).append(m[1]);
          i += m[0].length;
          continue;
        }
      }
      if (c === 'h' && !/[\p{L}\p{N}]/u.test(text[i - 1] || '') && (m = BARE_URL.exec(rest))) {
        let raw = m[0].replace(/[.,;:!?'"\]]+$/, '');
        // A closing parenthesis belongs to the URL only if it closes one of the URL's own.
        while (raw.endsWith(')') && raw.split('(').length < raw.split(')').length) {
          raw = raw.slice(0, -1).replace(/[.,;:!?'"\]]+$/, '');
        }
        const href = safeUrl(raw);
        if (href) {
          flush();
          link(href, parent).append(raw);
          i += raw.length;
          continue;
        }
      }
      for (const [mark, tag] of EMPHASIS) {
        if (!text.startsWith(mark, i)) continue;
        const after = text[i + mark.length] || '';
        if (!after || /\s/.test(after)) continue;
        if (mark[0] === '_' && /[\p{L}\p{N}]/u.test(text[i - 1] || '')) continue;
        const end = closing(text, i, mark);
        if (end < 0) continue;
        flush();
        const node = el(tag);
        appendInline(node, text.slice(i + mark.length, end), depth + 1);
        parent.append(node);
        i = end + mark.length;
        continue outer;
      }
      plain += c;
      i += 1;
    }
    flush();
  }

  // ------------------------------------------------------------------------------------------
  // Byte offsets: stream event ids count UTF-8 bytes of the answer.

  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const utf8Length = (text) => encoder.encode(text).length;
  const utf8Prefix = (text, bytes) => decoder.decode(encoder.encode(text).subarray(0, bytes));

  /** `<message id>:<offset>` or `<message id>:done` → {messageId, offset}. */
  function parseEventId(id) {
    const at = id ? id.lastIndexOf(':') : -1;
    if (at < 0) return null;
    const rest = id.slice(at + 1);
    return { messageId: id.slice(0, at), offset: /^\d+$/.test(rest) ? Number(rest) : null };
  }

  // ------------------------------------------------------------------------------------------
  // What survives a reload, in this tab only (sessionStorage): the selected chat, and per chat
  // the answer being streamed. Never the key.

  const store = {
    get(name) {
      try {
        return JSON.parse(sessionStorage.getItem(`sluice.${name}`));
      } catch {
        return null;
      }
    },
    set(name, value) {
      try {
        sessionStorage.setItem(`sluice.${name}`, JSON.stringify(value));
      } catch {
        // Storage full or disabled: only reload-resume is lost.
      }
    },
    remove(name) {
      try {
        sessionStorage.removeItem(`sluice.${name}`);
      } catch {
        // as above
      }
    },
  };

  // ------------------------------------------------------------------------------------------
  // Messages on screen.

  const messages = $('messages');

  function nearBottom() {
    return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  }

  function scrollDown(wasNear) {
    if (wasNear) messages.scrollTop = messages.scrollHeight;
  }

  function messageView(role, id) {
    const human = role === 'Human';
    const body = el('div', { className: 'body' });
    const meta = el('p', { className: 'meta' });
    meta.hidden = true;
    const article = el('article', { className: `msg ${human ? 'human' : 'assistant'}` },
      el('p', { className: 'who' }, human ? 'You' : 'Assistant'), body, meta);
    if (id) article.dataset.messageId = id;
    // The web sources of an answer by index, once known: `[n]` markers link to them.
    let cited = null;
    return {
      article,
      body,
      setText(text) {
        if (human) {
          body.textContent = text;
          return;
        }
        body.replaceChildren(renderMarkdown(text));
        if (cited) markCitations(body, cited);
      },
      setMeta(text, bad) {
        meta.textContent = text;
        meta.hidden = !text;
        meta.classList.toggle('bad', Boolean(bad));
      },
      /** The numbered sources above the answer (none: no list). Takes `readSources` output. */
      setSources(sources) {
        const old = article.querySelector(':scope > .sources');
        if (old) old.remove();
        cited = sources.length ? new Map(sources.map((s) => [s.index, s])) : null;
        if (!cited) return;
        const list = el('ol', { className: 'sources' });
        for (const s of sources) {
          const item = el('li', { value: s.index });
          if (s.url) {
            item.append(el('a', { href: s.url, rel: 'noopener noreferrer', target: '_blank' }, s.title));
            const host = hostOf(s.url);
            if (host && host !== s.title) item.append(' ', el('span', { className: 'host' }, host));
          } else {
            item.append(s.title);
          }
          list.append(item);
        }
        const block = el('div', { className: 'sources' },
          el('p', { className: 'sources-title' }, 'Sources'), list);
        article.insertBefore(block, article.querySelector(':scope > .note') || body);
        markCitations(body, cited);
      },
      /** A notice that does not end the answer (the web search could not help). */
      setNote(text) {
        let note = article.querySelector(':scope > .note');
        if (!text) {
          if (note) note.remove();
          return;
        }
        if (!note) {
          note = el('p', { className: 'note' });
          article.insertBefore(note, body);
        }
        note.textContent = text;
      },
    };
  }

  // ------------------------------------------------------------------------------------------
  // Web sources and citation markers. The server's sources are data: titles and URLs become
  // text and checked hrefs, markers are found in text nodes only (never in HTML).

  /** `[{index, title, url}]` from a `sources` event: indexes as sent, only safe URLs kept. */
  function readSources(raw) {
    if (!Array.isArray(raw)) return [];
    const out = [];
    raw.forEach((s, i) => {
      if (!s || typeof s !== 'object') return;
      const index = Number.isInteger(s.index) && s.index > 0 ? s.index : i + 1;
      const safe = safeUrl(String(s.url || ''));
      const url = safe && /^https?:/.test(safe) ? safe : null; // a source is a web page
      const title = String(s.title || s.url || `Source ${index}`).slice(0, 300);
      out.push({ index, title, url });
    });
    return out;
  }

  function hostOf(url) {
    try {
      return new URL(url).host;
    } catch {
      return '';
    }
  }

  // `[1]`, `[1, 2]`: the markers the server counts as citations (see src/search/citations.rs).
  const CITATION = /\[(\d{1,3}(?:[ \t]*,[ \t]*\d{1,3})*)\]/g;

  /** Turns the numbers of `[n]` markers that name a source into links to it. */
  function markCitations(root, cited) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
      // Code is not prose, and a link cannot hold a link (nor be marked twice).
      acceptNode: (node) => (node.parentElement.closest('a, code, pre')
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
    });
    const nodes = [];
    while (walker.nextNode()) {
      if (walker.currentNode.data.includes('[')) nodes.push(walker.currentNode);
    }
    for (const node of nodes) {
      const text = node.data;
      const parts = [];
      let at = 0;
      for (const m of text.matchAll(CITATION)) {
        const pieces = m[1].split(/([ \t]*,[ \t]*)/);
        if (!pieces.some((p, i) => i % 2 === 0 && cited.get(Number(p))?.url)) continue;
        parts.push(text.slice(at, m.index), '[');
        pieces.forEach((piece, i) => {
          const source = i % 2 === 0 ? cited.get(Number(piece)) : null;
          parts.push(source && source.url ? citationLink(source, piece) : piece);
        });
        parts.push(']');
        at = m.index + m[0].length;
      }
      if (!at) continue;
      parts.push(text.slice(at));
      node.replaceWith(...parts.filter((p) => p !== ''));
    }
  }

  function citationLink(source, label) {
    const a = el('a', {
      className: 'cite', href: source.url, rel: 'noopener noreferrer', target: '_blank',
      title: source.title,
    }, label);
    a.setAttribute('aria-label', `Source ${label}: ${source.title}`);
    return a;
  }

  // What the page learnt about an answer's web search (its sources, a notice), kept in this tab
  // by message id: a resumed stream does not send the sources again, and the conversation list
  // does not hold them. The newest answers only.
  const SEARCHES_KEPT = 50;

  /** The kept searches, by message id, oldest first. */
  function keptSearches() {
    const kept = store.get('searches');
    return new Map(Array.isArray(kept) ? kept.filter((e) => Array.isArray(e) && e.length === 2) : []);
  }

  function rememberSearch(messageId, search) {
    if (!messageId || !search) return;
    const kept = keptSearches();
    kept.delete(messageId);
    kept.set(messageId, search);
    store.set('searches', [...kept].slice(-SEARCHES_KEPT));
  }

  function recalledSearch(messageId, kept = keptSearches()) {
    const search = kept.get(messageId);
    if (!search || typeof search !== 'object') return null;
    return { sources: readSources(search.sources), note: typeof search.note === 'string' ? search.note : null };
  }

  function showSearch(view, search) {
    if (!search) return;
    view.setSources(search.sources);
    view.setNote(search.note);
  }

  function appendMessage(role, text, id) {
    const wasNear = nearBottom();
    const view = messageView(role, id);
    view.setText(text);
    messages.append(view.article);
    scrollDown(wasNear);
    return view;
  }

  // ------------------------------------------------------------------------------------------
  // Answers. The EventSource reconnects by itself after a network drop, sending Last-Event-ID,
  // and the server resumes exactly after it. A page reload starts over here: the answer's text
  // so far comes from the saved conversation (see resumeAnswer), the stream resumes after it.

  // Stream paths by variant. An "internet" toggle only has to pick the variant.
  const STREAM_PATHS = {
    plain: 'conversations/inference/',
    internet: 'conversations/inference_internet/',
  };
  // Errors that do not end the answer: it streams on, without sources.
  const SEARCH_NOTICES = {
    search_failed: 'The web search failed; answering without sources.',
    search_disabled: 'Web search is turned off on this server; answering without sources.',
  };
  const sentence = (text) => {
    const t = text.trim().slice(0, 400);
    return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
  };
  const DONE_LABELS = {
    cancelled: 'Stopped: the answer was cancelled.',
    incomplete: 'The answer is incomplete.',
    failed: 'The answer failed.',
  };

  class Answer {
    constructor(chatId, variant, view, text, lastEventId) {
      this.chatId = chatId;
      this.variant = variant;
      this.view = view;
      this.text = text;
      this.lastEventId = lastEventId;
      this.messageId = lastEventId ? parseEventId(lastEventId).messageId : null;
      this.frame = 0;
      this.restarts = 0;
      this.source = null;
      this.finished = false;
      // The web search's sources and notice, once the internet variant sent them.
      this.search = null;
      // Set by an `interrupted` error: the server stopped before saving all of the answer.
      this.interrupted = null;
    }

    url() {
      const path = STREAM_PATHS[this.variant] + encodeURIComponent(this.chatId);
      return this.lastEventId ? `${path}?last_event_id=${encodeURIComponent(this.lastEventId)}` : path;
    }

    remember() {
      // A finished answer is forgotten for good: writing it back would resume it on every visit.
      if (this.finished) return;
      store.set(`stream.${this.chatId}`, {
        variant: this.variant,
        messageId: this.messageId,
        lastEventId: this.lastEventId,
      });
    }

    open() {
      this.remember();
      this.view.article.setAttribute('aria-busy', 'true');
      this.view.setMeta('Answering');
      const source = new EventSource(this.url());
      this.source = source;
      source.onopen = () => this.view.setMeta('Answering');
      source.onmessage = (e) => this.delta(e);
      source.addEventListener('sources', (e) => this.sources(e));
      source.addEventListener('done', (e) => this.done(e));
      // `error` is both the server's named event (a MessageEvent with data) and the
      // EventSource's own connection error (a plain Event).
      source.addEventListener('error', (e) => {
        if (e instanceof MessageEvent && typeof e.data === 'string') this.serverError(e);
        else this.connectionError();
      });
    }

    track(id) {
      if (!id) return;
      this.lastEventId = id;
      if (!this.messageId) {
        this.messageId = parseEventId(id).messageId;
        this.view.article.dataset.messageId = this.messageId;
        this.remember();
      }
    }

    delta(e) {
      this.text += e.data;
      this.track(e.lastEventId);
      // Markdown is re-rendered once per frame, not once per token.
      if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
    }

    render() {
      if (this.frame) cancelAnimationFrame(this.frame);
      this.frame = 0;
      const wasNear = nearBottom();
      this.view.setText(this.text);
      scrollDown(wasNear);
      this.remember();
    }

    sources(e) {
      this.track(e.lastEventId);
      let raw = [];
      try {
        raw = JSON.parse(e.data);
      } catch {
        // A malformed sources event only loses the list.
      }
      // A replay from the start sends the sources again: the list is replaced, not repeated.
      this.search = { sources: readSources(raw), note: null };
      showSearch(this.view, this.search);
      rememberSearch(this.messageId, this.search);
    }

    serverError(e) {
      this.track(e.lastEventId);
      let detail = {};
      try {
        detail = JSON.parse(e.data) || {};
      } catch {
        detail = { message: e.data };
      }
      if (detail.code === 'interrupted') {
        // The server stopped before it saved all of this answer: what was shown is kept, and
        // marked, when `done` follows.
        this.interrupted = {
          saved: Number.isSafeInteger(detail.saved_bytes) ? detail.saved_bytes : null,
        };
        return;
      }
      const notice = SEARCH_NOTICES[detail.code];
      if (notice) {
        // The web search could not help: the answer goes on without sources.
        const message = typeof detail.message === 'string' && detail.message.trim()
          ? sentence(detail.message)
          : notice;
        this.search = { sources: this.search ? this.search.sources : [], note: message };
        this.view.setNote(message);
        rememberSearch(this.messageId, this.search);
        announce(message);
        return;
      }
      showError(`The answer failed: ${detail.message || 'unknown error'}${detail.code ? ` (${detail.code})` : ''}`);
    }

    done(e) {
      this.close();
      this.finished = true;
      store.remove(`stream.${this.chatId}`);
      this.render();
      let result = {};
      try {
        result = JSON.parse(e.data) || {};
      } catch {
        result = {};
      }
      if (result.conversation && result.conversation.id) {
        this.view.article.dataset.messageId = result.conversation.id;
      }
      const status = result.status || 'complete';
      this.view.article.dataset.status = status;
      this.view.article.removeAttribute('aria-busy');
      let label = status === 'complete' ? '' : (DONE_LABELS[status] || `Answer ended: ${status}.`);
      if (this.interrupted) {
        this.view.article.dataset.interrupted = 'true';
        const shown = new TextEncoder().encode(this.text).length;
        const saved = this.interrupted.saved;
        label = 'Interrupted: the server stopped before this answer was finished.';
        if (saved !== null && saved < shown) {
          label += ` The text shown is what arrived; ${saved} of its ${shown} bytes were saved.`;
        }
      }
      this.view.setMeta(label, status !== 'complete');
      announce(label || 'The answer is complete.');
      answerEnded(this);
    }

    connectionError() {
      if (this.finished || !this.source) return;
      if (this.source.readyState === EventSource.CONNECTING) {
        this.view.setMeta('Connection lost, reconnecting');
        return;
      }
      // Closed for good: the server refused (an HTTP error) or answered 204. An EventSource
      // does not expose the status, so ask again with fetch to tell the person why.
      this.close();
      this.diagnose();
    }

    async diagnose() {
      const controller = new AbortController();
      let response;
      try {
        response = await fetch(this.url(), {
          headers: { Accept: 'text/event-stream' },
          credentials: 'same-origin',
          cache: 'no-store',
          signal: controller.signal,
        });
      } catch (error) {
        if (state.answer !== this) return; // detached meanwhile: coming back resumes it
        this.fail(`The answer stream failed: network error (${error.message})`);
        return;
      }
      if (state.answer !== this) {
        // Detached (another chat, signed out) while asking: nobody would close a new stream.
        controller.abort();
        return;
      }
      if (response.status === 204) {
        // Nothing more will come: what is saved is the answer.
        controller.abort();
        this.ended();
        if (state.chatId === this.chatId) selectChat(this.chatId);
        return;
      }
      if (response.ok && this.restarts < 3) {
        controller.abort();
        this.restarts += 1;
        this.open();
        return;
      }
      const text = await response.text().catch(() => '');
      if (state.answer !== this) return;
      let message = text.slice(0, 200) || response.statusText;
      try {
        message = JSON.parse(text).message || message;
      } catch {
        // not JSON: keep the text
      }
      if (response.status === 401) {
        this.ended();
        signedOut('Your session has ended. Sign in again.');
        return;
      }
      this.fail(`The answer stream failed: ${response.status} ${message}`);
    }

    fail(text) {
      this.ended();
      this.view.setMeta('The answer stopped arriving.', true);
      showError(text);
    }

    ended() {
      this.close();
      this.finished = true;
      store.remove(`stream.${this.chatId}`);
      this.view.article.removeAttribute('aria-busy');
      answerEnded(this);
    }

    close() {
      if (this.source) this.source.close();
      if (this.frame) cancelAnimationFrame(this.frame);
      this.frame = 0;
    }

    /** Leaves the chat: the generation goes on on the server; coming back resumes it. */
    detach() {
      this.close();
      this.source = null;
      this.remember();
    }
  }

  // ------------------------------------------------------------------------------------------
  // Application state and views.

  const state = { chats: [], chatId: null, answer: null, loading: 0 };

  function currentChat() {
    return state.chats.find((c) => c.id === state.chatId) || null;
  }

  function setStreaming(streaming) {
    $('send').disabled = streaming;
    // Each frame replaces the streaming answer: the log stays quiet meanwhile, and the status
    // region announces the end (see Answer.done).
    messages.setAttribute('aria-live', streaming ? 'off' : 'polite');
    $('stop').hidden = !streaming || session.kind === 'publishable';
  }

  function answerEnded(answer) {
    if (state.answer === answer) {
      state.answer = null;
      setStreaming(false);
    }
  }

  function renderChats() {
    const list = $('chats');
    list.replaceChildren(...state.chats.map((chat) => {
      const button = el('button', { type: 'button', title: chat.name }, chat.name);
      button.dataset.chatId = chat.id;
      if (chat.id === state.chatId) button.setAttribute('aria-current', 'true');
      button.addEventListener('click', () => selectChat(chat.id));
      return el('li', {}, button);
    }));
    $('chats-empty').hidden = state.chats.length > 0;
    const chat = currentChat();
    $('chat-title').textContent = chat ? chat.name : 'No chat selected';
    const manage = Boolean(chat) && session.kind !== 'publishable';
    $('rename-chat').disabled = !manage;
    $('delete-chat').disabled = !manage;
  }

  // A publishable key may not list chats: the page lists the ones this tab created.
  async function loadChats() {
    if (session.kind === 'publishable') {
      const ids = store.get('chats') || [];
      const chats = [];
      for (const id of ids) {
        // A chat that is gone (deleted elsewhere) is left out; any other error (a 401, the
        // network) is the caller's to show.
        const chat = await api('GET', `chats/${encodeURIComponent(id)}`).catch((error) => {
          if (error instanceof ApiError && (error.status === 404 || error.status === 400)) return null;
          throw error;
        });
        if (chat) chats.push(chat);
      }
      if (chats.length !== ids.length) store.set('chats', chats.map((c) => c.id));
      return chats;
    }
    return api('GET', 'chats/?limit=200');
  }

  async function refreshChats() {
    const chats = await attempt('Loading the chats', loadChats);
    if (chats) state.chats = chats;
    renderChats();
  }

  async function selectChat(chatId) {
    if (state.answer) {
      state.answer.detach();
      state.answer = null;
      setStreaming(false);
    }
    state.chatId = chatId;
    if (chatId) store.set('chat', chatId);
    else store.remove('chat');
    renderChats();
    messages.replaceChildren();
    // A load still under way for the chat before is now stale.
    const ticket = ++state.loading;
    if (!chatId) {
      messages.removeAttribute('aria-busy');
      return;
    }
    // The history is not read out message by message: the log is busy while it fills.
    messages.setAttribute('aria-busy', 'true');
    const list = await attempt('Loading the messages',
      () => api('GET', `conversations/?chat_id=${encodeURIComponent(chatId)}`));
    if (ticket !== state.loading) return;
    if (!list) {
      messages.removeAttribute('aria-busy');
      return;
    }
    const pending = store.get(`stream.${chatId}`);
    const searches = keptSearches();
    let resume = null;
    for (const message of list) {
      if (pending && message.role === 'Assistant' && message.id === pending.messageId) {
        resume = message;
        continue;
      }
      const view = appendMessage(message.role, message.message, message.id);
      if (message.role === 'Assistant') showSearch(view, recalledSearch(message.id, searches));
    }
    messages.scrollTop = messages.scrollHeight;
    messages.removeAttribute('aria-busy');
    if (pending) resumeAnswer(chatId, pending, resume, list);
  }

  /**
   * Picks up an answer this tab was receiving before a reload (or before it switched chats).
   * The saved conversation holds a prefix of the answer (checkpointed while it streams); the
   * text shown is the saved text up to the last offset received, and the stream resumes right
   * there, so nothing is shown twice and nothing is lost.
   */
  function resumeAnswer(chatId, pending, saved, list) {
    const variant = STREAM_PATHS[pending.variant] ? pending.variant : 'plain';
    let text = '';
    let lastEventId = null;
    if (pending.messageId && saved) {
      const received = parseEventId(pending.lastEventId);
      const have = received && received.offset !== null ? received.offset : 0;
      const offset = Math.min(have, utf8Length(saved.message));
      text = utf8Prefix(saved.message, offset);
      lastEventId = `${pending.messageId}:${offset}`;
    } else if (pending.messageId) {
      // The answer is gone (deleted with its chat, or from another session): nothing to resume.
      store.remove(`stream.${chatId}`);
      return;
    } else {
      // No event had arrived: the answer starts over from its beginning, so a partial copy in
      // the list is not shown.
      const last = list[list.length - 1];
      if (last && last.role === 'Assistant') {
        const node = messages.querySelector(`[data-message-id="${CSS.escape(last.id)}"]`);
        if (node) node.remove();
      }
    }
    startAnswer(chatId, variant, text, lastEventId);
  }

  function startAnswer(chatId, variant, text, lastEventId) {
    const view = appendMessage('Assistant', text, null);
    const answer = new Answer(chatId, variant, view, text, lastEventId);
    if (answer.messageId) {
      view.article.dataset.messageId = answer.messageId;
      // A resumed stream does not send the sources again: show the ones this tab kept.
      answer.search = recalledSearch(answer.messageId);
      showSearch(view, answer.search);
    }
    state.answer = answer;
    setStreaming(true);
    answer.open();
  }

  async function send(text, variant) {
    let chatId = state.chatId;
    if (!chatId) {
      const name = text.split('\n')[0].trim().slice(0, 60) || 'New chat';
      const chat = await createChat(name);
      if (!chat) return false;
      chatId = chat.id;
    }
    // Changes if the person leaves the chat (and perhaps comes back) while the question posts.
    const ticket = state.loading;
    const question = await attempt('Sending the message', () => api('POST', 'conversations/create',
      { chat_id: chatId, role: 'Human', message: text }));
    if (!question) return false;
    // Remembered before anything else: only the stream request starts the answer, so a person
    // who left the chat meanwhile gets it started when they come back (see resumeAnswer).
    store.set(`stream.${chatId}`, { variant, messageId: null, lastEventId: null });
    if (state.chatId !== chatId) return true;
    if (state.loading !== ticket) {
      // They came back while the question was posted: the history being loaded may have been
      // read before it. Load it again, now that the question is stored; that load shows the
      // question once and starts its answer once (the older load is then ignored).
      await selectChat(chatId);
      return true;
    }
    appendMessage('Human', question.message, question.id);
    startAnswer(chatId, variant, '', null);
    return true;
  }

  async function createChat(name) {
    const chat = await attempt('Creating the chat', () => api('POST', 'chats/create', { name }));
    if (!chat) return null;
    if (session.kind === 'publishable') {
      store.set('chats', [chat.id, ...(store.get('chats') || [])]);
    }
    state.chats = [chat, ...state.chats.filter((c) => c.id !== chat.id)];
    await selectChat(chat.id);
    return chat;
  }

  // ------------------------------------------------------------------------------------------
  // Dialogs.

  function askName(title, initial) {
    const dialog = $('name-dialog');
    const input = $('name-input');
    $('name-dialog-title').textContent = title;
    input.value = initial;
    return new Promise((resolve) => {
      const finish = (value) => {
        $('name-form').onsubmit = null;
        $('name-cancel').onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(value);
      };
      $('name-form').onsubmit = (e) => {
        e.preventDefault();
        finish(input.value.trim() || null);
      };
      $('name-cancel').onclick = () => finish(null);
      dialog.onclose = () => finish(null);
      dialog.showModal();
      input.select();
    });
  }

  function confirmDelete(name) {
    const dialog = $('confirm-dialog');
    $('confirm-text').textContent = `“${name}” and all its messages will be deleted.`;
    return new Promise((resolve) => {
      const finish = (value) => {
        $('confirm-form').onsubmit = null;
        $('confirm-cancel').onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(value);
      };
      $('confirm-form').onsubmit = (e) => {
        e.preventDefault();
        finish(true);
      };
      $('confirm-cancel').onclick = () => finish(false);
      dialog.onclose = () => finish(false);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ------------------------------------------------------------------------------------------
  // Signing in and out.

  function signedIn(info) {
    session.csrf = info.csrf_token || '';
    session.kind = info.kind || null;
    session.workspace = info.workspace || null;
    $('signin').hidden = true;
    $('app').hidden = false;
    $('who').textContent = info.auth === 'off'
      ? 'Authentication is off (SLUICE_AUTH=off).'
      : (session.kind ? `Signed in with a ${session.kind} key.` : '');
    $('sign-out').hidden = !info.csrf_token;
  }

  function signedOut(message) {
    if (state.answer) state.answer.close();
    state.answer = null;
    state.chats = [];
    state.chatId = null;
    session.csrf = null;
    session.kind = null;
    try {
      sessionStorage.clear();
    } catch {
      // nothing stored then
    }
    messages.replaceChildren();
    setStreaming(false);
    $('internet').checked = false; // forgotten with the rest of the tab's memory
    $('app').hidden = true;
    $('signin').hidden = false;
    if (message) showError(message);
    $('signin-key').focus();
  }

  async function startApp() {
    await refreshChats();
    const remembered = store.get('chat');
    const chatId = state.chats.some((c) => c.id === remembered) ? remembered : null;
    await selectChat(chatId);
    $('composer-input').focus();
  }

  async function boot() {
    let info;
    try {
      info = await api('GET', 'session');
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        signedOut();
        return;
      }
      if (error instanceof ApiError && error.status === 404) {
        // A server without browser sessions (e.g. SLUICE_AUTH=off): use the API directly.
        info = {};
      } else {
        signedOut();
        showError(describe('Checking the session', error));
        return;
      }
    }
    signedIn(info);
    await startApp();
  }

  // ------------------------------------------------------------------------------------------
  // Wiring.

  $('notice-close').addEventListener('click', () => {
    $('notice').hidden = true;
  });

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('signin-key');
    const key = input.value.trim();
    if (!key) return;
    $('signin-submit').disabled = true;
    try {
      const info = await api('POST', 'session', { key });
      input.value = '';
      $('notice').hidden = true;
      signedIn(info);
      await startApp();
    } catch (error) {
      showError(describe('Signing in', error));
      input.select();
    } finally {
      $('signin-submit').disabled = false;
    }
  });

  $('sign-out').addEventListener('click', async () => {
    const done = await attempt('Signing out', async () => {
      await api('DELETE', 'session');
      return true;
    });
    if (done) signedOut();
  });

  $('new-chat').addEventListener('click', async () => {
    const name = await askName('New chat', 'New chat');
    if (name) await createChat(name);
    $('composer-input').focus();
  });

  $('rename-chat').addEventListener('click', async () => {
    const chat = currentChat();
    if (!chat) return;
    const name = await askName('Rename chat', chat.name);
    if (!name || name === chat.name) return;
    const updated = await attempt('Renaming the chat',
      () => api('PUT', `chats/update/${encodeURIComponent(chat.id)}`, { name }));
    if (!updated) return;
    state.chats = state.chats.map((c) => (c.id === updated.id ? updated : c));
    renderChats();
    announce(`Renamed to ${updated.name}.`);
  });

  $('delete-chat').addEventListener('click', async () => {
    const chat = currentChat();
    if (!chat || !(await confirmDelete(chat.name))) return;
    const deleted = await attempt('Deleting the chat',
      () => api('DELETE', `chats/delete/${encodeURIComponent(chat.id)}`));
    if (!deleted) return;
    // The chat's answer ends here; detaching it (in selectChat) would remember it again.
    if (state.answer && state.answer.chatId === chat.id) state.answer.ended();
    store.remove(`stream.${chat.id}`);
    state.chats = state.chats.filter((c) => c.id !== chat.id);
    if (session.kind === 'publishable') store.set('chats', state.chats.map((c) => c.id));
    await selectChat(state.chats.length ? state.chats[0].id : null);
    announce(`Deleted ${chat.name}.`);
  });

  // True while a question is being posted: state.answer is only set once the POST returns, and
  // requestSubmit() works even while Send is disabled.
  let sending = false;

  $('composer').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('composer-input');
    const text = input.value;
    if (!text.trim() || state.answer || sending) return;
    sending = true;
    $('send').disabled = true;
    let sent = false;
    try {
      sent = await send(text, $('internet').checked ? 'internet' : 'plain');
    } finally {
      sending = false;
    }
    if (sent) input.value = '';
    if (!state.answer) $('send').disabled = false;
    input.focus();
  });

  // The "Search the web" toggle is remembered in this tab; it picks the next question's stream.
  $('internet').checked = store.get('internet') === true;
  $('internet').addEventListener('change', () => store.set('internet', $('internet').checked));

  $('composer-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (!e.repeat) $('composer').requestSubmit(); // a held-down Enter sends once
    }
  });

  $('stop').addEventListener('click', async () => {
    const answer = state.answer;
    if (!answer) return;
    $('stop').disabled = true;
    // The stream then ends with `done` and status `cancelled`.
    const result = await attempt('Stopping the answer',
      () => api('POST', `conversations/stop/${encodeURIComponent(answer.chatId)}`));
    $('stop').disabled = false;
    if (result && !answer.source && !answer.finished) answer.ended();
  });

  boot();
})();
