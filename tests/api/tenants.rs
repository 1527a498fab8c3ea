//! The cross-tenant matrix: every route of every dialect that names an object (or a workspace)
//! in its path, called with another workspace's keys, and by another end user, answers 403 or
//! 404, never the object, and changes nothing. The routes come from `/openapi.json`: a route
//! added to the description without a line here fails the test.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use sluice::service::KeyKind;

use crate::helpers::*;

/// Routes whose path parameters name nothing a tenant owns.
const NOT_TENANT_SCOPED: [(&str, &str); 2] = [
    // The page's static files.
    ("GET", "/assets/{file}"),
    // A public link is readable by anyone who has it: that is what it is for.
    ("GET", "/api/chats/shared/{link}/"),
];

/// What workspace A owns, by the names its paths give it.
struct Owned {
    chat: String,
    session: String,
    message: String,
    task: String,
    key: String,
    agent: String,
    agent_chat: String,
    agent_answer: String,
}

impl Owned {
    fn fill(&self, template: &str) -> String {
        let session_route = template.starts_with("/api/workspaces/{ws}/chats/");
        let mut path = template.replace("{ws}", "default");
        for (name, value) in [
            ("{message}", &self.message),
            ("{task}", &self.task),
            ("{chatId}", &self.agent_chat),
            ("{messageId}", &self.agent_answer),
        ] {
            path = path.replace(name, value);
        }
        let id = if template.starts_with("/agent/") {
            &self.agent
        } else if template.starts_with("/api/workspaces/{ws}/keys/") {
            &self.key
        } else if session_route {
            &self.session
        } else {
            &self.chat
        };
        let path = path.replace("{id}", id);
        if template.ends_with("/translate/") {
            // Its input is its query.
            return format!("{path}?text=Hello&target=es");
        }
        path
    }
}

/// A body the route accepts, so that only who is asking can make it refuse.
fn body_for(method: &str, template: &str) -> Option<Value> {
    let body = match (method, template) {
        ("PUT", "/chats/update/{id}") => json!({"name": "taken"}),
        ("PATCH", "/api/workspaces/{ws}/") => json!({"name": "taken"}),
        ("POST", "/api/workspaces/{ws}/keys/") => json!({"kind": "secret"}),
        ("POST", "/api/workspaces/{ws}/chats/") => json!({"name": "intruder"}),
        ("PUT", "/api/workspaces/{ws}/chats/{id}/") => json!({"name": "taken"}),
        ("POST", "/api/workspaces/{ws}/chats/{id}/messages/") => {
            json!({"role": "user", "content": "mine now"})
        }
        ("POST", "/api/workspaces/{ws}/chats/{id}/share/")
        | ("POST", "/api/workspaces/{ws}/chats/{id}/revoke-share/") => {
            json!({"user_id": "intruder"})
        }
        ("PUT", "/agent/{id}") => json!({"name": "taken"}),
        ("PUT", "/agent/{id}/rollback") => json!({}),
        ("POST", "/chat/{chatId}/message") => json!({"role": "user", "content": "mine now"}),
        _ => return None,
    };
    Some(body)
}

