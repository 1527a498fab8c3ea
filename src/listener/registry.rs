//! The open connections: how many there are, which one to give up when a new one needs a slot,
//! and a sweeper that closes those past their deadline.
//!
//! One task looks at every connection a few times per second instead of each connection
//! keeping timers of its own: a request then costs a few atomic stores, and a connection
//! blocked in a read needs no wake-up to be closed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::conn::{Closed, Conn, Waits, now_ms};
use crate::telemetry::names;

pub(super) struct Registry {
    waits: Waits,
    max: usize,
    open: AtomicUsize,
    /// In the order they were accepted, the oldest first.
    conns: Mutex<VecDeque<Weak<Conn>>>,
}

/// A connection's slot; dropping it frees the slot.
pub(super) struct Slot {
    registry: Arc<Registry>,
    pub(super) conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(names::CONNECTIONS_OPEN).decrement(1.0);
    }
}

impl Registry {
    pub(super) fn new(waits: Waits, max: usize) -> Arc<Self> {
        Arc::new(Self {
            waits,
            max: max.max(1),
            open: AtomicUsize::new(0),
            conns: Mutex::new(VecDeque::new()),
        })
    }

    fn conns(&self) -> MutexGuard<'_, VecDeque<Weak<Conn>>> {
        // Every update is a single push or retain: the queue is consistent after a panic.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// A slot for a new connection. At the limit, the oldest connection that is waiting for a
    /// request (rather than answering one) is closed to make room, as nginx reuses idle
    /// keep-alive connections; when every connection is answering, `None`: refuse the new one.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Slot> {
        if self.open.load(Ordering::Acquire) >= self.max && !self.evict_one() {
            metrics::counter!(names::CONNECTIONS_REFUSED).increment(1);
            return None;
        }
        let conn = Arc::new(Conn::new());
        self.conns().push_back(Arc::downgrade(&conn));
        self.open.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!(names::CONNECTIONS_OPEN).increment(1.0);
        Some(Slot {
            registry: self.clone(),
            conn,
        })
    }

    /// Closes the oldest connection that is waiting for a request. Returns whether there was
    /// one. Its descriptor is released as soon as its task sees the request.
    pub(super) fn evict_one(&self) -> bool {
        let conns = self.conns();
        let victim = conns
            .iter()
            .filter_map(Weak::upgrade)
            .find(|c| c.is_waiting() && c.close());
        drop(conns);
        if victim.is_some() {
            metrics::counter!(names::CONNECTIONS_CLOSED, "reason" => Closed::Evicted.as_str())
                .increment(1);
        }
        victim.is_some()
    }

    /// Closes every connection that is waiting for a request (at shutdown: nothing more will be
    /// read, and a connection that never sends a head must not hold the shutdown up).
    pub(super) fn close_waiting(&self) {
        for conn in self.conns().iter().filter_map(Weak::upgrade) {
            if conn.is_waiting() {
                conn.close();
            }
        }
    }

    /// Closes every connection past its deadline and forgets the ones that are gone.
    pub(super) fn sweep(&self) {
        let now = now_ms();
        let mut expired = Vec::new();
        self.conns().retain(|weak| {
            let Some(conn) = weak.upgrade() else {
                return false;
            };
            if let Some((due, why)) = conn.deadline(self.waits)
                && due <= now
            {
                expired.push((conn, why));
            }
            true
        });
        for (conn, why) in expired {
            if conn.close() {
                metrics::counter!(names::CONNECTIONS_CLOSED, "reason" => why.as_str()).increment(1);
            }
        }
    }

    /// How often the sweeper looks: a quarter of the shortest wait, between 50 ms and 1 s, so
    /// that a connection is closed at most that long after its deadline.
    pub(super) fn sweep_interval(&self) -> Duration {
        (self.waits.header.min(self.waits.idle) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Sweeps until the task is aborted.
    pub(super) async fn sweep_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.sweep_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Arc<Registry> {
        Registry::new(
            Waits {
                header: Duration::from_millis(40),
                idle: Duration::from_secs(60),
            },
            max,
        )
    }

    #[test]
    fn at_the_limit_the_oldest_waiting_connection_makes_room() {
        let registry = registry(2);
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        let third = registry
            .admit()
            .expect("room made by closing a waiting connection");
        assert!(
            !first.conn.is_waiting(),
            "the oldest one was asked to close"
        );
        assert!(second.conn.is_waiting());
        assert!(third.conn.is_waiting());
    }

    #[test]
    fn a_new_connection_is_refused_when_every_open_one_is_closing_or_answering() {
        let registry = registry(1);
        let only = registry.admit().unwrap();
        only.conn.close();
        assert!(registry.admit().is_none());
        drop(only);
        assert!(registry.admit().is_some(), "a freed slot is reused");
    }

    #[test]
    fn the_sweeper_closes_connections_past_their_header_deadline() {
        let registry = registry(10);
        let slot = registry.admit().unwrap();
        registry.sweep();
        assert!(slot.conn.is_waiting(), "not yet due");
        std::thread::sleep(Duration::from_millis(60));
        registry.sweep();
        assert!(!slot.conn.is_waiting(), "closed once due");
        drop(slot);
        registry.sweep();
        assert!(
            registry.conns().is_empty(),
            "gone connections are forgotten"
        );
    }
}
