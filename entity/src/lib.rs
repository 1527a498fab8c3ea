//! sea-orm entities, one module per table. Plain data: the rules live in `sluice::service`.

pub mod agent;
pub mod agent_version;
pub mod api_key;
pub mod chat;
pub mod generation;
pub mod message;
pub mod replica;
pub mod share;
pub mod usage_record;
pub mod web_session;
pub mod workspace;
