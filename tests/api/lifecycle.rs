//! Start-up, shutdown and crashes: an answer survives them all.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// `w0 w1 w2 …`, `chunks` words, `delay_ms` apart.
pub(crate) fn slow(chunks: usize, delay_ms: u64) -> Script {
    let words: Vec<String> = (0..chunks).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut s = Script::text(&refs);
    s.chunk_delay_ms = delay_ms;
    s
}

#[tokio::test]
async fn shutdown_tells_open_streams_to_retry_and_lets_running_answers_finish() {
    let mut app = spawn_app().await;
    app.mock.push(slow(8, 100));
    let chat = app.chat_with_question("q").await;
    let response = app
        .get(&format!("/conversations/inference/{chat}"))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(response.text());
    tokio::time::sleep(Duration::from_millis(250)).await;

    app.shutdown().await.expect("clean shutdown");

    let raw = reader.await.unwrap().unwrap();
    assert!(raw.contains("retry: 1000\n"), "{raw}");
    assert!(!raw.contains("event: done"), "{raw}");
    let answer = app
        .services
        .store()
        .list_messages(chat.parse().unwrap(), false)
        .await
        .unwrap();
    let answer = answer.last().unwrap();
    assert_eq!(answer.role, "assistant");
    assert_eq!(answer.status, "complete");
    assert_eq!(
        answer.content,
        (0..8).map(|i| format!("w{i} ")).collect::<String>()
    );
}

#[tokio::test]
async fn answers_still_running_after_the_grace_period_are_saved_as_incomplete() {
    let mut app = spawn_app_with(|s| s.shutdown_grace = Duration::from_millis(300)).await;
    app.mock.push(slow(50, 100));
    let chat = app.chat_with_question("q").await;
    let mut sse = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    assert_eq!(sse.next().await.unwrap().event, "message");

    app.shutdown().await.expect("clean shutdown");

    let messages = app
        .services
        .store()
        .list_messages(chat.parse().unwrap(), false)
        .await
        .unwrap();
    let answer = messages.last().unwrap();
    assert_eq!(answer.status, "incomplete");
    assert!(answer.content.starts_with("w0 "), "{}", answer.content);
    assert!(answer.content.len() < 50 * 3);
    assert!(app.mock.wait_for_aborted(1, Duration::from_secs(5)).await);
}

/// A sluice process of its own, for what only a process can show (SIGKILL, SIGTERM, exit code,
/// what it prints).
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) base: String,
    stderr: Arc<Mutex<String>>,
}

/// A test that fails midway must not leave its server running.
impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

