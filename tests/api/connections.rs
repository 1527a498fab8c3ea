//! No client can hold the server: idle, slow and stalled connections are closed within their
//! timeouts, oversized heads are refused, a flood of idle connections leaves room for a real
//! request, and an open SSE stream is never cut by any of it.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Script, TestApp, spawn_app, spawn_app_with, text_of};

const HEADER: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(3);
const BODY: Duration = Duration::from_secs(1);

async fn app_with_short_timeouts() -> TestApp {
    spawn_app_with(|s| {
        s.connections.header_timeout = HEADER;
        s.connections.idle_timeout = IDLE;
        s.connections.body_timeout = BODY;
    })
    .await
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns what it sent and when it closed,
/// or `None` if it was still open after `within`.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Asserts that a connection closed `after` was closed at its `due` time: not before it, and
/// at most one sweep (a quarter of the shortest timeout) and some scheduling later.
fn closed_near(after: Duration, due: Duration) {
    assert!(
        after >= due - Duration::from_millis(100),
        "closed too early: {after:?}, due at {due:?}"
    );
    assert!(
        after < due + Duration::from_millis(900),
        "closed too late: {after:?}, due at {due:?}"
    );
}

/// Whether the connection is still open: nothing to read, and no end of stream, for `for_`.
async fn still_open(tcp: &mut TcpStream, for_: Duration) -> bool {
    read_until_closed(tcp, for_).await.is_none()
}

/// The Prometheus text of `/metrics`.
async fn metrics_text(app: &TestApp) -> String {
    app.get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sends `GET /healthz` on a raw connection and checks that it is answered 200.
async fn healthz_on(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert_eq!(
        status_of(&buf[..n]),
        200,
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = app_with_short_timeouts().await;
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();

    let (sent, after) = read_until_closed(&mut tcp, Duration::from_secs(5))
        .await
        .expect("closed by the server");

    assert!(sent.is_empty(), "nothing is answered to nothing");
    closed_near(after, HEADER);
}

#[tokio::test]
async fn a_request_head_sent_one_line_at_a_time_is_cut_at_the_header_timeout() {
    let app = app_with_short_timeouts().await;
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();

    // One more header line every 300 ms, never the blank line that ends the head.
    let mut closed = None;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if tcp
            .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = Some(started.elapsed());
            break;
        }
        if !still_open(&mut tcp, Duration::from_millis(1)).await {
            closed = Some(started.elapsed());
            break;
        }
    }

    let after = closed.expect("the slow head was cut");
    assert!(
        after < HEADER + Duration::from_secs(1),
        "cut too late: {after:?}"
    );
}

#[tokio::test]
async fn a_request_body_that_stalls_gets_a_408_and_nothing_is_created() {
    let app = app_with_short_timeouts().await;
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!(
        "POST /chats/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":",
        app.key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();

    let (response, after) = read_until_closed(&mut tcp, Duration::from_secs(5))
        .await
        .expect("answered and closed");

    assert_eq!(
        status_of(&response),
        408,
        "{}",
        String::from_utf8_lossy(&response)
    );
    let text = String::from_utf8_lossy(&response);
    assert!(text.contains("request_timeout"), "{text}");
    assert!(
        after < BODY + Duration::from_secs(1),
        "answered too late: {after:?}"
    );
    let chats: Vec<Value> = app
        .get("/chats/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        chats.is_empty(),
        "a body that never arrived creates nothing"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let app = app_with_short_timeouts().await;
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    healthz_on(&mut tcp).await;
    let answered = Instant::now();

    // Idle past the header timeout: still open, and still serves a request.
    assert!(still_open(&mut tcp, HEADER + Duration::from_millis(500)).await);
    healthz_on(&mut tcp).await;
    let answered_again = Instant::now();
    assert!(answered_again.duration_since(answered) < IDLE);

    let (_, after) = read_until_closed(&mut tcp, IDLE + Duration::from_secs(3))
        .await
        .expect("closed once idle");
    closed_near(after, IDLE);
}

#[tokio::test]
async fn an_oversized_request_head_gets_a_431_and_a_normal_one_is_served() {
    let app = app_with_short_timeouts().await;

    // 64 KiB in one header.
    let big = format!("X-Big: {}\r\n", "a".repeat(64 * 1024));
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    let _ = tcp
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{big}\r\n").as_bytes())
        .await;
    let (response, _) = read_until_closed(&mut tcp, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    assert_eq!(status_of(&response), 431);

    // 150 small header fields.
    let many: String = (0..150).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes())
        .await
        .unwrap();
    let (response, _) = read_until_closed(&mut tcp, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    assert_eq!(status_of(&response), 431);

    // A head of ordinary size, with a 20 KiB header, is served.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-ordinary", "b".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_flood_of_idle_connections_leaves_room_for_a_real_request() {
    let app = spawn_app_with(|s| {
        s.connections.header_timeout = Duration::from_secs(10);
        s.connections.max_connections = Some(50);
    })
    .await;

    // Three times the limit, none of which ever sends a byte.
    let mut idle = Vec::new();
    for _ in 0..150 {
        if let Ok(tcp) = TcpStream::connect(addr(&app)).await {
            idle.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let response = app.get("/chats/").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the real request waited {:?}",
        started.elapsed()
    );
    let metrics = metrics_text(&app).await;
    assert!(
        metrics.contains("sluice_connections_closed_total{reason=\"evicted\"}"),
        "{metrics}"
    );
    drop(idle);
}

#[tokio::test]
async fn at_the_cap_with_every_connection_answering_a_new_one_is_closed_at_once() {
    let app = spawn_app_with(|s| s.connections.max_connections = Some(3)).await;
    app.mock.set_default(Script {
        first_delay_ms: 1500,
        ..Script::text(&["slow ", "answer"])
    });
    let mut streams = Vec::new();
    for i in 0..3 {
        let chat = app.chat_with_question(&format!("q{i}")).await;
        let sse = app
            .stream(&format!("/conversations/inference/{chat}"), None)
            .await;
        assert_eq!(sse.status, 200);
        streams.push(sse);
    }
    // reqwest may keep the setup requests' connections: only the three streams stay busy.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut extra = TcpStream::connect(addr(&app)).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, after) = read_until_closed(&mut extra, Duration::from_secs(1))
        .await
        .expect("closed at once");

    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(after < Duration::from_millis(500), "{after:?}");
    for mut sse in streams {
        assert_eq!(
            text_of(&sse.collect().await),
            "slow answer",
            "the busy ones go on"
        );
    }
    let metrics = metrics_text(&app).await;
    assert!(
        metrics.contains("sluice_connections_refused_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_shutdown_does_not_wait_for_connections_that_never_sent_a_request() {
    let mut app = spawn_app().await;
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    let mut idle = TcpStream::connect(addr(&app)).await.unwrap();
    healthz_on(&mut idle).await;

    let started = Instant::now();
    app.shutdown().await.expect("clean shutdown");

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the shutdown waited {:?} (header timeout 10 s)",
        started.elapsed()
    );
    assert!(
        read_until_closed(&mut silent, Duration::from_secs(1))
            .await
            .is_some()
    );
    assert!(
        read_until_closed(&mut idle, Duration::from_secs(1))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn an_sse_stream_whose_upstream_is_silent_longer_than_every_timeout_is_not_cut() {
    let app = app_with_short_timeouts().await;
    let silence = IDLE + Duration::from_secs(1);
    app.mock.set_default(Script {
        first_delay_ms: u64::try_from(silence.as_millis()).unwrap(),
        ..Script::text(&["after ", "the ", "silence"])
    });
    let chat = app.chat_with_question("are you there?").await;

    let mut sse = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await;
    let events = sse.collect().await;

    assert_eq!(text_of(&events), "after the silence");
    assert!(events.iter().any(|e| e.event == "done"));
}

#[tokio::test]
async fn http2_connections_have_the_same_limits() {
    let app = app_with_short_timeouts().await;

    // A connection that sends the preface and its settings, then no request.
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (_, after) = read_until_closed(&mut tcp, Duration::from_secs(5))
        .await
        .expect("closed by the server");
    assert!(
        after < HEADER + Duration::from_millis(900),
        "closed too late: {after:?}"
    );

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // An oversized header list.
    let response = h2
        .get(app.url("/healthz"))
        .header("x-big", "a".repeat(40 * 1024))
        .send()
        .await;
    match response {
        Ok(r) => assert_eq!(r.status(), 431),
        // A client may refuse to send what the server said it would not take.
        Err(e) => assert!(format!("{e:?}").to_lowercase().contains("header"), "{e:?}"),
    }

    // A stream whose upstream is silent past every timeout.
    app.mock.set_default(Script {
        first_delay_ms: u64::try_from((IDLE + Duration::from_secs(1)).as_millis()).unwrap(),
        ..Script::text(&["still ", "here"])
    });
    let chat = app.chat_with_question("h2?").await;
    let response = h2
        .get(app.url(&format!("/conversations/inference/{chat}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let mut sse = crate::helpers::SseClient::new(response);
    let events = sse.collect().await;
    assert_eq!(text_of(&events), "still here");
}

#[tokio::test]
async fn idle_connections_beyond_the_open_file_limit_do_not_stop_a_real_request() {
    let log = flood_under_a_file_limit(None).await;
    assert!(log.contains("max_connections=204"), "80% of 256: {log}");
}

#[tokio::test]
async fn a_connection_cap_above_the_open_file_limit_is_lowered_to_fit_it() {
    let log = flood_under_a_file_limit(Some(100_000)).await;
    assert!(log.contains("max_connections=204"), "{log}");
    assert!(
        log.contains("more than the open-file limit leaves room for"),
        "{log}"
    );
}

/// Starts the sluice binary with an open-file limit of 256, opens 400 connections that send
/// nothing, then asks for real; returns what sluice logged.
async fn flood_under_a_file_limit(max_connections: Option<usize>) -> String {
    use crate::helpers::{MockUpstream, fresh_database};
    use crate::lifecycle::{sluice_command_with_file_limit, spawn_process};
    let mock = MockUpstream::start().await.unwrap();
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let mut command = sluice_command_with_file_limit(256, &database_url, &mock);
    command
        .env("SLUICE_ADMIN_KEY", &key)
        .env("SLUICE_HEADER_TIMEOUT_SECS", "3");
    if let Some(n) = max_connections {
        command.env("SLUICE_MAX_CONNECTIONS", n.to_string());
    }
    let mut process = spawn_process(command);
    let addr = process.base.trim_start_matches("http://").to_owned();

    // More idle connections than the process has descriptors.
    let mut idle = Vec::new();
    for _ in 0..400 {
        if let Ok(Ok(tcp)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(&addr)).await
        {
            idle.push(tcp);
        }
    }

    let client = reqwest::Client::new();
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(4),
        client
            .get(format!("{}/chats/", process.base))
            .bearer_auth(&key)
            .send(),
    )
    .await
    .expect("answered within the header timeout and a little")
    .unwrap();
    assert_eq!(response.status(), 200);
    let waited = started.elapsed();
    drop(idle);
    process.child.kill().ok();
    process.child.wait().ok();
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    process.stderr()
}
