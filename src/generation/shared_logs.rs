//! Running logs shared by replicas through Redis: one Redis stream per answer, append-only,
//! written by the replica that runs it and read by every other replica that has a reader for
//! it.
//!
//! An entry's id is the answer's byte offset: a piece of text is `end-0` (the offset where it
//! ends), anything else (sources, an error, a tool call, the end) `offset-n`, its rank at that
//! offset; the first entry, `0-1`, names the chat and the question. So a stream needs no
//! sequence numbers of its own, a reader resumes with `XREAD` from the last id it holds, and the
//! same events get the same ids however the text was cut: when Redis loses a stream (a restart)
//! the owner writes it again from its own log and readers go on where they were, byte for byte.
//!
//! Writing: one publisher task per process reads every running answer through a subscription
//! from the beginning, like any reader. An answer's log tells it when it changed (once, until
//! it is read: a token costs the log an atomic flag, no task wake-up); the publisher reads the
//! answers that changed, so the text that piled up while Redis answered the last batch comes as
//! one delta, and writes every answer's new entries in one pipeline: one `XADD` per answer per
//! batch, however many tokens came meanwhile.
//!
//! Reading: readers on this replica read a local copy of the log ([`Live::follower`]), fed by
//! one task per process that waits in one `XREAD BLOCK` over every followed stream, on its own
//! connection (a blocking read never holds up a write). A reader that resumes further than the
//! copy has caught up with waits for it.
//!
//! Who answers a question is decided by one script: a claim on the question (`SET NX`, renewed
//! with the leases) that creates the answer's stream in the same step. A finished answer's
//! stream expires from Redis shortly after its end (the answer is saved; late readers replay the
//! row); a running one is capped in length, and a reader that finds its beginning trimmed takes
//! the missing text from the answer's checkpointed row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use super::live::{Live, StartAt, Subscription, finished_of};
use super::seams::{Claim, LiveLogs, LocalLogs};
use crate::domain::{Finished, GenEvent, Message, MessageStatus, StreamFailure, Usage};
use crate::store::Store;

/// A claim lasts this long unless renewed (every three seconds, with the leases).
const CLAIM_TTL_MS: u64 = 15_000;
/// How long a finished answer's stream stays, for readers still catching up with its end.
const FINISHED_TTL_MS: u64 = 30_000;
/// The cap on a running answer's entries (about, trimmed by Redis from the oldest).
const MAX_ENTRIES: u64 = 20_000;
/// How long one blocking read waits before the reader loop looks around.
const READ_BLOCK_MS: u64 = 1_000;
/// At most this many entries per stream per read.
const READ_COUNT: usize = 1_024;
/// A followed answer silent this long is looked up in the database (its owner may be gone).
const SILENCE: Duration = Duration::from_secs(2);

fn claim_key(question_id: Uuid) -> String {
    format!("sluice:claim:{question_id}")
}

fn log_key(message_id: Uuid) -> String {
    format!("sluice:log:{message_id}")
}

/// The claim's value: the answer, and its chat.
fn claim_value(message_id: Uuid, chat_id: Uuid) -> String {
    format!("{message_id} {chat_id}")
}

/// Claims a question and creates its answer's stream: 1, or the claim that was there.
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('XADD', KEYS[2], '0-1', 'k', 's', 'v', ARGV[3])
  return 1
end
return redis.call('GET', KEYS[1])
";

/// Gives up a claim (and the stream it created) if it is still this answer's (`ARGV[1]`: the
/// answer's id, which the claim's value begins with).
const RELEASE: &str = r"
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
";

/// Ends a claim if it is still this answer's; its stream expires.
const SETTLE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 0
";

/// Renews claims (taking back any that Redis lost) and returns the (1-based) pairs whose
/// stream is missing. KEYS: claim, stream, claim, stream…; ARGV: ttl, then each claim's value.
const RENEW: &str = r"
local missing = {}
for i = 1, #KEYS, 2 do
  local pair = (i + 1) / 2
  local mine = ARGV[pair + 1]
  local held = redis.call('GET', KEYS[i])
  if held == mine then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  elseif not held then
    redis.call('SET', KEYS[i], mine, 'PX', ARGV[1])
  end
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then table.insert(missing, pair) end
end
return missing
";

/// A stream entry's id: `offset-rank`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId(u64, u64);

impl EntryId {
    const START: Self = Self(0, 1);

    fn render(self) -> String {
        format!("{}-{}", self.0, self.1)
    }

    fn parse(raw: &[u8]) -> Option<Self> {
        let raw = std::str::from_utf8(raw).ok()?;
        let (at, rank) = raw.split_once('-')?;
        Some(Self(at.parse().ok()?, rank.parse().ok()?))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Start,
    Text,
    Sources,
    Failure,
    ToolCall,
    Done,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Self::Start => "s",
            Self::Text => "t",
            Self::Sources => "o",
            Self::Failure => "f",
            Self::ToolCall => "c",
            Self::Done => "d",
        }
    }

    fn parse(raw: &[u8]) -> Option<Self> {
        Some(match raw {
            b"s" => Self::Start,
            b"t" => Self::Text,
            b"o" => Self::Sources,
            b"f" => Self::Failure,
            b"c" => Self::ToolCall,
            b"d" => Self::Done,
            _ => return None,
        })
    }
}

