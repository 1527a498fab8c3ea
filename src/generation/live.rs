//! The in-memory log of one generation and the subscriptions that read it.
//!
//! The log is the answer text itself plus a few marks (sources, errors, the end). A reader is
//! an offset into it: it wakes on a version bump, sends everything past its offset as one delta,
//! and so never sees a byte twice or misses one, however slow it is. Appending a token costs a
//! `push_str` and a wake-up; nothing is allocated per reader until a reader takes its delta.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{
    Finished, GenEvent, LineBreaks, Message, MessageStatus, StreamFailure, ToolCallDelta,
};

/// Why a running generation is being cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// A client asked to stop: the partial answer is saved as `cancelled`.
    Stop,
    /// The server is shutting down: the partial answer is saved as `incomplete`.
    Shutdown,
    /// The only reader of an unstored answer went away: nobody can resume it.
    ReaderGone,
}

/// Something in the log besides text, at the text offset where it happened.
#[derive(Clone, Debug)]
enum Mark {
    Failure(StreamFailure),
    ToolCall(ToolCallDelta),
}

#[derive(Debug, Default)]
struct State {
    text: String,
    sources: Option<Arc<Value>>,
    marks: Vec<(usize, Mark)>,
    finished: Option<Arc<Finished>>,
    checkpointed: usize,
    /// The sources are in the answer's row.
    sources_checkpointed: bool,
    cancel_reason: Option<CancelReason>,
}

/// One generation's shared state: written by its task, read by any number of subscriptions.
#[derive(Debug)]
pub struct Live {
    pub message_id: Uuid,
    pub chat_id: Uuid,
    pub question_id: Uuid,
    /// Whether the text is checkpointed to a message row.
    pub persisted: bool,
    /// Whether that row exists yet: it is inserted while the upstream call starts.
    row_ready: std::sync::atomic::AtomicBool,
    /// A copy of a log that another replica runs, fed from the shared log.
    follower: bool,
    /// Told when the log changes (see [`Live::watch`]).
    watcher: std::sync::OnceLock<Watcher>,
    /// Changed since the watcher last read it.
    dirty: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    cancel: CancellationToken,
    /// Set by `cancel`, read by the relay for every chunk without taking a lock.
    stopping: std::sync::atomic::AtomicBool,
    /// The relay task's waker, woken by `cancel`.
    relay_waker: futures::task::AtomicWaker,
}

impl Live {
    pub(crate) fn new(message_id: Uuid, chat_id: Uuid, question_id: Uuid) -> Self {
        Self {
            message_id,
            chat_id,
            question_id,
            persisted: true,
            row_ready: std::sync::atomic::AtomicBool::new(false),
            follower: false,
            watcher: std::sync::OnceLock::new(),
            dirty: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(State::default()),
            version: watch::Sender::new(0),
            cancel: CancellationToken::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            relay_waker: futures::task::AtomicWaker::new(),
        }
    }

    /// A finished log rebuilt from the database, so that replay and live reading share one path.
    pub(crate) fn saved(row: Message, error: Option<StreamFailure>) -> Self {
        let live = Self::new(row.id, row.chat_id, row.reply_to.unwrap_or_default());
        let status = row.status;
        {
            let mut st = live.lock();
            st.text = row.content.clone();
            st.sources = row.sources.clone().map(Arc::new);
            // A search failure happened before the first delta; any other, at the end.
            if let Some(mut failure) = error {
                if failure.code == StreamFailure::INTERRUPTED {
                    failure.saved_bytes = Some(st.text.len());
                }
                if [crate::search::SEARCH_FAILED, crate::search::SEARCH_DISABLED]
                    .contains(&failure.code.as_str())
                {
                    st.marks.push((0, Mark::Failure(failure)));
                } else if status != MessageStatus::Complete {
                    let at = st.text.len();
                    st.marks.push((at, Mark::Failure(failure)));
                }
            }
            st.finished = Some(Arc::new(finished_of(row)));
        }
        live
    }

    /// The copy, on this replica, of a running answer that another replica runs: written only
    /// from the shared log (never checkpointed here), read by subscriptions like any log.
    pub(crate) fn follower(message_id: Uuid, chat_id: Uuid, question_id: Uuid) -> Self {
        Self {
            persisted: false,
            follower: true,
            ..Self::new(message_id, chat_id, question_id)
        }
    }

    /// Whether this log is a copy of one that another replica runs.
    pub fn is_follower(&self) -> bool {
        self.follower
    }

