//! Search backends: one trait, one file per service. Each turns a query into a list of
//! [`SearchResult`]s; none of them reads a page.

mod brave;
mod duckduckgo;
mod searxng;
mod tavily;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use brave::Brave;
pub use duckduckgo::DuckDuckGo;
pub use searxng::Searxng;
pub use tavily::Tavily;

use super::SearchResult;
use super::settings::{Provider, SearchSettings};

/// A web search service.
#[async_trait]
pub trait SearchBackend: Send + Sync {
    /// The provider name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// Up to `limit` results for `query`, best first.
    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError>;
}

/// Why a search failed. The text is for logs: it never holds a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchError {
    /// The service answered with an error status.
    Status(u16),
    /// The request did not get through.
    Transport(String),
    /// The service did not answer in time.
    Timeout,
    /// The answer could not be read as the service's documented format.
    Parse(String),
}

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchError::Status(s) => write!(f, "the search service answered status {s}"),
            SearchError::Transport(e) => write!(f, "the search request failed: {e}"),
            SearchError::Timeout => f.write_str("the search service did not answer in time"),
            SearchError::Parse(e) => write!(f, "the search answer was not understood: {e}"),
        }
    }
}

impl std::error::Error for SearchError {}

impl From<reqwest::Error> for SearchError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return SearchError::Timeout;
        }
        if e.is_decode() {
            return SearchError::Parse(e.without_url().to_string());
        }
        if let Some(status) = e.status() {
            return SearchError::Status(status.as_u16());
        }
        // The URL may carry credentials of a private SearXNG: leave it out.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        SearchError::Transport(text)
    }
}

/// The client backends share: the configured search service is trusted configuration, so it
/// may use the environment's proxy and follow its own redirects.
pub fn client(settings: &SearchSettings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(settings.search_timeout)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The backend `settings` select, or `None` for `SLUICE_SEARCH_PROVIDER=none`.
pub fn from_settings(
    settings: &SearchSettings,
    client: reqwest::Client,
) -> Option<Arc<dyn SearchBackend>> {
    let endpoint = settings.endpoint.clone();
    Some(match &settings.provider {
        Provider::DuckDuckGo => Arc::new(DuckDuckGo::new(client, endpoint)),
        Provider::Searxng { url } => Arc::new(Searxng::new(
            client,
            endpoint.unwrap_or_else(|| url.clone()),
        )),
        Provider::Brave { api_key } => Arc::new(Brave::new(client, api_key.clone(), endpoint)),
        Provider::Tavily { api_key } => Arc::new(Tavily::new(client, api_key.clone(), endpoint)),
        Provider::None => return None,
    })
}

/// The text of an HTML fragment (search services mark matches with `<b>`/`<strong>` and
/// escape entities), whitespace collapsed.
pub(crate) fn fragment_text(html: &str) -> String {
    let text = dom_query::Document::fragment(html).text();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Keeps results that name an http(s) URL, each URL once, at most `limit`.
pub(crate) fn tidy(results: Vec<SearchResult>, limit: usize) -> Vec<SearchResult> {
    let mut seen = std::collections::HashSet::new();
    results
        .into_iter()
        .filter(|r| url::Url::parse(&r.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")))
        .filter(|r| seen.insert(r.url.clone()))
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(url: &str) -> SearchResult {
        SearchResult {
            title: "t".into(),
            url: url.into(),
            snippet: String::new(),
        }
    }

    #[test]
    fn tidy_keeps_http_urls_once_up_to_the_limit() {
        let out = tidy(
            vec![
                result("https://a.example/"),
                result("javascript:alert(1)"),
                result("https://a.example/"),
                result("http://b.example/x"),
                result("not a url"),
                result("https://c.example/"),
            ],
            2,
        );
        let urls: Vec<&str> = out.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(urls, ["https://a.example/", "http://b.example/x"]);
    }

    #[test]
    fn fragments_lose_their_markup_and_entities() {
        assert_eq!(
            fragment_text("The <strong>Rust</strong> &amp; <b>Go</b>\n  book"),
            "The Rust & Go book"
        );
    }
}