#[derive(Debug)]
struct Entry {
    id: EntryId,
    kind: Kind,
    body: String,
}

impl Entry {
    /// Where a text entry's text begins.
    fn start(&self) -> Option<u64> {
        self.id.0.checked_sub(self.body.len() as u64)
    }

    /// The part of this entry that lies after `written` (none when Redis has all of it).
    fn after(mut self, written: EntryId) -> Option<Self> {
        if self.id <= written {
            return None;
        }
        if self.kind == Kind::Text {
            let start = self.start()?;
            if start < written.0 {
                let skip = usize::try_from(written.0 - start).ok()?;
                if !self.body.is_char_boundary(skip) {
                    return None;
                }
                self.body.drain(..skip);
            }
        }
        Some(self)
    }
}

/// Names a log's events as entries, in order (see the module's description).
struct Ids {
    at: u64,
    rank: u64,
}

impl Ids {
    fn new() -> Self {
        Self { at: 0, rank: 1 }
    }

    fn mark(&mut self, offset: usize) -> EntryId {
        let offset = offset as u64;
        if offset != self.at {
            self.at = offset;
            self.rank = 0;
        }
        self.rank += 1;
        EntryId(self.at, self.rank)
    }

    fn entry(&mut self, event: GenEvent) -> Option<Entry> {
        let (id, kind, body) = match event {
            GenEvent::Delta { text, end } => {
                self.at = end as u64;
                self.rank = 0;
                (EntryId(self.at, 0), Kind::Text, text)
            }
            GenEvent::Sources(sources) => {
                let at = self.at as usize;
                (self.mark(at), Kind::Sources, sources.to_string())
            }
            GenEvent::Error { failure, offset } => (
                self.mark(offset),
                Kind::Failure,
                serde_json::to_string(&failure).ok()?,
            ),
            GenEvent::ToolCall { call, offset } => (
                self.mark(offset),
                Kind::ToolCall,
                serde_json::to_string(&call).ok()?,
            ),
            GenEvent::Done(_) => {
                let at = self.at as usize;
                (self.mark(at), Kind::Done, String::new())
            }
        };
        Some(Entry { id, kind, body })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single step: consistent even after a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the hub tells the publisher.
enum ToPublisher {
    /// A generation started here: mirror its log.
    Mirror(Arc<Live>),
    /// Renew the claims of the running generations.
    Renew,
    /// Answer once everything received so far is written.
    Flush(oneshot::Sender<()>),
}

/// The mirrored logs that changed since the publisher last read them.
#[derive(Default)]
struct Changed {
    ids: Mutex<Vec<Uuid>>,
    wake: Notify,
}

impl Changed {
    fn note(&self, id: Uuid) {
        lock(&self.ids).push(id);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<Uuid> {
        std::mem::take(&mut *lock(&self.ids))
    }
}

/// Running logs shared with other replicas through Redis. Generations this process runs are
/// kept as [`LocalLogs`] does and mirrored into Redis; others are followed from Redis.
pub struct RedisLogs {
    local: LocalLogs,
    redis: ConnectionManager,
    /// Redis did not answer the last lookup or claim (said once in the log).
    down: std::sync::atomic::AtomicBool,
    publisher: mpsc::UnboundedSender<ToPublisher>,
    changed: Arc<Changed>,
    reading: Arc<Reading>,
}

impl RedisLogs {
    pub fn new(url: &str, store: Store) -> Result<Self, String> {
        // Lookups and claims are on a request's path: they wait for Redis half a second at most
        // (the answer is then served alone). Batches of entries may take longer.
        let (client, redis) = crate::policy::connect_redis(url, Duration::from_millis(500))?;
        let (_, writer) = crate::policy::connect_redis(url, Duration::from_secs(2))?;
        // Blocking reads get their own connection, which waits longer than they block.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_millis(READ_BLOCK_MS + 2_000)))
            .set_number_of_retries(1);
        let reader = client
            .get_connection_manager_lazy(config)
            .map_err(|e| format!("SLUICE_REDIS_URL: {e}"))?;
        let (publisher, inbox) = mpsc::unbounded_channel();
        let reading = Arc::new(Reading {
            followers: Mutex::new(Followers::default()),
            store,
            wake: Notify::new(),
            wake_key: format!("sluice:wake:{}", Uuid::now_v7()),
            redis: redis.clone(),
        });
        let changed = Arc::new(Changed::default());
        tokio::spawn(Publisher::new(writer, changed.clone()).run(inbox));
        tokio::spawn(read_loop(reading.clone(), reader));
        Ok(Self {
            local: LocalLogs::default(),
            redis,
            down: std::sync::atomic::AtomicBool::new(false),
            publisher,
            changed,
            reading,
        })
    }

    /// Notes how Redis answered a lookup or a claim; says so in the log when that changes.
    fn answered(&self, error: Option<&redis::RedisError>) {
        use std::sync::atomic::Ordering;
        match error {
            Some(error) if !self.down.swap(true, Ordering::Relaxed) => tracing::warn!(
                %error,
                "Redis does not answer: questions are answered here without a claim and \
                 answers other replicas run cannot be found until it does"
            ),
            None if self.down.swap(false, Ordering::Relaxed) => {
                tracing::info!("Redis answers again: answers are found and claimed there again");
            }
            _ => {}
        }
    }

    /// Follows the answer whose claim value is `value`.
    async fn follow_claim(&self, question_id: Uuid, value: &str) -> Option<Arc<Live>> {
        let (message_id, chat_id) = value.split_once(' ')?;
        let (message_id, chat_id) = (message_id.parse().ok()?, chat_id.parse().ok()?);
        self.follow(message_id, chat_id, question_id).await
    }
}

#[async_trait]
impl LiveLogs for RedisLogs {
    fn publish(&self, live: Arc<Live>) {
        self.local.publish(live.clone());
        if !live.persisted {
            // An unstored answer has one reader, on this replica.
            return;
        }
        let changed = self.changed.clone();
        live.watch(Box::new(move |id| changed.note(id)));
        let _ = self.publisher.send(ToPublisher::Mirror(live));
    }

    async fn find(&self, question_id: Uuid) -> Option<Arc<Live>> {
        if let Some(live) = self.local.find(question_id).await {
            return Some(live);
        }
        if let Some(live) = self.reading.followed(question_id) {
            return Some(live);
        }
        let held: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(claim_key(question_id))
            .query_async(&mut self.redis.clone())
            .await;
        self.answered(held.as_ref().err());
        match held {
            Ok(Some(value)) => self.follow_claim(question_id, &value).await,
            Ok(None) | Err(_) => None,
        }
    }

    fn shared(&self) -> bool {
        true
    }

    async fn claim(&self, question_id: Uuid, message_id: Uuid, chat_id: Uuid) -> Claim {
        let won: redis::RedisResult<Value> = redis::cmd("EVAL")
            .arg(CLAIM)
            .arg(2)
            .arg(claim_key(question_id))
            .arg(log_key(message_id))
            .arg(claim_value(message_id, chat_id))
            .arg(CLAIM_TTL_MS)
            .arg(format!("{chat_id} {question_id}"))
            .query_async(&mut self.redis.clone())
            .await;
        self.answered(won.as_ref().err());
        match won {
            Ok(Value::Int(1)) => Claim::Won,
            Ok(Value::BulkString(held)) => {
                let held = String::from_utf8_lossy(&held);
                match self.follow_claim(question_id, &held).await {
                    Some(live) => Claim::Taken(live),
                    None => Claim::Won,
                }
            }
            Ok(other) => {
                tracing::warn!(reply = ?other, "unexpected reply to a claim; answering here");
                Claim::Won
            }
            // Serving alone beats not serving: the answer is started here; it is mirrored (and
            // its claim taken back) once Redis answers.
            Err(_) => Claim::Won,
        }
    }

    async fn release(&self, question_id: Uuid, message_id: Uuid) {
        let released: redis::RedisResult<Value> = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(2)
            .arg(claim_key(question_id))
            .arg(log_key(message_id))
            .arg(message_id.to_string())
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "a claim could not be released; it expires by itself");
        }
    }

    async fn follow(
        &self,
        message_id: Uuid,
        chat_id: Uuid,
        question_id: Uuid,
    ) -> Option<Arc<Live>> {
        // Run here: the local registry's own lookup.
        if let Some(live) = self.local.running(chat_id, message_id).await {
            return Some(live);
        }
        Some(self.reading.follow(message_id, chat_id, question_id).await)
    }

    async fn running(&self, chat_id: Uuid, message_id: Uuid) -> Option<Arc<Live>> {
        // Run here: the local registry's own lookup.
        if let Some(live) = self.local.running(chat_id, message_id).await {
            return Some(live);
        }
        if let Some(live) = self.reading.followed_answer(message_id) {
            return (live.chat_id == chat_id).then_some(live);
        }
        // The stream's first entry names its chat and question.
        let first: redis::RedisResult<Value> = redis::cmd("XRANGE")
            .arg(log_key(message_id))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.redis.clone())
            .await;
        let entry = entries(first.ok()?).into_iter().next()?;
        if entry.kind != Kind::Start {
            return None;
        }
        let (chat, question) = entry.body.split_once(' ')?;
        let (chat, question): (Uuid, Uuid) = (chat.parse().ok()?, question.parse().ok()?);
        if chat != chat_id {
            return None;
        }
        self.follow(message_id, chat, question).await
    }

