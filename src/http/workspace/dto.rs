//! The seed's objects, snake_case. The same types give the API description its schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{ApiKey, Workspace, format_usd};
use crate::http::conversations::timestamp;

/// A workspace.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceObject)]
pub struct WorkspaceDto {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// US dollars as a decimal string (`"10.00"`); null when unlimited.
    pub credit_limit: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Workspace> for WorkspaceDto {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            slug: w.slug,
            name: w.name,
            credit_limit: w.credit_limit_micros.map(format_usd),
            created_at: timestamp(&w.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreateWorkspace {
    /// 1 to 64 characters of `a-z`, `0-9` and `-`; unique.
    pub slug: String,
    /// Shown to people; the slug when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// US dollars as a decimal string (`"10.00"`); null or absent for no limit.
    #[serde(default)]
    pub credit_limit: Option<String>,
}

/// `null` for `credit_limit` lifts the limit; an absent field leaves it.
#[derive(Deserialize, ToSchema)]
pub struct UpdateWorkspace {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub credit_limit: Option<Option<String>>,
}

/// A field that is present: `null` becomes `Some(None)`, absence stays `None` (the default).
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// A key, without its value.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceKey)]
pub struct KeyDto {
    pub id: Uuid,
    /// `secret` or `publishable`.
    #[schema(value_type = String, examples("secret"))]
    pub kind: &'static str,
    pub name: Option<String>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// The browser origins a publishable key is bound to.
    pub origins: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for KeyDto {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            kind: k.kind.map_or("unknown", |k| k.as_str()),
            name: k.name,
            prefix: k.prefix,
            origins: k.allowed_origins.unwrap_or_default(),
            created_at: timestamp(&k.created_at),
            revoked_at: k.revoked_at.as_ref().map(timestamp),
        }
    }
}

/// A new key: the object and, this once, the key itself.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceNewKey)]
pub struct NewKeyDto {
    #[serde(flatten)]
    pub object: KeyDto,
    /// The key. It is shown this once and never again.
    pub key: String,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateKey {
    /// `secret` or `publishable`.
    #[schema(examples("publishable"))]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Browser origins (`https://example.com`) a publishable key is bound to.
    #[serde(default)]
    pub origins: Vec<String>,
}
