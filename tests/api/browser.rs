//! The chat page at `GET /`: how it is served (headers, validators, the trailing-slash redirect,
//! under a prefix), then the page itself driven in headless Chromium by `tests/browser/chat.mjs`.
//!
//! The browser test runs when Chromium (`SLUICE_TEST_CHROMIUM`, else `/usr/bin/chromium`), node
//! and `tests/browser/node_modules/playwright-core` (`npm ci` in `tests/browser`) are present;
//! it is skipped with a message otherwise, except in CI, where a skip is a failure.
//! `SLUICE_PAGE_SCREENSHOT=<path>` saves a screenshot of an answer with web sources
//! (docs/page.png).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as Param, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use reqwest::StatusCode;
use reqwest::header;
use sluice::startup::Sluice;

use crate::helpers::*;
use crate::internet::{app_searching_at, fake_web};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_revalidated_by_etag() {
    let app = spawn_app().await;
    let client = no_redirects();

    let page = client.get(app.url("/")).send().await.unwrap();
    let headers = page.headers().clone();
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let body = page.text().await.unwrap();
    let again = client
        .get(app.url("/"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();

    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    // No inline script or style (the policy would block them), and only relative URLs.
    assert!(!body.contains("<script>") && !body.contains("<style") && !body.contains("style="));
    assert!(body.contains("src=\"assets/app.js\"") && body.contains("href=\"assets/app.css\""));
    assert!(!body.contains("=\"/"), "an absolute path in the page");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), etag);
}

#[tokio::test]
async fn assets_have_their_content_type_an_etag_and_a_json_404_when_unknown() {
    let app = spawn_app().await;
    let client = no_redirects();

    let js = client.get(app.url("/assets/app.js")).send().await.unwrap();
    let css = client.get(app.url("/assets/app.css")).send().await.unwrap();
    let etag = js.headers()[header::ETAG].clone();
    let revalidated = client
        .get(app.url("/assets/app.js"))
        .header(
            header::IF_NONE_MATCH,
            format!("\"other\", W/{}", etag.to_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    let stale = client
        .get(app.url("/assets/app.js"))
        .header(header::IF_NONE_MATCH, "\"other\"")
        .send()
        .await
        .unwrap();
    let unknown = client.get(app.url("/assets/nope.js")).send().await.unwrap();

    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(js.headers()[header::CACHE_CONTROL], "no-cache");
    assert_eq!(
        css.headers()[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert_ne!(css.headers()[header::ETAG], etag);
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert!(revalidated.bytes().await.unwrap().is_empty());
    assert_eq!(stale.status(), 200);
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

/// A host application serving sluice's router as `mount` puts it; the parts it returns must
/// live as long as the test.
struct Host {
    base: String,
    _sluice: Sluice,
    _mock: MockUpstream,
    _dir: Option<tempfile::TempDir>,
}

async fn host(mount: impl FnOnce(Router, Router) -> Router) -> Host {
    let mock = MockUpstream::start().await.unwrap();
    let (database_url, dir) = fresh_database().await;
    let sluice = Sluice::build(test_settings(&database_url, &mock))
        .await
        .unwrap();
    let host = Router::new().route("/", get(|| async { "host" }));
    let app = mount(host, sluice.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    Host {
        base,
        _sluice: sluice,
        _mock: mock,
        _dir: dir,
    }
}

#[tokio::test]
async fn under_a_prefix_the_page_redirects_to_its_trailing_slash_and_loads_from_there() {
    // `nest_service` routes both `/ai` and `/ai/` (and everything below) to sluice.
    let host = host(|h, s| h.nest_service("/ai", s)).await;
    let base = &host.base;
    let client = no_redirects();

    let bare = client.get(format!("{base}/ai?x=1")).send().await.unwrap();
    let location = bare.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let target = reqwest::Url::parse(&format!("{base}/ai?x=1"))
        .unwrap()
        .join(&location)
        .unwrap();
    let page = client.get(target.as_str()).send().await.unwrap();
    let page_status = page.status();
    let body = page.text().await.unwrap();
    let js = client
        .get(format!("{base}/ai/assets/app.js"))
        .send()
        .await
        .unwrap();
    let api = client
        .get(format!("{base}/ai/readyz"))
        .send()
        .await
        .unwrap();
    let host_root = client.get(format!("{base}/")).send().await.unwrap();

    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(location, "./ai/?x=1");
    assert_eq!(target.path(), "/ai/");
    assert_eq!(page_status, 200);
    assert!(body.contains("src=\"assets/app.js\""));
    assert_eq!(js.status(), 200);
    assert_eq!(api.status(), 200);
    assert_eq!(host_root.text().await.unwrap(), "host");
}

#[tokio::test]
async fn router_nest_routes_only_the_prefix_without_a_slash_to_sluice() {
    // axum 0.8's `Router::nest("/ai", ..)` maps the nested `/` to `/ai` only: `/ai/` never
    // reaches sluice (the host's own 404 answers it). So the redirect that the page needs for
    // its relative URLs lands on the host's 404: hosts that want the page use `nest_service`.
    let host = host(|h, s| h.nest("/ai", s)).await;
    let base = &host.base;
    let client = no_redirects();

    let bare = client.get(format!("{base}/ai")).send().await.unwrap();
    let slash = client.get(format!("{base}/ai/")).send().await.unwrap();
    let api = client
        .get(format!("{base}/ai/readyz"))
        .send()
        .await
        .unwrap();

    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers()[header::LOCATION], "./ai/");
    assert_eq!(slash.status(), StatusCode::NOT_FOUND);
    assert!(
        slash.headers().get(header::CONTENT_TYPE).is_none(),
        "sluice answered /ai/"
    );
    assert_eq!(api.status(), 200);
}

/// The browser to drive, or `None` (with a message) when the tools are missing: a skip
/// everywhere but in CI, where it fails the test.
fn browser_or_skip(root: &Path) -> Option<PathBuf> {
    match missing_browser_tools(root) {
        Ok(chromium) => Some(chromium),
        Err(why) => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must run the browser test, but: {why}"
            );
            eprintln!("browser test skipped: {why}");
            None
        }
    }
}

/// Why the browser test cannot run here, if it cannot.
fn missing_browser_tools(root: &Path) -> Result<PathBuf, String> {
    let chromium = std::env::var("SLUICE_TEST_CHROMIUM")
        .ok()
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium, or set SLUICE_TEST_CHROMIUM)",
            chromium.display()
        ));
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Err(
            "tests/browser/node_modules/playwright-core is missing (npm ci in tests/browser)"
                .into(),
        );
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not on PATH".into());
    }
    Ok(chromium)
}

