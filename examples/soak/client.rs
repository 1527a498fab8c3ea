//! The clients: one exchange at a time in a random dialect, each read as an impatient client
//! would (leaving, coming back with `Last-Event-ID`, stopping, regenerating), through kills.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::mock::Script;

/// What the upstream sends for every answer: multi-byte characters included, so that a split
/// inside one would show.
pub const CHUNKS: &[&str] = &[
    "Soak ",
    "tëst ",
    "ånswer ",
    "🚀 ",
    "with ",
    "ünïcode ",
    "— ",
    "and ",
    "numbers ",
    "12345 ",
    "中文 ",
    "text ",
    "that ",
    "must ",
    "arrive ",
    "whole, ",
    "in ",
    "order, ",
    "once. ",
    "Done.",
];

/// The whole text an answer has when nothing went wrong.
pub fn full_text() -> String {
    CHUNKS.concat()
}

/// How long a reader keeps coming back to one answer before it counts it as lost to it.
const PATIENCE: Duration = Duration::from_secs(90);

/// A small deterministic generator (SplitMix64): runs repeat with `--seed`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// What the upstream does to the next answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The connection drops after some chunks.
    Cut(usize),
    /// An error event after some chunks.
    Error(usize),
    /// Nothing for longer than sluice waits for a first token.
    Stall,
    /// Every event arrives in two pieces, split inside a character.
    Split,
    /// A 500 before any chunk.
    Refuse,
}

impl Fault {
    pub fn pick(rng: &mut Rng) -> Fault {
        let at = 1 + rng.below(CHUNKS.len() - 2);
        match rng.below(20) {
            0..=9 => Fault::None,
            10 | 11 => Fault::Cut(at),
            12 | 13 => Fault::Error(at),
            14 => Fault::Stall,
            15..=18 => Fault::Split,
            _ => Fault::Refuse,
        }
    }

    pub fn script(self) -> Script {
        let base = Script {
            chunk_delay_ms: 40,
            ..Script::text(CHUNKS)
        };
        match self {
            Fault::None => base,
            Fault::Cut(n) => Script {
                cut_after: Some(n),
                ..base
            },
            Fault::Error(n) => Script {
                error_after: Some(n),
                ..base
            },
            Fault::Stall => Script {
                first_delay_ms: 3_000,
                ..base
            },
            Fault::Split => Script {
                split_utf8: true,
                ..base
            },
            Fault::Refuse => Script {
                status: Some(500),
                ..base
            },
        }
    }
}

/// Everything counted during the run.
#[derive(Default)]
pub struct Counts {
    pub exchanges: AtomicU64,
    pub answers_read: AtomicU64,
    pub resumes: AtomicU64,
    pub walkaways: AtomicU64,
    pub stops: AtomicU64,
    pub regenerates: AtomicU64,
    pub kills: AtomicU64,
    pub faults: AtomicU64,
    pub openai_streams: AtomicU64,
    pub by_dialect: [AtomicU64; 4],
    pub connection_errors: AtomicU64,
    pub upstream_failures_relayed: AtomicU64,
    /// Readers told by `error` (`interrupted`, `saved_bytes`) that the saved answer is shorter
    /// than what they were streamed: a kill came before the answer's last checkpoint.
    pub told_shorter: AtomicU64,
}

