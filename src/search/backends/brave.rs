//! Brave Search's web search API: `GET /res/v1/web/search?q=…&count=…` with the key in the
//! `X-Subscription-Token` header; results in `web.results[].{title, url, description}`.

use async_trait::async_trait;
use reqwest::header::{ACCEPT, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::{SearchBackend, SearchError, fragment_text, tidy};
use crate::search::SearchResult;

const ENDPOINT: &str = "https://api.search.brave.com/res/v1/web/search";
/// The API's maximum `count`.
const MAX_COUNT: usize = 20;

pub struct Brave {
    client: reqwest::Client,
    api_key: SecretString,
    endpoint: String,
}

impl Brave {
    /// `endpoint` replaces the public API URL (for tests).
    pub fn new(client: reqwest::Client, api_key: SecretString, endpoint: Option<Url>) -> Self {
        let endpoint = endpoint.map_or_else(|| ENDPOINT.to_owned(), String::from);
        Self {
            client,
            api_key,
            endpoint,
        }
    }
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    web: Option<Web>,
}

#[derive(Deserialize)]
struct Web {
    #[serde(default)]
    results: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: Option<String>,
}

#[async_trait]
impl SearchBackend for Brave {
    fn name(&self) -> &'static str {
        "brave"
    }

    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError> {
        let mut token = HeaderValue::from_str(self.api_key.expose_secret())
            .map_err(|_| SearchError::Transport("BRAVE_API_KEY is not a valid header".into()))?;
        token.set_sensitive(true);
        let count = limit.clamp(1, MAX_COUNT).to_string();
        let response = self
            .client
            .get(self.endpoint.as_str())
            .query(&[("q", query), ("count", count.as_str())])
            .header(ACCEPT, "application/json")
            .header("X-Subscription-Token", token)
            .send()
            .await?;
        let body: Response = response.error_for_status()?.json().await?;
        // Titles and descriptions carry `<strong>` highlights and HTML entities.
        let results = body
            .web
            .map(|w| w.results)
            .unwrap_or_default()
            .into_iter()
            .map(|i| SearchResult {
                title: fragment_text(&i.title),
                url: i.url,
                snippet: fragment_text(&i.description.unwrap_or_default()),
            })
            .collect();
        Ok(tidy(results, limit))
    }
}
