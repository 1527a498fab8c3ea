//! A chat's messages as the workspace API (and later the agent API) handles them: post a
//! question and get its answer's reader, read, delete, and follow an answer's task.

use uuid::Uuid;

use super::{AnswerStream, Principal, Services, StreamOpen, Variant};
use crate::domain::{Message, MessageStatus, ResumePoint, Role, StreamFailure, Workspace};
use crate::error::{Error, Result};
use crate::store::Pledge;

/// Where an answer's task stands: its answer row seen as a job.
pub struct TaskView {
    pub answer: Message,
    pub question: Option<Message>,
    /// Why it failed, when it did.
    pub failure: Option<StreamFailure>,
}

impl TaskView {
    /// `processing`, `completed`, `failed` or `cancelled`.
    pub fn status(&self) -> &'static str {
        match self.answer.status {
            MessageStatus::Streaming => "processing",
            MessageStatus::Complete => "completed",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Incomplete | MessageStatus::Failed => "failed",
        }
    }
}

impl Principal {
    /// This caller acting inside `workspace`, which [`Services::workspace`] let it name.
    pub(super) fn in_workspace(&self, workspace: &Workspace) -> Principal {
        Principal {
            workspace_id: workspace.id,
            ..self.clone()
        }
    }
}

impl Services {
    /// Posts a user message to a chat of `workspace` and starts its answer with the chat's
    /// settings; the message and a reader of the answer. The credit is checked before anything
    /// is written.
    pub async fn ask(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
        content: String,
    ) -> Result<(Message, AnswerStream)> {
        self.post_message(&who.in_workspace(workspace), chat_id, content)
            .await
    }

    /// Posts a user message to one of the caller's chats and starts its answer; the message
    /// and a reader of the answer. Shared by the workspace and agent APIs, whose field is
    /// `content`.
    pub async fn post_message(
        &self,
        who: &Principal,
        chat_id: Uuid,
        content: String,
    ) -> Result<(Message, AnswerStream)> {
        if content.trim().is_empty() {
            return Err(Error::bad_request("content", "content must not be empty"));
        }
        if content.contains('\0') {
            return Err(Error::bad_request(
                "content",
                "content must not contain NUL characters",
            ));
        }
        if content.chars().count() > self.limits.max_message_chars {
            return Err(Error::bad_request(
                "content",
                format!(
                    "content is longer than {} characters",
                    self.limits.max_message_chars
                ),
            ));
        }
        let chat = self.chat(who, chat_id).await?;
        who.owns(&chat)?;
        if let Some(agent) = self.agent_of(&chat).await?
            && agent.deleted_at.is_some()
        {
            return Err(Error::NotFound("agent"));
        }
        self.credits.check(chat.workspace_id).await?;
        // The answer is promised with the question: a crash before its first row still leaves
        // the question an answer (`Pledge`).
        let pledge = Pledge {
            answer_id: Uuid::now_v7(),
            owner: self.hub.owner(),
        };
        let question = self
            .save_message(who, chat.id, Role::User, content, Some(pledge))
            .await?;
        let opened = self
            .open_stream_as(
                who,
                question.id,
                None,
                Variant::Plain,
                Some(pledge.answer_id),
            )
            .await;
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // Not started: the request fails as a whole, so the question goes too.
                if let Err(withdraw) = self.store.withdraw_question(question.id, pledge).await {
                    tracing::warn!(error = %withdraw, "could not withdraw an unanswered question");
                }
                return Err(e);
            }
        };
        match opened {
            StreamOpen::Stream(answer) => Ok((question, answer)),
            StreamOpen::AlreadyDone => Err(Error::Internal(
                "a new question's answer was already done".into(),
            )),
        }
    }

    /// A chat's messages in order, without system messages.
    pub async fn messages_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
    ) -> Result<Vec<Message>> {
        self.list_messages(&who.in_workspace(workspace), chat_id)
            .await
    }

    /// One message of a chat.
    pub async fn message_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
        id: Uuid,
    ) -> Result<Message> {
        self.message_of(&who.in_workspace(workspace), chat_id, id)
            .await
    }

    /// One message of one of the caller's chats.
    pub async fn message_of(&self, who: &Principal, chat_id: Uuid, id: Uuid) -> Result<Message> {
        let chat = self.chat(who, chat_id).await?;
        self.store
            .message(id)
            .await?
            .filter(|m| m.chat_id == chat.id && m.role != Role::System)
            .ok_or(Error::NotFound("message"))
    }

    /// Attaches to, or replays, the answer `message_id` names (an answer, or a question standing
    /// for its answer), from `resume`.
    pub async fn follow_answer(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
        message_id: Uuid,
        resume: Option<ResumePoint>,
    ) -> Result<StreamOpen> {
        self.follow_message(&who.in_workspace(workspace), chat_id, message_id, resume)
            .await
    }

    /// [`Services::follow_answer`] in one of the caller's chats.
    pub async fn follow_message(
        &self,
        who: &Principal,
        chat_id: Uuid,
        message_id: Uuid,
        resume: Option<ResumePoint>,
    ) -> Result<StreamOpen> {
        let message = match self.message_of(who, chat_id, message_id).await {
            Err(Error::NotFound(what)) => {
                // A client that follows an answer the moment `X-Message-Id` names it can be
                // ahead of the answer's row.
                let chat = self.chat(who, chat_id).await?;
                if let Some(live) = self.hub.running_answer(chat.id, message_id).await {
                    if resume.is_some_and(|r| r.at == crate::domain::ResumeAt::Done) {
                        return Ok(StreamOpen::AlreadyDone);
                    }
                    return AnswerStream::open(live, resume)
                        .await
                        .map(StreamOpen::Stream);
                }
                // Written, and finished, meanwhile.
                self.message_of(who, chat_id, message_id)
                    .await
                    .map_err(|_| Error::NotFound(what))?
            }
            found => found?,
        };
        self.open_stream(who, message.id, resume, Variant::Plain)
            .await
    }

    /// Deletes a message; a question takes its answer with it. A running answer is stopped
    /// (and saved) first.
    pub async fn delete_message_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
        id: Uuid,
    ) -> Result<()> {
        who.allow(super::Access::Backend)?;
        who.owns(&self.chat_in(who, workspace, chat_id).await?)?;
        let message = self.message_in(who, workspace, chat_id, id).await?;
        let question_id = match message.role {
            Role::User => Some(message.id),
            _ => message.reply_to,
        };
        if let Some(question_id) = question_id
            && let Some(live) = self.hub.stop_question(question_id).await
        {
            live.wait_finished().await;
        }
        let mut ids = vec![message.id];
        if message.role == Role::User
            && let Some(answer) = self.store.answer_to(message.id).await?
        {
            ids.push(answer.id);
        }
        self.store.delete_messages(message.chat_id, &ids).await?;
        Ok(())
    }

    /// The task of an answer (its id is the answer's id): where it stands and, once ended, the
    /// question and the answer.
    pub async fn task_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
        task_id: Uuid,
    ) -> Result<TaskView> {
        let answer = match self.message_in(who, workspace, chat_id, task_id).await {
            Ok(m) if m.role == Role::Assistant && m.reply_to.is_some() => m,
            Ok(_) | Err(Error::NotFound(_)) => return Err(Error::NotFound("task")),
            Err(e) => return Err(e),
        };
        let question = match answer.reply_to {
            Some(q) => self.store.message(q).await?,
            None => None,
        };
        let failure = if answer.status == MessageStatus::Complete {
            None
        } else {
            self.store.failure_of(answer.id).await?
        };
        Ok(TaskView {
            answer,
            question,
            failure,
        })
    }
}

