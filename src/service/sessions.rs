//! Browser sessions for the chat page: a key is presented once, then an opaque cookie token
//! stands for it. The token is stored hashed; the CSRF token is returned to the page's script,
//! which must echo it on every state-changing request.

use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::SecretString;

use super::Services;
use crate::error::{Error, Result};
use crate::service::{Principal, hash_key};

/// How long a sign-in lasts.
pub const SESSION_TTL: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// A new sign-in: the cookie's token (shown to the browser only, in `Set-Cookie`) and the rest.
pub struct NewWebSession {
    pub token: SecretString,
    pub session: WebSession,
}

/// A live session, as the page may see it.
pub struct WebSession {
    pub principal: Principal,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// 43 alphanumeric characters: about 256 random bits.
fn random_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 43)
}

impl Services {
    /// Signs a browser in with a key. A publishable key bound to origins must be presented from
    /// one of them, as everywhere else.
    pub async fn sign_in(&self, key: &str, origin: Option<&str>) -> Result<NewWebSession> {
        let principal = self.authenticate(key).await?;
        principal.check_origin(origin)?;
        let key_id = principal
            .key_id
            .ok_or_else(|| Error::Internal("an authenticated key without an id".into()))?;
        let token = random_token();
        let csrf_token = random_token();
        let row = self
            .store
            .insert_session(
                &hash_key(&token),
                &csrf_token,
                key_id,
                crate::store::now() + SESSION_TTL,
            )
            .await?;
        Ok(NewWebSession {
            token: SecretString::from(token),
            session: WebSession {
                principal,
                csrf_token,
                expires_at: row.expires_at,
            },
        })
    }

    /// The session a cookie token stands for: unknown, expired, or signed in with a key since
    /// revoked are all the same `Unauthenticated`.
    pub async fn web_session(&self, token: &str) -> Result<WebSession> {
        if token.is_empty() || token.len() > 128 {
            return Err(Error::Unauthenticated);
        }
        let (session, key) = self
            .store
            .session_with_key(&hash_key(token))
            .await?
            .ok_or(Error::Unauthenticated)?;
        Ok(WebSession {
            principal: Principal::of_key(key)?,
            csrf_token: session.csrf_token,
            expires_at: session.expires_at,
        })
    }

    pub async fn sign_out(&self, token: &str) -> Result<()> {
        self.store.delete_session(&hash_key(token)).await?;
        Ok(())
    }
}

/// Compares two tokens in time independent of where they differ.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