impl Process {
    /// Opens the answer stream of a chat, as an SSE client would.
    pub(crate) async fn stream(
        &self,
        client: &reqwest::Client,
        key: &str,
        chat_id: &str,
    ) -> SseClient {
        SseClient::new(
            client
                .get(format!("{}/conversations/inference/{chat_id}", self.base))
                .bearer_auth(key)
                .send()
                .await
                .unwrap(),
        )
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Creates a chat named `name` with one question; returns the chat id.
    pub(crate) async fn ask(&self, client: &reqwest::Client, key: &str, name: &str) -> String {
        self.ask_this(client, key, name, "q").await
    }

    /// Creates a chat named `name` with `question`; returns the chat id.
    pub(crate) async fn ask_this(
        &self,
        client: &reqwest::Client,
        key: &str,
        name: &str,
        question: &str,
    ) -> String {
        let chat: Value = client
            .post(format!("{}/chats/create", self.base))
            .bearer_auth(key)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let chat_id = chat["id"].as_str().unwrap().to_owned();
        let created = client
            .post(format!("{}/conversations/create", self.base))
            .bearer_auth(key)
            .json(&json!({"chat_id": chat_id, "role": "Human", "message": question}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        chat_id
    }
}

pub(crate) fn sluice_command(database_url: &str, mock: &MockUpstream) -> Command {
    sluice_command_via(
        Command::new(env!("CARGO_BIN_EXE_sluice")),
        database_url,
        mock,
    )
}

/// The sluice binary under `prlimit`, with `files` as its open-file limit (soft and hard).
pub(crate) fn sluice_command_with_file_limit(
    files: u64,
    database_url: &str,
    mock: &MockUpstream,
) -> Command {
    let mut prlimit = Command::new("prlimit");
    prlimit
        .arg(format!("--nofile={files}:{files}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_sluice"));
    sluice_command_via(prlimit, database_url, mock)
}

fn sluice_command_via(mut command: Command, database_url: &str, mock: &MockUpstream) -> Command {
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SLUICE_LISTEN", "127.0.0.1:0")
        .env("SLUICE_DATABASE_URL", database_url)
        .env("OPENAI_BASE_URL", mock.base_url())
        .env("OPENAI_API_KEY", "test-upstream-key")
        .env("SLUICE_DEFAULT_MODEL", "openai/mock-model")
        .env("SLUICE_CHECKPOINT_INTERVAL_MS", "100")
        .env("SLUICE_SHUTDOWN_GRACE_SECS", "10")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    command
}

/// Waits for a process that must stop by itself; kills it and fails if it keeps running.
fn exits_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("the process kept running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn start_process(database_url: &str, mock: &MockUpstream, admin_key: Option<&str>) -> Process {
    let mut command = sluice_command(database_url, mock);
    if let Some(key) = admin_key {
        command.env("SLUICE_ADMIN_KEY", key);
    }
    spawn_process(command)
}

/// Starts sluice on one address and database, as often as called: a process killed by a test
/// is followed by one that its clients find where they left the first. It checkpoints once a
/// second, so that a reader is ahead of the database when the process dies.
pub(crate) fn restartable<'a>(
    database_url: &'a str,
    mock: &'a MockUpstream,
    key: &'a str,
) -> impl Fn() -> Process + 'a {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    move || {
        let mut command = sluice_command(database_url, mock);
        command
            .env("SLUICE_ADMIN_KEY", key)
            .env("SLUICE_LISTEN", format!("127.0.0.1:{port}"))
            .env("SLUICE_CHECKPOINT_INTERVAL_MS", "1000");
        spawn_process(command)
    }
}

/// Starts `command` (a sluice server) and waits until it listens.
pub(crate) fn spawn_process(mut command: Command) -> Process {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let stderr = child.stderr.take().unwrap();
    let collected = Arc::new(Mutex::new(String::new()));
    let sink = collected.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on http://").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("sluice did not start");
    Process {
        child,
        base: format!("http://{addr}"),
        stderr: collected,
    }
}

