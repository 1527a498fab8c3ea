//! Browser sessions (`/session`): the cookie, the CSRF token, sign-out, publishable scope, and
//! CORS for configured origins.

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sluice::config::CorsOrigins;
use sluice::service::{KeyKind, create_key};

use crate::helpers::*;

/// Signs in with `key`; returns the `Set-Cookie` header and the body.
async fn sign_in(app: &TestApp, key: &str) -> (String, Value) {
    let response = app
        .client
        .post(app.url("/session"))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_owned();
    (set_cookie, response.json().await.unwrap())
}

/// A request as the page makes it: the session cookie, and the CSRF token when given.
fn by_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = app
        .client
        .request(method, app.url(path))
        .header("cookie", cookie);
    match csrf {
        Some(token) => request.header("x-csrf-token", token),
        None => request,
    }
}

/// `sluice_session=…` as a browser would send it back.
fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn signing_in_sets_an_httponly_strict_cookie_that_authenticates_reads_and_streams() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["by ", "cookie"]));
    let (set_cookie, body) = sign_in(&app, &app.key).await;

    assert!(set_cookie.starts_with("sluice_session="), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} missing: {set_cookie}"
        );
    }
    assert!(
        !set_cookie.contains(&app.key[8..]),
        "the key must not be the cookie"
    );
    assert_eq!(body["kind"], "secret");
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    assert!(csrf.len() >= 32, "{body}");
    assert!(
        !body.to_string().contains(&app.key),
        "the key is not echoed"
    );

    let cookie = cookie_of(&set_cookie);
    // GET /session gives the same CSRF token back, for a reloaded page.
    let current: Value = by_cookie(&app, Method::GET, "/session", &cookie, None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["csrf_token"], csrf.as_str());

    // A state-changing request with the cookie alone is refused, naming the header.
    let refused = by_cookie(&app, Method::POST, "/chats/create", &cookie, None)
        .json(&json!({"name": "forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let message: Value = refused.json().await.unwrap();
    assert!(
        message["message"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token"),
        "{message}"
    );
    let wrong = by_cookie(
        &app,
        Method::POST,
        "/chats/create",
        &cookie,
        Some(&"x".repeat(csrf.len())),
    )
    .json(&json!({"name": "forged"}))
    .send()
    .await
    .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);

    // With the token: create, post, list, stream, as the page does.
    let chat: Value = by_cookie(&app, Method::POST, "/chats/create", &cookie, Some(&csrf))
        .json(&json!({"name": "from the page"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let posted = by_cookie(
        &app,
        Method::POST,
        "/conversations/create",
        &cookie,
        Some(&csrf),
    )
    .json(&json!({"chat_id": chat_id, "role": "Human", "message": "hi"}))
    .send()
    .await
    .unwrap();
    assert_eq!(posted.status(), StatusCode::CREATED);
    let listed = by_cookie(&app, Method::GET, "/chats/", &cookie, None)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let stream = by_cookie(
        &app,
        Method::GET,
        &format!("/conversations/inference/{chat_id}"),
        &cookie,
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let events = SseClient::new(stream).collect().await;
    assert_eq!(text_of(&events), "by cookie");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");

    // A request another site's page makes with the cookie is refused, even a GET.
    let cross = by_cookie(
        &app,
        Method::GET,
        &format!("/conversations/inference/{chat_id}"),
        &cookie,
        None,
    )
    .header("sec-fetch-site", "cross-site")
    .send()
    .await
    .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn signing_out_needs_the_csrf_token_then_clears_the_cookie_and_ends_the_session() {
    let app = spawn_app().await;
    let (set_cookie, body) = sign_in(&app, &app.key).await;
    let cookie = cookie_of(&set_cookie);
    let csrf = body["csrf_token"].as_str().unwrap();

    let forged = by_cookie(&app, Method::DELETE, "/session", &cookie, None)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let out = by_cookie(&app, Method::DELETE, "/session", &cookie, Some(csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("sluice_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    for path in ["/session", "/chats/"] {
        let after = by_cookie(&app, Method::GET, path, &cookie, None)
            .send()
            .await
            .unwrap();
        assert_eq!(after.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn a_bad_key_cannot_sign_in_and_a_revoked_key_ends_its_sessions() {
    let app = spawn_app().await;
    let unknown = app
        .client
        .post(app.url("/session"))
        .json(&json!({"key": format!("sk_live_{}", "a".repeat(32))}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(unknown.headers().get("set-cookie").is_none());
    let missing = app
        .client
        .post(app.url("/session"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["field"], "key");

    let workspace = app.services.default_workspace;
    let created = create_key(
        app.services.store(),
        workspace,
        KeyKind::Secret,
        None,
        false,
        vec![],
        None,
    )
    .await
    .unwrap();
    let (set_cookie, _) = sign_in(&app, created.key.expose_secret()).await;
    let cookie = cookie_of(&set_cookie);
    {
        use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
        let conn = app.services.store().connection();
        let row = entity::api_key::Entity::find_by_id(created.id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        let mut active = row.into_active_model();
        active.revoked_at = Set(Some(chrono::Utc::now()));
        active.update(conn).await.unwrap();
    }
    let after = by_cookie(&app, Method::GET, "/chats/", &cookie, None)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_publishable_session_keeps_the_publishable_scope_and_its_origin_binding() {
    let app = spawn_app().await;
    let workspace = app.services.default_workspace;
    let pk = create_key(
        app.services.store(),
        workspace,
        KeyKind::Publishable,
        None,
        false,
        vec!["https://shop.example".into()],
        None,
    )
    .await
    .unwrap();
    let pk = pk.key.expose_secret().to_owned();

    let elsewhere = app
        .client
        .post(app.url("/session"))
        .header("origin", "https://evil.example")
        .json(&json!({"key": pk}))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);

    let response = app
        .client
        .post(app.url("/session"))
        .header("origin", "https://shop.example")
        .json(&json!({"key": pk}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = cookie_of(response.headers()["set-cookie"].to_str().unwrap());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["kind"], "publishable");

    let listed = by_cookie(&app, Method::GET, "/chats/", &cookie, None)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::FORBIDDEN);
    let body: Value = listed.json().await.unwrap();
    assert!(body["allowedEndpoints"].is_array(), "{body}");
}

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins_only_and_never_allows_credentials() {
    let app = spawn_app_with(|s| {
        s.cors_origins = CorsOrigins::List(vec!["http://app.example:3000".into()]);
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/chats/create"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("http://app.example:3000").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.example:3000"
    );
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("last-event-id"),
        "{headers}"
    );
    assert!(
        allowed
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );

    let other = preflight("http://other.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // An actual cross-origin request carries the header too.
    let listed = app
        .get("/chats/")
        .header("origin", "http://app.example:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "http://app.example:3000"
    );

    // Without configuration there are no CORS headers at all.
    let plain = spawn_app().await;
    let listed = plain
        .get("/chats/")
        .header("origin", "http://app.example:3000")
        .send()
        .await
        .unwrap();
    assert!(
        listed
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[test]
fn cors_origins_are_validated_with_the_variable_named() {
    assert_eq!(CorsOrigins::parse(&[""]).unwrap(), CorsOrigins::None);
    assert_eq!(CorsOrigins::parse(&["*"]).unwrap(), CorsOrigins::Any);
    assert_eq!(
        CorsOrigins::parse(&["https://a.example, http://localhost:3000"]).unwrap(),
        CorsOrigins::List(vec![
            "https://a.example".into(),
            "http://localhost:3000".into()
        ])
    );
    for bad in [
        "a.example",
        "https://a.example/path",
        "*, https://a.example",
        "ftp://x",
    ] {
        let error = CorsOrigins::parse(&[bad]).unwrap_err().to_string();
        assert!(error.contains("SLUICE_CORS_ORIGINS"), "{bad}: {error}");
    }
}

/// Signs in as a page served over HTTPS through a proxy would (or not); the `Set-Cookie`.
async fn sign_in_over(app: &TestApp, https: bool) -> (String, Value) {
    let mut request = app
        .client
        .post(app.url("/session"))
        .json(&json!({"key": app.key}));
    if https {
        request = request.header("x-forwarded-proto", "https");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    (set_cookie, response.json().await.unwrap())
}

#[tokio::test]
async fn over_https_the_session_cookie_is_a_secure_host_cookie_and_a_setting_forces_it() {
    let plain = spawn_app().await;
    let (set_cookie, _) = sign_in_over(&plain, false).await;
    assert!(set_cookie.starts_with("sluice_session="), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");

    for (app, https) in [
        (spawn_app().await, true),
        (spawn_app_with(|s| s.secure_cookies = true).await, false),
    ] {
        let (set_cookie, body) = sign_in_over(&app, https).await;
        assert!(
            set_cookie.starts_with("__Host-sluice_session="),
            "{set_cookie}"
        );
        for attribute in ["; Secure", "Path=/;", "HttpOnly", "SameSite=Strict"] {
            assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
        }
        assert!(!set_cookie.contains("Domain"), "{set_cookie}");
        // The browser sends it back under its name; it authenticates like the plain one.
        let cookie = cookie_of(&set_cookie);
        let response = by_cookie(&app, Method::GET, "/session", &cookie, None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // Signing out clears the cookie of that name.
        let csrf = body["csrf_token"].as_str().unwrap();
        let mut out = by_cookie(&app, Method::DELETE, "/session", &cookie, Some(csrf));
        if https {
            out = out.header("x-forwarded-proto", "https");
        }
        let out = out.send().await.unwrap();
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        let cleared = out.headers()["set-cookie"].to_str().unwrap();
        assert!(
            cleared.starts_with("__Host-sluice_session=;") && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
        let after = by_cookie(&app, Method::GET, "/session", &cookie, None)
            .send()
            .await
            .unwrap();
        assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    }
}