    fn of_chat(&self, chat_id: Uuid) -> Vec<Arc<Live>> {
        self.local.of_chat(chat_id)
    }

    fn all(&self) -> Vec<Arc<Live>> {
        self.local.all()
    }

    fn retire(&self, question_id: Uuid) {
        // The claim ends with the answer's last entry, written by the publisher.
        self.local.retire(question_id);
    }

    fn running_count(&self) -> usize {
        self.local.running_count()
    }

    fn renew(&self) {
        let _ = self.publisher.send(ToPublisher::Renew);
    }

    async fn flush(&self, limit: Duration) {
        let (done, flushed) = oneshot::channel();
        if self.publisher.send(ToPublisher::Flush(done)).is_ok()
            && tokio::time::timeout(limit, flushed).await.is_err()
        {
            tracing::warn!("Redis did not take the last entries of the answers this replica ran");
        }
    }
}

/// One mirrored log: what Redis holds of it, and what is still to write.
struct Mirror {
    live: Arc<Live>,
    /// Reads the log from its beginning, as entries.
    sub: Subscription,
    ids: Ids,
    key: String,
    claim_key: String,
    claim: String,
    /// The newest entry Redis holds.
    written: EntryId,
    pending: Vec<Entry>,
    /// Redis lost the stream (or never made it): write it again from the log.
    rewrite: bool,
    /// Its last entry is written and its claim ended.
    ended: bool,
}

