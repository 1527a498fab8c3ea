//! sluice: a Server-Sent-Events streaming inference gateway and chat backend.
//!
//! Embed it with [`startup::Application`] (a complete server) or [`http::router`] (an axum
//! `Router` to nest in your own application).

pub mod config;
pub mod domain;
pub mod error;
pub mod generation;
pub mod http;
pub mod listener;
pub mod policy;
pub mod providers;
pub mod search;
pub mod service;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_support;

pub use error::{Error, Result};
