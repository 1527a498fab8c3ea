//! Chats, their messages, and answering them: the rules behind the conversations API (and,
//! later, the other dialects' chat endpoints).

use std::sync::Arc;

use entity::{chat, message};
use uuid::Uuid;

use super::{KeyKind, Principal, Services};
use crate::domain::{Role, display_text};
use crate::error::{Error, Result};
use crate::generation::{Asked, Finished, ResumeError, StartAt, Subscription, Variant};
use crate::store::NewChat;

/// Longest accepted chat name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Where a reconnecting client left off, from `Last-Event-ID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    pub message_id: Uuid,
    pub at: ResumeAt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeAt {
    Offset(usize),
    Done,
}

impl ResumePoint {
    /// Parses `<message id>:<byte offset>` or `<message id>:done`.
    pub fn parse(raw: &str) -> Option<Self> {
        let (id, rest) = raw.trim().split_once(':')?;
        let message_id = Uuid::parse_str(id).ok()?;
        let at = if rest == "done" {
            ResumeAt::Done
        } else if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            ResumeAt::Offset(rest.parse().ok()?)
        } else {
            return None;
        };
        Some(Self { message_id, at })
    }
}

/// The result of opening an answer stream.
pub enum StreamOpen {
    Stream(Subscription),
    /// The client already had `done`: nothing more will ever come.
    AlreadyDone,
}

/// The result of a stop request.
pub struct StopOutcome {
    pub chat_id: Uuid,
    pub stopped: Option<Arc<Finished>>,
}

/// A chat name as stored: the rule for text people read, under the chat's own length limit.
fn check_name(name: &str) -> Result<String> {
    display_text("name", name, MAX_NAME_CHARS)
}

impl Services {
    pub async fn create_chat(&self, who: &Principal, name: &str) -> Result<chat::Model> {
        let name = check_name(name)?;
        let chat = self
            .store
            .create_chat(NewChat {
                workspace_id: who.workspace_id,
                name,
                end_user_id: who.end_user.clone(),
                created_via: who.kind.as_str(),
            })
            .await?;
        Ok(chat)
    }

