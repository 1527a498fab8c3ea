//! One search for one question: search, read the top pages concurrently within one deadline,
//! rank their passages, number the best as sources and build the prompt block.
//!
//! [`Pipeline::run`] never fails and never panics: any problem becomes an [`Outcome`] without
//! sources and with a failure to show (`search_failed`, or `search_disabled`). It is
//! cancelled by dropping its future: nothing it starts outlives it except page extractions
//! already running on the blocking pool, which finish on their own (bounded by the page cap).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::Instrument;

use super::backends::{self, SearchBackend, SearchError};
use super::citations::{Citation, citations};
use super::extract;
use super::fetch::{FetchError, Fetcher};
use super::prompt;
use super::rank::{self, PageText};
use super::settings::SearchSettings;
use super::{SEARCH_DISABLED, SEARCH_FAILED, SearchResult, Source};
use crate::domain::{PromptMessage, StreamFailure};

const METRIC_SEARCHES: &str = "sluice_searches_total";
const METRIC_DURATION: &str = "sluice_search_duration_seconds";
const METRIC_PAGES: &str = "sluice_search_pages_total";

/// Pages read at the same time.
const FETCH_CONCURRENCY: usize = 8;
/// Search services cap query length (Brave: 400 characters); longer questions are cut.
const MAX_QUERY_CHARS: usize = 400;

/// The pipeline could not be built (its HTTP clients).
#[derive(Debug)]
pub struct SetupError(reqwest::Error);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "could not build the web search HTTP client: {}", self.0)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// What happened to one page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageStatus {
    Read {
        chars: usize,
        truncated: bool,
    },
    /// The SSRF guard refused it (the reason names the address or scheme).
    Refused(String),
    /// Not HTML or text.
    Skipped(String),
    Failed(String),
    /// The per-page time limit passed.
    TimedOut,
    /// The total deadline passed first.
    DeadlinePassed,
}

impl PageStatus {
    fn label(&self) -> &'static str {
        match self {
            PageStatus::Read { .. } => "read",
            PageStatus::Refused(_) => "refused",
            PageStatus::Skipped(_) => "skipped",
            PageStatus::Failed(_) => "failed",
            PageStatus::TimedOut | PageStatus::DeadlinePassed => "timed_out",
        }
    }
}

impl From<FetchError> for PageStatus {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Refused(r) => PageStatus::Refused(r.reason),
            e @ FetchError::NotText { .. } => PageStatus::Skipped(e.to_string()),
            FetchError::Timeout => PageStatus::TimedOut,
            e => PageStatus::Failed(e.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageReport {
    pub url: String,
    pub status: PageStatus,
}

/// What one run did, for logs and tests.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub backend: &'static str,
    pub results: usize,
    pub pages: Vec<PageReport>,
    pub elapsed: Duration,
}

impl Report {
    pub fn count(&self, label: &str) -> usize {
        self.pages
            .iter()
            .filter(|p| p.status.label() == label)
            .count()
    }
}

/// The result of one run.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The numbered sources (empty on failure), for the `sources` event and the saved answer.
    pub sources: Vec<Source>,
    /// Messages to add to the model's context with [`prompt::insert_context`] (empty on
    /// failure).
    pub context: Vec<PromptMessage>,
    /// Set when the answer goes without sources: send it as an `error` event.
    pub failure: Option<StreamFailure>,
    pub report: Report,
}

impl Outcome {
    fn failed(code: &str, message: impl Into<String>, report: Report) -> Self {
        Self {
            failure: Some(StreamFailure::new(code, message)),
            report,
            ..Self::default()
        }
    }

    /// The `sources` event payload: `[{index, title, url, snippet}]`.
    pub fn sources_json(&self) -> Value {
        serde_json::to_value(&self.sources).unwrap_or_else(|_| Value::Array(Vec::new()))
    }

    /// The context as OpenAI chat message objects.
    pub fn context_messages(&self) -> Vec<Value> {
        self.context.iter().map(prompt::to_json).collect()
    }

    /// The citation markers of a finished answer, resolved against these sources.
    pub fn citations(&self, answer: &str) -> Vec<Citation> {
        citations(answer, self.sources.len())
    }
}

