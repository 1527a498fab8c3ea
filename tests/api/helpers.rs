//! `spawn_app()`: a real sluice on port 0 with a fresh database (SQLite file, or a new
//! PostgreSQL database when SLUICE_TEST_POSTGRES_URL is set) and its own mock upstream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde_json::Value;
use sluice::config::{ProviderSettings, Settings, UpstreamTimeouts};
use sluice::service::{KeyKind, Services};
use sluice::startup::Application;

pub use crate::mock::{MockUpstream, Script};

pub struct TestApp {
    pub base: String,
    pub key: String,
    pub client: reqwest::Client,
    pub mock: MockUpstream,
    pub services: Arc<Services>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh database URL: a new PostgreSQL database if SLUICE_TEST_POSTGRES_URL is set (failing
/// loudly if it is unreachable), else a SQLite file in a temporary directory.
pub async fn fresh_database() -> (String, Option<tempfile::TempDir>) {
    match std::env::var("SLUICE_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            use sea_orm::ConnectionTrait;
            let admin = sea_orm::Database::connect(base.as_str())
                .await
                .unwrap_or_else(|e| panic!("SLUICE_TEST_POSTGRES_URL is set but unreachable: {e}"));
            let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let (prefix, _) = base.rsplit_once('/').expect("postgres URL with a database");
            (format!("{prefix}/{name}"), None)
        }
        _ => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("sluice.db").display()
            );
            (url, Some(dir))
        }
    }
}

/// Settings for a test: the mock as the only provider, short deadlines and checkpoints.
pub fn test_settings(database_url: &str, mock: &MockUpstream) -> Settings {
    let mut settings = Settings::new(database_url);
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.admin_key = Some(SecretString::from(sluice::service::generate_key(
        KeyKind::Secret,
    )));
    settings.checkpoint_interval = Duration::from_millis(100);
    // Tests drive many requests through one key; the rate-limit tests set their own limits.
    settings.rate_limits.secret = 1_000_000;
    settings.rate_limits.publishable = 1_000_000;
    settings.shutdown_grace = Duration::from_secs(5);
    settings.upstream = UpstreamTimeouts {
        connect: Duration::from_secs(2),
        first_token: Duration::from_secs(5),
        idle: Duration::from_secs(5),
    };
    settings.providers = vec![ProviderSettings {
        name: "mock".into(),
        base_url: mock.base_url(),
        api_key: Some(SecretString::from("test-upstream-key".to_owned())),
        models: vec!["mock-model".into()],
        headers: BTreeMap::new(),
        timeouts: settings.upstream,
        http: settings.upstream_http,
        prices: BTreeMap::new(),
        max_tokens: BTreeMap::new(),
        fallbacks: Vec::new(),
    }];
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The app with its provider spoken to over HTTP/2 (h2c), at most `max_streams` answers per
/// upstream connection.
pub async fn spawn_app_over_http2(max_streams: usize) -> TestApp {
    spawn_app_with(|settings| {
        settings.providers[0].http = sluice::config::UpstreamHttp {
            http2: true,
            http2_max_streams: max_streams,
        };
    })
    .await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mock = MockUpstream::start().await.expect("mock upstream");
    let (database_url, dir) = fresh_database().await;
    let mut settings = test_settings(&database_url, &mock);
    configure(&mut settings);
    start(settings, mock, dir).await
}

/// Another server on `database_url` (a database another test app already uses), with its own
/// mock upstream: a second replica.
pub async fn spawn_app_on(database_url: &str, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mock = MockUpstream::start().await.expect("mock upstream");
    let mut settings = test_settings(database_url, &mock);
    configure(&mut settings);
    start(settings, mock, None).await
}

async fn start(settings: Settings, mock: MockUpstream, dir: Option<tempfile::TempDir>) -> TestApp {
    use secrecy::ExposeSecret;
    let key = settings
        .admin_key
        .as_ref()
        .map(|k| k.expose_secret().to_owned())
        .unwrap_or_default();
    let app = Application::build(settings).await.expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let services = app.services();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        key,
        client: reqwest::Client::new(),
        mock,
        services,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&self.key)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
    }

    /// A JSON request with `key` (`None`: no key at all): the status and the JSON body (null
    /// when the body is not JSON).
    pub async fn request_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// [`TestApp::request_as`] with the test's admin key.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.request_as(Some(&self.key), method, path, body).await
    }

    /// A new non-admin key of `workspace`, as a client would send it.
    pub async fn new_key(&self, workspace: uuid::Uuid, kind: sluice::service::KeyKind) -> String {
        use secrecy::ExposeSecret;
        sluice::service::create_key(
            self.services.store(),
            workspace,
            kind,
            None,
            false,
            Vec::new(),
            None,
        )
        .await
        .unwrap()
        .key
        .expose_secret()
        .to_owned()
    }

    /// Creates a chat and returns its id.
    pub async fn create_chat(&self, name: &str) -> String {
        let r = self
            .post_json("/chats/create", &serde_json::json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Posts a Human message and returns its id.
    pub async fn ask(&self, chat_id: &str, text: &str) -> String {
        let r = self
            .post_json(
                "/conversations/create",
                &serde_json::json!({"chat_id": chat_id, "role": "Human", "message": text}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A chat with one question, ready to stream.
    pub async fn chat_with_question(&self, text: &str) -> String {
        let chat = self.create_chat("test").await;
        self.ask(&chat, text).await;
        chat
    }

    pub async fn conversations(&self, chat_id: &str) -> Vec<Value> {
        let r = self
            .get(&format!("/conversations/?chat_id={chat_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The stored Assistant message of a chat (the last one).
    pub async fn stored_answer(&self, chat_id: &str) -> Value {
        self.conversations(chat_id)
            .await
            .into_iter()
            .rev()
            .find(|c| c["role"] == "Assistant")
            .expect("an Assistant conversation")
    }

    /// Opens an inference stream as an SSE client would.
    pub async fn stream(&self, path: &str, last_event_id: Option<&str>) -> SseClient {
        let mut req = self.get(path).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await.unwrap();
        SseClient::new(response)
    }

    /// Stops the server as SIGTERM would and waits for it to finish.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.expect("server task"),
            None => Ok(()),
        }
    }
}

/// An SSE reader over a live response.
pub struct SseClient {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    events: Option<BoxStream<'static, Result<Event, String>>>,
}

impl SseClient {
    pub fn new(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed();
        Self {
            status,
            headers,
            events: Some(events),
        }
    }

    /// The next event, or None when the server ended the response.
    pub async fn next(&mut self) -> Option<Event> {
        let events = self.events.as_mut()?;
        match tokio::time::timeout(Duration::from_secs(20), events.next()).await {
            Ok(Some(Ok(e))) => Some(e),
            Ok(Some(Err(e))) => panic!("SSE stream error: {e}"),
            Ok(None) => None,
            Err(_) => panic!("no SSE event within 20 s"),
        }
    }

    /// Every remaining event until the server ends the response.
    pub async fn collect(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }

    /// Drops the connection, as a closed browser tab would.
    pub fn disconnect(&mut self) {
        self.events = None;
    }
}

/// The text carried by unnamed (delta) events, concatenated.
pub fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.data.as_str())
        .collect()
}

/// The parsed data of the first event with this name.
pub fn named(events: &[Event], name: &str) -> Option<Value> {
    events
        .iter()
        .find(|e| e.event == name)
        .map(|e| serde_json::from_str(&e.data).expect("JSON data"))
}

/// Waits until `check` holds, polling; panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("condition not met within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
