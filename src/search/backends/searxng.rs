//! SearXNG through its JSON API: `GET {base}/search?q=…&format=json`. The instance must list
//! `json` in its `search.formats` setting; otherwise it answers 403.

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use url::Url;

use super::{SearchBackend, SearchError, tidy};
use crate::search::SearchResult;

pub struct Searxng {
    client: reqwest::Client,
    base: Url,
}

impl Searxng {
    /// `base` is the instance's address (`SLUICE_SEARXNG_URL`), with or without a path.
    pub fn new(client: reqwest::Client, base: Url) -> Self {
        Self { client, base }
    }

    fn search_url(&self) -> Result<Url, SearchError> {
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        base.join("search")
            .map_err(|e| SearchError::Transport(format!("bad SearXNG URL: {e}")))
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
impl SearchBackend for Searxng {
    fn name(&self) -> &'static str {
        "searxng"
    }

    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError> {
        let response = self
            .client
            .get(self.search_url()?)
            .query(&[("q", query), ("format", "json")])
            .header(ACCEPT, "application/json")
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::FORBIDDEN {
            tracing::warn!("SearXNG refused format=json: enable `json` in its search.formats");
        }
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