/// The search pipeline, built once at start-up and shared.
pub struct Pipeline {
    backend: Option<Arc<dyn SearchBackend>>,
    fetcher: Fetcher,
    search_timeout: Duration,
    max_sources: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("backend", &self.backend_name())
            .field("fetch", self.fetcher.settings())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The pipeline `settings` describe, with the backend they select.
    pub fn new(settings: &SearchSettings) -> Result<Self, SetupError> {
        let client = backends::client(settings).map_err(SetupError)?;
        let backend = backends::from_settings(settings, client);
        Self::with_backend(settings, backend)
    }

    /// The pipeline with another backend (`None`: search disabled); the rest of `settings`
    /// applies.
    pub fn with_backend(
        settings: &SearchSettings,
        backend: Option<Arc<dyn SearchBackend>>,
    ) -> Result<Self, SetupError> {
        Ok(Self {
            backend,
            fetcher: Fetcher::new(settings.fetch.clone()).map_err(SetupError)?,
            search_timeout: settings.search_timeout,
            max_sources: settings.max_sources.max(1),
        })
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.as_ref().map_or("none", |b| b.name())
    }

    /// Searches for `query` and prepares the sources and the prompt block.
    pub async fn run(&self, query: &str) -> Outcome {
        let span = tracing::info_span!(
            "search",
            backend = self.backend_name(),
            results = tracing::field::Empty,
            pages_read = tracing::field::Empty,
            pages_refused = tracing::field::Empty,
            pages_failed = tracing::field::Empty,
            sources = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let mut outcome = self.run_inner(query, started).await;
            outcome.report.backend = self.backend_name();
            outcome.report.elapsed = started.elapsed();
            self.record(&outcome);
            outcome
        }
        .instrument(span)
        .await
    }

    async fn run_inner(&self, query: &str, started: Instant) -> Outcome {
        let mut report = Report::default();
        let Some(backend) = &self.backend else {
            return Outcome::failed(
                SEARCH_DISABLED,
                "web search is turned off on this server; answering without sources",
                report,
            );
        };
        let query: String = query.trim().chars().take(MAX_QUERY_CHARS).collect();
        if query.is_empty() {
            return Outcome::failed(SEARCH_FAILED, "there is no question to search for", report);
        }
        let limit = self.fetcher.settings().max_pages;
        let results = match timeout(self.search_timeout, backend.search(&query, limit)).await {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => return Self::search_error(&e, report),
            Err(_) => return Self::search_error(&SearchError::Timeout, report),
        };
        report.results = results.len();
        if results.is_empty() {
            return Outcome::failed(
                SEARCH_FAILED,
                "the web search found nothing for this question; answering without sources",
                report,
            );
        }
        let deadline = started + self.fetcher.settings().deadline;
        let (pages, page_reports) = self
            .read_pages(&results[..results.len().min(limit)], deadline)
            .await;
        report.pages = page_reports;
        if pages.is_empty() {
            let message = format!(
                "none of the {} pages found could be read ({} refused, {} skipped, {} failed, \
                 {} timed out); answering without sources",
                report.pages.len(),
                report.count("refused"),
                report.count("skipped"),
                report.count("failed"),
                report.count("timed_out"),
            );
            return Outcome::failed(SEARCH_FAILED, message, report);
        }
        let ranked = rank::rank(&query, &pages, self.max_sources);
        if ranked.is_empty() {
            return Outcome::failed(
                SEARCH_FAILED,
                "the pages found had no readable text; answering without sources",
                report,
            );
        }
        let sources: Vec<Source> = ranked
            .into_iter()
            .enumerate()
            .map(|(i, r)| Source {
                index: i + 1,
                title: pages[r.page].title.clone(),
                url: pages[r.page].url.clone(),
                snippet: r.text,
            })
            .collect();
        Outcome {
            context: prompt::context(&sources),
            sources,
            failure: None,
            report,
        }
    }

    fn search_error(e: &SearchError, report: Report) -> Outcome {
        tracing::warn!(error = %e, "web search failed");
        let what = match e {
            SearchError::Status(s) => format!("the search service answered with an error ({s})"),
            SearchError::Timeout => "the search service did not answer in time".to_owned(),
            SearchError::Transport(_) => "the search service could not be reached".to_owned(),
            SearchError::Parse(_) => "the search service's answer could not be read".to_owned(),
        };
        Outcome::failed(
            SEARCH_FAILED,
            format!("web search failed: {what}; answering without sources"),
            report,
        )
    }

