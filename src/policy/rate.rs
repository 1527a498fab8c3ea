//! Rate limits: one counter per key per fixed window.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// The outcome of counting one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left in this window after this one.
    pub remaining: u32,
    /// Until the window resets.
    pub reset_after: Duration,
}

impl RateDecision {
    /// Whole seconds until the window resets, rounded up (what `X-RateLimit-Reset` and
    /// `Retry-After` say).
    pub fn reset_secs(&self) -> u64 {
        u64::try_from(self.reset_after.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
    }

    /// The request may go on, or it is `RateLimited`.
    pub fn check(&self) -> crate::Result<()> {
        if self.allowed {
            Ok(())
        } else {
            Err(crate::Error::RateLimited {
                limit: self.limit,
                retry_after: self.reset_after,
            })
        }
    }
}

/// Counts requests per key; one implementation per deployment (memory, or a store shared by
/// replicas), the same answer to every caller.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `key` against `limit` per window. A refused request is not
    /// counted.
    async fn hit(&self, key: &str, limit: u32) -> RateDecision;

    /// For a limiter shared by replicas: whether its shared store answers now (`None` for a
    /// limiter of this process alone).
    async fn shared(&self) -> Option<bool> {
        None
    }
}

/// Keys remembered before the expired ones are swept out.
const SWEEP_AT: usize = 10_000;

/// Fixed windows counted in this process.
pub struct LocalRateLimiter {
    window: Duration,
    counters: Mutex<HashMap<String, (Instant, u32)>>,
}

impl LocalRateLimiter {
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.max(Duration::from_millis(1)),
            counters: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn hit(&self, key: &str, limit: u32) -> RateDecision {
        let now = Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        if counters.len() >= SWEEP_AT {
            let window = self.window;
            counters.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = counters.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        let reset_after = self.window.saturating_sub(now.duration_since(entry.0));
        let allowed = entry.1 < limit;
        if allowed {
            entry.1 += 1;
        }
        RateDecision {
            allowed,
            limit,
            remaining: limit.saturating_sub(entry.1),
            reset_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_gets_its_limit_per_window_and_no_more_then_a_fresh_window() {
        let limiter = LocalRateLimiter::new(Duration::from_millis(200));
        for left in (0..3).rev() {
            let d = limiter.hit("k", 3).await;
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let refused = limiter.hit("k", 3).await;
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert!(refused.reset_after <= Duration::from_millis(200));
        // Another key has its own counter.
        assert!(limiter.hit("other", 3).await.allowed);
        tokio::time::sleep(Duration::from_millis(210)).await;
        let fresh = limiter.hit("k", 3).await;
        assert!(fresh.allowed);
        assert_eq!(fresh.remaining, 2);
    }
}