impl Mirror {
    fn new(live: Arc<Live>) -> Option<Self> {
        Some(Self {
            key: log_key(live.message_id),
            claim_key: claim_key(live.question_id),
            claim: claim_value(live.message_id, live.chat_id),
            sub: Subscription::new(live.clone(), StartAt::Beginning).ok()?,
            ids: Ids::new(),
            live,
            written: EntryId::START,
            pending: Vec::new(),
            rewrite: false,
            ended: false,
        })
    }

    /// Queues what the log gained since it was last read.
    fn read(&mut self) {
        self.live.clear_dirty();
        while let Some(event) = self.sub.try_next() {
            if let Some(entry) = self.ids.entry(event) {
                self.push(entry);
            }
        }
    }

    /// Queues an entry, merged with the text queued before it.
    fn push(&mut self, entry: Entry) {
        let Some(entry) = entry.after(self.written) else {
            return;
        };
        if entry.kind == Kind::Text
            && let Some(last) = self.pending.last_mut()
            && last.kind == Kind::Text
            && entry.start() == Some(last.id.0)
        {
            last.body.push_str(&entry.body);
            last.id = entry.id;
            return;
        }
        self.pending.push(entry);
    }

    /// Redis holds everything up to `written`: drops what it has.
    fn written_up_to(&mut self, written: EntryId) {
        self.written = self.written.max(written);
        let pending = std::mem::take(&mut self.pending);
        let upto = self.written;
        self.pending = pending.into_iter().filter_map(|e| e.after(upto)).collect();
    }

    fn has_work(&self) -> bool {
        !self.ended && (self.rewrite || !self.pending.is_empty())
    }

    /// Every entry of the log as it stands, from its beginning.
    fn whole_log(&self) -> Vec<Entry> {
        let mut sub = match Subscription::new(self.live.clone(), StartAt::Beginning) {
            Ok(sub) => sub,
            Err(_) => return Vec::new(),
        };
        let mut ids = Ids::new();
        let mut all = Vec::new();
        while let Some(event) = sub.try_next() {
            all.extend(ids.entry(event));
        }
        all
    }
}

fn xadd(pipe: &mut redis::Pipeline, key: &str, entry: &Entry, must_exist: bool) {
    let cmd = pipe.cmd("XADD").arg(key);
    if must_exist {
        cmd.arg("NOMKSTREAM");
    }
    cmd.arg("MAXLEN")
        .arg("~")
        .arg(MAX_ENTRIES)
        .arg(entry.id.render())
        .arg("k")
        .arg(entry.kind.code())
        .arg("v")
        .arg(&entry.body);
}

/// Writes the logs of this process's generations into Redis, one pipeline per batch.
struct Publisher {
    redis: ConnectionManager,
    changed: Arc<Changed>,
    mirrors: HashMap<Uuid, Mirror>,
    flushes: Vec<oneshot::Sender<()>>,
    renew: bool,
    /// A batch failed: what Redis holds is read again before the next one.
    resync: bool,
    failing: bool,
}

impl Publisher {
    fn new(redis: ConnectionManager, changed: Arc<Changed>) -> Self {
        Self {
            redis,
            changed,
            mirrors: HashMap::new(),
            flushes: Vec::new(),
            renew: false,
            resync: false,
            failing: false,
        }
    }

    fn take(&mut self, message: ToPublisher) {
        match message {
            ToPublisher::Mirror(live) => {
                if let Some(mut mirror) = Mirror::new(live) {
                    mirror.read();
                    self.mirrors.insert(mirror.live.message_id, mirror);
                }
            }
            ToPublisher::Renew => self.renew = true,
            ToPublisher::Flush(done) => self.flushes.push(done),
        }
    }

    fn has_work(&self) -> bool {
        self.renew || self.resync || self.mirrors.values().any(Mirror::has_work)
    }

    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<ToPublisher>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if !self.has_work() {
                // A flush waits for the last entries of the logs that finished, too.
                if self
                    .mirrors
                    .values()
                    .all(|m| m.ended || m.live.finished().is_none())
                {
                    for done in self.flushes.drain(..) {
                        let _ = done.send(());
                    }
                }
                tokio::select! {
                    message = inbox.recv() => match message {
                        Some(message) => self.take(message),
                        None => return,
                    },
                    () = self.changed.wake.notified() => {}
                }
            }
            // Everything that came while the last batch was written goes in this one.
            while let Ok(message) = inbox.try_recv() {
                self.take(message);
            }
            for id in self.changed.take() {
                if let Some(mirror) = self.mirrors.get_mut(&id) {
                    mirror.read();
                }
            }
            match self.write().await {
                Ok(()) => {
                    if self.failing {
                        tracing::info!("Redis answers again: answer logs are shared again");
                    }
                    self.failing = false;
                    if self.resync {
                        // Redis refused an entry: read back what it holds after a pause.
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    } else {
                        backoff = Duration::from_millis(100);
                    }
                }
                Err(error) => {
                    if !self.failing {
                        tracing::warn!(%error, "Redis does not answer: answers run here are not seen by other replicas until it does");
                    }
                    self.failing = true;
                    self.resync = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
            self.mirrors.retain(|_, m| !m.ended);
        }
    }

