//! Workspaces and their keys: an admin key creates workspaces and sets their credit limits;
//! a workspace's secret keys manage that workspace's keys.

use secrecy::SecretString;
use uuid::Uuid;

use super::{Access, KeyKind, Principal, Services, create_key};
use crate::domain::{
    ApiKey, Slug, Workspace, check_origin, display_text, key_rate_limit, parse_usd,
};
use crate::error::{Error, Result};

/// Longest workspace or key name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// A workspace to create.
pub struct NewWorkspace {
    pub slug: String,
    pub name: Option<String>,
    /// US dollars as a decimal string; `None` is no limit.
    pub credit_limit: Option<String>,
}

/// Changes to a workspace; `None` leaves a field as it is.
pub struct WorkspaceChanges {
    pub name: Option<String>,
    /// `Some(None)` lifts the limit.
    pub credit_limit: Option<Option<String>>,
}

/// A key to create.
pub struct KeyRequest {
    pub kind: KeyKind,
    pub name: Option<String>,
    /// Browser origins a publishable key is bound to.
    pub origins: Vec<String>,
    /// Requests per rate-limit window, instead of the default of its kind.
    pub rate_limit: Option<u32>,
}

fn limit_micros(limit: Option<&str>) -> Result<Option<i64>> {
    limit.map(|l| parse_usd("credit_limit", l)).transpose()
}

impl Services {
    /// The workspace `reference` (a UUID or a slug) names, if the caller may see it: its own,
    /// or any for an admin key. Any other is 404, like one that does not exist.
    pub async fn workspace(&self, who: &Principal, reference: &str) -> Result<Workspace> {
        // Neither a UUID nor a slug names nothing, and is not worth a query (nor one the
        // database would refuse, as PostgreSQL does a NUL).
        if Uuid::parse_str(reference).is_err() && Slug::parse("ws", reference).is_err() {
            return Err(Error::NotFound("workspace"));
        }
        self.store
            .find_workspace(reference)
            .await?
            .filter(|ws| ws.id == who.workspace_id || (who.is_admin && who.end_user.is_none()))
            .ok_or(Error::NotFound("workspace"))
    }

    pub async fn create_workspace(&self, who: &Principal, new: NewWorkspace) -> Result<Workspace> {
        who.allow(Access::Admin)?;
        let slug = Slug::parse("slug", &new.slug)?;
        let name = match &new.name {
            Some(name) => display_text("name", name, MAX_NAME_CHARS)?,
            None => slug.as_str().to_owned(),
        };
        let limit = limit_micros(new.credit_limit.as_deref())?;
        let created = self
            .store
            .create_workspace(slug.as_str(), &name)
            .await
            .map_err(|e| {
                if crate::store::is_unique_violation(&e) {
                    Error::Conflict {
                        code: "slug_taken",
                        message: format!("the slug `{}` is taken", slug.as_str()),
                    }
                } else {
                    e.into()
                }
            })?;
        if limit.is_none() {
            return Ok(created);
        }
        self.store
            .update_workspace(created.id, None, Some(limit))
            .await?
            .ok_or(Error::NotFound("workspace"))
    }

    pub async fn update_workspace(
        &self,
        who: &Principal,
        reference: &str,
        changes: WorkspaceChanges,
    ) -> Result<Workspace> {
        who.allow(Access::Admin)?;
        let workspace = self.workspace(who, reference).await?;
        let name = changes
            .name
            .map(|n| display_text("name", &n, MAX_NAME_CHARS))
            .transpose()?;
        let limit = changes
            .credit_limit
            .map(|l| limit_micros(l.as_deref()))
            .transpose()?;
        self.store
            .update_workspace(workspace.id, name, limit)
            .await?
            .ok_or(Error::NotFound("workspace"))
    }

    /// Creates a key in a workspace: the stored key, and its value, shown this once.
    pub async fn create_api_key(
        &self,
        who: &Principal,
        reference: &str,
        request: KeyRequest,
    ) -> Result<(ApiKey, SecretString)> {
        who.allow(Access::Backend)?;
        let workspace = self.workspace(who, reference).await?;
        let name = request
            .name
            .map(|n| display_text("name", &n, MAX_NAME_CHARS))
            .transpose()?;
        if request.kind == KeyKind::Secret && !request.origins.is_empty() {
            return Err(Error::bad_request(
                "origins",
                "origins bind publishable keys only",
            ));
        }
        for origin in &request.origins {
            check_origin("origins", origin)?;
        }
        let rate_limit = request
            .rate_limit
            .map(|n| key_rate_limit("rate_limit", n))
            .transpose()?;
        let created = create_key(
            &self.store,
            workspace.id,
            request.kind,
            name.as_deref(),
            false,
            request.origins,
            rate_limit,
        )
        .await?;
        let key = self
            .store
            .list_keys(workspace.id)
            .await?
            .into_iter()
            .find(|k| k.id == created.id)
            .ok_or(Error::NotFound("key"))?;
        Ok((key, created.key))
    }

    /// A workspace's keys, revoked ones included; never their values.
    pub async fn list_api_keys(&self, who: &Principal, reference: &str) -> Result<Vec<ApiKey>> {
        who.allow(Access::Backend)?;
        let workspace = self.workspace(who, reference).await?;
        Ok(self.store.list_keys(workspace.id).await?)
    }

    /// Revokes a key: every request with it is refused from now on.
    pub async fn revoke_api_key(&self, who: &Principal, reference: &str, id: Uuid) -> Result<()> {
        who.allow(Access::Backend)?;
        let workspace = self.workspace(who, reference).await?;
        if self.store.revoke_key(workspace.id, id).await? {
            Ok(())
        } else {
            Err(Error::NotFound("key"))
        }
    }
}
