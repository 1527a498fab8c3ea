//! The body of one generation task: call upstream, append to the log, save the outcome.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{Instant, timeout_at};
use uuid::Uuid;

use super::{CancelReason, Hub, Live};
use crate::domain::{
    Finished, LineBreaks, Message, MessageStatus, PromptMessage, StreamFailure, Usage,
};
use crate::providers::{ChatRequest, ProviderError, Resolved, StreamEvent};
use crate::store::{Finish, FinishRecord, UsageRecord};
use crate::telemetry::names;

/// What a finished generation writes.
pub(super) enum Persist {
    /// The answer row and its generation ([`super::Storage::Answer`]), being inserted while
    /// the upstream call starts.
    Answer {
        rows: tokio::sync::oneshot::Receiver<super::writer::Rows>,
    },
    /// A usage record only ([`super::Storage::UsageOnly`]).
    UsageOnly,
}

pub(super) struct Job {
    pub hub: Arc<Hub>,
    pub live: Arc<Live>,
    pub persist: Persist,
    /// Normalise line breaks (stored text) or relay the model's text unchanged.
    pub normalize: bool,
    pub workspace_id: Uuid,
    /// The workspace's credit held for this generation, given back once its usage is saved.
    pub reservation: Option<crate::policy::Reservation>,
    pub resolved: Resolved,
    pub request: ChatRequest,
    pub prompt_estimate: u32,
    /// A web search to run before the model is called (the internet variant).
    pub search: Option<SearchStep>,
}

/// The internet variant's first step: the question to search for and the prompt that the
/// sources are inserted into.
pub(super) struct SearchStep {
    pub pipeline: Arc<crate::search::Pipeline>,
    pub query: String,
    pub prompt: Vec<PromptMessage>,
}

/// How the upstream part ended.
enum Outcome {
    Finished(String),
    Failed(ProviderError),
    Cancelled(CancelReason),
}