/// Every operation of the description whose path has a parameter.
async fn routes_with_parameters(app: &TestApp) -> BTreeSet<(String, String)> {
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.contains('{') {
            continue;
        }
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

async fn call(
    app: &TestApp,
    key: &str,
    user: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut request = app
        .client
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            app.url(path),
        )
        .bearer_auth(key);
    if let Some(user) = user {
        request = request.header("x-user-id", user);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Workspace A's objects, made with its admin key (and, for the end-user rows, for `alice`).
async fn owned(app: &TestApp) -> Owned {
    app.mock.set_default(Script::text(&["the ", "answer"]));
    let chat = app.chat_with_question("A's question").await;
    let answered = app
        .stream(&format!("/conversations/inference/{chat}"), None)
        .await
        .collect()
        .await;
    assert!(named(&answered, "done").is_some());

    let as_alice = |method: Method, path: &str, body: Option<Value>| {
        let mut request = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&app.key)
            .header("x-user-id", "alice");
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let session: Value = as_alice(
        Method::POST,
        "/api/workspaces/default/chats/",
        Some(json!({"name": "alice's"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let session = session["id"].as_str().unwrap().to_owned();
    let asked: Value = as_alice(
        Method::POST,
        &format!("/api/workspaces/default/chats/{session}/messages/?async=true"),
        Some(json!({"role": "user", "content": "alice asks"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let task = asked["task_id"].as_str().unwrap().to_owned();
    let message = asked["user_message"]["id"].as_str().unwrap().to_owned();

    let (status, key) = app
        .call(
            Method::POST,
            "/api/workspaces/default/keys/",
            Some(json!({"kind": "secret"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, agent) = app
        .call(Method::POST, "/agent", Some(json!({"name": "A's agent"})))
        .await;
    assert_eq!(status, 201, "{agent}");
    let agent = agent["id"].as_str().unwrap().to_owned();
    let agent_chat: Value = as_alice(
        Method::POST,
        "/chat",
        Some(json!({"agentId": agent, "userId": "alice"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let agent_chat = agent_chat["id"].as_str().unwrap().to_owned();
    let answer: Value = as_alice(
        Method::POST,
        &format!("/chat/{agent_chat}/message"),
        Some(json!({"role": "user", "content": "alice asks the agent"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    Owned {
        chat,
        session,
        message,
        task,
        key: key["id"].as_str().unwrap().to_owned(),
        agent,
        agent_chat,
        agent_answer: answer["id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn no_route_gives_another_tenant_or_end_user_what_workspace_a_owns() {
    let app = spawn_app().await;
    let a = owned(&app).await;

    let (status, b) = app
        .call(
            Method::POST,
            "/api/workspaces/",
            Some(json!({"slug": "tenant-b", "name": "B"})),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let b: uuid::Uuid = b["id"].as_str().unwrap().parse().unwrap();
    let b_secret = app.new_key(b, KeyKind::Secret).await;
    let b_publishable = app.new_key(b, KeyKind::Publishable).await;

    let routes = routes_with_parameters(&app).await;
    let skipped: BTreeSet<(String, String)> = NOT_TENANT_SCOPED
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let mut refused = Vec::new();
    let mut leaked = Vec::new();
    for (method, template) in routes.difference(&skipped) {
        let path = a.fill(template);
        assert!(
            !path.contains('{'),
            "{method} {template}: a parameter the matrix does not know; add it to `Owned::fill`"
        );
        // Another workspace's keys, and (for what alice owns) another end user of A's key.
        let mut callers: Vec<(&str, &str, Option<&str>)> = vec![
            ("B's secret key", b_secret.as_str(), None),
            ("B's publishable key", b_publishable.as_str(), None),
        ];
        let alices = template.starts_with("/api/workspaces/{ws}/chats/{id}")
            || template.starts_with("/chat/{chatId}");
        if alices {
            callers.push(("A's key for mallory", app.key.as_str(), Some("mallory")));
        }
        for (who, key, user) in callers {
            let (status, body) =
                call(&app, key, user, method, &path, body_for(method, template)).await;
            if [403, 404].contains(&status) {
                refused.push(format!("{who}: {method} {template} → {status}"));
            } else {
                leaked.push(format!("{who}: {method} {path} → {status} {body}"));
            }
        }
    }
    assert!(
        leaked.is_empty(),
        "answered another tenant or end user:\n{}",
        leaked.join("\n")
    );
    eprintln!(
        "{} refusals, for example {:?}",
        refused.len(),
        &refused[..3]
    );
    assert!(refused.len() > 80, "{}", refused.len());

    // Nothing of A's changed: the chats, the agent, the key are all there.
    for path in [
        format!("/chats/{}", a.chat),
        format!("/agent/{}", a.agent),
        format!("/chat/{}", a.agent_chat),
    ] {
        let (status, body) = app.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, session) = app
        .call(
            Method::GET,
            &format!("/api/workspaces/default/chats/{}/", a.session),
            None,
        )
        .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["name"], "alice's");
    let (_, keys) = app
        .call(Method::GET, "/api/workspaces/default/keys/", None)
        .await;
    let kept = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == a.key.as_str())
        .unwrap();
    assert!(kept["revoked_at"].is_null(), "{kept}");
}

#[tokio::test]
async fn the_matrix_knows_every_parameter_of_the_description() {
    let app = spawn_app().await;
    let owned = Owned {
        chat: "c".into(),
        session: "s".into(),
        message: "m".into(),
        task: "t".into(),
        key: "k".into(),
        agent: "a".into(),
        agent_chat: "ac".into(),
        agent_answer: "aa".into(),
    };
    for (method, template) in routes_with_parameters(&app).await {
        let skipped = NOT_TENANT_SCOPED
            .iter()
            .any(|(m, p)| *m == method && *p == template);
        assert!(
            skipped || !owned.fill(&template).contains('{'),
            "{method} {template} is not in the cross-tenant matrix"
        );
    }
}
