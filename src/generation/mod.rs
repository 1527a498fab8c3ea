//! Server-owned generations.
//!
//! A generation is a spawned task that owns the upstream stream, the in-memory log and the
//! database writes. HTTP responses only subscribe to it: a client that goes away changes
//! nothing, a second reader attaches to the same log, and a finished answer is replayed from
//! the database through the same subscription code.

mod closing;
mod live;
mod starting;
mod task;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use entity::{chat, message};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use closing::Closing;
pub use live::{CancelReason, Finished, GenEvent, Live, ResumeError, StartAt, Subscription};
pub use task::cost_micros;

use crate::domain::{PromptMessage, Role, StreamFailure};
use crate::error::{Error, Result};
use crate::providers::{ChatRequest, Providers, Resolved};
use crate::store::{NewGeneration, Store};

/// Limits the hub applies to every generation.
#[derive(Clone, Copy, Debug)]
pub struct HubConfig {
    pub checkpoint_interval: Duration,
    pub max_context_messages: usize,
}

/// Which kind of answer a stream asks for when it has to start one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The model alone.
    Plain,
    /// A web search first, its sources given to the model and sent to the readers.
    Internet,
}

/// A question as the database had it when a reader arrived.
pub struct Asked {
    pub question: message::Model,
    /// The answer to it, if one was started.
    pub answer: Option<message::Model>,
    /// The chat's messages before the question, in order.
    pub history: Vec<message::Model>,
}

impl Asked {
    /// Picks `question_id` out of a chat's messages (in sequence order); `None` when it is not
    /// among them.
    pub fn from_thread(mut thread: Vec<message::Model>, question_id: Uuid) -> Option<Self> {
        let at = thread.iter().position(|m| m.id == question_id)?;
        // Moved out, not cloned: whatever `swap_remove` moves into its place lies after the
        // question and is cut off with the rest just below.
        let answer = thread[at + 1..]
            .iter()
            .position(|m| m.reply_to == Some(question_id))
            .map(|i| thread.swap_remove(at + 1 + i));
        thread.truncate(at + 1);
        let question = thread.pop()?;
        Some(Self {
            question,
            answer,
            history: thread,
        })
    }
}

/// See [`Hub::mark`].
#[derive(Clone, Copy, Debug)]
pub struct StartMark(u64);

/// The registry of running generations of this process.
pub struct Hub {
    store: Store,
    providers: Arc<Providers>,
    search: Arc<crate::search::Pipeline>,
    writer: writer::Writer,
    config: HubConfig,
    running: Mutex<HashMap<Uuid, Arc<Live>>>,
    /// The generations that left the registry, so a start can tell whether its question was
    /// answered while it was looking at the database.
    forgotten: starting::Forgotten,
    start_locks: starting::StartLocks,
    tasks: TaskTracker,
    closing: Closing,
}

