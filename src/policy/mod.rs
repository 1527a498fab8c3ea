//! What a request may cost: credits (reserve before a generation, settle at its end) and rate
//! limits (one counter per key per window). Each is a trait, built once at start-up as an
//! `Arc<dyn …>`: one process counts in memory, several replicas count in a shared store (rate
//! limits in Redis with `SLUICE_REDIS_URL`), and no caller changes.

mod credits;
mod rate;
mod shared_rate;

pub use credits::{Credits, LocalCredits, Reservation};
pub use rate::{LocalRateLimiter, RateDecision, RateLimiter};
pub use shared_rate::{RedisRateLimiter, connect as connect_redis};
