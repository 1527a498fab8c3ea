//! Credits: a workspace with a `credit_limit` may not start an answer once what it spent, plus
//! what the answers running now may still cost, reaches the limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::Store;

/// A hold on a workspace's credit for one generation; give it back with [`Credits::settle`]
/// once the generation's usage is recorded.
#[derive(Debug)]
#[must_use = "a reservation holds credit until it is settled"]
pub struct Reservation {
    pub workspace_id: Uuid,
    /// The generation's worst case, in micro-dollars.
    pub micros: i64,
}

/// The credit check every generation start goes through.
#[async_trait]
pub trait Credits: Send + Sync {
    /// Refuses with [`Error::InsufficientCredits`] when the workspace's spending plus the holds
    /// of its running answers is at or over its limit; otherwise holds `worst_case_micros`.
    async fn reserve(&self, workspace_id: Uuid, worst_case_micros: i64) -> Result<Reservation>;

    /// Releases a hold: the answer's actual cost is in its usage record by now.
    fn settle(&self, reservation: Reservation);

    /// Refuses like [`Credits::reserve`] when nothing more may start, holding nothing.
    async fn check(&self, workspace_id: Uuid) -> Result<()> {
        let hold = self.reserve(workspace_id, 0).await?;
        self.settle(hold);
        Ok(())
    }
}

/// How long a workspace's limit is remembered: a changed limit applies within this.
const LIMIT_TTL: Duration = Duration::from_secs(1);

/// Credits counted in this process: holds in memory, spending read from the usage records.
/// A workspace without a limit costs one cached lookup a second, not a query per start.
pub struct LocalCredits {
    store: Store,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Micro-dollars held by running answers, per workspace.
    held: HashMap<Uuid, i64>,
    /// Each workspace's limit, as read at that instant.
    limits: HashMap<Uuid, (Instant, Option<i64>)>,
}

impl LocalCredits {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a single step: the state is consistent even after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn limit(&self, workspace_id: Uuid) -> Result<Option<i64>> {
        if let Some((at, limit)) = self.state().limits.get(&workspace_id)
            && at.elapsed() < LIMIT_TTL
        {
            return Ok(*limit);
        }
        let limit = self.store.credit_limit(workspace_id).await?;
        self.state()
            .limits
            .insert(workspace_id, (Instant::now(), limit));
        Ok(limit)
    }

    fn hold(&self, workspace_id: Uuid, micros: i64) -> Reservation {
        *self.state().held.entry(workspace_id).or_default() += micros;
        Reservation {
            workspace_id,
            micros,
        }
    }
}

#[async_trait]
impl Credits for LocalCredits {
    async fn reserve(&self, workspace_id: Uuid, worst_case_micros: i64) -> Result<Reservation> {
        let micros = worst_case_micros.max(0);
        let Some(limit) = self.limit(workspace_id).await? else {
            return Ok(self.hold(workspace_id, micros));
        };
        let spent = self.store.spent_micros(workspace_id).await?;
        let mut state = self.state();
        let held = state.held.get(&workspace_id).copied().unwrap_or(0);
        let committed = spent.saturating_add(held);
        if committed >= limit {
            return Err(Error::InsufficientCredits {
                limit_micros: limit,
                committed_micros: committed,
            });
        }
        *state.held.entry(workspace_id).or_default() += micros;
        Ok(Reservation {
            workspace_id,
            micros,
        })
    }

    fn settle(&self, reservation: Reservation) {
        let mut state = self.state();
        if let Some(held) = state.held.get_mut(&reservation.workspace_id) {
            *held -= reservation.micros;
            if *held <= 0 {
                state.held.remove(&reservation.workspace_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_count_against_the_limit_until_they_are_settled() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let ws = store.create_workspace("w", "W").await.unwrap().id;
        let unlimited = store.create_workspace("u", "U").await.unwrap().id;
        store.set_credit_limit(ws, Some(100)).await.unwrap();
        let credits = LocalCredits::new(store);

        let first = credits.reserve(ws, 60).await.unwrap();
        let second = credits.reserve(ws, 60).await.unwrap();
        // 120 held of 100: nothing more starts.
        let refused = credits.reserve(ws, 1).await.unwrap_err();
        assert_eq!(refused.code(), "insufficient_credits");
        // Without a limit, holds never refuse.
        let free = credits.reserve(unlimited, i64::MAX / 2).await.unwrap();
        credits.settle(free);

        credits.settle(first);
        let third = credits.reserve(ws, 60).await.unwrap();
        credits.settle(second);
        credits.settle(third);
        assert!(credits.state().held.is_empty());
    }
}
