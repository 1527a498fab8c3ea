//! Authentication and authorization (SPEC §3): key transport, identical 401s, workspace and
//! end-user isolation, publishable keys and their origins, `SLUICE_AUTH=off`, health probes.

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sluice::service::{KeyKind, create_key};
use uuid::Uuid;

use crate::helpers::*;

// ----------------------------------------------------------------------------------------------
// Small helpers local to this file.

/// A request carrying `key` as a bearer token.
fn with_key(app: &TestApp, method: Method, path: &str, key: &str) -> reqwest::RequestBuilder {
    app.client.request(method, app.url(path)).bearer_auth(key)
}

/// A new key of this kind in this workspace, as the string a client would send.
async fn new_key(
    app: &TestApp,
    workspace: Uuid,
    kind: KeyKind,
    origins: Vec<String>,
) -> (Uuid, String) {
    let created = create_key(
        app.services.store(),
        workspace,
        kind,
        Some("test"),
        false,
        origins,
        None,
    )
    .await
    .unwrap();
    (created.id, created.key.expose_secret().to_owned())
}

/// Revokes a key through the entity, as an operator's revocation would.
async fn revoke(app: &TestApp, key_id: Uuid) {
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
    let conn = app.services.store().connection();
    let row = entity::api_key::Entity::find_by_id(key_id)
        .one(conn)
        .await
        .unwrap()
        .expect("the key row");
    let mut active = row.into_active_model();
    active.revoked_at = Set(Some(chrono::Utc::now()));
    active.update(conn).await.unwrap();
}

