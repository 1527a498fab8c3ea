//! `transcribe-audio`: a multipart upload relayed to the provider as it arrives, refused while
//! it arrives when it is too large, and never completed upstream when it is refused.

use std::time::Duration;

use axum::body::Bytes;
use serde_json::Value;

use crate::helpers::{TestApp, fresh_database, spawn_app_with};
use crate::lifecycle::{sluice_command, spawn_process};
use crate::mock::{MockUpstream, TranscriptionScript};

const BOUNDARY: &str = "test-boundary-7MA4YWxkTrZu0gW";
const MB: usize = 1024 * 1024;

/// One part of a form the test sends.
enum Part<'a> {
    Text(&'a str, &'a str),
    File {
        name: &'a str,
        file_name: &'a str,
        content_type: &'a str,
    },
}

/// A form as bytes around its file: what comes before the file's bytes and what comes after.
/// The file part, if any, is where the caller's bytes go.
fn form(parts: &[Part<'_>]) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut seen_file = false;
    for part in parts {
        let out = if seen_file { &mut tail } else { &mut head };
        match part {
            Part::Text(name, value) => out.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            ),
            Part::File {
                name,
                file_name,
                content_type,
            } => {
                out.extend_from_slice(
                    format!(
                        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                         filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                seen_file = true;
                tail.extend_from_slice(b"\r\n");
            }
        }
    }
    tail.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (head, tail)
}

fn audio_file<'a>(file_name: &'a str) -> Part<'a> {
    Part::File {
        name: "audio_file",
        file_name,
        content_type: "audio/mp4",
    }
}

