//! The workspace API's workspaces and keys, through the real server.

use serde_json::{Value, json};
use sluice::service::KeyKind;

use crate::helpers::{TestApp, spawn_app};

/// A non-admin key of `workspace`, as a client would send it.
/// A non-admin key of `workspace`, as a client would send it.
async fn key_of(app: &TestApp, workspace: uuid::Uuid, kind: KeyKind) -> String {
    app.new_key(workspace, kind).await
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    app.request_as(Some(key), method, path, body).await
}

/// An error in this dialect's envelope: the code, the field, `detail` repeating the message.
fn assert_error(body: &Value, code: &str, field: Option<&str>) {
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["detail"], body["message"], "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
    match field {
        Some(f) => assert_eq!(body["field"], f, "{body}"),
        None => assert!(body.get("field").is_none(), "{body}"),
    }
}

#[tokio::test]
async fn an_admin_creates_reads_and_updates_workspaces_and_others_may_not() {
    let app = spawn_app().await;
    let admin = app.key.clone();
    use reqwest::Method;

    let (status, created) = send(
        &app,
        Method::POST,
        "/api/workspaces/",
        &admin,
        Some(json!({"slug": "team-a", "name": "Team A", "credit_limit": "10.00"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["slug"], "team-a");
    assert_eq!(created["name"], "Team A");
    assert_eq!(created["credit_limit"], "10.00");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    // Without the trailing slash too; the slug is taken now.
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/workspaces",
        &admin,
        Some(json!({"slug": "team-a", "name": "Again"})),
    )
    .await;
    assert_eq!(status, 409);
    assert_error(&body, "slug_taken", None);

    for (bad, field) in [
        (json!({"slug": "Team A"}), "slug"),
        (json!({"slug": "ok", "credit_limit": "-3"}), "credit_limit"),
        (
            json!({"slug": "ok", "credit_limit": "lots"}),
            "credit_limit",
        ),
        (json!({"name": "no slug"}), "slug"),
    ] {
        let (status, body) = send(&app, Method::POST, "/api/workspaces/", &admin, Some(bad)).await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, body["error"].as_str().unwrap(), Some(field));
    }

    // By UUID and by slug.
    for reference in [id.as_str(), "team-a"] {
        let (status, got) = send(
            &app,
            Method::GET,
            &format!("/api/workspaces/{reference}/"),
            &admin,
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(got, created);
    }

    let (status, updated) = send(
        &app,
        Method::PATCH,
        "/api/workspaces/team-a",
        &admin,
        Some(json!({"name": "Team Alpha"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["name"], "Team Alpha");
    assert_eq!(updated["credit_limit"], "10.00", "an absent field stays");
    let (_, lifted) = send(
        &app,
        Method::PATCH,
        &format!("/api/workspaces/{id}/"),
        &admin,
        Some(json!({"credit_limit": null})),
    )
    .await;
    assert!(lifted["credit_limit"].is_null(), "{lifted}");

    // A plain secret key of the new workspace sees it, may not change it, and sees no other.
    let team_key = key_of(&app, id.parse().unwrap(), KeyKind::Secret).await;
    let (status, _) = send(
        &app,
        Method::GET,
        "/api/workspaces/team-a/",
        &team_key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = send(
        &app,
        Method::PATCH,
        "/api/workspaces/team-a/",
        &team_key,
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_eq!(status, 403);
    assert_error(&body, "forbidden", None);
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/workspaces/",
        &team_key,
        Some(json!({"slug": "other"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = send(
        &app,
        Method::GET,
        "/api/workspaces/default/",
        &team_key,
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", None);
    let (status, _) = send(&app, Method::GET, "/api/workspaces/nowhere/", &admin, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_workspace_key_manages_its_keys_and_a_revoked_key_is_refused_at_once() {
    let app = spawn_app().await;
    use reqwest::Method;
    let team = app
        .services
        .store()
        .create_workspace("team-b", "Team B")
        .await
        .unwrap();
    let secret = key_of(&app, team.id, KeyKind::Secret).await;

    let (status, created) = send(
        &app,
        Method::POST,
        "/api/workspaces/team-b/keys/",
        &secret,
        Some(json!({"kind": "publishable", "name": "widget", "origins": ["https://shop.example"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let new_key = created["key"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("pk_live_"));
    assert_eq!(created["kind"], "publishable");
    assert_eq!(created["origins"], json!(["https://shop.example"]));
    assert!(new_key.starts_with(created["prefix"].as_str().unwrap()));
    assert!(created["revoked_at"].is_null());

    let (status, listed) = send(
        &app,
        Method::GET,
        "/api/workspaces/team-b/keys",
        &secret,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "the caller's key and the new one");
    assert!(listed.iter().all(|k| k.get("key").is_none()));
    assert!(!serde_json::to_string(&listed).unwrap().contains(&new_key));

    // The new key works (from its origin), until it is revoked.
    let works = |key: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/chats/create"))
                .bearer_auth(key)
                .header("origin", "https://shop.example")
                .json(&json!({"name": "hi"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(works(new_key.clone()).await, 201);
    let id = created["id"].as_str().unwrap();
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/workspaces/team-b/keys/{id}/"),
        &secret,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(works(new_key).await, 401);
    let (_, listed) = send(
        &app,
        Method::GET,
        "/api/workspaces/team-b/keys/",
        &secret,
        None,
    )
    .await;
    let revoked = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert!(revoked["revoked_at"].as_str().is_some());

    // Bad input, another workspace, unknown keys, a publishable key.
    for (bad, field) in [
        (json!({"kind": "root"}), "kind"),
        (
            json!({"kind": "secret", "origins": ["https://a.example"]}),
            "origins",
        ),
        (
            json!({"kind": "publishable", "origins": ["a.example"]}),
            "origins",
        ),
        (json!({"kind": "secret", "rate_limit": 0}), "rate_limit"),
    ] {
        let (status, body) = send(
            &app,
            Method::POST,
            "/api/workspaces/team-b/keys/",
            &secret,
            Some(bad),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_error(&body, "bad_request", Some(field));
    }
    let (status, _) = send(
        &app,
        Method::GET,
        "/api/workspaces/default/keys/",
        &secret,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/workspaces/team-b/keys/{}/", uuid::Uuid::new_v4()),
        &secret,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let publishable = key_of(&app, team.id, KeyKind::Publishable).await;
    let (status, body) = send(
        &app,
        Method::GET,
        "/api/workspaces/team-b/keys/",
        &publishable,
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_error(&body, "forbidden", None);
}
