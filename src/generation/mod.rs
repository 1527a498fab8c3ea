//! Server-owned generations.
//!
//! A generation is a spawned task that owns the upstream stream, the in-memory log and the
//! database writes. HTTP responses only subscribe to it: a client that goes away changes
//! nothing, a second reader attaches to the same log, and a finished answer is replayed from
//! the database through the same subscription code.

mod live;
mod seams;
mod shared_logs;
mod shared_stops;
mod spec;
mod starting;
mod task;
mod writer;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use live::{CancelReason, Live, ResumeError, StartAt, Subscription};
pub use seams::{
    Claim, DatabaseLeases, LEASE_EXPIRY, Leases, LiveLogs, LocalLogs, LocalStops, Seams,
    StopHandler, StopSignal, StopTarget,
};
pub use spec::{GenerationSpec, SearchSpec, Storage};
pub use task::cost_micros;

use crate::domain::Usage;
use crate::domain::{Message, MessageStatus};
use crate::error::{Error, Result};
use crate::shutdown::Closing;
use crate::store::{NewGeneration, Store};

/// Limits the hub applies to every generation.
#[derive(Clone, Copy, Debug)]
pub struct HubConfig {
    pub checkpoint_interval: Duration,
}

/// How often a process renews its lease on the generations it runs.
const LEASE_RENEWAL: Duration = Duration::from_secs(3);

/// See [`Hub::mark`].
#[derive(Clone, Copy, Debug)]
pub struct StartMark(u64);

/// The chat in which a stored answer's spec answers `question_id`; any other spec is a bug.
fn answered_in(spec: &GenerationSpec, question_id: Uuid) -> Result<Uuid> {
    match spec.storage {
        Storage::Answer {
            question_id: asked,
            chat_id,
            ..
        } if asked == question_id => Ok(chat_id),
        _ => Err(Error::Internal(
            "a stored answer's spec must name the question it answers".into(),
        )),
    }
}

