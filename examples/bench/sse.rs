//! A raw, cheap Server-Sent-Events reader: lines split on `\n`, events on blank lines, and only
//! `data:`, `event:` and comment lines looked at. It copies nothing but the data of the current
//! event, so the client is never the bottleneck.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use futures::StreamExt;

/// One complete item of an event stream.
pub enum Item<'a> {
    /// A `:` comment line (without the colon and one leading space).
    Comment(&'a [u8]),
    /// An event: its `event:` name (empty when unnamed) and its `data:` lines joined by `\n`.
    Event { name: &'a [u8], data: &'a [u8] },
}

#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    name: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

fn strip_space(v: &[u8]) -> &[u8] {
    v.strip_prefix(b" ").unwrap_or(v)
}

impl Parser {
    /// Feeds bytes as they arrived; `on` sees every item completed by them.
    pub fn feed(&mut self, bytes: &[u8], mut on: impl FnMut(Item<'_>)) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(rel) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + rel;
            let mut line = &self.buf[start..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            start = end + 1;
            if line.is_empty() {
                if self.has_data || !self.name.is_empty() {
                    on(Item::Event {
                        name: &self.name,
                        data: &self.data,
                    });
                }
                self.name.clear();
                self.data.clear();
                self.has_data = false;
            } else if let Some(comment) = line.strip_prefix(b":") {
                on(Item::Comment(strip_space(comment)));
            } else {
                let (field, value) = match line.iter().position(|b| *b == b':') {
                    Some(i) => (&line[..i], strip_space(&line[i + 1..])),
                    None => (line, &b""[..]),
                };
                match field {
                    b"data" => {
                        if self.has_data {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                        self.has_data = true;
                    }
                    b"event" => {
                        self.name.clear();
                        self.name.extend_from_slice(value);
                    }
                    _ => {}
                }
            }
        }
        self.buf.drain(..start);
    }
}

/// Which dialect a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI chunks: `data: {json}` … `data: [DONE]`.
    OpenAi,
    /// sluice's conversations stream: unnamed text deltas, then `event: done`.
    Conversations,
}

#[derive(serde::Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
}

#[derive(serde::Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

/// What one answer looked like from the client.
#[derive(Debug, Default)]
pub struct Answer {
    /// From sending the request to the first delta, in microseconds.
    pub ttft_us: Option<u32>,
    /// From sending the request to the opening `: ok` comment, in microseconds.
    pub ok_us: Option<u32>,
    pub deltas: usize,
    pub keepalives: usize,
    pub text: String,
}

/// Reads one streamed answer to its end. Gaps between consecutive deltas (µs) are appended to
/// `gaps`; `opened` is incremented when the `: ok` comment arrives and `delta_seen` set at the
/// first delta. An answer is good only if it
/// ended with `done` (status complete) or `[DONE]`, carried no error, and its text is `expected`.
pub async fn read_answer(
    response: reqwest::Response,
    dialect: Dialect,
    sent: Instant,
    expected: &str,
    gaps: &mut Vec<u32>,
    opened: Option<&AtomicUsize>,
    delta_seen: Option<&AtomicBool>,
) -> Result<Answer, String> {
    let mut state = State {
        dialect,
        sent,
        last: None,
        answer: Answer::default(),
        done: false,
        failure: None,
        opened,
        delta_seen,
        gaps,
    };
    let mut parser = Parser::default();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("body error: {e}"))?;
        let now = Instant::now();
        parser.feed(&chunk, |item| state.on_item(item, now));
    }
    if let Some(failure) = state.failure {
        return Err(failure);
    }
    if !state.done {
        return Err(match dialect {
            Dialect::OpenAi => "stream ended without [DONE]".to_owned(),
            Dialect::Conversations => "stream ended without done".to_owned(),
        });
    }
    if state.answer.text != expected {
        return Err(format!(
            "text mismatch: got {} bytes in {} deltas, expected {} bytes",
            state.answer.text.len(),
            state.answer.deltas,
            expected.len()
        ));
    }
    Ok(state.answer)
}

struct State<'g> {
    dialect: Dialect,
    sent: Instant,
    last: Option<Instant>,
    answer: Answer,
    done: bool,
    failure: Option<String>,
    opened: Option<&'g AtomicUsize>,
    delta_seen: Option<&'g AtomicBool>,
    gaps: &'g mut Vec<u32>,
}

fn micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl State<'_> {
    fn fail(&mut self, message: String) {
        if self.failure.is_none() {
            self.failure = Some(message);
        }
    }

    fn delta(&mut self, text: &str, now: Instant) {
        if self.done {
            self.fail("delta after the end of the stream".to_owned());
            return;
        }
        match self.last {
            None => {
                self.answer.ttft_us = Some(micros(now - self.sent));
                if let Some(seen) = self.delta_seen {
                    seen.store(true, Ordering::Relaxed);
                }
            }
            Some(last) => self.gaps.push(micros(now - last)),
        }
        self.last = Some(now);
        self.answer.deltas += 1;
        self.answer.text.push_str(text);
    }

    fn on_item(&mut self, item: Item<'_>, now: Instant) {
        match item {
            Item::Comment(c) => {
                if c == b"ok" {
                    self.answer.ok_us.get_or_insert(micros(now - self.sent));
                    if let Some(opened) = self.opened.take() {
                        opened.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    self.answer.keepalives += 1;
                }
            }
            Item::Event { name, data } => match self.dialect {
                Dialect::OpenAi => self.openai_event(name, data, now),
                Dialect::Conversations => self.conversations_event(name, data, now),
            },
        }
    }

    fn openai_event(&mut self, name: &[u8], data: &[u8], now: Instant) {
        if !name.is_empty() && name != b"message" {
            return;
        }
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        match serde_json::from_slice::<Chunk<'_>>(data) {
            Ok(chunk) if chunk.error.is_some() => {
                let text = String::from_utf8_lossy(data);
                self.fail(format!("error chunk: {}", truncate(&text, 200)));
            }
            Ok(chunk) => {
                if let Some(content) = chunk
                    .choices
                    .into_iter()
                    .next()
                    .and_then(|c| c.delta)
                    .and_then(|d| d.content)
                    .filter(|c| !c.is_empty())
                {
                    self.delta(&content, now);
                }
            }
            Err(err) => self.fail(format!("unparsable chunk: {err}")),
        }
    }

    fn conversations_event(&mut self, name: &[u8], data: &[u8], now: Instant) {
        match name {
            b"" | b"message" => match std::str::from_utf8(data) {
                Ok(text) => self.delta(text, now),
                Err(_) => self.fail("delta is not UTF-8".to_owned()),
            },
            b"done" => {
                self.done = true;
                let text = String::from_utf8_lossy(data);
                if !text.contains("\"status\":\"complete\"") {
                    self.fail(format!(
                        "done without status complete: {}",
                        truncate(&text, 200)
                    ));
                }
            }
            b"error" => {
                let text = String::from_utf8_lossy(data);
                self.fail(format!("error event: {}", truncate(&text, 200)));
            }
            _ => {}
        }
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}