    async fn write(&mut self) -> redis::RedisResult<()> {
        if self.resync {
            self.read_back().await?;
            self.resync = false;
        }
        if self.mirrors.values().any(|m| m.rewrite && !m.ended) {
            self.rewrite().await?;
        }
        // One pipeline: each log's new entries, the end of finished ones, renewed claims.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        // (answer, entries written by this batch, whether it ends it)
        let mut plan: Vec<(Uuid, usize, bool)> = Vec::new();
        for (id, mirror) in &self.mirrors {
            if mirror.pending.is_empty() || mirror.rewrite || mirror.ended {
                continue;
            }
            for entry in &mirror.pending {
                xadd(&mut pipe, &mirror.key, entry, true);
            }
            let ends = mirror.pending.last().is_some_and(|e| e.kind == Kind::Done);
            if ends {
                settle_claim(&mut pipe, mirror);
            }
            plan.push((*id, mirror.pending.len(), ends));
        }
        let renewing: Vec<Uuid> = if self.renew {
            let running: Vec<Uuid> = self
                .mirrors
                .iter()
                .filter(|(_, m)| !m.ended && m.live.finished().is_none())
                .map(|(id, _)| *id)
                .collect();
            if !running.is_empty() {
                let script = pipe.cmd("EVAL").arg(RENEW).arg(running.len() * 2);
                for id in &running {
                    let m = &self.mirrors[id];
                    script.arg(&m.claim_key).arg(&m.key);
                }
                script.arg(CLAIM_TTL_MS);
                for id in &running {
                    script.arg(&self.mirrors[id].claim);
                }
            }
            running
        } else {
            Vec::new()
        };
        if plan.is_empty() && renewing.is_empty() {
            self.renew = false;
            return Ok(());
        }
        let replies: Vec<redis::RedisResult<Value>> =
            pipe.query_async(&mut self.redis.clone()).await?;
        let mut replies = replies.into_iter();
        for (id, count, ends) in plan {
            let Some(mirror) = self.mirrors.get_mut(&id) else {
                continue;
            };
            let mut written = mirror.written;
            let mut lost = false;
            let mut failed = false;
            for entry in mirror.pending.iter().take(count) {
                match replies.next() {
                    Some(Ok(Value::Nil)) => lost = true,
                    Some(Ok(_)) if !lost && !failed => written = entry.id,
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(%error, "Redis refused an answer's entry; reading back what it holds");
                        failed = true;
                    }
                    None => failed = true,
                }
            }
            let settled = if ends {
                matches!(replies.next(), Some(Ok(_)))
            } else {
                false
            };
            mirror.written_up_to(written);
            if lost {
                mirror.rewrite = true;
            }
            if failed {
                self.resync = true;
            }
            if ends && settled && !lost && !failed && mirror.pending.is_empty() {
                mirror.ended = true;
            }
        }
        if !renewing.is_empty() {
            match replies.next() {
                Some(Ok(Value::Array(missing))) => {
                    for pair in missing {
                        if let Value::Int(pair) = pair
                            && let Some(id) =
                                usize::try_from(pair - 1).ok().and_then(|i| renewing.get(i))
                            && let Some(mirror) = self.mirrors.get_mut(id)
                        {
                            mirror.rewrite = true;
                        }
                    }
                    self.renew = false;
                }
                Some(Ok(_)) => self.renew = false,
                Some(Err(error)) => tracing::warn!(%error, "claims could not be renewed"),
                None => {}
            }
        } else {
            self.renew = false;
        }
        Ok(())
    }

    /// Reads back the newest entry of every log with something to write: a batch that failed
    /// may have been written in part. A log Redis does not hold is written again.
    async fn read_back(&mut self) -> redis::RedisResult<()> {
        let ids: Vec<Uuid> = self
            .mirrors
            .iter()
            .filter(|(_, m)| m.has_work())
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("XREVRANGE")
                .arg(&self.mirrors[id].key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let tops: Vec<Value> = pipe.query_async(&mut self.redis.clone()).await?;
        for (id, top) in ids.iter().zip(tops) {
            let Some(mirror) = self.mirrors.get_mut(id) else {
                continue;
            };
            match entries(top).into_iter().next() {
                Some(entry) => {
                    mirror.written = entry.id;
                    mirror.written_up_to(entry.id);
                }
                None => mirror.rewrite = true,
            }
        }
        Ok(())
    }

    /// Writes again, from each log itself, the streams Redis lost (a restart, an eviction).
    async fn rewrite(&mut self) -> redis::RedisResult<()> {
        let ids: Vec<Uuid> = self
            .mirrors
            .iter()
            .filter(|(_, m)| m.rewrite && !m.ended)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(mirror) = self.mirrors.get_mut(&id) else {
                continue;
            };
            let entries = mirror.whole_log();
            let ended = entries.last().is_some_and(|e| e.kind == Kind::Done);
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("DEL").arg(&mirror.key).ignore();
            let start = Entry {
                id: EntryId::START,
                kind: Kind::Start,
                body: format!("{} {}", mirror.live.chat_id, mirror.live.question_id),
            };
            xadd(&mut pipe, &mirror.key, &start, false);
            pipe.ignore();
            for entry in &entries {
                xadd(&mut pipe, &mirror.key, entry, false);
                pipe.ignore();
            }
            if ended {
                settle_claim(&mut pipe, mirror);
            } else {
                pipe.cmd("SET")
                    .arg(&mirror.claim_key)
                    .arg(&mirror.claim)
                    .arg("PX")
                    .arg(CLAIM_TTL_MS);
            }
            pipe.ignore();
            let () = pipe.query_async(&mut self.redis.clone()).await?;
            tracing::info!(
                answer = %mirror.live.message_id,
                entries = entries.len(),
                "an answer's log was written again into Redis"
            );
            let last = entries.last().map_or(EntryId::START, |e| e.id);
            mirror.rewrite = false;
            mirror.written_up_to(last);
            if ended && mirror.pending.is_empty() {
                mirror.ended = true;
            }
        }
        Ok(())
    }
}

