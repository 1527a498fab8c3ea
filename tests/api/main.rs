//! One integration-test binary: every test boots the real server on port 0 against the mock
//! upstream on port 0, and reads SSE as a client would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../examples/mock_upstream/mock.rs"]
mod mock;

mod helpers;

mod agents;
mod auth;
mod browser;
mod chats;
mod cluster;
mod connections;
mod credits;
mod embed;
mod faults;
mod fuzzed;
mod hardening;
mod inference;
mod internet;
mod leases;
mod lifecycle;
mod openai;
mod openai_sdk;
mod openapi;
mod ops;
mod rate_limits;
mod replicas;
mod search;
mod session;
mod sessions;
mod sharing;
mod tenants;
mod terminal;
mod transcribe;
mod translate;
mod workspace_messages;
mod workspaces;
