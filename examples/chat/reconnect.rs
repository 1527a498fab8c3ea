//! When to reconnect after a lost stream: the server's `retry:` if it sent one, else 250 ms
//! doubling to 5 s; after two minutes without progress, give up.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::anyhow;

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

pub struct Reconnect {
    delay: Duration,
    /// The server's reconnection time, set by a [`RetryTap`] on the stream.
    server_retry: Rc<Cell<Option<Duration>>>,
    /// When the current run of failures began; `None` while the stream makes progress.
    failing_since: Option<Instant>,
}

impl Reconnect {
    pub fn new() -> Self {
        Self {
            delay: FIRST_DELAY,
            server_retry: Rc::default(),
            failing_since: None,
        }
    }

    /// A tap that records the server's `retry:` for this reconnection policy.
    pub fn tap(&self) -> RetryTap {
        RetryTap {
            line: Vec::new(),
            overlong: false,
            found: Rc::clone(&self.server_retry),
        }
    }

    /// An event arrived: failures so far are forgiven.
    pub fn progress(&mut self) {
        self.delay = FIRST_DELAY;
        self.failing_since = None;
    }

    /// Whether the last attempt failed (so a new failure is not news).
    pub fn is_failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// The connection was lost for `cause`: how long to wait before the next try, or the error
    /// that ends the client after two minutes of failures.
    pub fn failed(&mut self, cause: &str) -> anyhow::Result<Duration> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= GIVE_UP_AFTER {
            return Err(anyhow!(
                "could not resume the answer for {} s; last failure: {cause}",
                GIVE_UP_AFTER.as_secs()
            ));
        }
        let wait = self.server_retry.get().unwrap_or(self.delay);
        self.delay = (self.delay * 2).min(MAX_DELAY);
        Ok(wait)
    }
}

/// Longest line worth remembering: `retry:` and any number a `u64` can hold.
const RETRY_LINE_MAX: usize = 32;

/// Watches the raw stream for `retry:` lines. eventsource-stream applies `retry` only to events
/// that carry data, and sluice's farewell (sent when it shuts down) is `retry:` alone.
pub struct RetryTap {
    line: Vec<u8>,
    overlong: bool,
    found: Rc<Cell<Option<Duration>>>,
}

impl RetryTap {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match byte {
                b'\n' | b'\r' => self.end_line(),
                _ if self.line.len() < RETRY_LINE_MAX => self.line.push(byte),
                _ => self.overlong = true,
            }
        }
    }

    fn end_line(&mut self) {
        if !self.overlong
            && let Some(millis) = retry_millis(&self.line)
        {
            self.found.set(Some(Duration::from_millis(millis)));
        }
        self.line.clear();
        self.overlong = false;
    }
}

/// The value of a `retry:` field line, if it is one with only ASCII digits (as the SSE spec asks).
fn retry_millis(line: &[u8]) -> Option<u64> {
    let value = line.strip_prefix(b"retry:")?;
    let value = value.strip_prefix(b" ").unwrap_or(value);
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}