fn settle_claim(pipe: &mut redis::Pipeline, mirror: &Mirror) {
    pipe.cmd("EVAL")
        .arg(SETTLE)
        .arg(2)
        .arg(&mirror.claim_key)
        .arg(&mirror.key)
        .arg(&mirror.claim)
        .arg(FINISHED_TTL_MS);
}

/// The entries of an `XRANGE`/`XREVRANGE` reply, or of one stream of an `XREAD` reply.
fn entries(reply: Value) -> Vec<Entry> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let Value::BulkString(id) = parts.pop()? else {
                return None;
            };
            let id = EntryId::parse(&id)?;
            let fields: Vec<Value> = match fields {
                Value::Array(fields) => fields,
                Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => return None,
            };
            let (mut kind, mut body) = (None, String::new());
            for pair in fields.chunks(2) {
                if let [Value::BulkString(name), Value::BulkString(value)] = pair {
                    match name.as_slice() {
                        b"k" => kind = Kind::parse(value),
                        b"v" => body = String::from_utf8(value.clone()).ok()?,
                        _ => {}
                    }
                }
            }
            Some(Entry {
                id,
                kind: kind?,
                body,
            })
        })
        .collect()
}

/// The streams of an `XREAD` reply: each key with its entries.
fn streams(reply: Value) -> Vec<(Vec<u8>, Vec<Entry>)> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let v = kv.pop()?;
                    let k = kv.pop()?;
                    Some((k, v))
                }
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs,
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(key, value)| match key {
            Value::BulkString(key) => Some((key, entries(value))),
            _ => None,
        })
        .collect()
}

/// A log another replica runs, as this process follows it.
struct Follower {
    live: Arc<Live>,
    key: String,
    /// The newest entry applied.
    last: EntryId,
    heard: Instant,
    /// Not read again before then (its beginning was trimmed and the saved text is behind).
    paused_until: Option<Instant>,
    /// Its end was read or found in the database: being settled.
    ending: bool,
}

#[derive(Default)]
struct Followers {
    by_answer: HashMap<Uuid, Follower>,
    by_question: HashMap<Uuid, Uuid>,
}

/// The reading side, shared by the hub's lookups and the read loop.
struct Reading {
    followers: Mutex<Followers>,
    store: Store,
    wake: Notify,
    /// A stream of this process's own that the read loop also waits on, written to wake it up
    /// when a stream is added.
    wake_key: String,
    redis: ConnectionManager,
}

impl Reading {
    fn followed(&self, question_id: Uuid) -> Option<Arc<Live>> {
        let followers = lock(&self.followers);
        let answer = followers.by_question.get(&question_id)?;
        followers.by_answer.get(answer).map(|f| f.live.clone())
    }

    fn followed_answer(&self, message_id: Uuid) -> Option<Arc<Live>> {
        lock(&self.followers)
            .by_answer
            .get(&message_id)
            .map(|f| f.live.clone())
    }

    async fn follow(&self, message_id: Uuid, chat_id: Uuid, question_id: Uuid) -> Arc<Live> {
        let live = {
            let mut followers = lock(&self.followers);
            if let Some(f) = followers.by_answer.get(&message_id) {
                return f.live.clone();
            }
            let live = Arc::new(Live::follower(message_id, chat_id, question_id));
            followers.by_answer.insert(
                message_id,
                Follower {
                    live: live.clone(),
                    key: log_key(message_id),
                    last: EntryId(0, 0),
                    heard: Instant::now(),
                    paused_until: None,
                    ending: false,
                },
            );
            followers.by_question.insert(question_id, message_id);
            live
        };
        self.wake.notify_one();
        // The read loop may be waiting in Redis: an entry in its wake-up stream ends the wait.
        let woken: redis::RedisResult<Value> = redis::cmd("XADD")
            .arg(&self.wake_key)
            .arg("MAXLEN")
            .arg(1)
            .arg("*")
            .arg("k")
            .arg(Kind::Start.code())
            .arg("v")
            .arg("")
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(error) = woken {
            tracing::debug!(%error, "the read loop could not be woken through Redis");
        }
        live
    }