/// The search service the browser test's sluice asks: the fake SearXNG of `internet.rs`,
/// relayed from `fake_web("ok")`, or from `fake_web("error")` after `POST /__mode/error` (and
/// back with `POST /__mode/ok`). One sluice then serves the scenarios with sources and the one
/// where the search fails. Returns its base URL.
async fn switchable_search() -> String {
    #[derive(Clone)]
    struct Switch {
        ok: String,
        error: String,
        failing: Arc<AtomicBool>,
        client: reqwest::Client,
    }

    async fn search(State(switch): State<Switch>, RawQuery(query): RawQuery) -> Response {
        let base = if switch.failing.load(Ordering::SeqCst) {
            &switch.error
        } else {
            &switch.ok
        };
        let url = format!("{base}/search?{}", query.unwrap_or_default());
        let Ok(answer) = switch.client.get(url).send().await else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let status = answer.status();
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let body = answer.bytes().await.unwrap_or_default();
        let mut response = (status, body).into_response();
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        response
    }

    async fn set_mode(State(switch): State<Switch>, Param(mode): Param<String>) -> StatusCode {
        match mode.as_str() {
            "ok" => switch.failing.store(false, Ordering::SeqCst),
            "error" => switch.failing.store(true, Ordering::SeqCst),
            _ => return StatusCode::NOT_FOUND,
        }
        StatusCode::NO_CONTENT
    }

    let switch = Switch {
        ok: fake_web("ok").await,
        error: fake_web("error").await,
        failing: Arc::new(AtomicBool::new(false)),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    };
    let app = Router::new()
        .route("/search", get(search))
        .route("/__mode/{mode}", post(set_mode))
        .with_state(switch);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    base
}