/// Sends a form with `file` as its file part's bytes, in one body of known length.
async fn upload(app: &TestApp, key: &str, parts: &[Part<'_>], file: &[u8]) -> (u16, Value) {
    let (head, tail) = form(parts);
    let body = [head.as_slice(), file, tail.as_slice()].concat();
    send(&app.client, &app.base, key, reqwest::Body::from(body)).await
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: reqwest::Body,
) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/transcribe-audio/"))
        .bearer_auth(key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A chunked body (no length) of `size` file bytes between the form's head and tail, made as it
/// is sent: neither side holds it whole.
fn streamed(parts: &[Part<'_>], size: usize) -> reqwest::Body {
    let (head, tail) = form(parts);
    let chunk = Bytes::from((0..64 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let count = size / chunk.len();
    let chunks = std::iter::once(Bytes::from(head))
        .chain(std::iter::repeat_n(chunk, count))
        .chain(std::iter::once(Bytes::from(tail)))
        .map(Ok::<_, std::io::Error>);
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// Every byte value, many times over, so that a changed, lost or reordered byte shows.
fn sample_audio(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

async fn transcribing_app() -> TestApp {
    spawn_app_with(|s| s.transcription.provider = "mock".into()).await
}

#[tokio::test]
async fn an_upload_reaches_the_provider_byte_for_byte_whatever_the_order_of_its_fields() {
    let app = transcribing_app().await;
    app.mock.set_transcription(TranscriptionScript {
        text: "Hola, ¿qué tal?".into(),
        language: Some("spanish".into()),
        ..TranscriptionScript::default()
    });
    let audio = sample_audio(300 * 1024 + 7);
    let ws = app.services.default_workspace.to_string();

    // The seed's order: the file first, its workspace and language after it.
    let (status, body) = upload(
        &app,
        &app.key,
        &[
            audio_file("voice memo.m4a"),
            Part::Text("workspace_id", &ws),
            Part::Text("language", "es"),
        ],
        &audio,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"text": "Hola, ¿qué tal?", "language": "spanish"})
    );
    let sent = app.mock.transcriptions().pop().unwrap();
    assert!(sent.complete);
    assert!(
        sent.content_type
            .starts_with("multipart/form-data; boundary=")
    );
    let file = sent.part("file").unwrap();
    assert_eq!(file.file_name.as_deref(), Some("voice memo.m4a"));
    assert_eq!(file.content_type.as_deref(), Some("audio/mp4"));
    assert_eq!(file.bytes.len(), audio.len());
    assert!(file.bytes == audio, "the file reached the provider changed");
    assert_eq!(
        sent.part("model").unwrap().text.as_deref(),
        Some("whisper-1")
    );
    assert_eq!(sent.part("language").unwrap().text.as_deref(), Some("es"));

    // The workspace by slug before the file, no language: the provider's own is reported.
    app.mock.set_transcription(TranscriptionScript {
        text: "hello".into(),
        ..TranscriptionScript::default()
    });
    let (status, body) = upload(
        &app,
        &app.key,
        &[Part::Text("workspace_id", "default"), audio_file("a.wav")],
        b"RIFF....WAVE",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"text": "hello", "language": null}));
    let sent = app.mock.transcriptions().pop().unwrap();
    assert_eq!(sent.part("file").unwrap().bytes.as_ref(), b"RIFF....WAVE");
    assert!(sent.part("language").is_none());

    // A provider that reports no language: the form's, even when it came after the file.
    let (status, body) = upload(
        &app,
        &app.key,
        &[
            audio_file("a.wav"),
            Part::Text("language", "fr"),
            Part::Text("workspace_id", "default"),
        ],
        b"RIFF....WAVE",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"text": "hello", "language": "fr"}));
}

#[tokio::test]
async fn bad_forms_are_400_naming_the_field_and_never_reach_the_provider_complete() {
    let app = transcribing_app().await;
    let ws = app.services.default_workspace.to_string();
    let other = uuid::Uuid::new_v4().to_string();
    let audio = sample_audio(1000);
    let cases: Vec<(Vec<Part<'_>>, &[u8], &str)> = vec![
        (vec![Part::Text("workspace_id", &ws)], b"", "audio_file"),
        (
            vec![audio_file("a.mp3"), Part::Text("workspace_id", &ws)],
            b"",
            "audio_file",
        ),
        (vec![audio_file("a.mp3")], &audio, "workspace_id"),
        (
            vec![
                Part::Text("workspace_id", &ws),
                Part::Text("language", "english"),
                audio_file("a.mp3"),
            ],
            &audio,
            "language",
        ),
        (
            vec![
                audio_file("a.mp3"),
                Part::Text("workspace_id", &ws),
                Part::Text("language", "e"),
            ],
            &audio,
            "language",
        ),
        (
            vec![
                Part::Text("workspace_id", &ws),
                Part::Text("model", "whisper-2"),
                audio_file("a.mp3"),
            ],
            &audio,
            "model",
        ),
        (
            vec![
                audio_file("a.mp3"),
                Part::Text("workspace_id", &ws),
                Part::Text("workspace_id", &ws),
            ],
            &audio,
            "workspace_id",
        ),
        (
            vec![Part::Text("workspace_id", &ws), audio_file("")],
            &audio,
            "audio_file",
        ),
    ];
    for (parts, file, field) in cases {
        let (status, body) = upload(&app, &app.key, &parts, file).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["field"], field, "{body}");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    // A workspace this key may not use is not found, as it is in a path.
    for parts in [
        vec![audio_file("a.mp3"), Part::Text("workspace_id", &other)],
        vec![Part::Text("workspace_id", &other), audio_file("a.mp3")],
    ] {
        let (status, body) = upload(&app, &app.key, &parts, &audio).await;
        assert_eq!(status, 404, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.mock.transcriptions().iter().all(|form| !form.complete),
        "a refused upload reached the provider complete"
    );

    // Not a form at all, and a publishable key.
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/api/transcribe-audio/",
            Some(serde_json::json!({"audio_file": "x"})),
        )
        .await;
    assert_eq!(status, 415, "{body}");
    let publishable = app
        .new_key(
            app.services.default_workspace,
            sluice::service::KeyKind::Publishable,
        )
        .await;
    let (status, body) = upload(
        &app,
        &publishable,
        &[Part::Text("workspace_id", &ws), audio_file("a.mp3")],
        &audio,
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn a_provider_failure_is_502_with_its_message_and_no_provider_is_503() {
    let app = transcribing_app().await;
    app.mock.set_transcription(TranscriptionScript {
        status: Some(400),
        message: "Invalid file format. Supported formats: mp3, wav".into(),
        ..TranscriptionScript::default()
    });
    let ws = app.services.default_workspace.to_string();
    let parts = [Part::Text("workspace_id", &ws), audio_file("notes.txt")];
    let (status, body) = upload(&app, &app.key, &parts, b"not audio").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "upstream_error");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Invalid file format"),
        "{body}"
    );

    let demo = spawn_app_with(|s| s.providers.clear()).await;
    let (status, body) = upload(&demo, &demo.key, &parts, b"audio").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "transcription_unavailable");

    // Providers configured, but none of the transcription provider's name.
    let unnamed = spawn_app_with(|_| {}).await;
    let (status, body) = upload(&unnamed, &unnamed.key, &parts, b"audio").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("SLUICE_TRANSCRIPTION_PROVIDER"),
        "{body}"
    );
}

