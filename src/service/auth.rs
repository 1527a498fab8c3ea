//! API keys: generation, hashing, authentication and the first-start bootstrap.

use std::io::Write;

use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Services;
use crate::domain::ApiKey;
pub use crate::domain::KeyKind;
use crate::error::{Error, Result};
use crate::store::{NewKey, Scope, Store};

/// Who is calling: a workspace, through which kind of key, possibly for one end user.
#[derive(Clone, Debug)]
pub struct Principal {
    pub workspace_id: Uuid,
    pub key_id: Option<Uuid>,
    pub kind: KeyKind,
    pub is_admin: bool,
    pub end_user: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    /// The key's own requests per rate-limit window, if it has one.
    pub rate_limit: Option<u32>,
}

impl Principal {
    /// The admin of a workspace, as used when authentication is off.
    pub fn admin(workspace_id: Uuid) -> Self {
        Self {
            workspace_id,
            key_id: None,
            kind: KeyKind::Secret,
            is_admin: true,
            end_user: None,
            allowed_origins: None,
            rate_limit: None,
        }
    }

    /// Refuses a caller whose key does not grant `access`: the one rule for every dialect.
    pub fn allow(&self, access: Access) -> Result<()> {
        match access {
            Access::Widget => Ok(()),
            Access::Backend if self.kind == KeyKind::Secret => Ok(()),
            Access::Backend => Err(Error::PublishableNotAllowed),
            Access::Admin if self.kind == KeyKind::Secret && self.is_admin => Ok(()),
            Access::Admin if self.kind == KeyKind::Publishable => Err(Error::PublishableNotAllowed),
            Access::Admin => Err(Error::Forbidden("this needs an admin key".into())),
        }
    }

    /// The same caller acting for one end user (`X-User-Id`), which only a secret key may do:
    /// it then sees that user's chats only.
    pub fn acting_for(mut self, end_user: &str) -> Result<Self> {
        if self.kind != KeyKind::Secret {
            return Err(Error::Forbidden(
                "X-User-Id is accepted only with a secret key".into(),
            ));
        }
        self.end_user = Some(end_user.to_owned());
        Ok(self)
    }

    /// What this caller may read, applied inside every query.
    pub fn scope(&self) -> Scope {
        Scope {
            workspace_id: self.workspace_id,
            end_user: self.end_user.clone(),
            publishable_only: self.kind == KeyKind::Publishable,
        }
    }
}

/// What an operation needs of the caller's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any key: the endpoints a browser widget uses (its own chats, its questions, its answers).
    Widget,
    /// A secret key: everything else in the workspace.
    Backend,
    /// A secret admin key: the workspace's keys and settings.
    Admin,
}

/// 32 alphanumeric characters: about 190 random bits from the thread's CSPRNG.
const RANDOM_LEN: usize = 32;
/// Characters of a key kept in clear for display (`sk_live_` + 4).
const DISPLAY_PREFIX_LEN: usize = 12;

/// A new key: the full value (shown once) and what is stored.
pub struct NewKeyOutput {
    pub id: Uuid,
    pub key: SecretString,
    pub prefix: String,
}