    pub async fn chat(&self, who: &Principal, id: Uuid) -> Result<chat::Model> {
        self.store
            .chat(&who.scope(), id)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    pub async fn list_chats(
        &self,
        who: &Principal,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<chat::Model>> {
        Ok(self.store.list_chats(&who.scope(), limit, offset).await?)
    }

    pub async fn rename_chat(
        &self,
        who: &Principal,
        id: Uuid,
        name: &str,
        updated_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<chat::Model> {
        let name = check_name(name)?;
        self.store
            .rename_chat(&who.scope(), id, name, updated_at)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    /// Deletes a chat and everything in it. A running answer is stopped first.
    pub async fn delete_chat(&self, who: &Principal, id: Uuid) -> Result<chat::Model> {
        let chat = self.chat(who, id).await?;
        for live in self.hub.stop_chat(chat.id) {
            live.wait_finished().await;
        }
        self.store
            .delete_chat(&who.scope(), chat.id)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    /// Appends a message written by the client (a question, or an answer it supplies itself).
    pub async fn add_message(
        &self,
        who: &Principal,
        chat_id: Uuid,
        role: Role,
        content: String,
    ) -> Result<message::Model> {
        if content.chars().count() > self.limits.max_message_chars {
            return Err(Error::unprocessable(
                "message",
                format!(
                    "message is longer than {} characters",
                    self.limits.max_message_chars
                ),
            ));
        }
        if !matches!(role, Role::User | Role::Assistant)
            || (who.kind == KeyKind::Publishable && role != Role::User)
        {
            return Err(Error::unprocessable(
                "role",
                "role must be Human or Assistant",
            ));
        }
        if content.contains('\0') {
            return Err(Error::unprocessable(
                "message",
                "message must not contain NUL characters",
            ));
        }
        let chat = self.chat(who, chat_id).await?;
        // Line breaks are stored as the stream sends them (LF), so history and replays agree.
        let content = normalise_line_breaks(content);
        Ok(self.store.insert_message(chat.id, role, content).await?)
    }

    pub async fn list_messages(
        &self,
        who: &Principal,
        chat_id: Uuid,
    ) -> Result<Vec<message::Model>> {
        let chat = self.chat(who, chat_id).await?;
        Ok(self.store.list_messages(chat.id, false).await?)
    }

    /// Finds the chat and the question an inference request is about: `target` is a chat (its
    /// newest user message) or a message (a question, or an answer standing for its question).
    /// The question, its answer and the history before it come from one read of the chat's
    /// messages.
    async fn question(&self, who: &Principal, target: Uuid) -> Result<(chat::Model, Asked)> {
        let scope = who.scope();
        let (chat, named) = match self.store.chat(&scope, target).await? {
            Some(chat) => (chat, None),
            None => {
                let msg = self
                    .store
                    .message(target)
                    .await?
                    .ok_or(Error::NotFound("chat or conversation"))?;
                let chat = self
                    .store
                    .chat(&scope, msg.chat_id)
                    .await?
                    .ok_or(Error::NotFound("chat or conversation"))?;
                (chat, Some(msg))
            }
        };
        let thread = self.store.list_messages(chat.id, true).await?;
        let question_id = match named {
            None => thread
                .iter()
                .rev()
                .find(|m| Role::parse(&m.role) == Some(Role::User))
                .map(|m| m.id)
                .ok_or(Error::Conflict {
                    code: "nothing_to_answer",
                    message: "the chat has no Human message to answer".into(),
                })?,
            Some(msg) => match (Role::parse(&msg.role), msg.reply_to) {
                (Some(Role::User), _) => msg.id,
                (Some(Role::Assistant), Some(question_id)) => question_id,
                _ => {
                    return Err(Error::Conflict {
                        code: "nothing_to_answer",
                        message: "that conversation is not a Human message".into(),
                    });
                }
            },
        };
        let asked =
            Asked::from_thread(thread, question_id).ok_or(Error::NotFound("conversation"))?;
        Ok((chat, asked))
    }

    /// Opens the answer stream of a chat or question: attaches to the running generation,
    /// replays a saved answer, or starts a new generation owned by the server.
    pub async fn open_stream(
        &self,
        who: &Principal,
        target: Uuid,
        resume: Option<ResumePoint>,
        variant: Variant,
    ) -> Result<StreamOpen> {
        // Taken before the reads: see `Hub::mark`.
        let mark = self.hub.mark();
        let (chat, asked) = self.question(who, target).await?;
        if let Some(ResumePoint {
            at: ResumeAt::Done, ..
        }) = resume
        {
            return Ok(StreamOpen::AlreadyDone);
        }
        let live = self
            .hub
            .answer(who.workspace_id, &chat, asked, mark, variant)
            .await?;
        let start = match resume {
            Some(ResumePoint {
                message_id,
                at: ResumeAt::Offset(offset),
            }) if message_id == live.message_id => StartAt::Offset(offset),
            _ => StartAt::Beginning,
        };
        Subscription::new(live, start)
            .map(StreamOpen::Stream)
            .map_err(|e| match e {
                ResumeError::BeyondText { len } => Error::bad_request(
                    "Last-Event-ID",
                    format!("Last-Event-ID offset is beyond the {len} bytes of the answer"),
                ),
                ResumeError::InsideCharacter => Error::bad_request(
                    "Last-Event-ID",
                    "Last-Event-ID offset falls inside a character",
                ),
            })
    }

    /// Stops the running answer of a chat and waits until its partial text is saved.
    pub async fn stop(&self, who: &Principal, chat_id: Uuid) -> Result<StopOutcome> {
        let chat = self.chat(who, chat_id).await?;
        // A chat normally has one running answer; if several questions are being answered at
        // once, all stop, and the newest answer is reported.
        let mut stopped = None;
        for live in self.hub.stop_chat(chat.id) {
            let done = live.wait_finished().await;
            if stopped
                .as_ref()
                .is_none_or(|s: &Arc<Finished>| seq(s) < seq(&done))
            {
                stopped = Some(done);
            }
        }
        Ok(StopOutcome {
            chat_id: chat.id,
            stopped,
        })
    }
}

fn seq(done: &Finished) -> i64 {
    done.message.as_ref().map_or(0, |m| m.seq)
}

fn normalise_line_breaks(content: String) -> String {
    if !content.contains('\r') {
        return content;
    }
    let mut out = String::with_capacity(content.len());
    crate::domain::LineBreaks::default().push(&content, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_points_parse_offsets_and_done() {
        let id = Uuid::new_v4();
        assert_eq!(
            ResumePoint::parse(&format!("{id}:42")),
            Some(ResumePoint {
                message_id: id,
                at: ResumeAt::Offset(42)
            })
        );
        assert_eq!(
            ResumePoint::parse(&format!("{id}:done")),
            Some(ResumePoint {
                message_id: id,
                at: ResumeAt::Done
            })
        );
        assert_eq!(ResumePoint::parse(&format!("{id}:-1")), None);
        assert_eq!(ResumePoint::parse(&format!("{id}:")), None);
        assert_eq!(ResumePoint::parse("nope:1"), None);
    }
}
