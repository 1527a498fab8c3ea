//! The one domain layer every dialect calls. Handlers convert, call one method here, convert back.

mod auth;
mod sessions;
mod completions;
mod conversations;

use std::sync::Arc;

use uuid::Uuid;

pub use sessions::{NewWebSession, SESSION_TTL, WebSession, tokens_match};
pub use auth::{KeyKind, NewKeyOutput, Principal, bootstrap, create_key, generate_key, hash_key};
pub use completions::CompletionInput;
pub use conversations::{ResumeAt, ResumePoint, StopOutcome, StreamOpen};

use crate::config::Limits;
use crate::generation::Hub;
use crate::providers::Providers;
use crate::store::Store;

/// Everything a request needs, built once at start-up.
pub struct Services {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub providers: Arc<Providers>,
    pub limits: Limits,
    pub default_workspace: Uuid,
}
