//! The one domain layer every dialect calls. Handlers convert, call one method here, convert back.

mod agents;
mod answers;
mod auth;
mod chats;
mod completions;
mod conversations;
mod limits;
mod messages;
mod sessions;
mod sharing;
mod transcribe;
mod translate;
mod workspaces;

use std::sync::Arc;

use uuid::Uuid;

pub use agents::AgentInput;
pub use answers::AnswerStream;
pub use auth::{
    Access, KeyKind, NewKeyOutput, Principal, bootstrap, create_key, generate_key, hash_key,
};
pub use chats::ChatInput;
pub use completions::CompletionInput;
pub use conversations::{StopOutcome, StreamOpen, Variant};
pub use limits::check_max_tokens;
pub use messages::{CreditUsage, TaskView};
pub use sessions::{NewWebSession, SESSION_TTL, WebSession, tokens_match};
pub use sharing::{PUBLIC_VIEWS_PER_WINDOW, PublicView};
pub use transcribe::Transcriber;
pub use workspaces::{KeyRequest, NewWorkspace, WorkspaceChanges};

use crate::config::{Limits, RateLimits, TranscriptionSettings};
use crate::generation::Hub;
use crate::policy::{Credits, RateDecision, RateLimiter};
use crate::providers::Providers;
use crate::shutdown::Closing;
use crate::store::Store;

/// Everything a request needs, built once at start-up.
pub struct Services {
    store: Store,
    hub: Arc<Hub>,
    providers: Arc<Providers>,
    rate: Arc<dyn RateLimiter>,
    credits: Arc<dyn Credits>,
    transcription: TranscriptionSettings,
    rate_limits: RateLimits,
    pub limits: Limits,
    pub default_workspace: Uuid,
}

/// What a readiness probe reports.
pub struct Readiness {
    pub database: Result<(), crate::Error>,
    pub shutting_down: bool,
    pub demo_model: bool,
    pub models: Vec<String>,
    pub running_generations: usize,
    /// With `SLUICE_REDIS_URL`: whether Redis answers (rate limits are shared while it does).
    pub redis: Option<bool>,
}

impl Services {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Store,
        hub: Arc<Hub>,
        providers: Arc<Providers>,
        rate: Arc<dyn RateLimiter>,
        credits: Arc<dyn Credits>,
        transcription: TranscriptionSettings,
        rate_limits: RateLimits,
        limits: Limits,
        default_workspace: Uuid,
    ) -> Self {
        Self {
            store,
            hub,
            providers,
            rate,
            credits,
            transcription,
            rate_limits,
            limits,
            default_workspace,
        }
    }

    /// The database, for operators' tools and tests; requests go through the methods here.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Set once the server starts shutting down: streams end, no generation starts.
    pub fn closing(&self) -> &Closing {
        self.hub.closing()
    }

    /// Lets running generations finish within `grace`, saves the rest as `incomplete`, and
    /// writes a last checkpoint.
    pub async fn drain(&self, grace: std::time::Duration) {
        self.hub.drain(grace).await;
        self.hub.checkpoint_all().await;
    }

    /// Counts one request of the caller's key against its limit per window (the key's own,
    /// else its kind's default); `RateDecision::check` refuses it over the limit. Callers
    /// without a key (authentication off) are not counted.
    pub async fn admit(&self, who: &Principal) -> Option<RateDecision> {
        let key_id = who.key_id?;
        let limit = who.rate_limit.unwrap_or(match who.kind {
            KeyKind::Secret => self.rate_limits.secret,
            KeyKind::Publishable => self.rate_limits.publishable,
        });
        Some(self.rate.hit(&key_id.to_string(), limit).await)
    }

    /// Counts one request against `limit` per window for `counter`; over it, `RateLimited`.
    async fn count(&self, counter: &str, limit: u32) -> crate::Result<RateDecision> {
        let decision = self.rate.hit(counter, limit).await;
        decision.check()?;
        Ok(decision)
    }

    /// The configured providers (a request may name one in any case), each with the models it
    /// lists (none: it takes any model).
    pub fn provider_catalogue(&self) -> Vec<(String, Vec<String>)> {
        self.providers.catalogue()
    }

    /// The most output tokens any request may ask, whatever its model.
    pub fn largest_output_cap(&self) -> u32 {
        self.providers.largest_output_cap()
    }

    /// The models served, as `provider/model`, the default first.
    pub fn models(&self, who: &Principal) -> crate::Result<Vec<String>> {
        who.allow(Access::Backend)?;
        Ok(self.providers.model_ids())
    }

    /// Whether this process can serve: the database answers and it is not shutting down.
    pub async fn readiness(&self) -> Readiness {
        Readiness {
            database: self.store.ping().await.map_err(Into::into),
            shutting_down: self.hub.closing().is_cancelled(),
            demo_model: self.providers.is_demo(),
            models: self.providers.model_ids(),
            running_generations: self.hub.running_count(),
            redis: self.rate.shared().await,
        }
    }
}
