//! The one domain layer every dialect calls. Handlers convert, call one method here, convert back.

mod auth;
mod completions;
mod conversations;
mod limits;
mod sessions;

use std::sync::Arc;

use uuid::Uuid;

pub use auth::{KeyKind, NewKeyOutput, Principal, bootstrap, create_key, generate_key, hash_key};
pub use completions::CompletionInput;
pub use conversations::{ResumeAt, ResumePoint, StopOutcome, StreamOpen};
pub use limits::check_max_tokens;
pub use sessions::{NewWebSession, SESSION_TTL, WebSession, tokens_match};

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
