//! The few conversations-API calls the client makes, and what their failures mean.

use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

/// Longer than the server's keep-alive interval (15 s by default): a stream silent for this
/// long is a dead connection, to be resumed.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// For the plain JSON requests; streams have no overall deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// The inference stream, once the server answered.
pub enum Opened {
    Stream(Response),
    /// 204: the client already had `done`.
    AlreadyDone,
}

/// Why the inference stream could not be opened.
pub enum OpenError {
    /// Worth another try: the server is unreachable, restarting or overloaded.
    Retry(String),
    /// An answer that will not change: a bad key, an unknown chat, a bad resume point.
    Fatal(anyhow::Error),
}

impl Api {
    pub fn new(base: &str, key: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Creates a chat and returns its id.
    pub async fn create_chat(&self, name: &str) -> anyhow::Result<String> {
        let body = self
            .post("/chats/create", Some(&json!({ "name": name })))
            .await?;
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the server created a chat without an id: {body}"))
    }

    /// Posts a `Human` message to the chat.
    pub async fn post_message(&self, chat: &str, message: &str) -> anyhow::Result<()> {
        let body = json!({ "chat_id": chat, "role": "Human", "message": message });
        self.post("/conversations/create", Some(&body)).await?;
        Ok(())
    }

    /// Asks the server to stop the chat's running answer.
    pub async fn stop(&self, chat: &str) -> anyhow::Result<()> {
        self.post(&format!("/conversations/stop/{chat}"), None)
            .await?;
        Ok(())
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut request = self.request(Method::POST, path).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if !response.status().is_success() {
            return Err(http_error(response).await);
        }
        response
            .json()
            .await
            .with_context(|| format!("reading the answer to POST {path}"))
    }

    /// Opens the chat's inference stream, resuming after `last_event_id` if given.
    pub async fn open_stream(
        &self,
        chat: &str,
        last_event_id: Option<&str>,
    ) -> Result<Opened, OpenError> {
        let mut request = self
            .request(Method::GET, &format!("/conversations/inference/{chat}"))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request
            .send()
            .await
            .map_err(|e| OpenError::Retry(format!("{:#}", anyhow::Error::from(e))))?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(Opened::AlreadyDone),
            status if status.is_success() => event_stream(response),
            status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => Err(
                OpenError::Retry(format!("{:#}", http_error(response).await)),
            ),
            _ => Err(OpenError::Fatal(http_error(response).await)),
        }
    }
}

/// The response, if it is an event stream at all (a wrong `--url` may well answer 200).
fn event_stream(response: Response) -> Result<Opened, OpenError> {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("text/event-stream") {
        Ok(Opened::Stream(response))
    } else {
        Err(OpenError::Fatal(anyhow!(
            "{} answered {content_type:?}, not an event stream: is --url a sluice server?",
            response.url()
        )))
    }
}

/// The server's error message (`{"error": code, "message": text}`), with the status.
async fn http_error(response: Response) -> anyhow::Error {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|body| body["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(200).collect());
    if message.trim().is_empty() {
        anyhow!("{status}")
    } else {
        anyhow!("{status}: {message}")
    }
}
