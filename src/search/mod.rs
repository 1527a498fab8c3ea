//! Web search for the internet variant: a search backend, a guarded page fetcher, main-text
//! extraction, passage ranking, and the prompt block that hands the best passages to the model
//! as untrusted, citable reference data.
//!
//! [`Pipeline::run`] does it all for one question and never fails: every problem becomes an
//! [`Outcome`] without sources and with a [`StreamFailure`] of code [`SEARCH_FAILED`] or
//! [`SEARCH_DISABLED`], so the answer still streams.

pub mod backends;
pub mod citations;
pub mod extract;
pub mod fetch;
pub mod guard;
mod pipeline;
pub mod prompt;
pub mod rank;
mod settings;

use serde::{Deserialize, Serialize};

pub use backends::{SearchBackend, SearchError};
pub use citations::{Citation, citations};
pub use fetch::{FetchError, Fetcher, Page, Resolver, StaticHosts};
pub use guard::Refusal;
pub use pipeline::{Outcome, PageReport, PageStatus, Pipeline, Report, SetupError};
pub use settings::{FetchSettings, Provider, SearchSettings, SettingsError};

pub use crate::domain::StreamFailure;

/// The `error` event code of a search that found nothing usable.
pub const SEARCH_FAILED: &str = "search_failed";
/// The `error` event code when the server runs with `SLUICE_SEARCH_PROVIDER=none`.
pub const SEARCH_DISABLED: &str = "search_disabled";

/// One hit of a search backend, before its page is read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    pub title: String,
    pub url: String,
    pub snippet: String,
}

/// One numbered passage given to the model, as the `sources` event shows it. `index` starts at
/// 1 and is what the model cites as `[index]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub index: usize,
    pub title: String,
    pub url: String,
    pub snippet: String,
}
