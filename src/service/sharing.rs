//! Sharing a chat: a public read-only link that anyone may open without a key.

use std::net::IpAddr;

use uuid::Uuid;

use super::{Access, Principal, Services};
use crate::domain::{Chat, Message, MessageStatus, Role, Workspace};
use crate::error::{Error, Result};

/// Public views one client address may open per rate-limit window.
pub const PUBLIC_VIEWS_PER_WINDOW: u32 = 120;

/// What a public link shows: the chat's name and its finished messages, nothing else.
pub struct PublicView {
    pub chat: Chat,
    pub messages: Vec<Message>,
}

impl Services {
    /// Turns a chat's public link on (a new random id every time: an old link dies at once) or
    /// off; the chat as it is now.
    pub async fn toggle_public(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
    ) -> Result<Chat> {
        who.allow(Access::Backend)?;
        let chat = self.chat_in(who, workspace, chat_id).await?;
        let link = chat.public_link_id.is_none().then(Uuid::new_v4);
        let scope = crate::store::Scope {
            workspace_id: workspace.id,
            ..who.scope()
        };
        self.store
            .set_public_link(&scope, chat.id, link)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    /// The read-only view behind a public link, for anyone, counted per client address: the
    /// questions and the complete answers (never one still streaming, cut short or failed).
    pub async fn public_view(&self, link: Uuid, address: Option<IpAddr>) -> Result<PublicView> {
        if let Some(address) = address {
            let decision = self
                .rate
                .hit(&format!("public:{address}"), PUBLIC_VIEWS_PER_WINDOW)
                .await;
            if !decision.allowed {
                return Err(Error::RateLimited {
                    limit: decision.limit,
                    retry_after: decision.reset_after,
                });
            }
        }
        let chat = self
            .store
            .chat_by_public_link(link)
            .await?
            .ok_or(Error::NotFound("shared chat"))?;
        let messages = self
            .store
            .list_messages(chat.id, false)
            .await?
            .into_iter()
            .filter(|m| {
                m.role == Role::User
                    || (m.role == Role::Assistant && m.status == MessageStatus::Complete)
            })
            .collect();
        Ok(PublicView { chat, messages })
    }
}