impl Hub {
    pub fn new(
        store: Store,
        providers: Arc<Providers>,
        search: Arc<crate::search::Pipeline>,
        config: HubConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            writer: writer::Writer::spawn(store.clone()),
            store,
            providers,
            search,
            config,
            running: Mutex::new(HashMap::new()),
            forgotten: starting::Forgotten::default(),
            start_locks: starting::StartLocks::default(),
            tasks: TaskTracker::new(),
            closing: Closing::default(),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Live>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cancelled when the server starts shutting down: streams end, no generation starts.
    pub fn closing(&self) -> &Closing {
        &self.closing
    }

    pub fn running_count(&self) -> usize {
        self.running().len()
    }

    /// A mark to take before reading a question's answer from the database, and to hand to
    /// [`Hub::answer`] with what was read: it tells whether the answer may have been saved
    /// after the read.
    pub fn mark(&self) -> StartMark {
        StartMark(self.forgotten.mark())
    }

    /// The log answering `asked.question`: the running one, the saved one, or a new generation
    /// of `variant` (an answer belongs to its question: whichever variant started it is the one
    /// every reader gets). `asked` was read from the database after `mark` was taken.
    pub async fn answer(
        self: &Arc<Self>,
        workspace_id: Uuid,
        chat: &chat::Model,
        asked: Asked,
        mark: StartMark,
        variant: Variant,
    ) -> Result<Arc<Live>> {
        let question_id = asked.question.id;
        if let Some(live) = self.running().get(&question_id) {
            return Ok(live.clone());
        }
        // A saved answer still marked `streaming` may be one whose task is registering right
        // now: only the locked path below may conclude it is not running here.
        let saved = match asked.answer {
            Some(answer) => Some(self.saved(answer).await?),
            None => None,
        };
        if let Some(saved) = &saved {
            let settled = saved
                .finished()
                .is_some_and(|f| f.status != crate::domain::MessageStatus::Streaming);
            if settled {
                return Ok(saved.clone());
            }
        }
        // Starting a question is serialised so that two readers arriving together cause one
        // upstream call; other questions start meanwhile.
        let _guard = self.start_locks.lock(question_id).await;
        if let Some(live) = self.running().get(&question_id) {
            return Ok(live.clone());
        }
        if let Some(orphan) = saved {
            // Left `streaming` by another process: replay what it saved.
            return Ok(orphan);
        }
        // A generation started by a reader that held the lock before us may have finished (and
        // left the registry, its row saved) since the read. Only then is a second read needed.
        if self.forgotten.may_have_finished(mark.0, question_id)
            && let Some(answer) = self.store.answer_to(question_id).await?
        {
            return self.saved(answer).await;
        }
        if self.closing.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.start(workspace_id, chat, asked.question, asked.history, variant)
            .await
    }

    /// The log of a saved answer, with the failure its generation recorded, if any.
    async fn saved(&self, answer: message::Model) -> Result<Arc<Live>> {
        let failure = match self.store.generation_for_message(answer.id).await? {
            Some(g) => g
                .error_code
                .map(|code| StreamFailure::new(code, g.error_message.unwrap_or_default())),
            None => None,
        };
        Ok(Arc::new(Live::saved(answer, failure)))
    }

    async fn start(
        self: &Arc<Self>,
        workspace_id: Uuid,
        chat: &chat::Model,
        question: message::Model,
        history: Vec<message::Model>,
        variant: Variant,
    ) -> Result<Arc<Live>> {
        let resolved = self
            .providers
            .resolve(chat.provider.as_deref(), chat.model.as_deref())
            .ok_or_else(|| {
                Error::unprocessable("model", "the chat's provider or model is not configured")
            })?;
        let question_id = question.id;
        let query = (variant == Variant::Internet).then(|| question.content.clone());
        let mut messages: Vec<PromptMessage> = history
            .into_iter()
            .chain(std::iter::once(question))
            .filter(|m| !m.content.is_empty())
            .filter_map(|m| {
                Role::parse(&m.role).map(|role| PromptMessage {
                    role,
                    content: m.content,
                })
            })
            .collect();
        let excess = messages
            .len()
            .saturating_sub(self.config.max_context_messages);
        messages.drain(..excess);
        if let Some(system) = chat.system_prompt.as_ref().filter(|s| !s.is_empty()) {
            messages.insert(
                0,
                PromptMessage {
                    role: Role::System,
                    content: system.clone(),
                },
            );
        }
        let request = ChatRequest::from_prompt(
            resolved.model.clone(),
            &messages,
            chat.temperature,
            chat.top_p,
            chat.max_tokens.and_then(|t| u32::try_from(t).ok()),
        );
        // The answer's rows are queued here and the task calls the provider once they exist
        // (with the internet variant, while the search runs). The id is chosen here so that
        // readers get their event ids at once.
        let message_id = Uuid::now_v7();
        let live = Arc::new(Live::new(message_id, chat.id, question_id));
        self.running().insert(question_id, live.clone());
        let new = NewGeneration {
            message_id,
            workspace_id,
            chat_id: chat.id,
            reply_to: question_id,
            provider: resolved.provider.name().to_owned(),
            model: resolved.model.clone(),
            prompt_tokens: request.estimate_prompt_tokens(),
        };
        let rows = self.writer.insert(new, live.clone());
        let persist = task::Persist::Answer { rows };
        let search = query.map(|query| task::SearchStep {
            pipeline: self.search.clone(),
            query,
            prompt: messages,
        });
        self.spawn(
            live.clone(),
            persist,
            workspace_id,
            resolved,
            request,
            search,
        );
        Ok(live)
    }

    /// Starts a generation whose text is not stored (the `/v1` dialect): the log lives while
    /// it is read, the usage is charged to the workspace, and its reader may cancel it.
    pub fn start_ephemeral(
        self: &Arc<Self>,
        workspace_id: Uuid,
        resolved: Resolved,
        request: ChatRequest,
    ) -> Result<Arc<Live>> {
        if self.closing.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let live = Arc::new(Live::ephemeral(Uuid::new_v4()));
        self.running().insert(live.question_id, live.clone());
        self.spawn(
            live.clone(),
            task::Persist::UsageOnly,
            workspace_id,
            resolved,
            request,
            None,
        );
        Ok(live)
    }

    /// Runs a generation as a tracked task. Stored answers get their line breaks normalised;
    /// unstored ones relay the model's text unchanged.
    fn spawn(
        self: &Arc<Self>,
        live: Arc<Live>,
        persist: task::Persist,
        workspace_id: Uuid,
        resolved: Resolved,
        request: ChatRequest,
        search: Option<task::SearchStep>,
    ) {
        let job = task::Job {
            search,
            hub: self.clone(),
            live,
            normalize: matches!(persist, task::Persist::Answer { .. }),
            persist,
            workspace_id,
            prompt_estimate: request.estimate_prompt_tokens(),
            resolved,
            request,
        };
        self.tasks.spawn(task::run(job));
    }

    /// Removes a finished generation from the registry.
    fn forget(&self, question_id: Uuid) {
        self.running().remove(&question_id);
        self.forgotten.record(question_id);
    }

    /// Cancels every running generation of a chat and returns them.
    pub fn stop_chat(&self, chat_id: Uuid) -> Vec<Arc<Live>> {
        let lives: Vec<Arc<Live>> = self
            .running()
            .values()
            .filter(|l| l.chat_id == chat_id)
            .cloned()
            .collect();
        for live in &lives {
            live.cancel(CancelReason::Stop);
        }
        lives
    }

    /// Writes the running text of every generation that grew, in one transaction.
    pub async fn checkpoint_all(&self) {
        let due: Vec<(Arc<Live>, usize, String)> = self
            .running()
            .values()
            .filter_map(|l| l.checkpoint_due().map(|(len, text)| (l.clone(), len, text)))
            .collect();
        if due.is_empty() {
            return;
        }
        let batch: Vec<(Uuid, String)> = due
            .iter()
            .map(|(l, _, text)| (l.message_id, text.clone()))
            .collect();
        match self.store.checkpoint(&batch).await {
            Ok(()) => {
                for (live, len, _) in &due {
                    live.mark_checkpointed(*len);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, count = batch.len(), "checkpoint failed; will retry")
            }
        }
    }

    /// Checkpoints on an interval until the hub has drained.
    pub fn spawn_checkpointer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hub.config.checkpoint_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                hub.checkpoint_all().await;
                if hub.closing.is_cancelled() && hub.tasks.is_closed() && hub.tasks.is_empty() {
                    break;
                }
            }
        })
    }

    /// Stops new generations, lets running ones finish within `grace`, then saves the rest as
    /// `incomplete`. Returns once every generation is saved.
    pub async fn drain(&self, grace: Duration) {
        self.closing.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            let left: Vec<Arc<Live>> = self.running().values().cloned().collect();
            tracing::warn!(
                count = left.len(),
                "shutdown grace elapsed; saving running answers as incomplete"
            );
            for live in left {
                live.cancel(CancelReason::Shutdown);
            }
            self.tasks.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: i64, role: &str, reply_to: Option<Uuid>) -> message::Model {
        let at = crate::store::now();
        message::Model {
            id: Uuid::new_v4(),
            chat_id: Uuid::nil(),
            seq,
            role: role.to_owned(),
            content: format!("message {seq}"),
            status: "complete".to_owned(),
            reply_to,
            finish_reason: None,
            provider: None,
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            usage_estimated: false,
            cost_micros: None,
            sources: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn a_question_is_picked_out_of_its_thread_with_its_answer_and_history() {
        let q1 = msg(1, "user", None);
        let a1 = msg(2, "assistant", Some(q1.id));
        let q2 = msg(3, "user", None);
        let note = msg(4, "assistant", None);
        let a2 = msg(5, "assistant", Some(q2.id));
        let q3 = msg(6, "user", None);
        let thread = vec![
            q1.clone(),
            a1.clone(),
            q2.clone(),
            note.clone(),
            a2.clone(),
            q3.clone(),
        ];

        let asked = Asked::from_thread(thread.clone(), q2.id).unwrap();
        assert_eq!(asked.question, q2);
        assert_eq!(asked.answer, Some(a2));
        assert_eq!(asked.history, vec![q1.clone(), a1.clone()]);

        let asked = Asked::from_thread(thread.clone(), q3.id).unwrap();
        assert_eq!(asked.question, q3);
        assert_eq!(asked.answer, None);
        assert_eq!(asked.history.len(), 5);

        let asked = Asked::from_thread(thread.clone(), q1.id).unwrap();
        assert_eq!(asked.answer, Some(a1));
        assert!(asked.history.is_empty());

        assert!(Asked::from_thread(thread, Uuid::new_v4()).is_none());
    }
}
