//! DuckDuckGo through its HTML results page (`html.duckduckgo.com/html/`), which needs no key.
//!
//! The query is POSTed as a form, as the page's own search box does. Result links are wrapped
//! in DuckDuckGo's redirector (`//duckduckgo.com/l/?uddg=<target>&rut=…`) and are unwrapped
//! here; sponsored results (`result--ad`, or links through the `y.js` ad redirector) are left
//! out.

use async_trait::async_trait;
use dom_query::{Document, Matcher};
use reqwest::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use url::Url;

use super::{SearchBackend, SearchError, fragment_text, tidy};
use crate::search::SearchResult;

const ENDPOINT: &str = "https://html.duckduckgo.com/html/";
/// The results page serves plain browsers; a bare client name is often answered with a
/// challenge instead.
const BROWSER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

pub struct DuckDuckGo {
    client: reqwest::Client,
    endpoint: String,
}

impl DuckDuckGo {
    /// `endpoint` replaces the public results page (for tests).
    pub fn new(client: reqwest::Client, endpoint: Option<Url>) -> Self {
        let endpoint = endpoint.map_or_else(|| ENDPOINT.to_owned(), String::from);
        Self { client, endpoint }
    }
}

#[async_trait]
impl SearchBackend for DuckDuckGo {
    fn name(&self) -> &'static str {
        "duckduckgo"
    }

    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError> {
        let form = serde_urlencoded::to_string([("q", query), ("b", "")])
            .map_err(|e| SearchError::Parse(e.to_string()))?;
        let response = self
            .client
            .post(self.endpoint.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "text/html")
            .header(USER_AGENT, BROWSER_AGENT)
            .body(form)
            .send()
            .await?;
        // A 202 is DuckDuckGo's bot challenge, not results.
        if response.status() != reqwest::StatusCode::OK {
            return Err(SearchError::Status(response.status().as_u16()));
        }
        let html = response.text().await?;
        parse(&html).map(|results| tidy(results, limit))
    }
}

fn matcher(selector: &str) -> Result<Matcher, SearchError> {
    Matcher::new(selector).map_err(|_| SearchError::Parse(format!("bad selector {selector}")))
}

/// The organic results of a results page.
pub(crate) fn parse(html: &str) -> Result<Vec<SearchResult>, SearchError> {
    let doc = Document::from(html);
    let results = doc.select_matcher(&matcher(".result")?);
    if results.is_empty() {
        if doc.select_matcher(&matcher(".no-results")?).exists() {
            return Ok(Vec::new());
        }
        return Err(SearchError::Parse(
            "no results and no \"no results\" notice: not a results page".into(),
        ));
    }
    let link = matcher("a.result__a")?;
    let snippet = matcher(".result__snippet")?;
    let mut out = Vec::new();
    for result in results.iter() {
        if result.has_class("result--ad") {
            continue;
        }
        let title_link = result.select_matcher(&link);
        let Some(href) = title_link.attr("href") else {
            continue;
        };
        let Some(url) = unwrap_link(&href) else {
            continue;
        };
        out.push(SearchResult {
            title: fragment_text(&title_link.inner_html()),
            url,
            snippet: fragment_text(&result.select_matcher(&snippet).inner_html()),
        });
    }
    Ok(out)
}

/// The target of a result link: the `uddg` parameter of a redirector link, or the link itself.
/// Ad links (through `y.js`) give `None`.
fn unwrap_link(href: &str) -> Option<String> {
    let base = Url::parse("https://duckduckgo.com/").ok()?;
    let url = base.join(href).ok()?;
    let on_ddg = url
        .host_str()
        .is_some_and(|h| h == "duckduckgo.com" || h.ends_with(".duckduckgo.com"));
    if !on_ddg {
        return Some(url.to_string());
    }
    if url.path() != "/l/" {
        return None;
    }
    url.query_pairs()
        .find(|(k, _)| k == "uddg")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirector_links_are_unwrapped() {
        assert_eq!(
            unwrap_link(
                "//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2Fwiki%2FRust_(programming_language)%3Fa%3D1%26b%3D2&rut=abc"
            )
            .as_deref(),
            Some("https://en.wikipedia.org/wiki/Rust_(programming_language)?a=1&b=2")
        );
        assert_eq!(
            unwrap_link("https://www.rust-lang.org/").as_deref(),
            Some("https://www.rust-lang.org/")
        );
        assert_eq!(
            unwrap_link("https://duckduckgo.com/y.js?ad_domain=x.com&u3=abc"),
            None
        );
    }

    #[test]
    fn a_page_that_is_not_a_results_page_is_an_error() {
        assert!(matches!(
            parse("<html><body><form id=challenge-form></form></body></html>"),
            Err(SearchError::Parse(_))
        ));
        assert_eq!(
            parse("<div class=no-results>No results.</div>").unwrap(),
            Vec::new()
        );
    }
}
