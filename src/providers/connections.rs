//! The HTTP clients that carry one provider's answers.
//!
//! Over HTTP/1.1 one client is enough: its pool opens a connection for every answer in flight
//! and keeps them for the next ones. Over HTTP/2 a client puts every request to a host on one
//! connection and, when the server's limit of concurrent streams is reached, queues the next
//! request until a stream ends, which for a streamed answer can be minutes. So with HTTP/2 each
//! client is given at most `max_streams` answers at once, and another client (another
//! connection) is made when all are full. A client left without answers for [`IDLE`] is dropped
//! with its connection, except the first, which keeps a warm connection for the next answer.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_openai::middleware::ReqwestService;
use async_openai::middleware::retry::{OpenAIRetry, OpenAIRetryLayer};
use std::time::Instant;
use tower::Layer;

use crate::config::{UpstreamHttp, UpstreamTimeouts};

/// How long an idle connection is kept.
pub const IDLE: Duration = Duration::from_secs(90);

/// What a call sends its request through: async-openai's retry layer over a pooled client.
pub type Service = OpenAIRetry<ReqwestService>;

pub struct Clients {
    http: UpstreamHttp,
    connect_timeout: Duration,
    shared: Arc<Mutex<Members>>,
}

#[derive(Default)]
struct Members {
    list: Vec<Member>,
    next_id: u64,
}

struct Member {
    id: u64,
    service: Service,
    /// Answers in flight on this client.
    active: usize,
    /// Since when `active` is 0.
    idle_since: Instant,
}

/// One answer's hold on a client, released when the answer's body is dropped.
pub struct Lease {
    pub service: Service,
    id: u64,
    shared: Arc<Mutex<Members>>,
}

fn lock(members: &Mutex<Members>) -> MutexGuard<'_, Members> {
    // The critical sections only change counters: a panic elsewhere cannot leave them torn.
    members.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Clients {
    /// Builds the first client, so that a setting the HTTP client refuses stops the start.
    pub fn new(http: UpstreamHttp, timeouts: &UpstreamTimeouts) -> Result<Self, String> {
        let clients = Self {
            http,
            connect_timeout: timeouts.connect,
            shared: Arc::new(Mutex::new(Members::default())),
        };
        let service = clients.build()?;
        let mut members = lock(&clients.shared);
        members.next_id = 1;
        members.list.push(Member {
            id: 0,
            service,
            active: 0,
            idle_since: Instant::now(),
        });
        drop(members);
        Ok(clients)
    }

    fn build(&self) -> Result<Service, String> {
        // Nagle's algorithm is off so that small chunks are not held back.
        let builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(IDLE);
        let builder = if self.http.http2 {
            builder
                .http2_prior_knowledge()
                // A dead connection is noticed even while its answers are silent.
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_timeout(Duration::from_secs(20))
        } else {
            builder.http1_only()
        };
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(OpenAIRetryLayer::default().layer(ReqwestService::new(http)))
    }

    /// Answers one client may carry at once.
    fn limit(&self) -> usize {
        if self.http.http2 {
            self.http.http2_max_streams
        } else {
            usize::MAX
        }
    }

    /// Takes a place on the first client with room, making a client when all are full.
    pub fn lease(&self) -> Result<Lease, String> {
        self.lease_at(Instant::now())
    }

    fn lease_at(&self, now: Instant) -> Result<Lease, String> {
        let limit = self.limit();
        let mut members = lock(&self.shared);
        let mut first = true;
        members.list.retain(|m| {
            let keep = first || m.active > 0 || now.duration_since(m.idle_since) < IDLE;
            first = false;
            keep
        });
        let member = match members.list.iter().position(|m| m.active < limit) {
            Some(i) => &mut members.list[i],
            None => {
                // Built under the lock, so that a burst of answers fills one new client
                // instead of making one each.
                let service = self.build()?;
                let id = members.next_id;
                members.next_id += 1;
                members.list.push(Member {
                    id,
                    service,
                    active: 0,
                    idle_since: now,
                });
                let last = members.list.len() - 1;
                &mut members.list[last]
            }
        };
        member.active += 1;
        Ok(Lease {
            service: member.service.clone(),
            id: member.id,
            shared: Arc::clone(&self.shared),
        })
    }

    /// How many clients (with HTTP/2, connections) there are now.
    #[cfg(test)]
    fn count(&self) -> usize {
        lock(&self.shared).list.len()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut members = lock(&self.shared);
        if let Some(member) = members.list.iter_mut().find(|m| m.id == self.id) {
            member.active = member.active.saturating_sub(1);
            if member.active == 0 {
                member.idle_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(http2: bool, max: usize) -> Clients {
        Clients::new(
            UpstreamHttp {
                http2,
                http2_max_streams: max,
            },
            &UpstreamTimeouts::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn http1_shares_one_client() {
        let clients = clients(false, 2);
        let leases: Vec<_> = (0..10).map(|_| clients.lease().unwrap()).collect();
        assert_eq!(clients.count(), 1);
        assert!(leases.iter().all(|l| l.id == 0));
    }

    #[tokio::test]
    async fn http2_opens_another_client_when_every_one_is_full_and_fills_the_first_first() {
        let clients = clients(true, 2);
        let a = clients.lease().unwrap();
        let b = clients.lease().unwrap();
        let c = clients.lease().unwrap();
        assert_eq!((a.id, b.id, c.id), (0, 0, 1));
        drop(a);
        // The freed place on the first client is taken before the second's.
        assert_eq!(clients.lease().unwrap().id, 0);
        assert_eq!(clients.count(), 2);
    }

    #[tokio::test]
    async fn idle_clients_beyond_the_first_are_dropped_after_the_idle_time() {
        let clients = clients(true, 1);
        let a = clients.lease().unwrap();
        let b = clients.lease().unwrap();
        assert_eq!(clients.count(), 2);
        drop(a);
        drop(b);
        let later = Instant::now() + IDLE + Duration::from_secs(1);
        let c = clients.lease_at(later).unwrap();
        assert_eq!(c.id, 0);
        assert_eq!(clients.count(), 1);
    }
}