    fn forget(&self, message_id: Uuid) {
        let mut followers = lock(&self.followers);
        if let Some(f) = followers.by_answer.remove(&message_id) {
            followers.by_question.remove(&f.live.question_id);
        }
    }

    /// The streams to read now, from where each stands.
    fn targets(&self) -> Vec<(String, EntryId)> {
        let now = Instant::now();
        lock(&self.followers)
            .by_answer
            .values()
            .filter(|f| !f.ending && f.paused_until.is_none_or(|t| t <= now))
            .map(|f| (f.key.clone(), f.last))
            .collect()
    }

    /// Applies the entries read from one answer's stream to its copy.
    async fn apply(self: &Arc<Self>, message_id: Uuid, read: Vec<Entry>) {
        let Some((live, mut last)) = lock(&self.followers)
            .by_answer
            .get(&message_id)
            .filter(|f| !f.ending)
            .map(|f| (f.live.clone(), f.last))
        else {
            return;
        };
        let mut ended = false;
        let mut paused = false;
        for entry in read {
            if entry.id <= last {
                continue;
            }
            match step(&live, &entry) {
                Step::Applied => last = entry.id,
                Step::Ended => {
                    last = entry.id;
                    ended = true;
                    break;
                }
                Step::Gap(upto) => {
                    // The stream's beginning was trimmed: the checkpointed row has the text.
                    if self.fill(&live, upto).await && matches!(step(&live, &entry), Step::Applied)
                    {
                        last = entry.id;
                    } else {
                        paused = true;
                        break;
                    }
                }
            }
        }
        {
            let mut followers = lock(&self.followers);
            if let Some(f) = followers.by_answer.get_mut(&message_id) {
                f.last = last;
                f.heard = Instant::now();
                f.ending = ended;
                f.paused_until = paused.then(|| Instant::now() + Duration::from_millis(500));
            }
        }
        if ended {
            tokio::spawn(settle(self.clone(), live, false));
        }
    }

    /// Takes the text of the answer up to `upto` from its saved row, if the row has it.
    async fn fill(&self, live: &Live, upto: usize) -> bool {
        let Ok(Some(row)) = self.store.message(live.message_id).await else {
            return false;
        };
        let have = live.text_len();
        if row.content.len() < upto
            || !row.content.is_char_boundary(have)
            || !row.content.is_char_boundary(upto)
        {
            return false;
        }
        live.append_raw(&row.content[have..upto]);
        true
    }