    /// Resolves once the text is at least `len` bytes long, the log has ended, or `limit`
    /// passed: a copy of another replica's log may still be catching up with a reader who
    /// read further on that replica.
    pub async fn wait_len(&self, len: usize, limit: std::time::Duration) {
        let mut rx = self.version.subscribe();
        let waiting = async {
            loop {
                {
                    let st = self.lock();
                    if st.text.len() >= len || st.finished.is_some() {
                        return;
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, waiting).await;
    }

    /// The last failure in the log, if any.
    pub(crate) fn last_failure(&self) -> Option<StreamFailure> {
        self.lock().marks.iter().rev().find_map(|(_, m)| match m {
            Mark::Failure(f) => Some(f.clone()),
            Mark::ToolCall(_) => None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a single step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        if let Some(watcher) = self.watcher.get()
            && !self.dirty.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            (watcher.0)(self.message_id);
        }
    }

    /// Calls `hook` with the answer's id when the log changes, once until
    /// [`Live::clear_dirty`]: a single reader of many logs (the shared log's publisher) learns
    /// which ones to read without a task per log. Set once.
    pub(crate) fn watch(&self, hook: Box<dyn Fn(Uuid) + Send + Sync>) {
        let _ = self.watcher.set(Watcher(hook));
    }

    /// Called by the watcher before it reads the log: a change after this calls it again.
    pub(crate) fn clear_dirty(&self) {
        self.dirty
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Appends upstream text, normalising line breaks. Returns the new length.
    pub(crate) fn append(&self, breaks: &mut LineBreaks, chunk: &str) -> usize {
        let len = {
            let mut st = self.lock();
            breaks.push(chunk, &mut st.text);
            st.text.len()
        };
        self.bump();
        len
    }

    pub fn set_sources(&self, sources: Value) {
        self.lock().sources = Some(Arc::new(sources));
        self.bump();
    }

    /// An ephemeral log: nothing is checkpointed.
    pub(crate) fn ephemeral(id: Uuid) -> Self {
        Self {
            persisted: false,
            ..Self::new(id, Uuid::nil(), id)
        }
    }

    fn mark(&self, mark: Mark) {
        {
            let mut st = self.lock();
            let at = st.text.len();
            st.marks.push((at, mark));
        }
        self.bump();
    }

    pub(crate) fn fail(&self, failure: StreamFailure) {
        self.mark(Mark::Failure(failure));
    }

    pub(crate) fn tool_call(&self, call: ToolCallDelta) {
        self.mark(Mark::ToolCall(call));
    }

    /// Appends upstream text exactly as it came (unstored answers relay it unchanged).
    pub(crate) fn append_raw(&self, chunk: &str) {
        self.lock().text.push_str(chunk);
        self.bump();
    }

    pub(crate) fn finish(&self, finished: Finished) {
        self.lock().finished = Some(Arc::new(finished));
        self.bump();
    }

    /// The text so far and the last failure, for the task's final write.
    pub(crate) fn snapshot(&self) -> (String, Option<StreamFailure>, Option<Arc<Value>>) {
        let failure = self.last_failure();
        let st = self.lock();
        (st.text.clone(), failure, st.sources.clone())
    }

    pub fn text_len(&self) -> usize {
        self.lock().text.len()
    }

    pub fn finished(&self) -> Option<Arc<Finished>> {
        self.lock().finished.clone()
    }

    /// Asks the task to stop. The first reason wins.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        {
            let mut st = self.lock();
            st.cancel_reason.get_or_insert(reason);
        }
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.relay_waker.wake();
        self.cancel.cancel();
    }

    pub(crate) fn cancel_reason(&self) -> Option<CancelReason> {
        self.lock().cancel_reason
    }

    pub(crate) fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Resolves once `cancel` was called, like `cancelled`, for the relay loop, which polls it
    /// once per chunk: an atomic load and a waker registration, where the token's future takes
    /// two locks. One task at a time may wait on it (it keeps a single waker).
    pub(crate) fn stop_requested(&self) -> StopRequested<'_> {
        StopRequested(self)
    }

    /// The text to checkpoint, if it grew since the last one.
    /// Checkpoints may write the answer's row from now on.
    pub(crate) fn set_row_ready(&self) {
        self.row_ready
            .store(true, std::sync::atomic::Ordering::Release);
        // Wakes whoever waits in `wait_row` (a reader finds nothing new and waits on).
        self.bump();
    }

    /// Resolves once the answer's row exists (or the generation ended without one).
    pub async fn wait_row(&self) {
        let mut rx = self.version.subscribe();
        loop {
            if !self.persisted
                || self.row_ready.load(std::sync::atomic::Ordering::Acquire)
                || self.finished().is_some()
            {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The text to checkpoint, if it grew since the last one, and the sources, the first time
    /// (so that a crash keeps them with the text).
    pub(crate) fn checkpoint_due(&self) -> Option<Checkpoint> {
        if !self.row_ready.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let st = self.lock();
        let sources = st.sources.clone().filter(|_| !st.sources_checkpointed);
        (self.persisted
            && st.finished.is_none()
            && (st.text.len() > st.checkpointed || sources.is_some()))
        .then(|| Checkpoint {
            len: st.text.len(),
            text: st.text.clone(),
            sources,
        })
    }

    pub(crate) fn mark_checkpointed(&self, done: &Checkpoint) {
        let mut st = self.lock();
        st.checkpointed = st.checkpointed.max(done.len);
        st.sources_checkpointed |= done.sources.is_some();
    }

    /// Resolves once the generation has finished and its answer is saved.
    pub async fn wait_finished(&self) -> Arc<Finished> {
        let mut rx = self.version.subscribe();
        loop {
            if let Some(done) = self.finished() {
                return done;
            }
            // The sender lives as long as `self`, so this cannot fail while we borrow it.
            if rx.changed().await.is_err() {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// See [`Live::watch`].
struct Watcher(Box<dyn Fn(Uuid) + Send + Sync>);

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

/// How a saved answer ended, as its row says.
pub(crate) fn finished_of(row: Message) -> Finished {
    let citations = row.sources.as_ref().map(|sources| {
        let count = sources.as_array().map_or(0, Vec::len);
        crate::search::citations(&row.content, count)
    });
    Finished {
        citations,
        finish_reason: row.finish_reason.clone(),
        status: row.status,
        usage: row.usage,
        message: Some(row),
    }
}

/// What one checkpoint writes of a running answer.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub len: usize,
    pub text: String,
    pub sources: Option<Arc<Value>>,
}

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    /// Resume after this byte offset (the client had every event up to it).
    Offset(usize),
}

/// Why a resume point was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeError {
    BeyondText { len: usize },
    InsideCharacter,
}

/// One reader of one generation.
#[derive(Debug)]
pub struct Subscription {
    live: Arc<Live>,
    rx: watch::Receiver<u64>,
    offset: usize,
    sources_sent: bool,
    marks_sent: usize,
    /// The reader holds more than was saved (the server stopped before its last checkpoint):
    /// the offset it holds, to be answered with `interrupted` and `done`.
    beyond_saved: Option<usize>,
    ended: bool,
}

impl Subscription {
    pub fn new(live: Arc<Live>, start: StartAt) -> Result<Self, ResumeError> {
        let rx = live.version.subscribe();
        let (offset, sources_sent, marks_sent) = match start {
            StartAt::Beginning => (0, false, 0),
            StartAt::Offset(offset) => {
                let st = live.lock();
                if offset > st.text.len() {
                    // Only an answer cut short may have been streamed further than it was
                    // saved; beyond a whole answer, the offset is wrong.
                    let cut_short = st
                        .finished
                        .as_ref()
                        .is_some_and(|f| f.status == MessageStatus::Incomplete);
                    if !cut_short {
                        return Err(ResumeError::BeyondText { len: st.text.len() });
                    }
                    // Everything saved lies before what the reader holds: nothing is re-sent.
                    return Ok(Self {
                        offset: st.text.len(),
                        sources_sent: true,
                        marks_sent: st.marks.len(),
                        beyond_saved: Some(offset),
                        ended: false,
                        rx,
                        live: live.clone(),
                    });
                }
                if !st.text.is_char_boundary(offset) {
                    return Err(ResumeError::InsideCharacter);
                }
                let marks = st.marks.iter().filter(|(at, _)| *at <= offset).count();
                (offset, true, marks)
            }
        };
        Ok(Self {
            live,
            rx,
            offset,
            sources_sent,
            marks_sent,
            beyond_saved: None,
            ended: false,
        })
    }

    pub fn message_id(&self) -> Uuid {
        self.live.message_id
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The next event if one is there, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<GenEvent> {
        if self.ended {
            return None;
        }
        self.poll()
    }

    /// The next event, waiting for the generation if needed; `None` after `Done`.
    pub async fn next(&mut self) -> Option<GenEvent> {
        loop {
            if self.ended {
                return None;
            }
            // Mark the current version seen before reading, so a write after the read wakes us.
            self.rx.borrow_and_update();
            if let Some(event) = self.poll() {
                return Some(event);
            }
            if self.rx.changed().await.is_err() {
                // Unreachable while we hold the Arc<Live> that owns the sender; end cleanly.
                return None;
            }
        }
    }

    fn poll(&mut self) -> Option<GenEvent> {
        let st = self.live.lock();
        if let Some(held) = self.beyond_saved.take() {
            return Some(GenEvent::Error {
                failure: StreamFailure::interrupted(st.text.len()),
                offset: held,
            });
        }
        if !self.sources_sent
            && self.offset == 0
            && let Some(sources) = &st.sources
        {
            self.sources_sent = true;
            return Some(GenEvent::Sources(sources.clone()));
        }
        let next_mark = st.marks.get(self.marks_sent);
        let limit = next_mark.map_or(st.text.len(), |(at, _)| *at);
        if limit > self.offset {
            let text = st.text[self.offset..limit].to_owned();
            self.offset = limit;
            self.sources_sent = true;
            return Some(GenEvent::Delta { text, end: limit });
        }
        if let Some((at, mark)) = next_mark {
            self.marks_sent += 1;
            return Some(match mark {
                Mark::Failure(failure) => GenEvent::Error {
                    failure: failure.clone(),
                    offset: *at,
                },
                Mark::ToolCall(call) => GenEvent::ToolCall {
                    call: call.clone(),
                    offset: *at,
                },
            });
        }
        if let Some(done) = &st.finished {
            self.ended = true;
            return Some(GenEvent::Done(done.clone()));
        }
        None
    }
}

/// See [`Live::stop_requested`].
pub(crate) struct StopRequested<'a>(&'a Live);

impl std::future::Future for StopRequested<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::sync::atomic::Ordering;
        let live = self.0;
        if live.stopping.load(Ordering::Acquire) {
            return std::task::Poll::Ready(());
        }
        live.relay_waker.register(cx.waker());
        // `cancel` may have run between the load and the registration.
        if live.stopping.load(Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_wakes_the_relay_waiting_for_it() {
        let live = Arc::new(Live::new(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()));
        let waiting = {
            let live = Arc::clone(&live);
            tokio::spawn(async move { live.stop_requested().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        live.cancel(CancelReason::Stop);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the stop")
            .expect("the waiting task");
        // Once stopped, it is ready at once.
        live.stop_requested().await;
    }
}

#[cfg(test)]
mod props {
    use std::sync::Arc;

    use proptest::prelude::*;
    use uuid::Uuid;

    use super::{Live, ResumeError, StartAt, Subscription};
    use crate::domain::{Finished, GenEvent, MessageStatus, Usage};

    fn finished(text: &str) -> Arc<Live> {
        let live = Arc::new(Live::new(Uuid::nil(), Uuid::nil(), Uuid::nil()));
        live.append_raw(text);
        live.finish(Finished {
            message: None,
            status: MessageStatus::Complete,
            finish_reason: None,
            usage: Usage::default(),
            citations: None,
        });
        live
    }

    proptest! {
        #[test]
        fn a_resume_gets_exactly_the_rest_or_a_clear_refusal(
            text in "\\PC{0,40}",
            offset in 0usize..200,
        ) {
            let live = finished(&text);
            match Subscription::new(live, StartAt::Offset(offset)) {
                Err(ResumeError::BeyondText { len }) => {
                    prop_assert!(offset > text.len());
                    prop_assert_eq!(len, text.len());
                }
                Err(ResumeError::InsideCharacter) => {
                    prop_assert!(offset <= text.len() && !text.is_char_boundary(offset));
                }
                Ok(mut sub) => {
                    prop_assert!(text.is_char_boundary(offset));
                    let mut rest = String::new();
                    let mut done = false;
                    while let Some(event) = sub.try_next() {
                        match event {
                            GenEvent::Delta { text: piece, end } => {
                                rest.push_str(&piece);
                                prop_assert_eq!(end, offset + rest.len());
                            }
                            GenEvent::Done(_) => done = true,
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    prop_assert!(done);
                    prop_assert_eq!(rest.as_str(), &text[offset..]);
                }
            }
        }
    }
}