impl Counts {
    pub fn fault(&self, fault: Fault) {
        if fault != Fault::None {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn kill(&self) {
        self.kills.fetch_add(1, Ordering::Relaxed);
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one reader saw of one answer, across all its connections.
#[derive(Debug, Default)]
pub struct Reading {
    pub dialect: &'static str,
    pub answer: Option<Uuid>,
    pub text: String,
    /// The status `done` gave, if it came.
    pub done: Option<String>,
    /// An answer replaced by regenerating: no row to compare with any more.
    pub replaced: bool,
    /// Violations seen on the wire (a gap or overlap of offsets, a failed resume, …).
    pub wire: Vec<String>,
    /// How many connections it took.
    pub connections: u32,
    /// Event names in order, for explaining a violation.
    pub trail: Vec<String>,
}

/// The shared parts of every client.
#[derive(Clone)]
pub struct Readers {
    addresses: Vec<SocketAddr>,
    key: String,
    http: reqwest::Client,
    pub counts: Arc<Counts>,
    statuses: Arc<Mutex<Vec<String>>>,
}

/// A request's outcome: an answer, or a connection that went away (the server was killed).
enum Sent {
    Answer(reqwest::Response),
    Gone,
}

impl Readers {
    pub fn new(
        addresses: Vec<SocketAddr>,
        key: String,
        counts: Arc<Counts>,
    ) -> reqwest::Result<Readers> {
        Ok(Readers {
            addresses,
            key,
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .build()?,
            counts,
            statuses: Arc::default(),
        })
    }

    /// Every 5xx any response had, as `METHOD path → status`.
    pub fn statuses(&self) -> Vec<String> {
        self.statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn url(&self, rng: &mut Rng, path: &str) -> String {
        let addr = self.addresses[rng.below(self.addresses.len())];
        format!("http://{addr}{path}")
    }

    async fn send(
        &self,
        rng: &mut Rng,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        last_event_id: Option<&str>,
    ) -> Sent {
        let mut request = self
            .http
            .request(method.clone(), self.url(rng, path))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                // `/v1` answers an upstream that failed before its first token with the
                // gateway's status (502, 504), as OpenAI's clients expect; anything else 5xx is
                // sluice's own failure.
                let relayed = path.starts_with("/v1/") && matches!(status.as_u16(), 502 | 504);
                if status.is_server_error() && !relayed {
                    let body = response.text().await.unwrap_or_default();
                    self.statuses
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(format!("{method} {path} → {status} {body}"));
                    return Sent::Gone;
                }
                if relayed {
                    Counts::add(&self.counts.upstream_failures_relayed);
                }
                Sent::Answer(response)
            }
            Err(_) => {
                Counts::add(&self.counts.connection_errors);
                Sent::Gone
            }
        }
    }

    /// A JSON request, tried again while the server is away (up to 30 s).
    async fn json(
        &self,
        rng: &mut Rng,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Sent::Answer(response) = self
                .send(rng, method.clone(), path, body.as_ref(), None)
                .await
                && let Ok(value) = response.json::<Value>().await
            {
                return Some(value);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// One exchange in a random dialect; what its readers saw.
    pub async fn exchange(&self, rng: &mut Rng) -> Vec<Reading> {
        Counts::add(&self.counts.exchanges);
        let dialect = rng.below(4);
        Counts::add(&self.counts.by_dialect[dialect]);
        match dialect {
            0 => self.conversation(rng).await,
            1 => self.session(rng).await,
            2 => self.agent_chat(rng).await,
            _ => {
                self.completion(rng).await;
                Vec::new()
            }
        }
    }

    /// The conversations API: a chat, a question, the inference stream.
    async fn conversation(&self, rng: &mut Rng) -> Vec<Reading> {
        let Some(chat) = self
            .json(
                rng,
                reqwest::Method::POST,
                "/chats/create",
                Some(json!({"name": "soak"})),
            )
            .await
        else {
            return Vec::new();
        };
        let chat = chat["id"].as_str().unwrap_or_default().to_owned();
        // Posted once: a question whose answer never came back may still be stored, and the
        // inference below answers it (sent again, it would be a second question).
        let question = json!({"chat_id": chat, "role": "Human", "message": "Tell me."});
        let _ = self
            .send(
                rng,
                reqwest::Method::POST,
                "/conversations/create",
                Some(&question),
                None,
            )
            .await;
        let path = format!("/conversations/inference/{chat}");
        let stop = format!("/conversations/stop/{chat}");
        let reading = self
            .read(
                rng,
                "conversations",
                Opening::Get(path.clone()),
                &|_| path.clone(),
                Some(&stop),
            )
            .await;
        vec![reading]
    }

    /// The workspace API: a session, a streamed message, sometimes a regenerate.
    async fn session(&self, rng: &mut Rng) -> Vec<Reading> {
        let Some(session) = self
            .json(
                rng,
                reqwest::Method::POST,
                "/api/workspaces/default/chats/",
                Some(json!({})),
            )
            .await
        else {
            return Vec::new();
        };
        let base = format!(
            "/api/workspaces/default/chats/{}",
            session["id"].as_str().unwrap_or_default()
        );
        let resume = |answer: Uuid| format!("{base}/messages/{answer}/stream/");
        let stop = format!("{base}/stop/");
        let mut first = self
            .read(
                rng,
                "workspace",
                Opening::Post(
                    format!("{base}/messages/?stream=true"),
                    json!({"role": "user", "content": "Tell me."}),
                ),
                &resume,
                Some(&stop),
            )
            .await;
        if first.answer.is_none() || !rng.chance(0.3) {
            return vec![first];
        }
        Counts::add(&self.counts.regenerates);
        let second = self
            .read(
                rng,
                "workspace",
                Opening::Post(
                    format!("{base}/messages/regenerate/?stream=true"),
                    json!({}),
                ),
                &resume,
                Some(&stop),
            )
            .await;
        // Whether it started (and replaced the first answer's row) is not always known to a
        // client whose request was cut by a kill: the first answer is no longer compared.
        first.replaced = true;
        vec![first, second]
    }

    /// The agent API: an agent, a chat, a streamed message.
    async fn agent_chat(&self, rng: &mut Rng) -> Vec<Reading> {
        let Some(agent) = self
            .json(
                rng,
                reqwest::Method::POST,
                "/agent",
                Some(json!({"name": "soak"})),
            )
            .await
        else {
            return Vec::new();
        };
        let Some(chat) = self
            .json(
                rng,
                reqwest::Method::POST,
                "/chat",
                Some(json!({"agentId": agent["id"]})),
            )
            .await
        else {
            return Vec::new();
        };
        let chat = chat["id"].as_str().unwrap_or_default().to_owned();
        let resume = |answer: Uuid| format!("/chat/{chat}/message/{answer}/stream");
        let reading = self
            .read(
                rng,
                "agent",
                Opening::Post(
                    format!("/chat/{chat}/message?stream=true"),
                    json!({"content": "Tell me."}),
                ),
                &resume,
                None,
            )
            .await;
        vec![reading]
    }

    /// `/v1`: a streamed completion, relayed as it comes (nothing to resume).
    async fn completion(&self, rng: &mut Rng) {
        Counts::add(&self.counts.openai_streams);
        let body = json!({
            "model": "openai/soak", "stream": true,
            "messages": [{"role": "user", "content": "Tell me."}],
        });
        let Sent::Answer(response) = self
            .send(
                rng,
                reqwest::Method::POST,
                "/v1/chat/completions",
                Some(&body),
                None,
            )
            .await
        else {
            return;
        };
        let full = full_text();
        let mut text = String::new();
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if event.data == "[DONE]" {
                break;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            let choice = &chunk["choices"][0];
            if let Some(delta) = choice["delta"]["content"].as_str() {
                text.push_str(delta);
            }
            let cut_short = choice["finish_reason"] == "stop" && text != full;
            if !full.starts_with(&text) || cut_short {
                self.statuses
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("/v1 stream text is not the upstream's: {text:?}"));
                break;
            }
        }
    }

    /// Reads one answer to its end: leaving at random, coming back with `Last-Event-ID`, after
    /// kills to whichever replica answers, stopping it sometimes.
    async fn read(
        &self,
        rng: &mut Rng,
        dialect: &'static str,
        opening: Opening,
        resume_path: &(dyn Fn(Uuid) -> String + Sync),
        stop_path: Option<&str>,
    ) -> Reading {
        let mut reading = Reading {
            dialect,
            ..Reading::default()
        };
        let leave_after = rng.chance(0.4).then(|| 1 + rng.below(CHUNKS.len()));
        let stop_after = stop_path
            .filter(|_| rng.chance(0.1))
            .map(|_| 1 + rng.below(CHUNKS.len()));
        let deadline = Instant::now() + PATIENCE;
        let mut last_id: Option<String> = None;
        let mut deltas = 0usize;
        let mut first = true;
        loop {
            if Instant::now() > deadline {
                reading
                    .wire
                    .push("the answer did not end within 90 s".into());
                return reading;
            }
            let sent = match (&opening, first, reading.answer) {
                (Opening::Post(path, body), true, _) => {
                    self.send(rng, reqwest::Method::POST, path, Some(body), None)
                        .await
                }
                (Opening::Get(path), _, _) => {
                    self.send(rng, reqwest::Method::GET, path, None, last_id.as_deref())
                        .await
                }
                (Opening::Post(..), false, Some(answer)) => {
                    self.send(
                        rng,
                        reqwest::Method::GET,
                        &resume_path(answer),
                        None,
                        last_id.as_deref(),
                    )
                    .await
                }
                // The question's POST never answered: which answer it started, if any, is
                // unknown to this reader (the database check still counts it).
                (Opening::Post(..), false, None) => return reading,
            };
            if !first {
                Counts::add(&self.counts.resumes);
            }
            reading.connections += 1;
            first = false;
            let response = match sent {
                Sent::Answer(response) => response,
                Sent::Gone => {
                    tokio::time::sleep(Duration::from_millis(100 + rng.below(300) as u64)).await;
                    continue;
                }
            };
            if response.status() == reqwest::StatusCode::NO_CONTENT {
                reading
                    .wire
                    .push("a resume answered 204 before `done`".into());
                return reading;
            }
            if !response.status().is_success() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                // A regenerate with nothing to answer, a refused question: no answer to read.
                if reading.answer.is_none() && status.is_client_error() {
                    return reading;
                }
                reading
                    .wire
                    .push(format!("a resume answered {status}: {body}"));
                return reading;
            }
            if reading.answer.is_none() {
                reading.answer = response
                    .headers()
                    .get("x-message-id")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| Uuid::parse_str(v).ok());
            }
            let mut events = response.bytes_stream().eventsource();
            let mut left = false;
            while let Some(event) = events.next().await {
                let Ok(event) = event else {
                    reading.trail.push("cut".into());
                    break;
                };
                reading.trail.push(format!("{}@{}", event.event, event.id));
                match event.event.as_str() {
                    // The conversations API sends each delta's text as it is, unnamed.
                    name @ ("delta" | "message") => {
                        let content = if name == "message" {
                            event.data.clone()
                        } else {
                            serde_json::from_str::<Value>(&event.data)
                                .ok()
                                .and_then(|d| d["content"].as_str().map(str::to_owned))
                                .unwrap_or_default()
                        };
                        reading.text.push_str(&content);
                        if let Some((answer, offset)) = event.id.split_once(':') {
                            reading.answer = Uuid::parse_str(answer).ok().or(reading.answer);
                            if offset.parse::<usize>().ok() != Some(reading.text.len()) {
                                reading.wire.push(format!(
                                    "a delta ends at {offset} but the reader holds {} bytes",
                                    reading.text.len()
                                ));
                                return reading;
                            }
                        }
                        last_id = Some(event.id.clone());
                        deltas += 1;
                        if stop_after == Some(deltas)
                            && let Some(stop) = stop_path
                        {
                            Counts::add(&self.counts.stops);
                            let _ = self
                                .send(rng, reqwest::Method::POST, stop, Some(&json!({})), None)
                                .await;
                        }
                        if leave_after == Some(deltas) {
                            Counts::add(&self.counts.walkaways);
                            left = true;
                            break;
                        }
                    }
                    "done" => {
                        let data = serde_json::from_str::<Value>(&event.data).unwrap_or_default();
                        let status = data["status"]
                            .as_str()
                            .or_else(|| data["message"]["status"].as_str())
                            .unwrap_or("unknown");
                        reading.done = Some(status.to_owned());
                        Counts::add(&self.counts.answers_read);
                        return reading;
                    }
                    other => {
                        if !event.id.is_empty() {
                            last_id = Some(event.id.clone());
                        }
                        // A client keeps what was saved: `saved_bytes` says where the saved
                        // answer ends when the server stopped before saving what it streamed.
                        let saved = (other == "error")
                            .then(|| serde_json::from_str::<Value>(&event.data).ok())
                            .flatten()
                            .and_then(|d| d["saved_bytes"].as_u64().or(d["savedBytes"].as_u64()))
                            .map(|n| n as usize);
                        if let Some(saved) = saved.filter(|n| *n < reading.text.len()) {
                            if !reading.text.is_char_boundary(saved) {
                                reading
                                    .wire
                                    .push(format!("saved_bytes {saved} is inside a character"));
                                return reading;
                            }
                            reading.text.truncate(saved);
                            Counts::add(&self.counts.told_shorter);
                        }
                    }
                }
            }
            if left {
                tokio::time::sleep(Duration::from_millis(rng.below(500) as u64)).await;
            }
        }
    }
}

/// How an answer's reading starts: posting the question, or opening its stream.
enum Opening {
    Post(String, Value),
    Get(String),
}
