//! The terminal client (`examples/chat`), run as a child process against a real sluice: the
//! answer byte for byte on stdout, resume after a cut connection, Ctrl-C, interactive input,
//! HTTP errors.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::time::timeout;

use crate::helpers::*;

/// Every test's bound: a hang fails instead of blocking CI.
const LIMIT: Duration = Duration::from_secs(60);

/// The `chat` example, built once per run: `cargo test` builds examples but `cargo test --test
/// api` does not, and a binary left from an earlier build may be stale. Up to date, this is a
/// no-op build of well under a second.
fn chat_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_chat_binary).clone()
}

fn build_chat_binary() -> PathBuf {
    // target/<profile>/deps/api-<hash>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("unexpected test binary path {}", exe.display()),
    };
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo
        .args([
            "build",
            "--quiet",
            "--example",
            "chat",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // What cargo set for this test binary would leak into build scripts that watch it (ring
    // watches CARGO_MANIFEST_DIR) and rebuild half the dependency tree, for everyone.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_this_crate) {
            cargo.env_remove(name);
        }
    }
    let status = cargo.status().unwrap();
    assert!(status.success(), "cargo build --example chat failed");
    let binary = profile_dir
        .join("examples")
        .join(format!("chat{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.exists(), "no {}", binary.display());
    binary
}

fn set_by_cargo_for_this_crate(name: &str) -> bool {
    const PREFIXES: [&str; 5] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_TARGET_TMPDIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || [
            "CARGO",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name)
}

/// The client pointed at `base` with the admin key; standard input closed.
fn client(base: &str, key: &str) -> Command {
    let mut command = Command::new(chat_binary());
    command
        .args(["--url", base, "--key", key])
        .env_remove("SLUICE_URL")
        .env_remove("SLUICE_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The chat id the client announced on stderr (`chat <id> (continue it with --chat <id>)`).
fn announced_chat(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("chat "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no chat id on stderr: {stderr}"))
        .to_owned()
}

/// The stored answer's text and status, as a replay of the finished stream reports them.
async fn stored_text_and_status(app: &TestApp, chat: &str) -> (String, String) {
    let events = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    let done = named(&events, "done").expect("done event");
    let stored = app.stored_answer(chat).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text_of(&events), stored);
    (stored, done["status"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_terminal_client_prints_the_stored_answer_byte_for_byte() {
    timeout(LIMIT, prints_the_stored_answer_byte_for_byte())
        .await
        .expect("test timed out");
}

async fn prints_the_stored_answer_byte_for_byte() {
    let app = spawn_app().await;
    let mut script = Script::text(&[
        "  leading spaces\r",
        "\nCRLF split above\r\nblank line below\n\n",
        "data: not a field\n",
        "emoji 😀 split 👩‍👩‍👧",
        " trailing space ",
    ]);
    script.split_utf8 = true;
    app.mock.push(script);

    let output = client(&app.base, &app.key)
        .args(["What", "is", "tricky?"])
        .output()
        .await
        .unwrap();

    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let chat = announced_chat(&stderr);
    let (stored, status) = stored_text_and_status(&app, &chat).await;
    assert_eq!(status, "complete");
    assert_eq!(
        stored,
        "  leading spaces\nCRLF split above\nblank line below\n\ndata: not a field\nemoji 😀 split 👩‍👩‍👧 trailing space "
    );
    assert_eq!(stdout, stored);
    assert!(!stdout.contains(&app.key) && !stderr.contains(&app.key));
    let chat_row: serde_json::Value = app
        .get(&format!("/chats/{chat}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(chat_row["name"], "What is tricky?");
}

#[tokio::test]
async fn the_terminal_client_resumes_a_cut_stream_without_repeating_anything() {
    timeout(LIMIT, resumes_a_cut_stream())
        .await
        .expect("test timed out");
}

async fn resumes_a_cut_stream() {
    let app = spawn_app().await;
    let chunks: Vec<String> = (0..30).map(|i| format!("chunk {i}, ")).collect();
    let mut script = Script::text(&chunks.iter().map(String::as_str).collect::<Vec<_>>());
    script.chunk_delay_ms = 30;
    app.mock.push(script);
    let backend = app.base.trim_start_matches("http://").parse().unwrap();
    // Headers, the opening comment and a few events, then a cut inside an event.
    let proxy = CuttingProxy::start(backend, 700).await;
    let chat = app.create_chat("resume").await;

    let output = client(&proxy.base(), &app.key)
        .args(["--chat", &chat, "count"])
        .output()
        .await
        .unwrap();

    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(proxy.was_cut(), "the proxy never cut the stream");
    let requests = proxy.inference_requests();
    assert!(requests.len() >= 2, "no reconnection: {requests:?}");
    assert!(
        requests[1].to_ascii_lowercase().contains("last-event-id: "),
        "no Last-Event-ID: {}",
        requests[1]
    );
    let (stored, status) = stored_text_and_status(&app, &chat).await;
    assert_eq!(status, "complete");
    assert_eq!(stored, chunks.concat());
    assert_eq!(stdout, stored);
    assert!(stderr.contains("connection lost"), "stderr: {stderr}");
}

#[tokio::test]
async fn ctrl_c_in_the_terminal_client_stops_the_answer_and_prints_all_of_its_text() {
    timeout(LIMIT, ctrl_c_stops_the_answer())
        .await
        .expect("test timed out");
}

async fn ctrl_c_stops_the_answer() {
    let app = spawn_app().await;
    let chunks: Vec<String> = (0..200).map(|i| format!("word{i} ")).collect();
    let mut script = Script::text(&chunks.iter().map(String::as_str).collect::<Vec<_>>());
    script.chunk_delay_ms = 50;
    app.mock.push(script);
    let chat = app.create_chat("interrupted").await;
    let mut child = client(&app.base, &app.key)
        .args(["--chat", &chat, "talk", "for", "long"])
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut printed = Vec::new();
    while printed.len() < 20 {
        let mut buf = [0u8; 256];
        let n = stdout.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client ended before printing anything");
        printed.extend_from_slice(&buf[..n]);
    }

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    stdout.read_to_end(&mut printed).await.unwrap();
    let output = child.wait_with_output().await.unwrap();

    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(130), "stderr: {stderr}");
    let (stored, status) = stored_text_and_status(&app, &chat).await;
    assert_eq!(status, "cancelled");
    assert!(
        stored.len() < chunks.concat().len(),
        "not stopped: {stored}"
    );
    assert_eq!(String::from_utf8(printed).unwrap(), stored);
}

#[tokio::test]
async fn the_terminal_client_answers_each_line_of_its_input_in_one_chat() {
    timeout(LIMIT, answers_each_line_of_its_input())
        .await
        .expect("test timed out");
}

async fn answers_each_line_of_its_input() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["first ", "answer\n"]));
    app.mock.push(Script::text(&["second answer"]));
    let mut command = client(&app.base, &app.key);
    let mut child = command.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"one\n\n  \ntwo\n").await.unwrap();
    drop(stdin);

    let output = child.wait_with_output().await.unwrap();

    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "first answer\nsecond answer"
    );
    // Standard input is no terminal: no prompt.
    assert!(!stderr.contains("> "), "stderr: {stderr}");
    let chat = announced_chat(&stderr);
    let messages: Vec<(String, String)> = app
        .conversations(&chat)
        .await
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap().to_owned();
            (field("role"), field("message"))
        })
        .collect();
    let expected = [
        ("Human", "one"),
        ("Assistant", "first answer\n"),
        ("Human", "two"),
        ("Assistant", "second answer"),
    ]
    .map(|(role, message)| (role.to_owned(), message.to_owned()));
    assert_eq!(messages, expected);
}