pub(super) async fn run(mut job: Job) {
    let started = Instant::now();
    let running = metrics::gauge!(names::GENERATIONS_RUNNING);
    running.increment(1.0);
    let mut stats = Stats::default();
    let searched = match job.search.take() {
        Some(step) => search_first(&mut job, step).await,
        None => None,
    };
    // The provider is called only once the answer's rows exist: a crash at any moment after the
    // call then leaves a record of it, with its usage estimated. The rows were written while
    // the search (if any) ran.
    let rows = match std::mem::replace(&mut job.persist, Persist::UsageOnly) {
        Persist::Answer { rows } => match rows.await {
            Ok(Ok(rows)) => Some(rows),
            Ok(Err(e)) => return unsaved(job, &e.to_string()).await,
            Err(e) => return unsaved(job, &e.to_string()).await,
        },
        Persist::UsageOnly => None,
    };
    // The configured model, then its fallbacks, each tried only while nothing was relayed.
    let candidates: Vec<&Resolved> = std::iter::once(&job.resolved)
        .chain(job.resolved.fallbacks.iter())
        .collect();
    let mut answered_by = candidates[0];
    let (mut outcome, mut usage) = (Outcome::Cancelled(CancelReason::Stop), None);
    for (attempt, candidate) in candidates.iter().enumerate() {
        answered_by = candidate;
        (outcome, usage) = relay(&job, candidate, &mut stats).await;
        let next = candidates.get(attempt + 1);
        match (&outcome, next) {
            (Outcome::Failed(e), Some(next)) if stats.deltas == 0 && e.may_fall_back() => {
                tracing::warn!(
                    from = %candidate.provider.name(),
                    to = %next.provider.name(),
                    error = %e,
                    "provider failed before the first delta; falling back"
                );
            }
            _ => break,
        }
    }
    let provider_label = answered_by.provider.name().to_owned();
    if let Some(ttft) = stats.first_delta {
        metrics::histogram!(names::UPSTREAM_TTFT, "provider" => provider_label.clone())
            .record(ttft.as_secs_f64());
    }
    metrics::histogram!(names::UPSTREAM_DURATION, "provider" => provider_label.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(names::DELTAS, "provider" => provider_label.clone()).increment(stats.deltas);
    let (text, _, sources) = job.live.snapshot();
    let citations = searched
        .as_ref()
        .map(|s| crate::search::citations(&text, s.sources));

    let (status, finish_reason, failure) = match outcome {
        Outcome::Finished(reason) => (MessageStatus::Complete, Some(reason), None),
        Outcome::Failed(error) => {
            tracing::warn!(message_id = %job.live.message_id, error = %error, "generation failed");
            let mut failure = StreamFailure::new(error.code(), error.public_message());
            if let ProviderError::Status { status, .. } = &error {
                failure.upstream_status = Some(*status);
            }
            job.live.fail(failure.clone());
            let status = if text.is_empty() {
                MessageStatus::Failed
            } else {
                MessageStatus::Incomplete
            };
            (status, None, Some(failure))
        }
        Outcome::Cancelled(CancelReason::Stop) => (MessageStatus::Cancelled, None, None),
        Outcome::Cancelled(CancelReason::ReaderGone) => (MessageStatus::Incomplete, None, None),
        Outcome::Cancelled(CancelReason::Shutdown) => (
            MessageStatus::Incomplete,
            None,
            Some(StreamFailure::new(
                "server_shutdown",
                "the server shut down before the answer was finished",
            )),
        ),
    };
    // What ended the answer is recorded first; else a search that failed before it began.
    let failure = failure.or_else(|| searched.and_then(|s| s.failure));
    let usage = usage
        .unwrap_or_else(|| Usage::new(job.prompt_estimate, Usage::estimate_tokens(&text), true));
    let cost_micros = cost_micros(answered_by.price, usage);
    let provider = answered_by.provider.name().to_owned();
    let model = answered_by.model.clone();
    let bytes = text.len();
    let saved = match rows {
        Some((row, generation_id)) => {
            let record = FinishRecord {
                workspace_id: job.workspace_id,
                chat_id: row.chat_id,
                message_id: row.id,
                generation_id,
                content: text,
                status,
                finish_reason: finish_reason.clone(),
                provider,
                model,
                usage,
                cost_micros,
                error: failure,
                sources: sources.map(|s| (*s).clone()),
            };
            Some(save(&job, &row, Arc::new(record)).await)
        }
        None => {
            record_usage(&job, &provider, &model, usage, cost_micros).await;
            None
        }
    };
    settle(&mut job);
    tracing::info!(
        message_id = %job.live.message_id,
        status = status.as_str(),
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "generation finished"
    );
    job.live.finish(Finished {
        citations,
        message: saved,
        status,
        finish_reason,
        usage,
    });
    metrics::counter!(names::TOKENS, "provider" => provider_label)
        .increment(u64::from(usage.completion_tokens));
    metrics::counter!(names::GENERATIONS, "status" => status.as_str()).increment(1);
    running.decrement(1.0);
    job.hub.forget(job.live.question_id);
}

/// Ends a generation whose rows could not be inserted, before its provider was called: its
/// readers learn that nothing was saved, rather than a `done` that claims a saved answer.
async fn unsaved(mut job: Job, error: &str) {
    settle(&mut job);
    tracing::error!(message_id = %job.live.message_id, error, "the answer's row could not be created");
    job.live.fail(StreamFailure::new(
        "internal_error",
        "the answer could not be saved; ask again",
    ));
    let (text, _, _) = job.live.snapshot();
    job.live.finish(Finished {
        citations: None,
        message: None,
        status: MessageStatus::Failed,
        finish_reason: None,
        usage: Usage::new(job.prompt_estimate, Usage::estimate_tokens(&text), true),
    });
    metrics::counter!(names::GENERATIONS, "status" => MessageStatus::Failed.as_str()).increment(1);
    metrics::gauge!(names::GENERATIONS_RUNNING).decrement(1.0);
    job.hub.forget(job.live.question_id);
}

/// Gives the generation's credit hold back (its usage record is written, or never will be).
fn settle(job: &mut Job) {
    if let Some(reservation) = job.reservation.take() {
        job.hub.credits().settle(reservation);
    }
}

/// What `usage` costs at `price` (US dollars per million tokens, so micro-dollars per token).
pub fn cost_micros(price: Option<crate::config::Price>, usage: Usage) -> i64 {
    price.map_or(0, |p| {
        let micros = f64::from(usage.prompt_tokens) * p.input
            + f64::from(usage.completion_tokens) * p.output;
        // Saturating float-to-int conversion: prices are small, tokens bounded.
        micros.round() as i64
    })
}

/// What the search step left for the end of the answer.
struct Searched {
    sources: usize,
    failure: Option<StreamFailure>,
}

/// Searches, sends the sources (an empty list when the search failed, with a `search_failed`
/// or `search_disabled` error before any text) and puts them in the prompt. A stop during the
/// search leaves the cancellation for the relay to report.
async fn search_first(job: &mut Job, step: SearchStep) -> Option<Searched> {
    let outcome = tokio::select! {
        biased;
        () = job.live.cancelled() => return None,
        outcome = step.pipeline.run(&step.query) => outcome,
    };
    job.live.set_sources(outcome.sources_json());
    if let Some(failure) = &outcome.failure {
        job.live.fail(failure.clone());
    }
    let mut prompt = step.prompt;
    crate::search::prompt::insert_context(&mut prompt, &outcome.context);
    job.request.messages = prompt.iter().map(crate::search::prompt::to_json).collect();
    job.prompt_estimate = job.request.estimate_prompt_tokens();
    Some(Searched {
        sources: outcome.sources.len(),
        failure: outcome.failure,
    })
}

/// Runs the upstream stream into the log. Returns how it ended and the provider's usage.
/// What the relay counts as it goes (into locals: nothing is recorded per token).
#[derive(Default)]
struct Stats {
    first_delta: Option<Duration>,
    deltas: u64,
}

async fn relay(job: &Job, target: &Resolved, stats: &mut Stats) -> (Outcome, Option<Usage>) {
    let called = Instant::now();
    let live = &job.live;
    let timeouts = target.timeouts;
    let first_token_deadline = Instant::now() + timeouts.first_token;
    let mut usage = None;

    let mut request = job.request.clone();
    request.model.clone_from(&target.model);
    let connect = target.provider.stream(request);
    let mut stream = tokio::select! {
        biased;
        () = live.cancelled() => return (cancelled(live), None),
        r = timeout_at(first_token_deadline, connect) => match r {
            Err(_) => return (Outcome::Failed(ProviderError::Timeout(timeouts.first_token, "time to first token")), None),
            Ok(Err(e)) => return (Outcome::Failed(e), None),
            Ok(Ok(stream)) => stream,
        },
    };

    let mut breaks = LineBreaks::default();
    let mut got_text = false;
    let mut finish: Option<String> = None;
    // One timer and one cancellation waiter for the whole answer. The timer is armed lazily:
    // it fires at the earliest possible deadline and is re-armed if the stream was active
    // since, so a chunk costs an `Instant::now()`, not a timer update.
    let cancel = live.stop_requested();
    tokio::pin!(cancel);
    let timer = tokio::time::sleep_until(first_token_deadline);
    tokio::pin!(timer);
    let after_finish = timeouts.idle.min(Duration::from_secs(2));
    let mut last_activity = Instant::now();
    loop {
        let item = tokio::select! {
            biased;
            () = &mut cancel => return (cancelled(live), usage),
            () = &mut timer => None,
            r = stream.next() => Some(r),
        };
        let Some(item) = item else {
            let (limit, what, due) = if finish.is_some() {
                // Only usage may still follow: wait a moment for it, not the idle limit.
                (
                    after_finish,
                    "usage after the end",
                    last_activity + after_finish,
                )
            } else if got_text {
                (
                    timeouts.idle,
                    "idle between chunks",
                    last_activity + timeouts.idle,
                )
            } else {
                (
                    timeouts.first_token,
                    "time to first token",
                    first_token_deadline,
                )
            };
            if Instant::now() < due {
                timer.as_mut().reset(due);
                continue;
            }
            // A provider that said it finished but never closed the stream is done.
            return match finish {
                Some(reason) => (Outcome::Finished(reason), usage),
                None => (Outcome::Failed(ProviderError::Timeout(limit, what)), usage),
            };
        };
        last_activity = Instant::now();
        match item {
            None => {
                return match finish {
                    Some(reason) => (Outcome::Finished(reason), usage),
                    None => (Outcome::Failed(ProviderError::Truncated), usage),
                };
            }
            Some(Err(e)) => return (Outcome::Failed(e), usage),
            Some(Ok(event)) => {
                let was_text = got_text;
                match event {
                    StreamEvent::Delta(text) => {
                        if job.normalize {
                            live.append(&mut breaks, &text);
                        } else {
                            live.append_raw(&text);
                        }
                        got_text = true;
                        stats.deltas += 1;
                    }
                    StreamEvent::ToolCall(call) => {
                        live.tool_call(call);
                        got_text = true;
                        stats.deltas += 1;
                    }
                    StreamEvent::Usage(u) => usage = Some(u),
                    StreamEvent::Done { finish_reason } => {
                        if finish.is_none() {
                            // From now on the deadline is the short one.
                            timer.as_mut().reset(last_activity + after_finish);
                        }
                        finish = Some(finish_reason);
                    }
                }
                if got_text && !was_text {
                    stats.first_delta = Some(called.elapsed());
                    if finish.is_none() {
                        // The first-token deadline no longer applies: the idle one does.
                        timer.as_mut().reset(last_activity + timeouts.idle);
                    }
                }
            }
        }
    }
}

fn cancelled(live: &Live) -> Outcome {
    Outcome::Cancelled(live.cancel_reason().unwrap_or(CancelReason::Stop))
}

/// Saves the outcome, retrying a failing database for a while: an answer is never dropped
/// because of a transient error; readers get `done` with the row either way.
async fn save(job: &Job, row: &Message, record: Arc<FinishRecord>) -> Message {
    let mut delay = Duration::from_millis(100);
    let mut updated_at = None;
    for attempt in 1..=8 {
        match job.hub.writer.finish(Finish::Answer(record.clone())).await {
            Ok(at) => {
                updated_at = Some(at);
                break;
            }
            Err(e) => {
                tracing::error!(message_id = %record.message_id, attempt, error = %e, "saving the answer failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    // The saved message, built from what was written rather than read back.
    Message {
        content: record.content.clone(),
        status: record.status,
        finish_reason: record.finish_reason.clone(),
        provider: Some(record.provider.clone()),
        model: Some(record.model.clone()),
        usage: record.usage,
        cost_micros: Some(record.cost_micros),
        sources: record.sources.clone(),
        updated_at: updated_at.unwrap_or_else(crate::store::now),
        ..row.clone()
    }
}

/// Charges an unstored answer's usage to the workspace, retrying a failing database a while.
async fn record_usage(job: &Job, provider: &str, model: &str, usage: Usage, cost_micros: i64) {
    let record = Arc::new(UsageRecord {
        workspace_id: job.workspace_id,
        provider: provider.to_owned(),
        model: model.to_owned(),
        usage,
        cost_micros,
    });
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=8 {
        match job.hub.writer.finish(Finish::Usage(record.clone())).await {
            Ok(_) => return,
            Err(e) => {
                tracing::error!(attempt, error = %e, "recording usage failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
