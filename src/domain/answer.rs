//! What a generation gives its readers: events in order, and how the answer ended. Every
//! dialect renders these; none of them sees how a generation runs.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Message, MessageStatus, StreamFailure, Usage};

/// One piece of a streamed tool call; pieces with the same `index` belong together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// One source index an answer cites, in order of first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    pub index: u32,
    /// Whether `index` is one of the sources sent (1 to the number of sources).
    pub resolves: bool,
}

/// How an answer ended, with the saved assistant message (none for answers that are not
/// stored, or that could not be saved).
#[derive(Clone, Debug)]
pub struct Finished {
    pub message: Option<Message>,
    pub status: MessageStatus,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// The `[n]` markers of an answer given sources (the internet variant), in order of use.
    pub citations: Option<Vec<Citation>>,
}

/// What a reader receives, in order: sources, deltas and errors at their offsets, then done.
#[derive(Clone, Debug)]
pub enum GenEvent {
    Sources(Arc<Value>),
    /// Text, and the byte offset of the answer after it.
    Delta {
        text: String,
        end: usize,
    },
    ToolCall {
        call: ToolCallDelta,
        offset: usize,
    },
    Error {
        failure: StreamFailure,
        offset: usize,
    },
    Done(Arc<Finished>),
}

/// Where a reconnecting reader left off (`Last-Event-ID`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    pub message_id: uuid::Uuid,
    pub at: ResumeAt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeAt {
    /// The reader holds the answer's first `n` bytes.
    Offset(usize),
    /// The reader had the end.
    Done,
}