#[tokio::test]
async fn the_terminal_client_reports_an_http_error_and_exits_2() {
    timeout(LIMIT, reports_an_http_error())
        .await
        .expect("test timed out");
}

async fn reports_an_http_error() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4().to_string();

    let output = client(&app.base, &app.key)
        .args(["--chat", &unknown, "hello?"])
        .output()
        .await
        .unwrap();

    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(output.stdout.is_empty());
    assert!(stderr.starts_with("error: 404"), "stderr: {stderr}");
}

/// A TCP proxy in front of the app that cuts the first inference response after relaying
/// `cut_after` bytes of it, and records the head of every inference request.
struct CuttingProxy {
    addr: std::net::SocketAddr,
    shared: Arc<ProxyState>,
}

struct ProxyState {
    backend: std::net::SocketAddr,
    cut_after: usize,
    requests: Mutex<Vec<String>>,
    cut: AtomicBool,
    /// Inference requests seen so far; the first one's response is cut.
    inference: AtomicUsize,
}

const INFERENCE_REQUEST: &[u8] = b"GET /conversations/inference/";

impl CuttingProxy {
    async fn start(backend: std::net::SocketAddr, cut_after: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyState {
            backend,
            cut_after,
            requests: Mutex::new(Vec::new()),
            cut: AtomicBool::new(false),
            inference: AtomicUsize::new(0),
        });
        let state = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, Arc::clone(&state)));
            }
        });
        Self { addr, shared }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn was_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    fn inference_requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

