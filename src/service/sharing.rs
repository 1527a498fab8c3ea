//! Sharing a chat: a public read-only link that anyone may open without a key.

use std::net::IpAddr;

use uuid::Uuid;

use super::{Access, Principal, Services};
use crate::domain::{Chat, Message, MessageStatus, Role, Share, Workspace, end_user_id};
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
        who.owns(&chat)?;
        let link = chat.public_link_id.is_none().then(Uuid::new_v4);
        self.store
            .set_public_link(&who.in_workspace(workspace).scope(), chat.id, link)
            .await?
            .ok_or(Error::NotFound("chat"))
    }

    /// The read-only view behind a public link, for anyone, counted per client address: the
    /// questions and the complete answers (never one still streaming, cut short or failed).
    pub async fn public_view(&self, link: Uuid, address: Option<IpAddr>) -> Result<PublicView> {
        if let Some(address) = address {
            self.count(&format!("public:{address}"), PUBLIC_VIEWS_PER_WINDOW)
                .await?;
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

impl Principal {
    /// Refuses to change a chat that is only shared with this end user: they may read it.
    pub(super) fn owns(&self, chat: &Chat) -> Result<()> {
        match &self.end_user {
            Some(user) if chat.end_user_id.as_deref() != Some(user.as_str()) => {
                Err(Error::Forbidden(
                    "this chat is shared with you to read; only its owner may change it".into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Services {
    /// Shares a chat with an end user, read-only; the share and whether it is new.
    pub async fn share_chat(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
        user_id: &str,
        permission: Option<&str>,
    ) -> Result<(Share, bool)> {
        who.allow(Access::Backend)?;
        let user_id = end_user_id("user_id", user_id)?;
        let permission = permission.unwrap_or("read");
        if permission != "read" {
            return Err(Error::bad_request(
                "permission",
                "permission must be `read`: a shared user may read, never write",
            ));
        }
        let chat = self.chat_in(who, workspace, chat_id).await?;
        who.owns(&chat)?;
        Ok(self.store.share_chat(chat.id, user_id, permission).await?)
    }

    /// A chat's live shares.
    pub async fn shares(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
    ) -> Result<Vec<Share>> {
        who.allow(Access::Backend)?;
        let chat = self.chat_in(who, workspace, chat_id).await?;
        who.owns(&chat)?;
        Ok(self.store.shares(chat.id).await?)
    }

    /// Ends a share: the user loses the chat on their next request.
    pub async fn revoke_share(
        &self,
        who: &Principal,
        workspace: &Workspace,
        chat_id: Uuid,
        user_id: &str,
    ) -> Result<()> {
        who.allow(Access::Backend)?;
        let user_id = end_user_id("user_id", user_id)?;
        let chat = self.chat_in(who, workspace, chat_id).await?;
        who.owns(&chat)?;
        if self.store.revoke_share(chat.id, user_id).await? {
            Ok(())
        } else {
            Err(Error::NotFound("share"))
        }
    }

    /// Which of these chats are shared with anyone.
    pub async fn shared_among(&self, chat_ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>> {
        Ok(self.store.shared_among(chat_ids).await?)
    }
}