#[tokio::test]
async fn the_chat_page_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(chromium) = browser_or_skip(root) else {
        return;
    };
    // Web search through the fake SearXNG (pages on loopback allowed), for the internet toggle.
    let search = switchable_search().await;
    let app = app_searching_at(search.clone()).await;
    let started = Instant::now();

    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/browser/chat.mjs"))
        .current_dir(root.join("tests/browser"))
        .env("BASE_URL", app.url("/"))
        .env("KEY", &app.key)
        .env("MOCK_URL", format!("http://{}", app.mock.addr()))
        .env("SEARCH_URL", &search)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true);
    if let Ok(path) = std::env::var("SLUICE_PAGE_SCREENSHOT") {
        command.env("SCREENSHOT", path);
    }
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the browser test did not finish within 180 s")
        .expect("run node");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "{stdout}{stderr}browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Its output is printed above.
    assert!(output.status.success(), "chat.mjs failed");
    assert!(
        stdout.contains(" passed, 0 failed"),
        "chat.mjs reported no result"
    );
}

#[tokio::test]
async fn the_chat_page_keeps_and_marks_an_answer_cut_by_a_server_crash() {
    use crate::lifecycle::{restartable, slow};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(chromium) = browser_or_skip(root) else {
        return;
    };
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(slow(600, 20));
    let (database_url, _dir) = fresh_database().await;
    let key = sluice::service::generate_key(sluice::service::KeyKind::Secret);
    let server = restartable(&database_url, &mock, &key);
    let mut first = server();
    let mut node = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/crash.mjs"))
        .current_dir(root.join("tests/browser"))
        .env("BASE_URL", format!("{}/", first.base))
        .env("KEY", &key)
        .env("CHROMIUM", &chromium)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();

    let mut printed = String::new();
    let mut second = None;
    let finished = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line == "crash now" {
                first.child.kill().unwrap();
                first.child.wait().unwrap();
                second = Some(server());
                stdin.write_all(b"restarted\n").await.unwrap();
            }
        }
    })
    .await;
    let status = node.wait().await.unwrap();
    if let Some(mut second) = second {
        second.child.kill().ok();
        second.child.wait().ok();
    }
    first.child.kill().ok();
    first.child.wait().ok();

    eprintln!("{printed}");
    assert!(finished.is_ok(), "crash.mjs did not finish within 90 s");
    assert!(status.success(), "crash.mjs failed");
    assert!(
        printed.contains("ok   an answer cut by a crash"),
        "{printed}"
    );
}

/// The widget of `examples/widget/index.html`, as a customer's page on another origin would
/// serve it: a publishable key, an agent, fetch to post and EventSource to follow.
#[tokio::test]
async fn the_browser_widget_example_chats_with_an_agent_from_another_origin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(chromium) = browser_or_skip(root) else {
        return;
    };
    // The widget is served by its own server: another origin than sluice's, on loopback like
    // sluice (Chromium lets a page reach loopback only from loopback).
    let html = std::fs::read_to_string(root.join("examples/widget/index.html")).unwrap();
    let site = Router::new().route(
        "/",
        get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, site).await.ok() });
    let app = spawn_app_with(|s| {
        s.cors_origins = sluice::config::CorsOrigins::List(vec![origin.clone()]);
    })
    .await;
    app.mock.set_default(crate::mock::Script::text(&[
        "Hi", " from", " the", " agent.",
    ]));
    let (status, agent) = app
        .call(
            reqwest::Method::POST,
            "/agent",
            Some(serde_json::json!({"name": "Support", "systemPrompt": "Be kind."})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let key = app
        .new_key(
            app.services.default_workspace,
            sluice::service::KeyKind::Publishable,
        )
        .await;

    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/browser/widget.mjs"))
        .current_dir(root.join("tests/browser"))
        .env("SERVER", app.url(""))
        .env("KEY", &key)
        .env("AGENT", agent["id"].as_str().unwrap())
        .env("ORIGIN", &origin)
        .env("EXPECTED", "Hi from the agent.")
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the widget test did not finish within 120 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(output.status.success(), "widget.mjs failed");
    assert!(
        stdout.contains(" passed, 0 failed"),
        "widget.mjs reported no result"
    );
}
