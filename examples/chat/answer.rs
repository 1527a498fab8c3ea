//! One answer: the chat's inference stream read to its `done` event, resumed with
//! `Last-Event-ID` when the connection drops, stopped on the server at Ctrl-C.

use std::future::Future;
use std::pin::pin;

use anyhow::anyhow;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::StreamExt;
use reqwest::Response;
use serde_json::Value;

use crate::api::{Api, OpenError, Opened};
use crate::interrupt::Interrupts;
use crate::output::Output;
use crate::reconnect::Reconnect;
use crate::session::Stop;

/// How an answer ended.
pub struct Answer {
    /// `done.status`: `complete`, `incomplete`, `failed` or `cancelled`.
    pub status: String,
    /// Ctrl-C stopped it.
    pub interrupted: bool,
}

impl Answer {
    pub fn is_complete(&self) -> bool {
        self.status == "complete"
    }
}

/// Streams the answer to the chat's newest message to `out`, delta by delta.
pub async fn stream(
    api: &Api,
    chat: &str,
    interrupts: &mut Interrupts,
    out: &mut Output,
) -> Result<Answer, Stop> {
    let mut reader = Reader {
        guard: Guard {
            api,
            chat,
            interrupts,
            out,
            stopping: false,
        },
        last_id: None,
        reconnect: Reconnect::new(),
    };
    let status = reader.until_done().await?;
    reader.guard.out.end_line()?;
    Ok(Answer {
        status,
        interrupted: reader.guard.stopping,
    })
}

/// What became of one connection.
enum Attempt {
    /// The `done` event, with its status.
    Done(String),
    /// The connection ended or failed before `done`, for this reason.
    Lost(String),
}

struct Reader<'a> {
    guard: Guard<'a>,
    /// The id of the last event received: where a new connection resumes.
    last_id: Option<String>,
    reconnect: Reconnect,
}

impl Reader<'_> {
    async fn until_done(&mut self) -> Result<String, Stop> {
        loop {
            let cause = match self.attempt().await? {
                Attempt::Done(status) => return Ok(status),
                Attempt::Lost(cause) => cause,
            };
            if !self.reconnect.is_failing() {
                self.guard
                    .out
                    .note(&format!("connection lost ({cause}); resuming"));
            }
            let wait = self.reconnect.failed(&cause)?;
            self.guard.run(tokio::time::sleep(wait)).await?;
        }
    }

    async fn attempt(&mut self) -> Result<Attempt, Stop> {
        let (api, chat) = (self.guard.api, self.guard.chat);
        let opened = self
            .guard
            .run(api.open_stream(chat, self.last_id.as_deref()))
            .await?;
        match opened {
            Ok(Opened::Stream(response)) => self.read(response).await,
            // 204 answers a reconnect with the `done` id, which this client never sends; if it
            // comes anyway, the server holds the answer for finished.
            Ok(Opened::AlreadyDone) => Ok(Attempt::Done("complete".to_owned())),
            Err(OpenError::Retry(cause)) => Ok(Attempt::Lost(cause)),
            Err(OpenError::Fatal(e)) => Err(Stop::Failed(e)),
        }
    }

    async fn read(&mut self, response: Response) -> Result<Attempt, Stop> {
        let mut tap = self.reconnect.tap();
        let events = response
            .bytes_stream()
            .inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    tap.feed(bytes);
                }
            })
            .eventsource();
        let mut events = pin!(events);
        loop {
            let event = match self.guard.run(events.next()).await? {
                Some(Ok(event)) => event,
                None => return Ok(Attempt::Lost("the stream ended before `done`".into())),
                Some(Err(EventStreamError::Transport(e))) => {
                    return Ok(Attempt::Lost(format!("{:#}", anyhow::Error::from(e))));
                }
                Some(Err(e)) => return Err(anyhow!("malformed event stream: {e}").into()),
            };
            self.reconnect.progress();
            if let Some(status) = self.handle(event)? {
                return Ok(Attempt::Done(status));
            }
        }
    }

    /// Prints a delta or an error; returns the status once `done` arrives.
    fn handle(&mut self, event: Event) -> Result<Option<String>, Stop> {
        let Event {
            event, data, id, ..
        } = event;
        if !id.is_empty() {
            self.last_id = Some(id);
        }
        match event.as_str() {
            "message" => self.guard.out.write(&data)?,
            "error" => {
                let held = self.last_id.as_deref().and_then(offset_of);
                self.guard.out.note(&error_line(&data, held));
            }
            "done" => return Ok(Some(done_status(&data))),
            // `sources` and anything newer: not part of the answer text.
            _ => {}
        }
        Ok(None)
    }
}

/// The byte offset of an event id `<message id>:<offset>`.
fn offset_of(id: &str) -> Option<u64> {
    id.rsplit_once(':')?.1.parse().ok()
}

/// `error: <code>: <message>` from an `error` event's `{code, message}`. An `interrupted` answer
/// (the server stopped before saving all of it) says how much of what was printed, `held`
/// bytes, the server kept: the printed text stays as it is.
fn error_line(data: &str, held: Option<u64>) -> String {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return format!("error: {data}");
    };
    let code = v["code"].as_str().unwrap_or("unknown");
    let message = v["message"].as_str().unwrap_or_default();
    match (code, v["saved_bytes"].as_u64(), held) {
        ("interrupted", Some(saved), Some(held)) if saved < held => format!(
            "interrupted: the server stopped before this answer was finished; the text above is \
             what arrived, {saved} of its {held} bytes were saved"
        ),
        _ => format!("error: {code}: {message}"),
    }
}

fn done_status(data: &str) -> String {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Lets Ctrl-C interrupt any wait of the answer: the first asks the server to stop it (its
/// `done`, and so the whole partial text, is still awaited), the second ends the client at once.
struct Guard<'a> {
    api: &'a Api,
    chat: &'a str,
    interrupts: &'a mut Interrupts,
    out: &'a mut Output,
    stopping: bool,
}

impl Guard<'_> {
    async fn run<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Stop> {
        let mut work = pin!(work);
        loop {
            tokio::select! {
                value = &mut work => return Ok(value),
                () = self.interrupts.next() => self.stop_answer().await?,
            }
        }
    }

    async fn stop_answer(&mut self) -> Result<(), Stop> {
        if self.stopping {
            return Err(Stop::Interrupted);
        }
        self.stopping = true;
        self.out
            .note("stopping the answer (Ctrl-C again to quit at once)");
        let stopped = self.interrupts.unless_interrupted(self.api.stop(self.chat));
        if let Err(e) = stopped.await? {
            self.out.note(&format!(
                "error: could not stop the answer, it goes on on the server: {e:#}"
            ));
            return Err(Stop::Interrupted);
        }
        Ok(())
    }
}