#[tokio::test]
async fn a_process_killed_mid_stream_leaves_the_partial_answer_incomplete_after_restart() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(slow(100, 50));
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let client = reqwest::Client::new();
    let mut first = start_process(&database_url, &mock, Some(&key));
    let chat_id = first.ask(&client, &key, "crash").await;
    let mut sse = first.stream(&client, &key, &chat_id).await;
    let mut seen = String::new();
    while seen.len() < 30 {
        let e = sse.next().await.unwrap();
        if e.event == "message" {
            seen.push_str(&e.data);
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut second = start_process(&database_url, &mock, Some(&key));

    let list: Vec<Value> = client
        .get(format!("{}/conversations/?chat_id={chat_id}", second.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let saved = list
        .iter()
        .find(|c| c["role"] == "Assistant")
        .expect("partial answer saved");
    let saved_text = saved["message"].as_str().unwrap();
    assert!(
        saved_text.len() >= seen.len(),
        "saved {saved_text:?}, seen {seen:?}"
    );
    assert!(saved_text.starts_with("w0 w1 "), "{saved_text}");
    let replay = second.stream(&client, &key, &chat_id).await.collect().await;
    assert_eq!(text_of(&replay), saved_text);
    let done = named(&replay, "done").unwrap();
    assert_eq!(done["status"], "incomplete");
    assert_eq!(named(&replay, "error").unwrap()["code"], "interrupted");
    assert_eq!(mock.request_count(), 1);
    second.child.kill().ok();
    second.child.wait().ok();
}

#[tokio::test]
async fn sigterm_exits_zero_after_finishing_the_running_answer() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(slow(10, 50));
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let client = reqwest::Client::new();
    let mut process = start_process(&database_url, &mock, Some(&key));
    let chat_id = process.ask(&client, &key, "term").await;
    let response = client
        .get(format!(
            "{}/conversations/inference/{chat_id}",
            process.base
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(response.text());
    tokio::time::sleep(Duration::from_millis(150)).await;

    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || process.child.wait().unwrap())
        .await
        .unwrap();

    assert_eq!(exit.code(), Some(0));
    let raw = reader.await.unwrap().unwrap();
    assert!(raw.contains("retry: 1000\n"), "{raw}");
    let store = sluice::store::Store::connect(&database_url).await.unwrap();
    let messages = store
        .list_messages(chat_id.parse().unwrap(), false)
        .await
        .unwrap();
    let answer = messages.last().unwrap();
    assert_eq!(answer.status, "complete");
    assert_eq!(
        answer.content,
        (0..10).map(|i| format!("w{i} ")).collect::<String>()
    );
}

#[tokio::test]
async fn a_first_start_prints_an_admin_key_once_and_never_logs_keys() {
    let mock = MockUpstream::start().await.unwrap();
    let (database_url, _dir) = fresh_database().await;
    let mut first = start_process(&database_url, &mock, None);
    let printed = first.stderr();
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("sk_live_"))
        .expect("the first start prints a key")
        .to_owned();
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("{}/chats/", first.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // A key in a URL must not reach the log either.
    let refused = client
        .get(format!("{}/chats/?key={key}", first.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert_eq!(
        first.stderr().matches(&key).count(),
        1,
        "the key was printed more than once"
    );

    let mut second = start_process(&database_url, &mock, None);
    let again = client
        .get(format!("{}/chats/", second.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    assert!(!second.stderr().contains("sk_live_"), "{}", second.stderr());
}

#[tokio::test]
async fn the_cli_migrates_creates_workspaces_and_prints_keys_that_work() {
    let mock = MockUpstream::start().await.unwrap();
    let (database_url, _dir) = fresh_database().await;
    let run = |args: &[&str]| {
        let out = sluice_command(&database_url, &mock)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };

    run(&["migrate"]);
    let workspace = run(&["workspaces", "create", "acme"]);
    let key = run(&[
        "keys",
        "create",
        "--workspace",
        "acme",
        "--kind",
        "secret",
        "--name",
        "ci",
    ]);
    let publishable = run(&[
        "keys",
        "create",
        "--workspace",
        &workspace,
        "--kind",
        "publishable",
        "--origin",
        "https://app.example",
    ]);
    let limited = run(&["keys", "create", "--workspace", "acme", "--rate-limit", "2"]);
    let refused = sluice_command(&database_url, &mock)
        .args(["keys", "create", "--rate-limit", "0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--rate-limit"));
    let duplicate = sluice_command(&database_url, &mock)
        .args(["workspaces", "create", "acme"])
        .output()
        .unwrap();

    assert!(uuid::Uuid::parse_str(&workspace).is_ok(), "{workspace}");
    assert!(key.starts_with("sk_live_") && key.len() == 40, "{key}");
    assert!(publishable.starts_with("pk_live_"), "{publishable}");
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));
    let mut process = start_process(&database_url, &mock, None);
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/chats/create", process.base))
        .bearer_auth(&key)
        .json(&json!({"name": "acme chat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let listed: Vec<Value> = client
        .get(format!("{}/chats/", process.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    // The key's own limit, not the default of its kind.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = client
            .get(format!("{}/chats/", process.base))
            .bearer_auth(&limited)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-ratelimit-limit"], "2");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

#[tokio::test]
async fn a_bad_configuration_stops_the_start_with_a_message_naming_it() {
    let mock = MockUpstream::start().await.unwrap();
    let (database_url, _dir) = fresh_database().await;

    let auth_off_public = sluice_command(&database_url, &mock)
        .env("SLUICE_AUTH", "off")
        .env("SLUICE_LISTEN", "0.0.0.0:0")
        .output()
        .unwrap();
    let bad_key = sluice_command(&database_url, &mock)
        .env("OPENAI_API_KEY", "sk-abc\ndef")
        .output()
        .unwrap();

    assert!(!auth_off_public.status.success());
    assert!(String::from_utf8_lossy(&auth_off_public.stderr).contains("SLUICE_LISTEN"));
    assert!(!bad_key.status.success());
    let message = String::from_utf8_lossy(&bad_key.stderr);
    assert!(message.contains("openai"), "{message}");
    assert!(!message.contains("sk-abc"), "{message}");

    // A search backend selected without what it needs is refused, naming the variable.
    for (provider, variable) in [
        ("brave", "BRAVE_API_KEY"),
        ("tavily", "TAVILY_API_KEY"),
        ("searxng", "SLUICE_SEARXNG_URL"),
        ("bing", "SLUICE_SEARCH_PROVIDER"),
    ] {
        let child = sluice_command(&database_url, &mock)
            .env("SLUICE_SEARCH_PROVIDER", provider)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = exits_within(child, Duration::from_secs(30));
        assert!(!output.status.success(), "{provider}");
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(message.contains(variable), "{provider}: {message}");
    }
}

/// Reads deltas until `at_least` bytes arrived; returns the text and the last event id.
async fn read_text(sse: &mut SseClient, at_least: usize) -> (String, String) {
    let (mut seen, mut last_id) = (String::new(), String::new());
    while seen.len() < at_least {
        let e = sse.next().await.expect("the stream goes on");
        if e.event == "message" {
            seen.push_str(&e.data);
            last_id = e.id;
        }
    }
    (seen, last_id)
}

#[tokio::test]
async fn after_a_crash_a_resume_beyond_the_saved_text_gets_interrupted_and_done_not_a_400() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(slow(300, 20));
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let client = reqwest::Client::new();
    let server = restartable(&database_url, &mock, &key);
    let mut first = server();
    let chat_id = first.ask(&client, &key, "crash").await;
    let mut sse = first.stream(&client, &key, &chat_id).await;
    // Past the first checkpoint, and on into the next second.
    let (seen, last_id) = read_text(&mut sse, 300).await;

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut second = server();
    let (message_id, offset) = last_id.split_once(':').unwrap();
    assert_eq!(offset.parse::<usize>().unwrap(), seen.len());
    let store = sluice::store::Store::connect(&database_url).await.unwrap();
    let saved = store
        .list_messages(chat_id.parse().unwrap(), false)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.role == "assistant")
        .expect("the answer's row");
    assert_eq!(saved.status, "incomplete");
    assert!(
        saved.content.len() < seen.len(),
        "the reader held more than was saved: saved {}, seen {}",
        saved.content.len(),
        seen.len()
    );
    assert!(seen.starts_with(&saved.content));
    assert!(!saved.content.is_empty(), "a checkpoint was written");

    // The reader resumes from what it holds: no 400, but `interrupted` and `done`.
    let resume = |id: String| {
        let client = client.clone();
        let url = format!("{}/conversations/inference/{chat_id}", second.base);
        let key = key.clone();
        async move {
            let response = client
                .get(url)
                .bearer_auth(&key)
                .header("last-event-id", &id)
                .send()
                .await
                .unwrap();
            let status = response.status();
            if status != 200 {
                panic!("{id}: {status}: {}", response.text().await.unwrap());
            }
            SseClient::new(response).collect().await
        }
    };
    let events = resume(last_id.clone()).await;
    assert_eq!(text_of(&events), "", "nothing the reader has is sent again");
    let error = named(&events, "error").expect("an error event");
    assert_eq!(error["code"], "interrupted");
    assert_eq!(error["saved_bytes"], saved.content.len());
    let done = named(&events, "done").expect("a done event");
    assert_eq!(done["status"], "incomplete");
    assert_eq!(done["conversation"]["message"], saved.content);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["error", "done"]);

    // The workspace API's stream of the same answer says the same, in its own shape.
    let response = client
        .get(format!(
            "{}/api/workspaces/default/chats/{chat_id}/messages/{message_id}/stream/",
            second.base
        ))
        .bearer_auth(&key)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = SseClient::new(response).collect().await;
    let error = named(&events, "error").expect("an error event");
    assert_eq!(error["code"], "interrupted");
    assert_eq!(error["saved_bytes"], saved.content.len());
    assert_eq!(
        named(&events, "done").unwrap()["message"]["status"],
        "incomplete"
    );

    // A resume inside the saved text gets the rest of it, byte for byte.
    let inside = saved.content.len() / 2;
    let events = resume(format!("{message_id}:{inside}")).await;
    assert_eq!(text_of(&events), &saved.content[inside..]);
    assert_eq!(named(&events, "error").unwrap()["code"], "interrupted");
    assert_eq!(named(&events, "done").unwrap()["status"], "incomplete");
    assert_eq!(mock.request_count(), 1, "no second upstream call");
    second.child.kill().ok();
    second.child.wait().ok();
}

#[tokio::test]
async fn a_crash_the_moment_the_upstream_is_called_leaves_a_row_with_estimated_usage_for_each_call()
{
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(Script {
        first_delay_ms: 10_000,
        ..Script::text(&["never ", "sent"])
    });
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let client = reqwest::Client::new();
    let mut first = start_process(&database_url, &mock, Some(&key));
    let mut chats = Vec::new();
    for i in 0..5 {
        let chat_id = first
            .ask_this(
                &client,
                &key,
                &format!("chat {i}"),
                &format!("question {i}"),
            )
            .await;
        chats.push(chat_id);
    }

    // Every stream opens at once; the process dies as soon as the upstream sees a request.
    for chat_id in &chats {
        let request = client
            .get(format!("{}/conversations/inference/{chat_id}", first.base))
            .bearer_auth(&key)
            .send();
        tokio::spawn(request);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mock.request_count() == 0 {
        assert!(std::time::Instant::now() < deadline, "no upstream call");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let called = mock.requests();
    let mut second = start_process(&database_url, &mock, Some(&key));

    let store = sluice::store::Store::connect(&database_url).await.unwrap();
    let workspace = store.find_workspace("default").await.unwrap().unwrap();
    let usage = store.usage_records(workspace.id).await.unwrap();
    assert!(!called.is_empty());
    for request in &called {
        let question = request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned();
        let i: usize = question.trim_start_matches("question ").parse().unwrap();
        let answer = store
            .list_messages(chats[i].parse().unwrap(), false)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.role == "assistant")
            .unwrap_or_else(|| panic!("no answer row for the upstream call of {question:?}"));
        assert_eq!(answer.status, "incomplete");
        assert!(answer.usage.estimated);
        assert!(answer.usage.prompt_tokens > 0, "{answer:?}");
        assert!(
            usage
                .iter()
                .any(|u| u.message_id == Some(answer.id) && u.estimated),
            "the call's usage is charged"
        );
    }
    second.child.kill().ok();
    second.child.wait().ok();
}

/// A question posted through the workspace or agent API promises its answer in its own
/// transaction; a kill before the answer's first row leaves that promise, and the next start
/// keeps it: the question gets a `failed` answer, under the id its client was given.
#[tokio::test]
async fn a_question_whose_server_died_before_its_answer_row_gets_a_failed_answer_on_restart() {
    let mock = MockUpstream::start().await.unwrap();
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let client = reqwest::Client::new();
    let server = restartable(&database_url, &mock, &key);
    let mut first = server();
    let session: serde_json::Value = client
        .post(format!("{}/api/workspaces/default/chats/", first.base))
        .bearer_auth(&key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat_id: uuid::Uuid = session["id"].as_str().unwrap().parse().unwrap();
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // What a process killed between the question and its answer's row leaves behind.
    let store = sluice::store::Store::connect(&database_url).await.unwrap();
    let answer_id = uuid::Uuid::now_v7();
    let question = store
        .insert_message(
            chat_id,
            sluice::domain::Role::User,
            "asked just before a crash".into(),
            Some(sluice::store::Pledge {
                answer_id,
                owner: uuid::Uuid::new_v4(),
            }),
        )
        .await
        .unwrap();

    let mut second = server();
    let base = format!("{}/api/workspaces/default/chats/{chat_id}", second.base);
    let messages: serde_json::Value = client
        .get(format!("{base}/messages/"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answers: Vec<&serde_json::Value> = messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(answers.len(), 1, "{messages}");
    assert_eq!(answers[0]["id"], answer_id.to_string());
    assert_eq!(answers[0]["status"], "failed");
    assert_eq!(answers[0]["content"], "");
    let saved = store.answer_to(question.id).await.unwrap().unwrap();
    assert_eq!(saved.id, answer_id);

    // Its client, holding `X-Message-Id`, learns why.
    let response = client
        .get(format!("{base}/messages/{answer_id}/stream/"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = SseClient::new(response).collect().await;
    assert_eq!(named(&events, "error").unwrap()["code"], "interrupted");
    assert_eq!(
        named(&events, "done").unwrap()["message"]["status"],
        "failed"
    );
    assert_eq!(mock.request_count(), 0, "nothing was asked of the provider");
    second.child.kill().ok();
    second.child.wait().ok();
}