/// A workspace's spending against its limit.
pub struct CreditUsage {
    pub limit_micros: Option<i64>,
    pub spent_micros: i64,
}

impl Services {
    /// Answers the chat's last question again: its previous answer (stopped first if it is
    /// running) is replaced by the new one, deleted in the transaction that creates it.
    pub async fn regenerate(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
    ) -> Result<(Message, AnswerStream)> {
        who.allow(super::Access::Backend)?;
        let who = who.in_workspace(workspace);
        let chat = self.chat(&who, chat_id).await?;
        who.owns(&chat)?;
        let thread = self.store.list_messages(chat.id, true).await?;
        let question_id = thread
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.id)
            .ok_or(Error::Conflict {
                code: "nothing_to_regenerate",
                message: "the session has no user message to answer again".into(),
            })?;
        self.credits.check(workspace.id).await?;
        let asked = super::conversations::Asked::from_thread(thread, question_id)
            .ok_or(Error::NotFound("message"))?;
        let previous = asked.answer.as_ref().map(|a| a.id);
        let question = asked.question.clone();
        let agent = self.agent_of(&chat).await?;
        let mut spec = self.answer_spec(
            &who,
            &chat,
            agent.as_ref(),
            asked.history,
            asked.question,
            Variant::Plain,
        )?;
        if let crate::generation::Storage::Answer { replaces, .. } = &mut spec.storage {
            *replaces = previous;
        }
        let live = self.hub.replace(question_id, spec).await?;
        Ok((question, AnswerStream::open(live, None).await?))
    }

    /// Stops a chat's running answer, waits until it is saved, and returns how it ended.
    pub async fn stop_in(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
    ) -> Result<super::StopOutcome> {
        self.stop(&who.in_workspace(workspace), chat_id).await
    }

    /// What a workspace spent, against its limit.
    pub async fn credit_usage(
        &self,
        who: &Principal,
        workspace: &Workspace,
    ) -> Result<CreditUsage> {
        who.allow(super::Access::Backend)?;
        Ok(CreditUsage {
            limit_micros: workspace.credit_limit_micros,
            spent_micros: self.store.spent_micros(workspace.id).await?,
        })
    }
}