/// The registry of running generations of this process.
pub struct Hub {
    store: Store,
    search: Arc<crate::search::Pipeline>,
    seams: Seams,
    writer: writer::Writer,
    config: HubConfig,
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
        search: Arc<crate::search::Pipeline>,
        seams: Seams,
        config: HubConfig,
    ) -> Arc<Self> {
        let hub = Arc::new(Self {
            writer: writer::Writer::spawn(store.clone()),
            store,
            search,
            seams,
            config,
            forgotten: starting::Forgotten::default(),
            start_locks: starting::StartLocks::default(),
            tasks: TaskTracker::new(),
            closing: Closing::default(),
        });
        // Stops addressed to this process cancel its generations of that chat or question.
        let weak: Weak<Self> = Arc::downgrade(&hub);
        hub.seams.stops.listen(Box::new(move |target| {
            let Some(hub) = weak.upgrade() else { return };
            let lives = match target {
                StopTarget::Chat(chat_id) => hub.seams.logs.of_chat(chat_id),
                StopTarget::Question(question_id) => hub
                    .seams
                    .logs
                    .all()
                    .into_iter()
                    .filter(|l| l.question_id == question_id)
                    .collect(),
            };
            for live in lives {
                live.cancel(CancelReason::Stop);
            }
        }));
        hub
    }

    /// Cancelled when the server starts shutting down: streams end, no generation starts.
    pub fn closing(&self) -> &Closing {
        &self.closing
    }

    /// This process, as generations name their owner.
    pub fn owner(&self) -> Uuid {
        self.seams.leases.owner()
    }

    pub fn running_count(&self) -> usize {
        self.seams.logs.running_count()
    }

    /// Whether stops reach answers that other replicas run.
    pub fn stops_are_shared(&self) -> bool {
        self.seams.stops.shared()
    }

    /// How a stored answer that runs nowhere here ended.
    pub async fn ended(&self, answer: Message) -> Result<Option<Arc<crate::domain::Finished>>> {
        Ok(self.saved(answer).await?.finished())
    }

    /// The running answer `message_id` of a chat, wherever it runs: found even before its row
    /// is written (its id is given to clients at once, in `X-Message-Id`).
    pub async fn running_answer(&self, chat_id: Uuid, message_id: Uuid) -> Option<Arc<Live>> {
        self.seams.logs.running(chat_id, message_id).await
    }

    /// A mark to take before reading a question's answer from the database, and to hand to
    /// [`Hub::answer`] with what was read: it tells whether the answer may have been saved
    /// after the read.
    pub fn mark(&self) -> StartMark {
        StartMark(self.forgotten.mark())
    }

    /// The log answering `question_id`: the running one, the saved one (`saved`, read from the
    /// database after `mark` was taken), or a new generation built by `spec` (called only when
    /// one has to start; an answer belongs to its question: whoever started it decided how),
    /// whose id is `pledged` when its question promised one.
    pub async fn answer(
        self: &Arc<Self>,
        question_id: Uuid,
        saved: Option<Message>,
        pledged: Option<Uuid>,
        mark: StartMark,
        spec: impl FnOnce() -> Result<GenerationSpec>,
    ) -> Result<Arc<Live>> {
        if let Some(live) = self.seams.logs.find(question_id).await {
            return Ok(live);
        }
        // A saved answer still marked `streaming` may be one whose task is registering right
        // now: only the locked path below may conclude it is not running here.
        let saved = match saved {
            Some(answer) => Some(self.saved(answer).await?),
            None => None,
        };
        if let Some(saved) = &saved {
            let settled = saved
                .finished()
                .is_some_and(|f| f.status != MessageStatus::Streaming);
            if settled {
                return Ok(saved.clone());
            }
        }
        // Starting a question is serialised so that two readers arriving together cause one
        // upstream call; other questions start meanwhile.
        let _guard = self.start_locks.lock(question_id).await;
        if let Some(live) = self.seams.logs.find(question_id).await {
            return Ok(live);
        }
        // A generation (started by a reader that held the lock before us, or by the post that
        // asked the question) may have finished, left the registry and saved its row since the
        // read: then the read is stale and a second one is needed.
        if self.forgotten.may_have_finished(mark.0, question_id)
            && let Some(answer) = self.store.answer_to(question_id).await?
        {
            return self.saved(answer).await;
        }
        if let Some(orphan) = saved {
            return Ok(self.orphan(orphan).await);
        }
        if self.closing.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let spec = spec()?;
        let chat_id = answered_in(&spec, question_id)?;
        // Among replicas, one decides: whoever claims the question first answers it. An answer
        // promised with its question has its id already (`store::Pledge`).
        let message_id = pledged.unwrap_or_else(Uuid::now_v7);
        if let Claim::Taken(live) = self
            .seams
            .logs
            .claim(question_id, message_id, chat_id)
            .await
        {
            return Ok(live);
        }
        if self.seams.logs.shared()
            && let Some(answer) = self.store.answer_to(question_id).await?
        {
            // Another replica answered it, and let its claim go, since the read.
            self.seams.logs.release(question_id, message_id).await;
            let saved = self.saved(answer).await?;
            return Ok(match saved.finished() {
                Some(f) if f.status == MessageStatus::Streaming => self.orphan(saved.clone()).await,
                _ => saved,
            });
        }
        self.launch_claimed(spec, question_id, message_id).await
    }

    /// Starts a claimed answer; the claim is given up if it cannot start.
    async fn launch_claimed(
        self: &Arc<Self>,
        spec: GenerationSpec,
        question_id: Uuid,
        message_id: Uuid,
    ) -> Result<Arc<Live>> {
        let started = self.launch(spec, message_id).await;
        if started.is_err() {
            self.seams.logs.release(question_id, message_id).await;
        }
        started
    }

    /// A saved answer still `streaming` that this process does not run: followed where logs
    /// are shared (another replica runs it, or its owner is gone and the sweep will save it),
    /// else replayed as saved (left by a process that stopped).
    async fn orphan(&self, saved: Arc<Live>) -> Arc<Live> {
        match self
            .seams
            .logs
            .follow(saved.message_id, saved.chat_id, saved.question_id)
            .await
        {
            Some(followed) => followed,
            None => saved,
        }
    }

    /// Answers `question_id` anew as `spec` says (whose storage names the answer it replaces):
    /// a running answer to it is stopped and saved first.
    pub async fn replace(
        self: &Arc<Self>,
        question_id: Uuid,
        spec: GenerationSpec,
    ) -> Result<Arc<Live>> {
        if let Some(running) = self.stop_question(question_id).await {
            running.wait_finished().await;
        }
        let _guard = self.start_locks.lock(question_id).await;
        // Another reader may have started an answer since the stop; a finished one is leaving.
        if let Some(live) = self.seams.logs.find(question_id).await
            && live.finished().is_none()
        {
            return Ok(live);
        }
        let chat_id = answered_in(&spec, question_id)?;
        let message_id = Uuid::now_v7();
        // The stopped answer lets its claim go once it is saved, on whichever replica ran it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self
                .seams
                .logs
                .claim(question_id, message_id, chat_id)
                .await
            {
                Claim::Won => break,
                Claim::Taken(live) => {
                    if live.finished().is_none() && tokio::time::Instant::now() >= deadline {
                        // Someone else started answering it again meanwhile.
                        return Ok(live);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        self.launch_claimed(spec, question_id, message_id).await
    }

    /// The log of a saved answer, with the failure its generation recorded, if any.
    async fn saved(&self, answer: Message) -> Result<Arc<Live>> {
        let failure = self.store.failure_of(answer.id).await?;
        Ok(Arc::new(Live::saved(answer, failure)))
    }

    /// Starts a generation as `spec` says, once its workspace's credit allows its worst case.
    /// A stored answer is started through [`Hub::answer`], which makes sure a question is
    /// answered once.
    pub async fn start(self: &Arc<Self>, spec: GenerationSpec) -> Result<Arc<Live>> {
        self.launch(spec, Uuid::now_v7()).await
    }

    /// [`Hub::start`], with the id a stored answer gets (claimed by the caller).
    async fn launch(self: &Arc<Self>, spec: GenerationSpec, message_id: Uuid) -> Result<Arc<Live>> {
        if self.closing.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let GenerationSpec {
            workspace_id,
            resolved,
            request,
            search,
            storage,
        } = spec;
        let prompt_estimate = request.estimate_prompt_tokens();
        let worst_case = Usage::new(
            prompt_estimate,
            request.max_output_tokens(resolved.max_tokens),
            true,
        );
        let reservation = self
            .seams
            .credits
            .reserve(workspace_id, cost_micros(resolved.price, worst_case))
            .await?;
        let (live, persist) = match storage {
            Storage::Answer {
                chat_id,
                question_id,
                replaces,
                agent_version,
            } => {
                // The answer's rows are queued here and the task calls the provider once they
                // exist (with a search step, while the search runs). Its id is known before,
                // so that readers get their event ids at once.
                let live = Arc::new(Live::new(message_id, chat_id, question_id));
                let new = NewGeneration {
                    message_id,
                    workspace_id,
                    chat_id,
                    reply_to: question_id,
                    provider: resolved.provider.name().to_owned(),
                    model: resolved.model.clone(),
                    prompt_tokens: prompt_estimate,
                    owner: self.seams.leases.owner(),
                    replaces,
                    agent_version,
                };
                let rows = self.writer.insert(new, live.clone());
                (live, task::Persist::Answer { rows })
            }
            Storage::UsageOnly => (
                Arc::new(Live::ephemeral(Uuid::new_v4())),
                task::Persist::UsageOnly,
            ),
        };
        self.seams.logs.publish(live.clone());
        let job = task::Job {
            search: search.map(|step| task::SearchStep {
                pipeline: self.search.clone(),
                query: step.query,
                prompt: step.prompt,
            }),
            hub: self.clone(),
            live: live.clone(),
            // Stored answers get their line breaks normalised; unstored ones relay the
            // model's text unchanged.
            normalize: matches!(persist, task::Persist::Answer { .. }),
            persist,
            workspace_id,
            reservation: Some(reservation),
            prompt_estimate,
            resolved,
            request,
        };
        self.tasks.spawn(task::run(job));
        Ok(live)
    }

    /// Removes a finished generation from the registry.
    fn forget(&self, question_id: Uuid) {
        self.seams.logs.retire(question_id);
        self.forgotten.record(question_id);
    }

    /// The credit check every start goes through.
    fn credits(&self) -> &dyn crate::policy::Credits {
        &*self.seams.credits
    }

    /// Stops every running generation of a chat, wherever it runs, and returns those of this
    /// process (to wait for).
    pub fn stop_chat(&self, chat_id: Uuid) -> Vec<Arc<Live>> {
        let lives = self.seams.logs.of_chat(chat_id);
        self.seams.stops.send(StopTarget::Chat(chat_id));
        lives
    }

    /// Stops the running answer to `question_id`, wherever it runs, and returns it when this
    /// process runs it (to wait for).
    pub async fn stop_question(&self, question_id: Uuid) -> Option<Arc<Live>> {
        let live = self.seams.logs.find(question_id).await;
        self.seams.stops.send(StopTarget::Question(question_id));
        live
    }

    /// Writes the running text of every generation that grew (and its sources, the first time),
    /// in one transaction.
    pub async fn checkpoint_all(&self) {
        let due: Vec<(Arc<Live>, live::Checkpoint)> = self
            .seams
            .logs
            .all()
            .into_iter()
            .filter_map(|l| l.checkpoint_due().map(|due| (l, due)))
            .collect();
        if due.is_empty() {
            return;
        }
        let batch: Vec<(Uuid, &str, Option<&serde_json::Value>)> = due
            .iter()
            .map(|(l, due)| (l.message_id, due.text.as_str(), due.sources.as_deref()))
            .collect();
        match self.store.checkpoint(&batch).await {
            Ok(()) => {
                for (live, done) in &due {
                    live.mark_checkpointed(done);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, count = batch.len(), "checkpoint failed; will retry")
            }
        }
    }

    /// Renews this process's heartbeat and its lease on its running generations, and saves
    /// the answers of generations whose owner went silent.
    async fn renew_leases(&self) {
        if let Err(e) = self.seams.leases.renew().await {
            tracing::warn!(error = %e, "renewing leases failed; will retry");
        }
        self.seams.logs.renew();
        match self.seams.leases.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                count = n,
                "answers of a replica that stopped renewing its leases marked incomplete"
            ),
            Err(e) => tracing::warn!(error = %e, "recovering silent generations failed"),
        }
    }

    /// Checkpoints on an interval until the hub has drained.
    pub fn spawn_checkpointer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hub.config.checkpoint_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut renewed = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                hub.checkpoint_all().await;
                if renewed.elapsed() >= LEASE_RENEWAL {
                    renewed = tokio::time::Instant::now();
                    hub.renew_leases().await;
                }
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
            let left: Vec<Arc<Live>> = self.seams.logs.all();
            tracing::warn!(
                count = left.len(),
                "shutdown grace elapsed; saving running answers as incomplete"
            );
            for live in left {
                live.cancel(CancelReason::Shutdown);
            }
            self.tasks.wait().await;
        }
        // Other replicas' readers get the end of every answer this one ran.
        self.seams.logs.flush(Duration::from_secs(3)).await;
        self.seams.leases.leave().await;
    }
}