/// Asserts the status and returns the JSON body.
async fn json_with(response: reqwest::Response, status: u16) -> Value {
    let got = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(got, StatusCode::from_u16(status).unwrap(), "body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Creates a chat with this key and returns its id.
async fn create_chat_as(app: &TestApp, key: &str, name: &str) -> String {
    let r = with_key(app, Method::POST, "/chats/create", key)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    json_with(r, 201).await["id"].as_str().unwrap().to_owned()
}

/// Posts a Human message with this key and returns its id.
async fn ask_as(app: &TestApp, key: &str, chat: &str, text: &str) -> String {
    let r = with_key(app, Method::POST, "/conversations/create", key)
        .json(&json!({"chat_id": chat, "role": "Human", "message": text}))
        .send()
        .await
        .unwrap();
    json_with(r, 201).await["id"].as_str().unwrap().to_owned()
}

async fn listed_chat_ids(response: reqwest::Response) -> Vec<String> {
    let body = json_with(response, 200).await;
    body.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A key of the right shape that was never issued.
fn unknown_secret_key() -> String {
    format!("sk_live_{}", "A1b2C3d4".repeat(4))
}

// ----------------------------------------------------------------------------------------------
// Presenting a key.

#[tokio::test]
async fn missing_unknown_malformed_and_revoked_keys_all_get_the_same_401_body() {
    let app = spawn_app().await;
    let (revoked_id, revoked) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Secret,
        vec![],
    )
    .await;
    let (revoked_pk_id, revoked_pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec![],
    )
    .await;
    // Both keys work before they are revoked.
    assert_eq!(
        with_key(&app, Method::GET, "/chats/", &revoked)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    revoke(&app, revoked_id).await;
    revoke(&app, revoked_pk_id).await;
    let url = app.url("/chats/");

    let attempts = [
        ("no key", app.client.get(&url)),
        (
            "unknown key",
            app.client.get(&url).bearer_auth(unknown_secret_key()),
        ),
        (
            "unknown key in x-api-key",
            app.client
                .get(&url)
                .header("x-api-key", unknown_secret_key()),
        ),
        (
            "malformed key",
            app.client.get(&url).bearer_auth("not-a-key"),
        ),
        (
            "short key",
            app.client.get(&url).bearer_auth("sk_live_short"),
        ),
        (
            "empty bearer",
            app.client.get(&url).header("authorization", "Bearer "),
        ),
        (
            "malformed x-api-key",
            app.client.get(&url).header("x-api-key", "pk_live_!!!"),
        ),
        ("revoked key", app.client.get(&url).bearer_auth(&revoked)),
        (
            "revoked key in x-api-key",
            app.client.get(&url).header("x-api-key", &revoked),
        ),
        (
            "revoked publishable key in ?key=",
            app.client
                .get(app.url(&format!("/chats/x?key={revoked_pk}"))),
        ),
        (
            "unknown publishable key in ?key=",
            app.client
                .get(app.url(&format!("/chats/x?key=pk_live_{}", "z".repeat(32)))),
        ),
    ];

    let mut bodies = Vec::new();
    for (what, request) in attempts {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        bodies.push((what, r.bytes().await.unwrap()));
    }
    let (_, first) = &bodies[0];
    let parsed: Value = serde_json::from_slice(first).unwrap();
    assert_eq!(parsed["error"], "unauthorized", "{parsed}");
    for (what, body) in &bodies {
        assert_eq!(body, first, "{what}: {}", String::from_utf8_lossy(body));
    }
}

#[tokio::test]
async fn a_key_works_as_a_bearer_token_and_in_x_api_key() {
    let app = spawn_app().await;
    let url = app.url("/chats/");

    let bearer = app
        .client
        .get(&url)
        .header("authorization", format!("Bearer {}", app.key))
        .send()
        .await
        .unwrap();
    let lower_case = app
        .client
        .get(&url)
        .header("authorization", format!("bearer {}", app.key))
        .send()
        .await
        .unwrap();
    let x_api_key = app
        .client
        .get(&url)
        .header("x-api-key", &app.key)
        .send()
        .await
        .unwrap();

    assert_eq!(bearer.status(), 200);
    assert_eq!(lower_case.status(), 200);
    assert_eq!(x_api_key.status(), 200);
}

#[tokio::test]
async fn a_secret_key_in_the_url_is_401_with_a_message_saying_why() {
    let app = spawn_app().await;
    let chat = app.create_chat("mine").await;

    let key = &app.key;
    for path in [
        format!("/chats/?key={key}"),
        format!("/chats/{chat}?key={key}"),
        format!("/conversations/?chat_id={chat}&key={key}"),
        format!("/conversations/inference/{chat}?key={key}"),
    ] {
        let r = app.client.get(app.url(&path)).send().await.unwrap();
        let body = json_with(r, 401).await;
        assert_eq!(body["error"], "unauthorized", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("URL"), "{message}");
        assert!(!message.contains(&app.key), "the key is echoed: {message}");
    }
}

#[tokio::test]
async fn a_publishable_key_in_the_url_reaches_a_chat_it_created() {
    let app = spawn_app().await;
    let (_, pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec![],
    )
    .await;
    let created = app
        .client
        .post(app.url(&format!("/chats/create?key={pk}")))
        .json(&json!({"name": "browser"}))
        .send()
        .await
        .unwrap();
    let chat = json_with(created, 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ask_as(&app, &pk, &chat, "from the browser").await;

    let fetched = app
        .client
        .get(app.url(&format!("/chats/{chat}?key={pk}")))
        .send()
        .await
        .unwrap();
    let listed = app
        .client
        .get(app.url(&format!("/conversations/?chat_id={chat}&key={pk}")))
        .send()
        .await
        .unwrap();
    let stream = app
        .client
        .get(app.url(&format!("/conversations/inference/{chat}?key={pk}")))
        .send()
        .await
        .unwrap();

    assert_eq!(json_with(fetched, 200).await["id"], chat.as_str());
    assert_eq!(json_with(listed, 200).await.as_array().unwrap().len(), 1);
    let events = SseClient::new(stream).collect().await;
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
}

// ----------------------------------------------------------------------------------------------
// Isolation.

#[tokio::test]
async fn a_chat_of_another_workspace_is_404_everywhere_and_not_listed() {
    let app = spawn_app().await;
    let other = app
        .services
        .store()
        .create_workspace("other", "Other")
        .await
        .unwrap();
    let (_, other_key) = new_key(&app, other.id, KeyKind::Secret, vec![]).await;
    let theirs = create_chat_as(&app, &other_key, "theirs").await;
    let their_question = ask_as(&app, &other_key, &theirs, "private question").await;
    let mine = app.create_chat("mine").await;
    let unknown = Uuid::new_v4().to_string();

    // Each route, for their chat and for an id that does not exist: the answers must be equal.
    let routes = |id: &str| -> Vec<(String, reqwest::RequestBuilder)> {
        vec![
            ("GET /chats/{id}".into(), app.get(&format!("/chats/{id}"))),
            (
                "PUT /chats/update/{id}".into(),
                with_key(&app, Method::PUT, &format!("/chats/update/{id}"), &app.key)
                    .json(&json!({"name": "hijacked"})),
            ),
            (
                "DELETE /chats/delete/{id}".into(),
                with_key(
                    &app,
                    Method::DELETE,
                    &format!("/chats/delete/{id}"),
                    &app.key,
                ),
            ),
            (
                "POST /conversations/create".into(),
                app.post_json(
                    "/conversations/create",
                    &json!({"chat_id": id, "role": "Human", "message": "injected"}),
                ),
            ),
            (
                "GET /conversations/?chat_id=".into(),
                app.get(&format!("/conversations/?chat_id={id}")),
            ),
            (
                "GET /conversations/inference/{id}".into(),
                app.get(&format!("/conversations/inference/{id}")),
            ),
            (
                "POST /conversations/stop/{id}".into(),
                app.post_json(&format!("/conversations/stop/{id}"), &json!({})),
            ),
        ]
    };
    for ((route, theirs_request), (_, unknown_request)) in
        routes(&theirs).into_iter().zip(routes(&unknown))
    {
        let r = theirs_request.send().await.unwrap();
        assert_eq!(r.status(), 404, "{route}");
        let their_body = r.bytes().await.unwrap();
        let unknown_body = unknown_request.send().await.unwrap().bytes().await.unwrap();
        assert_eq!(
            their_body, unknown_body,
            "{route}: distinguishable from an unknown id"
        );
    }
    // Their Human message id does not open a stream either.
    let by_message = app
        .get(&format!("/conversations/inference/{their_question}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_message.status(), 404);
    let listed = listed_chat_ids(app.get("/chats/").send().await.unwrap()).await;
    assert_eq!(listed, [mine]);

    // Nothing above touched their chat.
    let r = with_key(&app, Method::GET, &format!("/chats/{theirs}"), &other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(json_with(r, 200).await["name"], "theirs");
    let r = with_key(
        &app,
        Method::GET,
        &format!("/conversations/?chat_id={theirs}"),
        &other_key,
    )
    .send()
    .await
    .unwrap();
    let conversations = json_with(r, 200).await;
    assert_eq!(
        conversations.as_array().unwrap().len(),
        1,
        "{conversations}"
    );
    assert_eq!(app.mock.request_count(), 0);
}

#[tokio::test]
async fn chats_created_for_an_end_user_are_listed_for_that_user_only() {
    let app = spawn_app().await;
    let as_user = |method: Method, path: &str, user: &str| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&app.key)
            .header("x-user-id", user)
    };
    let mut alice_chats = Vec::new();
    for name in ["alice 1", "alice 2"] {
        let r = as_user(Method::POST, "/chats/create", "alice")
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        alice_chats.push(json_with(r, 201).await["id"].as_str().unwrap().to_owned());
    }
    let r = as_user(Method::POST, "/chats/create", "bob")
        .json(&json!({"name": "bob 1"}))
        .send()
        .await
        .unwrap();
    let bob_chat = json_with(r, 201).await["id"].as_str().unwrap().to_owned();
    let alice_chat = alice_chats[0].clone();

    let mut alice_list = listed_chat_ids(
        as_user(Method::GET, "/chats/", "alice")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let bob_list =
        listed_chat_ids(as_user(Method::GET, "/chats/", "bob").send().await.unwrap()).await;
    let mut everyone = listed_chat_ids(app.get("/chats/").send().await.unwrap()).await;

    alice_list.sort();
    alice_chats.sort();
    assert_eq!(alice_list, alice_chats);
    assert_eq!(bob_list, std::slice::from_ref(&bob_chat));
    everyone.sort();
    let mut all = [alice_chats.clone(), vec![bob_chat.clone()]].concat();
    all.sort();
    assert_eq!(everyone, all);
    // Bob cannot reach Alice's chat by id.
    let bob_get = as_user(Method::GET, &format!("/chats/{alice_chat}"), "bob")
        .send()
        .await
        .unwrap();
    let bob_post = as_user(Method::POST, "/conversations/create", "bob")
        .json(&json!({"chat_id": alice_chat, "role": "Human", "message": "hi"}))
        .send()
        .await
        .unwrap();
    let bob_list_messages = as_user(
        Method::GET,
        &format!("/conversations/?chat_id={alice_chat}"),
        "bob",
    )
    .send()
    .await
    .unwrap();
    let bob_delete = as_user(
        Method::DELETE,
        &format!("/chats/delete/{alice_chat}"),
        "bob",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(bob_get.status(), 404);
    assert_eq!(bob_post.status(), 404);
    assert_eq!(bob_list_messages.status(), 404);
    assert_eq!(bob_delete.status(), 404);
    // Alice and the unrestricted secret key can.
    assert_eq!(
        as_user(Method::GET, &format!("/chats/{alice_chat}"), "alice")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for id in &all {
        assert_eq!(
            app.get(&format!("/chats/{id}"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Publishable keys.

#[tokio::test]
async fn a_publishable_key_can_create_read_post_list_and_stream() {
    let app = spawn_app().await;
    app.mock.push(Script::text(&["public ", "answer"]));
    let (_, pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec![],
    )
    .await;

    let chat = create_chat_as(&app, &pk, "public").await;
    let fetched = with_key(&app, Method::GET, &format!("/chats/{chat}"), &pk)
        .send()
        .await
        .unwrap();
    ask_as(&app, &pk, &chat, "hello").await;
    let listed = with_key(
        &app,
        Method::GET,
        &format!("/conversations/?chat_id={chat}"),
        &pk,
    )
    .send()
    .await
    .unwrap();
    let stream = with_key(
        &app,
        Method::GET,
        &format!("/conversations/inference/{chat}"),
        &pk,
    )
    .header("accept", "text/event-stream")
    .send()
    .await
    .unwrap();

    assert_eq!(json_with(fetched, 200).await["name"], "public");
    assert_eq!(json_with(listed, 200).await.as_array().unwrap().len(), 1);
    let mut sse = SseClient::new(stream);
    assert_eq!(sse.status, 200);
    let events = sse.collect().await;
    assert_eq!(text_of(&events), "public answer");
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
    let r = with_key(
        &app,
        Method::GET,
        &format!("/conversations/?chat_id={chat}"),
        &pk,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(json_with(r, 200).await.as_array().unwrap().len(), 2);
    // The secret key of the workspace sees the chat too.
    assert_eq!(
        app.get(&format!("/chats/{chat}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_publishable_key_is_403_with_allowed_endpoints_elsewhere() {
    let app = spawn_app().await;
    let (_, pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec![],
    )
    .await;
    let chat = create_chat_as(&app, &pk, "public").await;

    let refused = [
        ("GET /chats/", with_key(&app, Method::GET, "/chats/", &pk)),
        ("GET /chats", with_key(&app, Method::GET, "/chats", &pk)),
        (
            "PUT",
            with_key(&app, Method::PUT, &format!("/chats/update/{chat}"), &pk)
                .json(&json!({"name": "renamed"})),
        ),
        (
            "DELETE",
            with_key(&app, Method::DELETE, &format!("/chats/delete/{chat}"), &pk),
        ),
        (
            "stop",
            with_key(
                &app,
                Method::POST,
                &format!("/conversations/stop/{chat}"),
                &pk,
            )
            .json(&json!({})),
        ),
    ];

    for (what, request) in refused {
        let body = json_with(request.send().await.unwrap(), 403).await;
        assert_eq!(body["error"], "forbidden", "{what}: {body}");
        let allowed = body["allowedEndpoints"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(!allowed.is_empty(), "{what}: {body}");
        assert!(allowed.iter().all(Value::is_string), "{what}: {body}");
    }
    // The refused update and delete changed nothing.
    let r = with_key(&app, Method::GET, &format!("/chats/{chat}"), &pk)
        .send()
        .await
        .unwrap();
    assert_eq!(json_with(r, 200).await["name"], "public");
}

#[tokio::test]
async fn a_publishable_key_may_post_only_human_messages() {
    let app = spawn_app().await;
    let (_, pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec![],
    )
    .await;
    let chat = create_chat_as(&app, &pk, "public").await;

    let r = with_key(&app, Method::POST, "/conversations/create", &pk)
        .json(&json!({"chat_id": chat, "role": "Assistant", "message": "a forged answer"}))
        .send()
        .await
        .unwrap();

    let body = json_with(r, 422).await;
    assert_eq!(body["field"], "role", "{body}");
}

#[tokio::test]
async fn a_chat_created_with_a_secret_key_is_404_to_a_publishable_key() {
    let app = spawn_app().await;
    let (_, pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec![],
    )
    .await;
    let chat = app.chat_with_question("server-side question").await;
    let question = app.conversations(&chat).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let responses = [
        (
            "GET /chats/{id}",
            with_key(&app, Method::GET, &format!("/chats/{chat}"), &pk)
                .send()
                .await
                .unwrap(),
        ),
        (
            "POST /conversations/create",
            with_key(&app, Method::POST, "/conversations/create", &pk)
                .json(&json!({"chat_id": chat, "role": "Human", "message": "hi"}))
                .send()
                .await
                .unwrap(),
        ),
        (
            "GET /conversations/",
            with_key(
                &app,
                Method::GET,
                &format!("/conversations/?chat_id={chat}"),
                &pk,
            )
            .send()
            .await
            .unwrap(),
        ),
        (
            "inference by chat",
            with_key(
                &app,
                Method::GET,
                &format!("/conversations/inference/{chat}"),
                &pk,
            )
            .send()
            .await
            .unwrap(),
        ),
        (
            "inference by message",
            with_key(
                &app,
                Method::GET,
                &format!("/conversations/inference/{question}"),
                &pk,
            )
            .send()
            .await
            .unwrap(),
        ),
    ];

    for (route, r) in responses {
        assert_eq!(r.status(), 404, "{route}");
    }
    assert_eq!(app.conversations(&chat).await.len(), 1);
    assert_eq!(app.mock.request_count(), 0);
}

#[tokio::test]
async fn a_publishable_key_of_another_workspace_cannot_reach_this_workspaces_public_chats() {
    let app = spawn_app().await;
    let other = app
        .services
        .store()
        .create_workspace("other", "Other")
        .await
        .unwrap();
    let (_, pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec![],
    )
    .await;
    let (_, other_pk) = new_key(&app, other.id, KeyKind::Publishable, vec![]).await;
    let chat = create_chat_as(&app, &pk, "public").await;

    let r = with_key(&app, Method::GET, &format!("/chats/{chat}"), &other_pk)
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn x_user_id_is_refused_with_a_publishable_key() {
    let app = spawn_app().await;
    let (_, pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec![],
    )
    .await;

    let r = with_key(&app, Method::POST, "/chats/create", &pk)
        .header("x-user-id", "mallory")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_publishable_key_bound_to_an_origin_needs_that_origin() {
    let app = spawn_app().await;
    let (_, pk) = new_key(
        &app,
        app.services.default_workspace,
        KeyKind::Publishable,
        vec!["https://app.example".into()],
    )
    .await;
    let create =
        || with_key(&app, Method::POST, "/chats/create", &pk).json(&json!({"name": "bound"}));

    let without_origin = create().send().await.unwrap();
    let other_origin = create()
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    let similar_origin = create()
        .header("origin", "https://app.example.evil")
        .send()
        .await
        .unwrap();
    let right_origin = create()
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();

    for r in [without_origin, other_origin, similar_origin] {
        let body = json_with(r, 403).await;
        assert_eq!(body["error"], "forbidden", "{body}");
    }
    let chat = json_with(right_origin, 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same holds for a key in the URL, as an EventSource sends it.
    let url = app.url(&format!("/chats/{chat}?key={pk}"));
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 403);
    assert_eq!(
        app.client
            .get(&url)
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

// ----------------------------------------------------------------------------------------------
// Without keys.

#[tokio::test]
async fn with_auth_off_requests_need_no_key() {
    let app = spawn_app_with(|s| s.auth = sluice::config::AuthMode::Off).await;

    let created = app
        .client
        .post(app.url("/chats/create"))
        .json(&json!({"name": "open"}))
        .send()
        .await
        .unwrap();
    let chat = json_with(created, 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = listed_chat_ids(app.client.get(app.url("/chats/")).send().await.unwrap()).await;
    let asked = app
        .client
        .post(app.url("/conversations/create"))
        .json(&json!({"chat_id": chat, "role": "Human", "message": "hi"}))
        .send()
        .await
        .unwrap();
    let stream = app
        .client
        .get(app.url(&format!("/conversations/inference/{chat}")))
        .send()
        .await
        .unwrap();

    assert_eq!(listed, std::slice::from_ref(&chat));
    assert_eq!(asked.status(), 201);
    let events = SseClient::new(stream).collect().await;
    assert_eq!(named(&events, "done").unwrap()["status"], "complete");
    let deleted = app
        .client
        .delete(app.url(&format!("/chats/delete/{chat}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_key() {
    let app = spawn_app().await;

    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();

    assert_eq!(health.status(), 200);
    let body = json_with(ready, 200).await;
    assert_eq!(body["database"], "ok", "{body}");
}