#[tokio::test]
async fn an_upload_over_25_mb_is_refused_while_it_arrives() {
    let app = transcribing_app().await;
    let ws = app.services.default_workspace.to_string();
    let parts = [Part::Text("workspace_id", &ws), audio_file("long.mp3")];
    // Chunked: no length announces the size, so it is found while the bytes arrive.
    let (status, body) = send(&app.client, &app.base, &app.key, streamed(&parts, 30 * MB)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large");
    assert_eq!(body["message"], "audio_file is larger than 26214400 bytes");
    // With a length: refused before a byte of the body is read.
    let (head, tail) = form(&parts);
    let announced = head.len() + 30 * MB + tail.len();
    let response = app
        .client
        .post(app.url("/api/transcribe-audio/"))
        .bearer_auth(&app.key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", announced)
        .body(streamed(&parts, 30 * MB))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.mock.transcriptions().iter().all(|form| !form.complete),
        "an over-large upload reached the provider complete"
    );
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Measured on the real binary, alone in its process: the resident memory of sluice after a
/// refused 30 MB upload and after a relayed 24 MB one grows by far less than either upload.
#[tokio::test]
async fn uploads_are_streamed_not_held_in_memory() {
    let mock = MockUpstream::start().await.unwrap();
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let mut command = sluice_command(&database_url, &mock);
    command.env("SLUICE_ADMIN_KEY", &key);
    let process = spawn_process(command);
    let pid = process.child.id();
    let client = reqwest::Client::new();
    let parts = [Part::Text("workspace_id", "default"), audio_file("a.mp3")];

    // Warm up: the first upload sizes the allocator's pools and the connection's buffers.
    let (status, body) = send(&client, &process.base, &key, streamed(&parts, MB)).await;
    assert_eq!(status, 200, "{body}");
    let before = rss(pid);

    let (status, body) = send(&client, &process.base, &key, streamed(&parts, 30 * MB)).await;
    assert_eq!(status, 413, "{body}");
    let after_refused = rss(pid);

    let (status, body) = send(&client, &process.base, &key, streamed(&parts, 24 * MB)).await;
    assert_eq!(status, 200, "{body}");
    let after_relayed = rss(pid);
    let relayed = mock.transcriptions().pop().unwrap();
    assert!(relayed.complete);
    assert_eq!(relayed.part("file").unwrap().len, 24 * MB);

    eprintln!(
        "sluice RSS: {} KiB after warm-up, {} KiB after a refused 30 MB upload, {} KiB after a \
         relayed 24 MB one",
        before / 1024,
        after_refused / 1024,
        after_relayed / 1024
    );
    let growth = after_refused.max(after_relayed).saturating_sub(before);
    assert!(
        growth < 8 * MB,
        "sluice grew by {} KiB over uploads of 30 and 24 MB",
        growth / 1024
    );
}