    /// Reads and extracts the pages of `results` until all are done or `deadline` passes.
    /// Returns the readable pages in result order, and a report per result.
    async fn read_pages(
        &self,
        results: &[SearchResult],
        deadline: Instant,
    ) -> (Vec<PageText>, Vec<PageReport>) {
        let mut statuses: Vec<Option<PageStatus>> = vec![None; results.len()];
        let mut texts: Vec<Option<PageText>> = vec![None; results.len()];
        // Owned items: a closure over borrowed ones makes the future `Send` only for one
        // lifetime, which a spawned generation task cannot use.
        let mut reads = futures::stream::iter(results.iter().cloned().enumerate())
            .map(|(i, result)| async move { (i, self.read_page(&result).await) })
            .buffer_unordered(FETCH_CONCURRENCY);
        while let Ok(Some((i, read))) = timeout_at(deadline, reads.next()).await {
            match read {
                Ok((text, status)) => {
                    texts[i] = Some(text);
                    statuses[i] = Some(status);
                }
                Err(status) => statuses[i] = Some(status),
            }
        }
        let reports = results
            .iter()
            .zip(statuses)
            .map(|(r, status)| {
                let status = status.unwrap_or(PageStatus::DeadlinePassed);
                tracing::debug!(url = %r.url, status = ?status, "page");
                PageReport {
                    url: r.url.clone(),
                    status,
                }
            })
            .collect();
        (texts.into_iter().flatten().collect(), reports)
    }

    async fn read_page(&self, result: &SearchResult) -> Result<(PageText, PageStatus), PageStatus> {
        let page = self.fetcher.fetch(&result.url).await?;
        let url = page.url.to_string();
        let truncated = page.truncated;
        let extracted = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || extract::main_text(&page.body, page.kind, &url))
                .await
                .map_err(|_| PageStatus::Failed("text extraction failed".into()))?
        };
        let chars = extracted.text.trim().chars().count();
        if chars == 0 {
            return Err(PageStatus::Failed("no readable text".into()));
        }
        let title = Some(result.title.trim().to_owned())
            .filter(|t| !t.is_empty())
            .or(extracted.title)
            .unwrap_or_else(|| url.clone());
        Ok((
            PageText {
                title,
                url,
                text: extracted.text,
            },
            PageStatus::Read { chars, truncated },
        ))
    }

    fn record(&self, outcome: &Outcome) {
        let backend = self.backend_name();
        let r = &outcome.report;
        let span = tracing::Span::current();
        span.record("results", r.results);
        span.record("pages_read", r.count("read"));
        span.record("pages_refused", r.count("refused"));
        span.record(
            "pages_failed",
            r.pages.len() - r.count("read") - r.count("refused"),
        );
        span.record("sources", outcome.sources.len());
        span.record(
            "elapsed_ms",
            u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
        );
        let result = match &outcome.failure {
            None => "ok",
            Some(f) if f.code == SEARCH_DISABLED => "disabled",
            Some(_) => "failed",
        };
        match &outcome.failure {
            Some(f) => tracing::info!(outcome = result, reason = %f.message, "web search done"),
            None => tracing::info!(outcome = result, "web search done"),
        }
        metrics::counter!(METRIC_SEARCHES, "backend" => backend, "outcome" => result).increment(1);
        metrics::histogram!(METRIC_DURATION, "backend" => backend).record(r.elapsed.as_secs_f64());
        for page in &r.pages {
            metrics::counter!(METRIC_PAGES, "status" => page.status.label()).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{Provider, SEARCH_DISABLED};

    fn assert_shared<T: Send + Sync + 'static>() {}

    #[tokio::test]
    async fn the_pipeline_can_be_shared_and_its_run_spawned() {
        assert_shared::<Pipeline>();
        let settings = SearchSettings {
            provider: Provider::None,
            ..SearchSettings::default()
        };
        let pipeline = Arc::new(Pipeline::new(&settings).unwrap());
        // A generation task spawns the run: its future must be `Send` for every lifetime.
        let outcome = tokio::spawn(async move { pipeline.run("q").await })
            .await
            .unwrap();
        assert_eq!(outcome.failure.unwrap().code, SEARCH_DISABLED);
    }
}
