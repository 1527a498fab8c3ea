//! Chats, their messages, and answering them: the rules behind the conversations API (and the
//! other dialects' chat endpoints). Which question is answered, with which prompt and model,
//! is decided here and handed to the generation core as a spec.

use std::sync::Arc;

use uuid::Uuid;

use super::{Access, AnswerStream, KeyKind, Principal, Services};
use crate::domain::Agent;
use crate::domain::{
    Chat, ChatName, Finished, Message, MessageStatus, PromptMessage, ResumeAt, ResumePoint, Role,
};
use crate::error::{Error, Result};
use crate::generation::{GenerationSpec, SearchSpec, Storage};
use crate::providers::ChatRequest;
use crate::store::{NewChat, Pledge};

/// How long a stop waits for another replica to save the answer it stopped.
const STOP_ELSEWHERE: std::time::Duration = std::time::Duration::from_secs(5);

/// Which kind of answer a stream asks for when it has to start one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The model alone.
    Plain,
    /// A web search first, its sources given to the model and sent to the readers.
    Internet,
}

/// The result of opening an answer stream.
pub enum StreamOpen {
    Stream(AnswerStream),
    /// The client already had `done`: nothing more will ever come.
    AlreadyDone,
}

/// The result of a stop request.
pub struct StopOutcome {
    pub chat_id: Uuid,
    pub stopped: Option<Arc<Finished>>,
}

/// A question as the database had it when a reader arrived.
pub(super) struct Asked {
    pub question: Message,
    /// The answer to it, if one was started.
    pub answer: Option<Message>,
    /// The chat's messages before the question, in order.
    pub history: Vec<Message>,
}

impl Asked {
    /// Picks `question_id` out of a chat's messages (in sequence order); `None` when it is not
    /// among them.
    pub fn from_thread(mut thread: Vec<Message>, question_id: Uuid) -> Option<Self> {
        let at = thread.iter().position(|m| m.id == question_id)?;
        // Moved out, not cloned: whatever `swap_remove` moves into its place lies after the
        // question and is cut off with the rest just below.
        let answer = thread[at + 1..]
            .iter()
            .position(|m| m.reply_to == Some(question_id))
            .map(|i| thread.swap_remove(at + 1 + i));
        thread.truncate(at + 1);
        let question = thread.pop()?;
        Some(Self {
            question,
            answer,
            history: thread,
        })
    }
}

/// The prompt for a chat's question: its system prompt first, then the latest
/// `max_messages` messages that have text, the question last.
fn prompt(
    system_prompt: Option<&str>,
    history: Vec<Message>,
    question: Message,
    max_messages: usize,
) -> Vec<PromptMessage> {
    let mut messages: Vec<PromptMessage> = history
        .into_iter()
        .chain(std::iter::once(question))
        .filter(|m| !m.content.is_empty())
        .map(|m| PromptMessage {
            role: m.role,
            content: m.content,
        })
        .collect();
    let excess = messages.len().saturating_sub(max_messages);
    messages.drain(..excess);
    if let Some(system) = system_prompt.filter(|s| !s.is_empty()) {
        messages.insert(
            0,
            PromptMessage {
                role: Role::System,
                content: system.to_owned(),
            },
        );
    }
    messages
}

impl Services {
    pub async fn create_chat(&self, who: &Principal, name: &str) -> Result<Chat> {
        who.allow(Access::Widget)?;
        let name = ChatName::parse("name", name)?;
        let chat = self
            .store
            .create_chat(NewChat {
                workspace_id: who.workspace_id,
                name,
                end_user_id: who.end_user.clone(),
                created_via: who.kind,
                settings: Default::default(),
                agent_framework: None,
                agent_id: None,
                metadata: None,
            })
            .await?;
        Ok(chat)
    }

