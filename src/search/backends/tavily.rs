//! Tavily's search API: `POST /search` with a JSON body and the key as
//! `Authorization: Bearer tvly-…` (the form its API reference documents; the older `api_key`
//! body field is not sent). Results in `results[].{title, url, content}`.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::{SearchBackend, SearchError, tidy};
use crate::search::SearchResult;

const ENDPOINT: &str = "https://api.tavily.com/search";
/// The API's maximum `max_results`.
const MAX_RESULTS: usize = 20;

pub struct Tavily {
    client: reqwest::Client,
    api_key: SecretString,
    endpoint: String,
}

impl Tavily {
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
    results: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: Option<String>,
}

#[async_trait]
impl SearchBackend for Tavily {
    fn name(&self) -> &'static str {
        "tavily"
    }

    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", self.api_key.expose_secret()))
            .map_err(|_| SearchError::Transport("TAVILY_API_KEY is not a valid header".into()))?;
        bearer.set_sensitive(true);
        let body = json!({
            "query": query,
            "max_results": limit.clamp(1, MAX_RESULTS),
            "search_depth": "basic",
            "include_answer": false,
            "include_raw_content": false,
            "include_images": false,
        });
        let response = self
            .client
            .post(self.endpoint.as_str())
            .header(AUTHORIZATION, bearer)
            .json(&body)
            .send()
            .await?;
        let body: Response = response.error_for_status()?.json().await?;
        let results = body
            .results
            .into_iter()
            .map(|i| SearchResult {
                title: i.title.trim().to_owned(),
                url: i.url,
                snippet: i.content.unwrap_or_default().trim().to_owned(),
            })
            .collect();
        Ok(tidy(results, limit))
    }
}
