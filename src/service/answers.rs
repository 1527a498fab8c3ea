//! The reader side of a generation, as every dialect gets it: an opaque stream of events.
//! Which readers may cancel what they read is decided here, not at the HTTP edge.

use std::sync::Arc;

use uuid::Uuid;

use crate::domain::{GenEvent, ResumeAt, ResumePoint};
use crate::error::{Error, Result};
use crate::generation::{CancelReason, Live, ResumeError, StartAt, Subscription};

/// How long a resume waits for this replica's copy of another replica's answer to reach the
/// reader's offset.
const FOLLOWER_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(3);

/// One reader of one answer: its events in order, ending with `Done`.
pub struct AnswerStream {
    sub: Subscription,
    /// Nobody else can read this answer (an unstored one): leaving before its end cancels it.
    cancel_if_left: bool,
    finished: bool,
}

impl AnswerStream {
    /// Reads `live` from where `resume` says (the beginning when it names another answer).
    pub(super) async fn open(live: Arc<Live>, resume: Option<ResumePoint>) -> Result<Self> {
        let start = match resume {
            Some(ResumePoint {
                message_id,
                at: ResumeAt::Offset(offset),
            }) if message_id == live.message_id => StartAt::Offset(offset),
            _ => StartAt::Beginning,
        };
        if let StartAt::Offset(offset) = start
            && live.is_follower()
        {
            // This replica's copy of an answer another replica runs may still be catching up
            // with what the reader was sent there.
            live.wait_len(offset, FOLLOWER_CATCH_UP).await;
        }
        let sub = Subscription::new(live, start).map_err(|e| match e {
            ResumeError::BeyondText { len } => Error::bad_request(
                "Last-Event-ID",
                format!("Last-Event-ID offset is beyond the {len} bytes of the answer"),
            ),
            ResumeError::InsideCharacter => Error::bad_request(
                "Last-Event-ID",
                "Last-Event-ID offset falls inside a character",
            ),
        })?;
        Ok(Self {
            sub,
            cancel_if_left: false,
            finished: false,
        })
    }

    /// The only reader of an answer nobody can resume: dropping it before the end cancels the
    /// generation (its usage is still recorded).
    pub(super) fn sole(live: Arc<Live>) -> Result<Self> {
        let sub = Subscription::new(live, StartAt::Beginning).map_err(|_| {
            Error::Internal("a new answer cannot be read from its beginning".into())
        })?;
        let mut stream = Self {
            sub,
            cancel_if_left: false,
            finished: false,
        };
        stream.cancel_if_left = true;
        Ok(stream)
    }

    /// The id of the answer's message: the prefix of every event id.
    pub fn message_id(&self) -> Uuid {
        self.sub.message_id()
    }

    /// Resolves once the answer is in the database, so that any process can report on it.
    pub async fn stored(&self) {
        self.sub.live().wait_row().await;
    }

    /// The next event, waiting for the generation if needed; `None` after `Done`.
    pub async fn next(&mut self) -> Option<GenEvent> {
        let event = self.sub.next().await;
        if matches!(event, None | Some(GenEvent::Done(_))) {
            self.finished = true;
        }
        event
    }
}

impl Drop for AnswerStream {
    fn drop(&mut self) {
        if self.cancel_if_left && !self.finished {
            self.sub.live().cancel(CancelReason::ReaderGone);
        }
    }
}