    /// Looks up in the database the followed answers that went silent: one whose owner is gone
    /// was saved by the replica that noticed, and its readers here are told.
    async fn check_silent(self: &Arc<Self>) {
        let silent: Vec<Uuid> = lock(&self.followers)
            .by_answer
            .iter()
            .filter(|(_, f)| !f.ending && f.heard.elapsed() >= SILENCE)
            .map(|(id, _)| *id)
            .collect();
        if silent.is_empty() {
            return;
        }
        let settled = match self.store.settled_among(&silent).await {
            Ok(settled) => settled,
            Err(error) => {
                tracing::warn!(%error, "followed answers could not be looked up");
                return;
            }
        };
        let mut ended: Vec<Uuid> = settled.iter().map(|row| row.id).collect();
        // An answer whose row never appeared, silent for as long as a claim lives: its owner
        // died between claiming the question and writing the row. Its readers are told.
        let orphaned: Vec<Uuid> = lock(&self.followers)
            .by_answer
            .iter()
            .filter(|(id, f)| {
                !ended.contains(id) && f.heard.elapsed() >= Duration::from_millis(CLAIM_TTL_MS)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in orphaned {
            if let Ok(None) = self.store.message(id).await {
                ended.push(id);
            }
        }
        for id in ended {
            let live = {
                let mut followers = lock(&self.followers);
                let Some(f) = followers.by_answer.get_mut(&id) else {
                    continue;
                };
                if f.ending {
                    continue;
                }
                f.ending = true;
                f.live.clone()
            };
            tokio::spawn(settle(self.clone(), live, true));
        }
    }
}

enum Step {
    Applied,
    Ended,
    /// Text is missing before this entry, up to this offset.
    Gap(usize),
}

/// Applies one entry to a followed log.
fn step(live: &Live, entry: &Entry) -> Step {
    let have = live.text_len();
    let at = usize::try_from(entry.id.0).unwrap_or(usize::MAX);
    match entry.kind {
        Kind::Start => {}
        Kind::Text => {
            let Some(start) = entry.start().and_then(|s| usize::try_from(s).ok()) else {
                return Step::Applied;
            };
            if at <= have {
                return Step::Applied;
            }
            if start > have {
                return Step::Gap(start);
            }
            if let Some(rest) = entry.body.get(have - start..) {
                live.append_raw(rest);
            }
        }
        _ if at > have => return Step::Gap(at),
        Kind::Sources => {
            if let Ok(sources) = serde_json::from_str(&entry.body) {
                live.set_sources(sources);
            }
        }
        Kind::Failure => {
            if let Ok(failure) = serde_json::from_str(&entry.body) {
                live.fail(failure);
            }
        }
        Kind::ToolCall => {
            if let Ok(call) = serde_json::from_str(&entry.body) {
                live.tool_call(call);
            }
        }
        Kind::Done => return Step::Ended,
    }
    Step::Applied
}

/// Ends a followed log as its saved row says. `found_silent`: the end came from the database,
/// not from the stream (its owner stopped without writing it): text the stream did not bring
/// is taken from the row, and a cut-short answer's failure is told.
async fn settle(reading: Arc<Reading>, live: Arc<Live>, found_silent: bool) {
    let mut row: Option<Message> = None;
    for attempt in 0..20 {
        match reading.store.message(live.message_id).await {
            // The owner saves the row before it writes the end; a database replica may lag.
            Ok(Some(found)) if found.status != MessageStatus::Streaming => {
                row = Some(found);
                break;
            }
            Ok(_) => {}
            Err(error) if attempt == 0 => {
                tracing::warn!(%error, "a followed answer's row could not be read; retrying")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = match row {
        Some(row) => {
            let have = live.text_len();
            if row.content.len() > have && row.content.is_char_boundary(have) {
                live.append_raw(&row.content[have..]);
            }
            if found_silent
                && live.last_failure().is_none()
                && let Ok(Some(failure)) = reading.store.failure_of(row.id).await
            {
                let failure = if failure.code == StreamFailure::INTERRUPTED {
                    StreamFailure::interrupted(row.content.len())
                } else {
                    failure
                };
                live.fail(failure);
            }
            finished_of(row)
        }
        None => {
            live.fail(StreamFailure::interrupted(0));
            Finished {
                message: None,
                status: MessageStatus::Incomplete,
                finish_reason: None,
                usage: Usage::default(),
                citations: None,
            }
        }
    };
    live.finish(finished);
    reading.forget(live.message_id);
}

/// Reads every followed stream in one blocking `XREAD`, on its own connection, and looks up
/// the silent ones in the database once a second.
async fn read_loop(reading: Arc<Reading>, mut redis: ConnectionManager) {
    let mut woken = String::from("0-0");
    let mut checked = Instant::now();
    let mut failing = false;
    loop {
        let targets = reading.targets();
        if targets.is_empty() {
            tokio::select! {
                () = reading.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else {
            let mut read = redis::cmd("XREAD");
            read.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK_MS)
                .arg("STREAMS");
            for (key, _) in &targets {
                read.arg(key);
            }
            read.arg(&reading.wake_key);
            for (_, last) in &targets {
                read.arg(last.render());
            }
            read.arg(&woken);
            match read.query_async::<Value>(&mut redis).await {
                Ok(reply) => {
                    if failing {
                        tracing::info!("Redis answers again: following other replicas' answers");
                    }
                    failing = false;
                    for (key, read) in streams(reply) {
                        if key == reading.wake_key.as_bytes() {
                            if let Some(last) = read.last() {
                                woken = last.id.render();
                            }
                            continue;
                        }
                        let Some(id) = std::str::from_utf8(&key)
                            .ok()
                            .and_then(|k| k.strip_prefix("sluice:log:"))
                            .and_then(|id| id.parse().ok())
                        else {
                            continue;
                        };
                        reading.apply(id, read).await;
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "Redis does not answer: answers other replicas run cannot be followed until it does");
                    }
                    failing = true;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            reading.check_silent().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(end: u64, body: &str) -> Entry {
        Entry {
            id: EntryId(end, 0),
            kind: Kind::Text,
            body: body.to_owned(),
        }
    }

    #[test]
    fn ids_name_offsets_and_ranks() {
        let mut ids = Ids::new();
        let sources = ids
            .entry(GenEvent::Sources(Arc::new(serde_json::json!([]))))
            .unwrap();
        assert_eq!(sources.id, EntryId(0, 2));
        let delta = ids
            .entry(GenEvent::Delta {
                text: "héllo".into(),
                end: 6,
            })
            .unwrap();
        assert_eq!(delta.id, EntryId(6, 0));
        let failure = ids
            .entry(GenEvent::Error {
                failure: StreamFailure::new("x", "y"),
                offset: 6,
            })
            .unwrap();
        assert_eq!(failure.id, EntryId(6, 1));
        let again = ids
            .entry(GenEvent::Error {
                failure: StreamFailure::new("x", "y"),
                offset: 6,
            })
            .unwrap();
        assert_eq!(again.id, EntryId(6, 2));
    }

    #[test]
    fn an_entry_keeps_only_what_redis_lacks() {
        assert!(text(6, "héllo").after(EntryId(6, 0)).is_none());
        let rest = text(6, "héllo").after(EntryId(3, 0)).unwrap();
        assert_eq!(rest.body, "llo");
        let mark = Entry {
            id: EntryId(6, 1),
            kind: Kind::Failure,
            body: String::new(),
        };
        assert!(mark.after(EntryId(6, 0)).is_some());
    }

    #[test]
    fn queued_text_is_merged() {
        let live = Arc::new(Live::new(Uuid::nil(), Uuid::nil(), Uuid::nil()));
        let mut mirror = Mirror::new(live).unwrap();
        mirror.push(text(2, "ab"));
        mirror.push(text(5, "cde"));
        assert_eq!(mirror.pending.len(), 1);
        assert_eq!(mirror.pending[0].body, "abcde");
        assert_eq!(mirror.pending[0].id, EntryId(5, 0));
        mirror.written_up_to(EntryId(3, 0));
        assert_eq!(mirror.pending[0].body, "de");
    }
}
