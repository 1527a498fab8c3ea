//! Speech to text: an upload relayed to the transcription provider as it arrives.

use std::sync::Arc;

use super::{Access, Principal, Services};
use crate::domain::Workspace;
use crate::error::{Error, Result};
use crate::providers::{AudioUpload, Provider, Transcript};

/// The provider and model uploads go to, once the caller may use them.
pub struct Transcriber {
    provider: Arc<dyn Provider>,
    model: String,
}

impl Services {
    /// Where `who`'s uploads go: 503 `transcription_unavailable` when no provider is configured
    /// for transcription (the demo model cannot hear).
    pub fn transcriber(&self, who: &Principal) -> Result<Transcriber> {
        who.allow(Access::Backend)?;
        let settings = &self.transcription;
        let provider = self.providers.named(&settings.provider).ok_or_else(|| {
            let message = if self.providers.is_demo() {
                "audio transcription needs a provider: the demo model cannot transcribe".to_owned()
            } else {
                format!(
                    "no provider `{}` is configured for transcription \
                     (SLUICE_TRANSCRIPTION_PROVIDER)",
                    settings.provider
                )
            };
            Error::Unavailable {
                code: "transcription_unavailable",
                message,
            }
        })?;
        Ok(Transcriber {
            provider,
            model: settings.model.clone(),
        })
    }

    /// The workspace an upload names in its form: one this key may use (404 otherwise, as for
    /// a workspace in a path), whose credit is not spent (402).
    pub async fn transcription_workspace(
        &self,
        who: &Principal,
        reference: &str,
    ) -> Result<Workspace> {
        let workspace = self.workspace(who, reference).await?;
        self.credits.check(workspace.id).await?;
        Ok(workspace)
    }
}

impl Transcriber {
    pub async fn transcribe(&self, upload: AudioUpload) -> Result<Transcript> {
        Ok(self.provider.transcribe(&self.model, upload).await?)
    }
}
