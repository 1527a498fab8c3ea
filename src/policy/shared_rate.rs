//! Rate limits counted in Redis, shared by every replica: one counter per key per fixed window,
//! checked and counted by one script (one round trip, atomic), so replicas can never together
//! admit more than the limit. While Redis does not answer, each replica counts in its own
//! memory (a client then gets up to its limit per replica) and says so in the log and
//! `/readyz`; the connection is re-established in the background and used again as soon as
//! Redis answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::rate::{LocalRateLimiter, RateDecision, RateLimiter};

/// Counts one request if the window has room: `{allowed, count, milliseconds left}`.
const HIT: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local allowed = 0
if count < tonumber(ARGV[2]) then
  count = redis.call('INCR', KEYS[1])
  allowed = 1
  if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = tonumber(ARGV[1]) end
return {allowed, count, ttl}
";

/// How long a request waits for Redis before it is counted locally instead.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// A client of `SLUICE_REDIS_URL` and a connection manager that connects lazily and
/// reconnects by itself (a Redis down at start-up is used once it answers); commands wait at
/// most `response_timeout`.
pub fn connect(
    url: &str,
    response_timeout: Duration,
) -> Result<(redis::Client, ConnectionManager), String> {
    let client = redis::Client::open(url)
        .map_err(|e| format!("SLUICE_REDIS_URL is not a Redis URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1);
    let manager = client
        .get_connection_manager_lazy(config)
        .map_err(|e| format!("SLUICE_REDIS_URL: {e}"))?;
    Ok((client, manager))
}

pub struct RedisRateLimiter {
    redis: ConnectionManager,
    script: redis::Script,
    window_ms: u64,
    fallback: LocalRateLimiter,
    down: AtomicBool,
}

impl RedisRateLimiter {
    /// A limiter on the Redis at `url`, connected lazily: a Redis that is down at start-up is
    /// used once it answers.
    pub fn new(url: &str, window: Duration) -> Result<Self, String> {
        let (_, redis) = connect(url, RESPONSE_TIMEOUT)?;
        Ok(Self {
            redis,
            script: redis::Script::new(HIT),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            fallback: LocalRateLimiter::new(window),
            down: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn hit(&self, key: &str, limit: u32) -> RateDecision {
        let mut redis = self.redis.clone();
        let counted: redis::RedisResult<(u8, u64, i64)> = self
            .script
            .key(format!("sluice:rate:{key}"))
            .arg(self.window_ms)
            .arg(limit)
            .invoke_async(&mut redis)
            .await;
        match counted {
            Ok((allowed, count, ttl_ms)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: rate limits are shared by the replicas");
                }
                RateDecision {
                    allowed: allowed == 1,
                    limit,
                    remaining: limit.saturating_sub(u32::try_from(count).unwrap_or(u32::MAX)),
                    reset_after: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
                }
            }
            Err(error) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        "Redis does not answer: rate limits are counted by each replica alone \
                         until it does"
                    );
                }
                self.fallback.hit(key, limit).await
            }
        }
    }

    async fn shared(&self) -> Option<bool> {
        let mut redis = self.redis.clone();
        let answered = redis::cmd("PING")
            .query_async::<String>(&mut redis)
            .await
            .is_ok();
        Some(answered)
    }
}