pub fn generate_key(kind: KeyKind) -> String {
    let random = Alphanumeric.sample_string(&mut rand::rng(), RANDOM_LEN);
    format!("{}{random}", kind.prefix())
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Cheap shape check before touching the database.
fn looks_like_key(raw: &str) -> Option<KeyKind> {
    let kind = if raw.starts_with("sk_live_") {
        KeyKind::Secret
    } else if raw.starts_with("pk_live_") {
        KeyKind::Publishable
    } else {
        return None;
    };
    let body = &raw[8..];
    (body.len() >= 22 && body.len() <= 128 && body.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(kind)
}

impl Services {
    /// Resolves a presented key. Every failure is the same `Unauthenticated`.
    pub async fn authenticate(&self, raw: &str) -> Result<Principal> {
        let Some(kind) = looks_like_key(raw) else {
            return Err(Error::Unauthenticated);
        };
        let row = self
            .store
            .key_by_hash(&hash_key(raw))
            .await?
            .filter(|k| k.kind == Some(kind))
            .ok_or(Error::Unauthenticated)?;
        Principal::of_key(row)
    }
}

impl Principal {
    /// The caller a stored key stands for; a revoked key (or a kind this build does not know)
    /// is the same `Unauthenticated` as an unknown one.
    pub(crate) fn of_key(key: ApiKey) -> Result<Self> {
        if key.is_revoked() {
            return Err(Error::Unauthenticated);
        }
        let kind = key.kind.ok_or(Error::Unauthenticated)?;
        Ok(Principal {
            workspace_id: key.workspace_id,
            key_id: Some(key.id),
            kind,
            is_admin: key.is_admin,
            end_user: None,
            allowed_origins: key.allowed_origins,
            rate_limit: key.rate_limit,
        })
    }

    /// A publishable key bound to origins accepts only requests whose `Origin` is one of them.
    pub fn check_origin(&self, origin: Option<&str>) -> Result<()> {
        match &self.allowed_origins {
            Some(origins) if !origin.is_some_and(|o| origins.iter().any(|a| a == o)) => {
                Err(Error::Forbidden(
                    "this publishable key is bound to other origins: the request's Origin header \
                     does not match"
                        .into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Creates a key in a workspace and returns it (the only time the full key exists).
pub async fn create_key(
    store: &Store,
    workspace_id: Uuid,
    kind: KeyKind,
    name: Option<&str>,
    is_admin: bool,
    origins: Vec<String>,
    rate_limit: Option<u32>,
) -> Result<NewKeyOutput> {
    let key = generate_key(kind);
    let prefix = key[..DISPLAY_PREFIX_LEN].to_owned();
    let row = store
        .insert_key(NewKey {
            workspace_id,
            kind,
            name,
            prefix: &prefix,
            hash: &hash_key(&key),
            is_admin,
            allowed_origins: (!origins.is_empty()).then_some(origins),
            rate_limit,
        })
        .await?;
    Ok(NewKeyOutput {
        id: row.id,
        key: SecretString::from(key),
        prefix,
    })
}

/// Makes sure the default workspace exists and someone can administer it: the configured
/// `SLUICE_ADMIN_KEY`, or on a first start a generated key printed once on standard error.
pub async fn bootstrap(store: &Store, admin_key: Option<&SecretString>) -> Result<Uuid> {
    let workspace = store.ensure_default_workspace().await?;
    if let Some(admin) = admin_key {
        let hash = hash_key(admin.expose_secret());
        match store.key_by_hash(&hash).await? {
            Some(key) if key.is_revoked() => {
                tracing::warn!("SLUICE_ADMIN_KEY names a revoked key; it will be refused");
            }
            Some(_) => {}
            None => {
                let prefix = admin.expose_secret()[..DISPLAY_PREFIX_LEN].to_owned();
                let inserted = store
                    .insert_key(NewKey {
                        workspace_id: workspace.id,
                        kind: KeyKind::Secret,
                        name: Some("SLUICE_ADMIN_KEY"),
                        prefix: &prefix,
                        hash: &hash,
                        is_admin: true,
                        allowed_origins: None,
                        rate_limit: None,
                    })
                    .await;
                match inserted {
                    Ok(_) => {}
                    // Another replica inserted it first.
                    Err(e) if crate::store::is_unique_violation(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    } else if store.count_keys().await? == 0 {
        let created = create_key(
            store,
            workspace.id,
            KeyKind::Secret,
            Some("first admin key"),
            true,
            Vec::new(),
            None,
        )
        .await?;
        // This is output for the operator, not a log line: it is printed whatever RUST_LOG says,
        // once, and never again (the next start finds a key in the database).
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "\nsluice: created the first admin key of workspace `default`. It is shown once; store it now:\n\n    {}\n",
            created.key.expose_secret()
        );
    }
    Ok(workspace.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_kind_prefix_and_enough_randomness() {
        let k = generate_key(KeyKind::Secret);
        assert!(k.starts_with("sk_live_"));
        assert_eq!(k.len(), 8 + RANDOM_LEN);
        assert_eq!(looks_like_key(&k), Some(KeyKind::Secret));
        assert_ne!(k, generate_key(KeyKind::Secret));
        // 62^32 > 2^190
        assert!((RANDOM_LEN as f64) * 62f64.log2() >= 128.0);
    }

    #[test]
    fn malformed_keys_are_rejected_before_the_database() {
        assert_eq!(looks_like_key("sk_live_short"), None);
        assert_eq!(
            looks_like_key("bearer sk_live_aaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            None
        );
        assert_eq!(looks_like_key("sk_live_aaaaaaaaaaaaaaaaaaaaaa-aaaaa"), None);
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(hash_key("abc").len(), 64);
    }
}
