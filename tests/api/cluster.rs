//! Two real sluice processes on one database and one Redis: an answer run by one is attached
//! to, resumed, stopped and finished from the other, survives the other's restart, and its
//! readers elsewhere are told when its process dies. Skipped, saying so, without
//! `SLUICE_TEST_REDIS_URL`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::service::KeyKind;

use crate::helpers::*;
use crate::lifecycle::{Process, sluice_command, spawn_process};

fn redis_url() -> Option<String> {
    match std::env::var("SLUICE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: SLUICE_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// `wé0 wé1 …`: two-byte characters, so that offsets are bytes, not characters.
fn accented(chunks: usize, delay_ms: u64) -> Script {
    let words: Vec<String> = (0..chunks).map(|i| format!("wé{i} ")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut s = Script::text(&refs);
    s.chunk_delay_ms = delay_ms;
    s
}

fn whole(chunks: usize) -> String {
    (0..chunks).map(|i| format!("wé{i} ")).collect()
}

/// One database, one Redis, one mock upstream, and an admin key every replica knows.
struct Cluster {
    mock: MockUpstream,
    database_url: String,
    _dir: Option<tempfile::TempDir>,
    redis: String,
    key: String,
    client: reqwest::Client,
}

impl Cluster {
    async fn new(redis: String) -> Self {
        let (database_url, _dir) = fresh_database().await;
        Self {
            mock: MockUpstream::start().await.unwrap(),
            database_url,
            _dir,
            redis,
            key: sluice::service::generate_key(KeyKind::Secret),
            client: reqwest::Client::new(),
        }
    }

    fn command(&self) -> Command {
        let mut command = sluice_command(&self.database_url, &self.mock);
        command
            .env("SLUICE_ADMIN_KEY", &self.key)
            .env("SLUICE_REDIS_URL", &self.redis);
        command
    }

    fn replica(&self) -> Process {
        spawn_process(self.command())
    }

    async fn stream(&self, on: &Process, chat: &str, last_event_id: Option<&str>) -> SseClient {
        let mut request = self
            .client
            .get(format!("{}/conversations/inference/{chat}", on.base))
            .bearer_auth(&self.key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let sse = SseClient::new(request.send().await.unwrap());
        assert_eq!(sse.status, 200);
        sse
    }

    /// The chat's answer as saved: `content` and `status`.
    async fn answer(&self, on: &Process, chat: &str) -> Value {
        let list: Vec<Value> = self
            .client
            .get(format!(
                "{}/api/workspaces/default/chats/{chat}/messages/",
                on.base
            ))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list.into_iter()
            .rev()
            .find(|m| m["role"] == "assistant")
            .unwrap_or(Value::Null)
    }
}

/// Two replicas on a fresh cluster whose mock answers `chunks` words `delay_ms` apart, with a
/// question asked on A; `None` (the test is skipped) without `SLUICE_TEST_REDIS_URL`.
async fn two_replicas(
    chunks: usize,
    delay_ms: u64,
    name: &str,
) -> Option<(Cluster, Process, Process, String)> {
    let cluster = Cluster::new(redis_url()?).await;
    cluster.mock.set_default(accented(chunks, delay_ms));
    let a = cluster.replica();
    let b = cluster.replica();
    let chat = a.ask(&cluster.client, &cluster.key, name).await;
    Some((cluster, a, b, chat))
}

/// Reads until at least `bytes` of text arrived: the text and the last event's id.
async fn read_until(sse: &mut SseClient, bytes: usize) -> (String, String) {
    let (mut text, mut id) = (String::new(), String::new());
    while text.len() < bytes {
        let e = sse.next().await.expect("the answer ended early");
        if e.event == "message" {
            text.push_str(&e.data);
            id = e.id.clone();
        }
    }
    (text, id)
}

#[tokio::test]
async fn an_answer_run_by_one_process_is_read_from_the_other_byte_for_byte() {
    let Some((cluster, a, b, chat)) = two_replicas(60, 30, "across").await else {
        return;
    };

    // A starts the answer; B attaches from the beginning while it runs.
    let mut on_a = cluster.stream(&a, &chat, None).await;
    let (head, mid_id) = read_until(&mut on_a, 40).await;
    let mut from_start = cluster.stream(&b, &chat, None).await;
    // And B resumes a reader that read the first part on A.
    let mut resumed = cluster.stream(&b, &chat, Some(&mid_id)).await;

    let rest_a = on_a.collect().await;
    let all_b = from_start.collect().await;
    let rest_b = resumed.collect().await;
    let full_a = format!("{head}{}", text_of(&rest_a));
    assert_eq!(full_a, whole(60));
    assert_eq!(text_of(&all_b), whole(60), "B's reader from the start");
    assert_eq!(
        format!("{head}{}", text_of(&rest_b)),
        whole(60),
        "B's resumed reader"
    );
    for events in [&rest_a, &all_b, &rest_b] {
        let done = named(events, "done").expect("done");
        assert_eq!(done["status"], "complete", "{done}");
        assert_eq!(
            events.last().unwrap().id,
            rest_a.last().unwrap().id,
            "the same final event id on both replicas"
        );
    }
    // Event ids name the same bytes on both replicas: each delta ends where its id says.
    let mut at = head.len();
    let message = mid_id.split(':').next().unwrap().to_owned();
    for e in rest_b.iter().filter(|e| e.event == "message") {
        at += e.data.len();
        assert_eq!(e.id, format!("{message}:{at}"));
    }
    assert_eq!(cluster.mock.request_count(), 1, "one upstream call in all");
    assert_eq!(cluster.answer(&b, &chat).await["content"], whole(60));
}

#[tokio::test]
async fn two_processes_asked_at_once_start_one_answer() {
    let Some(redis) = redis_url() else { return };
    let cluster = Cluster::new(redis).await;
    cluster.mock.set_default(accented(20, 20));
    let a = cluster.replica();
    let b = cluster.replica();
    for round in 0..5 {
        let chat = a
            .ask(&cluster.client, &cluster.key, &format!("race {round}"))
            .await;
        let (mut on_a, mut on_b) = tokio::join!(
            cluster.stream(&a, &chat, None),
            cluster.stream(&b, &chat, None)
        );
        let (events_a, events_b) = tokio::join!(on_a.collect(), on_b.collect());
        assert_eq!(text_of(&events_a), whole(20));
        assert_eq!(text_of(&events_b), whole(20));
        assert_eq!(
            events_a.last().unwrap().id,
            events_b.last().unwrap().id,
            "both read the same answer"
        );
    }
    assert_eq!(
        cluster.mock.request_count(),
        5,
        "one upstream call per question"
    );
}

#[tokio::test]
async fn a_stop_asked_of_one_process_ends_every_reader_of_the_answer_the_other_runs() {
    let Some((cluster, a, b, chat)) = two_replicas(400, 50, "stop").await else {
        return;
    };
    let mut on_a = cluster.stream(&a, &chat, None).await;
    read_until(&mut on_a, 10).await;
    let mut on_b = cluster.stream(&b, &chat, None).await;
    read_until(&mut on_b, 10).await;

    let asked = Instant::now();
    let stopped = cluster
        .client
        .post(format!("{}/conversations/stop/{chat}", b.base))
        .bearer_auth(&cluster.key)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    assert!(
        cluster
            .mock
            .wait_for_aborted(1, Duration::from_secs(1))
            .await,
        "A's upstream call was not cut within 1 s of the stop asked of B"
    );
    let (events_a, events_b) = tokio::join!(on_a.collect(), on_b.collect());
    for events in [&events_a, &events_b] {
        let done = named(events, "done").expect("done");
        assert_eq!(done["status"], "cancelled", "{done}");
    }
    eprintln!("every reader had done {:?} after the stop", asked.elapsed());
    let saved = cluster.answer(&b, &chat).await;
    assert_eq!(saved["status"], "cancelled", "{saved}");
}

#[tokio::test]
async fn a_reader_on_one_process_is_told_when_the_process_running_its_answer_is_killed() {
    let Some((cluster, mut a, b, chat)) = two_replicas(400, 50, "killed").await else {
        return;
    };
    let mut on_a = cluster.stream(&a, &chat, None).await;
    read_until(&mut on_a, 30).await;
    let mut on_b = cluster.stream(&b, &chat, None).await;
    let (seen, _) = read_until(&mut on_b, 30).await;

    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    let rest = on_b.collect().await;
    let told = killed.elapsed();
    let error = named(&rest, "error").expect("an error event");
    assert_eq!(error["code"], "interrupted", "{error}");
    let done = named(&rest, "done").expect("done");
    assert_eq!(done["status"], "incomplete", "{done}");
    eprintln!("B's reader was told {told:?} after A was killed");
    assert!(told < Duration::from_secs(15), "{told:?}");
    let saved = cluster.answer(&b, &chat).await;
    assert_eq!(saved["status"], "incomplete", "{saved}");
    let text = format!("{seen}{}", text_of(&rest));
    assert!(
        text.starts_with(saved["content"].as_str().unwrap()),
        "{saved}"
    );
    assert!(
        whole(400).starts_with(&text),
        "B's reader saw only A's answer, in order"
    );
}

#[tokio::test]
async fn restarting_one_process_leaves_the_answer_the_other_runs_alone() {
    let Some(redis) = redis_url() else { return };
    let cluster = Cluster::new(redis).await;
    cluster.mock.set_default(accented(80, 40));
    let mut a = cluster.replica();
    let b = cluster.replica();
    let chat = b.ask(&cluster.client, &cluster.key, "restart").await;
    let mut on_b = cluster.stream(&b, &chat, None).await;
    let (head, _) = read_until(&mut on_b, 20).await;

    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let a = cluster.replica();
    // The restarted A follows B's answer too.
    let mut on_a = cluster.stream(&a, &chat, None).await;
    let (rest_b, all_a) = tokio::join!(on_b.collect(), on_a.collect());
    assert_eq!(format!("{head}{}", text_of(&rest_b)), whole(80));
    assert_eq!(text_of(&all_a), whole(80));
    assert_eq!(named(&rest_b, "done").unwrap()["status"], "complete");
    assert_eq!(cluster.answer(&a, &chat).await["status"], "complete");
    assert_eq!(cluster.mock.request_count(), 1);
}

#[tokio::test]
async fn a_key_is_limited_and_revoked_across_processes() {
    let Some(redis) = redis_url() else { return };
    let cluster = Cluster::new(redis).await;
    let a = cluster.replica();
    let mut limited = cluster.command();
    limited.env("SLUICE_RATE_LIMIT_SECRET", "1000");
    let b = spawn_process(limited);
    let created: Value = cluster
        .client
        .post(format!("{}/api/workspaces/default/keys/", a.base))
        .bearer_auth(&cluster.key)
        .json(&json!({"kind": "secret", "rate_limit": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let list = |on: &Process| {
        cluster
            .client
            .get(format!("{}/api/workspaces/default/chats/", on.base))
            .bearer_auth(&key)
            .send()
    };
    let mut statuses = Vec::new();
    for on in [&a, &b, &a, &b] {
        statuses.push(list(on).await.unwrap().status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "one limit across both processes"
    );

    let revoked = cluster
        .client
        .delete(format!(
            "{}/api/workspaces/default/keys/{}/",
            a.base,
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(&cluster.key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        list(&b).await.unwrap().status(),
        401,
        "B still took a revoked key"
    );
}

/// A Redis server of the test's own, which it can kill and start again on the same port.
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { port, child })
    }

    fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn an_answer_followed_across_processes_survives_a_redis_restart() {
    if redis_url().is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(mut own) = OwnRedis::start(port) else {
        eprintln!("skipped: no redis-server to restart");
        return;
    };
    let cluster = Cluster::new(format!("redis://127.0.0.1:{port}")).await;
    cluster.mock.set_default(accented(120, 40));
    let a = cluster.replica();
    let b = cluster.replica();
    let chat = a.ask(&cluster.client, &cluster.key, "restart redis").await;
    let mut on_a = cluster.stream(&a, &chat, None).await;
    read_until(&mut on_a, 20).await;
    let mut on_b = cluster.stream(&b, &chat, None).await;
    let (head, _) = read_until(&mut on_b, 60).await;

    // Redis dies with everything it held, and comes back empty on the same port.
    own.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _own = OwnRedis::start(own.port).expect("redis-server again");

    let (rest_a, rest_b) = tokio::join!(on_a.collect(), on_b.collect());
    assert_eq!(named(&rest_a, "done").unwrap()["status"], "complete");
    let done = named(&rest_b, "done").expect("done on B");
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(
        format!("{head}{}", text_of(&rest_b)),
        whole(120),
        "B's reader got exactly the rest, once"
    );
    assert_eq!(cluster.mock.request_count(), 1);
    assert!(
        a.stderr()
            .contains("an answer's log was written again into Redis"),
        "A did not write its log again: the restart was not seen\n{}",
        a.stderr()
    );
}

impl Cluster {
    /// A request to `path` on `on` with the admin key: status and JSON body.
    async fn call(
        &self,
        on: &Process,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", on.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn the_workspace_dialect_follows_stops_and_regenerates_an_answer_the_other_process_runs() {
    use reqwest::Method;
    let Some(redis) = redis_url() else { return };
    let cluster = Cluster::new(redis).await;
    cluster.mock.set_default(accented(400, 50));
    let a = cluster.replica();
    let b = cluster.replica();
    let (status, created) = cluster
        .call(
            &a,
            Method::POST,
            "/api/workspaces/default/chats/",
            Some(json!({"name": "s"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let session = format!(
        "/api/workspaces/default/chats/{}",
        created["id"].as_str().unwrap()
    );
    let question = |text: &str| json!({"role": "user", "content": text});

    // Asked on A as a task; followed on B by the answer's id.
    let (status, asked) = cluster
        .call(
            &a,
            Method::POST,
            &format!("{session}/messages/?async=true"),
            Some(question("long")),
        )
        .await;
    assert_eq!(status, 202, "{asked}");
    let answer = asked["task_id"].as_str().unwrap().to_owned();
    let mut on_b = SseClient::new(
        cluster
            .client
            .get(format!("{}{session}/messages/{answer}/stream/", b.base))
            .bearer_auth(&cluster.key)
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(on_b.status, 200);
    assert_eq!(on_b.next().await.unwrap().event, "delta");

    // Stopped from B: A's upstream call is cut, B's reader gets its end.
    let (status, stopped) = cluster
        .call(&b, Method::POST, &format!("{session}/stop/"), None)
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["stopped"], true, "{stopped}");
    assert_eq!(stopped["status"], "cancelled", "{stopped}");
    assert!(
        cluster
            .mock
            .wait_for_aborted(1, Duration::from_secs(1))
            .await
    );
    let rest = on_b.collect().await;
    assert_eq!(rest.last().unwrap().event, "done", "{rest:?}");

    // Regenerated on B: a new answer replaces the stopped one.
    cluster.mock.push(Script::text(&["re", "gen"]));
    let (status, again) = cluster
        .call(
            &b,
            Method::POST,
            &format!("{session}/messages/regenerate/"),
            None,
        )
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["assistant_messages"][0]["content"], "regen");

    // Regenerated on B while A runs the answer: A's is stopped first, then B answers.
    let requests = cluster.mock.request_count();
    let (status, running) = cluster
        .call(
            &a,
            Method::POST,
            &format!("{session}/messages/?async=true"),
            Some(question("again")),
        )
        .await;
    assert_eq!(status, 202, "{running}");
    eventually(Duration::from_secs(5), || async {
        cluster.mock.request_count() > requests
    })
    .await;
    cluster.mock.push(Script::text(&["short"]));
    let (status, replaced) = cluster
        .call(
            &b,
            Method::POST,
            &format!("{session}/messages/regenerate/"),
            None,
        )
        .await;
    assert_eq!(status, 201, "{replaced}");
    assert_eq!(
        replaced["user_message"]["id"],
        running["user_message"]["id"]
    );
    assert_eq!(replaced["assistant_messages"][0]["content"], "short");
    assert!(
        cluster
            .mock
            .wait_for_aborted(2, Duration::from_secs(5))
            .await,
        "A's running answer was not cut"
    );
    let (_, listed) = cluster
        .call(&a, Method::GET, &format!("{session}/messages/"), None)
        .await;
    let answers: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["regen", "short"]);
}

#[tokio::test]
async fn a_reader_that_finds_the_beginning_trimmed_from_redis_gets_it_from_the_saved_row() {
    let Some((cluster, a, b, chat)) = two_replicas(150, 30, "trimmed").await else {
        return;
    };
    let mut on_a = cluster.stream(&a, &chat, None).await;
    let (_, id) = read_until(&mut on_a, 200).await;
    let message = id.split(':').next().unwrap().to_owned();

    // As the length cap does to a long answer: only the newest entry is left.
    let mut conn = redis::Client::open(cluster.redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let trimmed: i64 = redis::cmd("XTRIM")
        .arg(format!("sluice:log:{message}"))
        .arg("MAXLEN")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(trimmed >= 1, "nothing was trimmed");

    let mut on_b = cluster.stream(&b, &chat, None).await;
    let (rest_a, all_b) = tokio::join!(on_a.collect(), on_b.collect());
    assert_eq!(named(&rest_a, "done").unwrap()["status"], "complete");
    assert_eq!(named(&all_b, "done").unwrap()["status"], "complete");
    assert_eq!(text_of(&all_b), whole(150), "B's reader from the beginning");
}