    pub async fn chat(&self, who: &Principal, id: Uuid) -> Result<Chat> {
        self.store
            .chat(&who.scope(), id)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    pub async fn list_chats(&self, who: &Principal, limit: u64, offset: u64) -> Result<Vec<Chat>> {
        who.allow(Access::Backend)?;
        Ok(self.store.list_chats(&who.scope(), limit, offset).await?)
    }

    pub async fn rename_chat(
        &self,
        who: &Principal,
        id: Uuid,
        name: &str,
        updated_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Chat> {
        who.allow(Access::Backend)?;
        let name = ChatName::parse("name", name)?;
        who.owns(&self.chat(who, id).await?)?;
        self.store
            .rename_chat(&who.scope(), id, name, updated_at)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    /// Deletes a chat and everything in it. A running answer is stopped first.
    pub async fn delete_chat(&self, who: &Principal, id: Uuid) -> Result<Chat> {
        who.allow(Access::Backend)?;
        let chat = self.chat(who, id).await?;
        who.owns(&chat)?;
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
    ) -> Result<Message> {
        self.save_message(who, chat_id, role, content, None).await
    }

    /// [`Services::add_message`]; with a [`Pledge`], the generation of the answer the same
    /// request is about to start is saved with it.
    pub(super) async fn save_message(
        &self,
        who: &Principal,
        chat_id: Uuid,
        role: Role,
        content: String,
        pledge: Option<Pledge>,
    ) -> Result<Message> {
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
        who.owns(&chat)?;
        // Line breaks are stored as the stream sends them (LF), so history and replays agree.
        let content = normalise_line_breaks(content);
        Ok(self
            .store
            .insert_message(chat.id, role, content, pledge)
            .await?)
    }

    pub async fn list_messages(&self, who: &Principal, chat_id: Uuid) -> Result<Vec<Message>> {
        let chat = self.chat(who, chat_id).await?;
        Ok(self.store.list_messages(chat.id, false).await?)
    }

    /// Finds the chat and the question an inference request is about: `target` is a chat (its
    /// newest user message) or a message (a question, or an answer standing for its question).
    /// The question, its answer and the history before it come from one read of the chat's
    /// messages.
    async fn question(&self, who: &Principal, target: Uuid) -> Result<(Chat, Asked)> {
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
                .find(|m| m.role == Role::User)
                .map(|m| m.id)
                .ok_or(Error::Conflict {
                    code: "nothing_to_answer",
                    message: "the chat has no Human message to answer".into(),
                })?,
            Some(msg) => match (msg.role, msg.reply_to) {
                (Role::User, _) => msg.id,
                (Role::Assistant, Some(question_id)) => question_id,
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

    /// The generation that answers `question` in `chat` with the chat's own settings, or, for
    /// an agent's chat, with its agent's current version (`agent`, see [`Services::agent_of`]),
    /// through the internet variant when the agent has the `web_search` tool.
    pub(super) fn answer_spec(
        &self,
        who: &Principal,
        chat: &Chat,
        agent: Option<&Agent>,
        history: Vec<Message>,
        question: Message,
        variant: Variant,
    ) -> Result<GenerationSpec> {
        if agent.is_some_and(|a| a.deleted_at.is_some()) {
            return Err(Error::NotFound("agent"));
        }
        let preset = agent.map(|a| a.fields.settings());
        let settings = preset.as_ref().unwrap_or(&chat.settings);
        let variant = if agent.is_some_and(|a| a.fields.searches()) {
            Variant::Internet
        } else {
            variant
        };
        let resolved = self
            .providers
            .resolve(settings.provider.as_deref(), settings.model.as_deref())
            .ok_or_else(|| {
                Error::unprocessable("model", "the chat's provider or model is not configured")
            })?;
        let question_id = question.id;
        let query = (variant == Variant::Internet).then(|| question.content.clone());
        let messages = prompt(
            settings.system_prompt.as_deref(),
            history,
            question,
            self.limits.max_context_messages,
        );
        let request = ChatRequest::from_prompt(
            resolved.model.clone(),
            &messages,
            settings.temperature.map(|t| t.get()),
            settings.top_p.map(|t| t.get()),
            settings.max_tokens,
        );
        Ok(GenerationSpec {
            workspace_id: who.workspace_id,
            resolved,
            request,
            search: query.map(|query| SearchSpec {
                query,
                prompt: messages,
            }),
            storage: Storage::Answer {
                chat_id: chat.id,
                question_id,
                replaces: None,
                agent_version: agent.map(|a| a.version),
            },
        })
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
        self.open_stream_as(who, target, resume, variant, None)
            .await
    }

    /// [`Services::open_stream`]; a new answer gets the id `pledged` when given (see
    /// [`Pledge`]).
    pub(super) async fn open_stream_as(
        &self,
        who: &Principal,
        target: Uuid,
        resume: Option<ResumePoint>,
        variant: Variant,
        pledged: Option<Uuid>,
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
        let Asked {
            question,
            answer,
            history,
        } = asked;
        let agent = self.agent_of(&chat).await?;
        let live = self
            .hub
            .answer(question.id, answer, pledged, mark, || {
                self.answer_spec(who, &chat, agent.as_ref(), history, question, variant)
            })
            .await?;
        AnswerStream::open(live, resume)
            .await
            .map(StreamOpen::Stream)
    }

    /// The answers of a chat that another replica runs, once the stop sent to it has been
    /// handled there and they are saved (within a few seconds): the newest one's end.
    async fn stopped_elsewhere(&self, chat_id: Uuid) -> Result<Option<Arc<Finished>>> {
        let running = |messages: Vec<Message>| -> Vec<Message> {
            messages
                .into_iter()
                .filter(|m| m.role == Role::Assistant && m.status == MessageStatus::Streaming)
                .collect()
        };
        let waiting = running(self.store.list_messages(chat_id, false).await?);
        let Some(newest) = waiting.iter().map(|m| m.id).max() else {
            return Ok(None);
        };
        let deadline = tokio::time::Instant::now() + STOP_ELSEWHERE;
        loop {
            let answer = self
                .store
                .message(newest)
                .await?
                .ok_or(Error::NotFound("message"))?;
            if answer.status != MessageStatus::Streaming || tokio::time::Instant::now() > deadline {
                return self.hub.ended(answer).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops the running answer of a chat and waits until its partial text is saved.
    pub async fn stop(&self, who: &Principal, chat_id: Uuid) -> Result<StopOutcome> {
        who.allow(Access::Backend)?;
        let chat = self.chat(who, chat_id).await?;
        who.owns(&chat)?;
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
        if stopped.is_none() && self.hub.stops_are_shared() {
            stopped = self.stopped_elsewhere(chat.id).await?;
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
    use crate::domain::{MessageStatus, Usage};

    fn msg(seq: i64, role: Role, reply_to: Option<Uuid>) -> Message {
        let at = crate::store::now();
        Message {
            id: Uuid::new_v4(),
            chat_id: Uuid::nil(),
            seq,
            role,
            content: format!("message {seq}"),
            status: MessageStatus::Complete,
            reply_to,
            finish_reason: None,
            provider: None,
            model: None,
            usage: Usage::default(),
            cost_micros: None,
            sources: None,
            agent_version: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn the_prompt_puts_the_system_prompt_first_and_keeps_the_latest_messages_with_text() {
        let mut empty = msg(3, Role::Assistant, None);
        empty.content.clear();
        let history = vec![
            msg(1, Role::User, None),
            msg(2, Role::Assistant, None),
            empty,
        ];
        let question = msg(4, Role::User, None);

        let plain = prompt(None, history.clone(), question.clone(), 2);
        let contents: Vec<&str> = plain.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["message 2", "message 4"]);

        let with_system = prompt(Some("be brief"), history, question, 2);
        assert_eq!(with_system[0].role, Role::System);
        assert_eq!(with_system[0].content, "be brief");
        assert_eq!(with_system.len(), 3, "the system prompt is not counted");
    }

    #[test]
    fn a_question_is_picked_out_of_its_thread_with_its_answer_and_history() {
        let q1 = msg(1, Role::User, None);
        let a1 = msg(2, Role::Assistant, Some(q1.id));
        let q2 = msg(3, Role::User, None);
        let note = msg(4, Role::Assistant, None);
        let a2 = msg(5, Role::Assistant, Some(q2.id));
        let q3 = msg(6, Role::User, None);
        let thread = vec![
            q1.clone(),
            a1.clone(),
            q2.clone(),
            note.clone(),
            a2.clone(),
            q3.clone(),
        ];

        let asked = Asked::from_thread(thread.clone(), q2.id).unwrap();
        assert_eq!(asked.question, q2);
        assert_eq!(asked.answer, Some(a2));
        assert_eq!(asked.history, vec![q1.clone(), a1.clone()]);

        let asked = Asked::from_thread(thread.clone(), q3.id).unwrap();
        assert_eq!(asked.question, q3);
        assert_eq!(asked.answer, None);
        assert_eq!(asked.history.len(), 5);

        let asked = Asked::from_thread(thread.clone(), q1.id).unwrap();
        assert_eq!(asked.answer, Some(a1));
        assert!(asked.history.is_empty());

        assert!(Asked::from_thread(thread, Uuid::new_v4()).is_none());
    }
}