/// One client connection, relayed both ways until either side ends or the cut. The client
/// may reuse a connection, so every request on it is looked at, not only the first.
async fn relay(client: TcpStream, state: Arc<ProxyState>) {
    let Ok(backend) = TcpStream::connect(state.backend).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut backend_read, mut backend_write) = backend.into_split();
    // Set when this connection carries the first inference request: its response is cut.
    let doomed = Arc::new(AtomicBool::new(false));
    let upstream = {
        let (state, doomed) = (Arc::clone(&state), Arc::clone(&doomed));
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                if chunk.starts_with(INFERENCE_REQUEST) {
                    state
                        .requests
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(chunk).into_owned());
                    if state.inference.fetch_add(1, Ordering::SeqCst) == 0 {
                        doomed.store(true, Ordering::SeqCst);
                    }
                }
                if backend_write.write_all(chunk).await.is_err() {
                    return;
                }
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut relayed = 0usize;
        loop {
            let n = match backend_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut chunk = &buf[..n];
            if doomed.load(Ordering::SeqCst) {
                let room = state.cut_after - relayed;
                if chunk.len() >= room {
                    chunk = &chunk[..room];
                    let _ = client_write.write_all(chunk).await;
                    state.cut.store(true, Ordering::SeqCst);
                    return;
                }
                relayed += chunk.len();
            }
            if client_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends the connection: dropping the halves closes both.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

#[tokio::test]
async fn the_terminal_client_keeps_what_it_printed_when_the_server_crashes_and_says_so() {
    timeout(LIMIT, keeps_what_it_printed_across_a_crash())
        .await
        .expect("test timed out");
}

async fn keeps_what_it_printed_across_a_crash() {
    use crate::lifecycle::{restartable, slow};
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(slow(400, 20));
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let server = restartable(&database_url, &mock, &key);
    let mut first = server();
    let mut child = client(&first.base, &key)
        .args(["talk", "for", "long"])
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut printed = Vec::new();
    while printed.len() < 300 {
        let mut buf = [0u8; 256];
        let n = stdout.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client ended before printing enough");
        printed.extend_from_slice(&buf[..n]);
    }

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut second = server();
    stdout.read_to_end(&mut printed).await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    second.child.kill().ok();
    second.child.wait().ok();

    let stderr = String::from_utf8(output.stderr).unwrap();
    let printed = String::from_utf8(printed).unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "not complete; stderr: {stderr}"
    );
    assert!(stderr.contains("connection lost"), "stderr: {stderr}");
    assert!(
        stderr.contains("interrupted: the server stopped"),
        "stderr: {stderr}"
    );
    let store = sluice::store::Store::connect(&database_url).await.unwrap();
    let chat = announced_chat(&stderr);
    let saved = store
        .list_messages(chat.parse().unwrap(), false)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.role == "assistant")
        .unwrap();
    assert_eq!(saved.status, "incomplete");
    assert!(printed.len() > saved.content.len(), "printed {printed:?}");
    assert!(
        printed.starts_with(&saved.content),
        "nothing printed twice or changed"
    );
    assert!(
        stderr.contains(&format!(
            "{} of its {} bytes were saved",
            saved.content.len(),
            printed.len()
        )),
        "stderr: {stderr}"
    );
}
