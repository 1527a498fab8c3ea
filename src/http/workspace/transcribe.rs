//! `POST /api/transcribe-audio/`: an upload relayed to the transcription provider as it
//! arrives.
//!
//! The form is read part by part. The file is forwarded chunk by chunk while it is read, so
//! memory holds a few chunks, never the upload. The provider's form is closed only after the
//! rest of the client's form is read and accepted (see `providers::AudioUpload`): an upload
//! refused half-way (too large, empty, an unknown workspace named after the file) leaves the
//! provider with a broken request and transcribes nothing.

use std::io;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::Caller;
use super::dto::TranscriptionOut;
use super::error::{ErrorBody, WsError};
use crate::domain::language_tag;
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::{Auth, timed_out};
use crate::providers::{AudioUpload, MAX_AUDIO_BYTES};

/// The whole form may exceed the file by this much (its other fields and part headers).
const FORM_OVERHEAD: u64 = 64 * 1024;
/// The longest value of a text field.
const MAX_FIELD_BYTES: u64 = 1024;
const FIELDS: &str = "the form takes `audio_file`, `workspace_id` and `language`";

/// Transcribe audio
///
/// A `multipart/form-data` upload: `audio_file` (a file of at most 25 MB, its name's extension
/// telling its format: mp3, mp4, mpeg, mpga, m4a, wav, webm, …), `workspace_id` (UUID or slug)
/// and optionally `language` (ISO 639-1, e.g. `en`). The file is relayed to the transcription
/// provider as it arrives (`SLUICE_TRANSCRIPTION_PROVIDER`, `SLUICE_TRANSCRIPTION_MODEL`).
#[utoipa::path(
    post,
    path = "/api/transcribe-audio/",
    tag = "workspaces",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "What the provider heard", body = TranscriptionOut),
        (status = 400, description = "A missing or empty file, a bad language or an unknown field", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 402, description = "The workspace's credit is used up", body = ErrorBody),
        (status = 403, description = "A publishable key", body = ErrorBody),
        (status = 404, description = "`workspace_id` names no workspace this key may use", body = ErrorBody),
        (status = 408, description = "The upload stopped arriving", body = ErrorBody),
        (status = 413, description = "The file is over 25 MB", body = ErrorBody),
        (status = 415, description = "Not a multipart/form-data body", body = ErrorBody),
        (status = 502, description = "The provider failed", body = ErrorBody),
        (status = 503, description = "No transcription provider is configured (`transcription_unavailable`)", body = ErrorBody),
    ),
)]
pub async fn transcribe_audio(
    State(state): State<AppState>,
    Auth(who, _): Caller,
    request: Request,
) -> std::result::Result<Json<TranscriptionOut>, WsError> {
    let services = &state.services;
    let transcriber = services.transcriber(&who)?;
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| {
            Error::UnsupportedMediaType(
                "send the upload as multipart/form-data with an `audio_file` field".into(),
            )
        })?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_AUDIO_BYTES + FORM_OVERHEAD) {
        drop(Lingering::new(request.into_body().into_data_stream()));
        return Err(too_large().into());
    }
    let limits = multer::SizeLimit::new()
        .whole_stream(MAX_AUDIO_BYTES + FORM_OVERHEAD)
        .per_field(MAX_FIELD_BYTES)
        .for_field("audio_file", MAX_AUDIO_BYTES);
    let mut form = multer::Multipart::with_constraints(
        Lingering::new(request.into_body().into_data_stream()),
        boundary,
        multer::Constraints::new().size_limit(limits),
    );

    // The fields before the file.
    let mut before = Fields::default();
    let mut file = loop {
        let field = form
            .next_field()
            .await
            .map_err(read_error)?
            .ok_or_else(|| Error::bad_request("audio_file", "the form has no `audio_file` file"))?;
        if field.name() == Some("audio_file") {
            break field;
        }
        before.read(field).await?;
    };
    let file_name = file
        .file_name()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            Error::bad_request(
                "audio_file",
                "audio_file must be a file with a name: providers tell its format by the extension",
            )
        })?
        .to_owned();
    let content_type = file.content_type().map_or_else(
        || "application/octet-stream".to_owned(),
        ToString::to_string,
    );
    let early = match &before.workspace_id {
        Some(reference) => Some(services.transcription_workspace(&who, reference).await?),
        None => None,
    };

    let (chunks, received) = mpsc::channel::<io::Result<axum::body::Bytes>>(4);
    let (accept, accepted) = oneshot::channel::<io::Result<Option<String>>>();
    let upload = AudioUpload {
        file_name,
        content_type,
        language: before.language.clone(),
        file: ReceiverStream::new(received).boxed(),
        rest: accepted
            .map(|answer| answer.unwrap_or_else(|_| Err(io::Error::other("upload refused"))))
            .boxed(),
    };

    // Reads the file into the provider's request, then the rest of the form; accepting the
    // upload closes the provider's form. Returning without `accept` aborts it.
    let relay = async move {
        let mut size = 0_u64;
        while let Some(chunk) = file.chunk().await.map_err(read_error)? {
            size += chunk.len() as u64;
            if chunks.send(Ok(chunk)).await.is_err() {
                // The provider answered (an error) before taking the whole file.
                return Ok(None);
            }
        }
        drop((file, chunks));
        if size == 0 {
            return Err(Error::bad_request("audio_file", "audio_file is empty"));
        }
        let mut after = Fields::default();
        while let Some(field) = form.next_field().await.map_err(read_error)? {
            if field.name() == Some("audio_file") {
                return Err(Error::bad_request(
                    "audio_file",
                    "the form carries more than one `audio_file`",
                ));
            }
            after.read(field).await?;
        }
        // Resolved for its checks (it exists, its credit is not spent) before the form closes.
        let _workspace = match (early, after.workspace_id.take()) {
            (Some(_), Some(_)) => return Err(twice("workspace_id")),
            (Some(workspace), None) => workspace,
            (None, Some(reference)) => services.transcription_workspace(&who, &reference).await?,
            (None, None) => {
                return Err(Error::bad_request(
                    "workspace_id",
                    "the form has no `workspace_id`",
                ));
            }
        };
        if before.language.is_some() && after.language.is_some() {
            return Err(twice("language"));
        }
        let _ = accept.send(Ok(after.language.clone()));
        Ok(after.language.or(before.language))
    };
    let (relayed, heard) = tokio::join!(relay, transcriber.transcribe(upload));
    let language = relayed?;
    let transcript = heard?;
    Ok(Json(TranscriptionOut {
        text: transcript.text,
        language: transcript.language.or(language),
    }))
}

/// How much of a refused upload is still read, and for how long, so that its client gets to
/// read the refusal: a connection closed with unread bytes is reset, and a client still
/// sending would see a broken pipe instead of the 413 or 400.
const LINGER_BYTES: usize = 32 * 1024 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// The request body; if it is let go before its end (the upload was refused), the rest is read
/// and thrown away in the background, within `LINGER_BYTES` and `LINGER_TIME`.
struct Lingering {
    inner: Option<axum::body::BodyDataStream>,
    ended: bool,
}

impl Lingering {
    fn new(inner: axum::body::BodyDataStream) -> Self {
        Self {
            inner: Some(inner),
            ended: false,
        }
    }
}

impl futures::Stream for Lingering {
    type Item = std::result::Result<axum::body::Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let next = inner.poll_next_unpin(cx);
        if matches!(next, std::task::Poll::Ready(None)) {
            self.ended = true;
        }
        next
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (Some(mut rest), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let mut read = 0_usize;
            let _ = tokio::time::timeout(LINGER_TIME, async {
                while let Some(Ok(chunk)) = rest.next().await {
                    read += chunk.len();
                    if read > LINGER_BYTES {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

/// The text fields of the form.
#[derive(Default)]
struct Fields {
    workspace_id: Option<String>,
    language: Option<String>,
}

impl Fields {
    async fn read(&mut self, field: multer::Field<'_>) -> Result<()> {
        let name = field.name().unwrap_or_default().to_owned();
        let slot = match name.as_str() {
            "workspace_id" => &mut self.workspace_id,
            "language" => &mut self.language,
            "" => return Err(Error::bad_request("form", "a form part has no name")),
            other => {
                return Err(Error::bad_request(
                    other,
                    format!("unknown form field `{other}`: {FIELDS}"),
                ));
            }
        };
        if slot.is_some() {
            return Err(twice(&name));
        }
        let value = field.text().await.map_err(read_error)?;
        let value = value.trim();
        if name == "language" {
            if !value.is_empty() {
                *slot = Some(language_tag("language", value)?.to_owned());
            }
        } else if value.is_empty() {
            return Err(Error::bad_request(&name, format!("{name} is empty")));
        } else {
            *slot = Some(value.to_owned());
        }
        Ok(())
    }
}

fn twice(field: &str) -> Error {
    Error::bad_request(field, format!("the form gives `{field}` more than once"))
}

fn too_large() -> Error {
    Error::PayloadTooLarge {
        what: "audio_file",
        limit: MAX_AUDIO_BYTES as usize,
    }
}

/// A failure to read the form: too large (413), stalled (408) or malformed (400).
fn read_error(error: multer::Error) -> Error {
    match error {
        multer::Error::FieldSizeExceeded { field_name, .. }
            if field_name.as_deref() == Some("audio_file") =>
        {
            too_large()
        }
        multer::Error::StreamSizeExceeded { .. } => too_large(),
        multer::Error::FieldSizeExceeded { field_name, limit } => {
            let field = field_name.unwrap_or_else(|| "form".to_owned());
            Error::bad_request(
                field.clone(),
                format!("{field} is longer than {limit} bytes"),
            )
        }
        multer::Error::StreamReadFailed(cause) if timed_out(&*cause) => Error::RequestTimeout,
        multer::Error::StreamReadFailed(_) => Error::BadRequest {
            field: None,
            message: "could not read the upload".into(),
        },
        other => Error::BadRequest {
            field: None,
            message: format!("malformed multipart body: {other}"),
        },
    }
}

/// The form `transcribe-audio` takes.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TranscriptionForm {
    /// The recording, at most 25 MB; its file name's extension tells its format.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream", min_length = 1)]
    audio_file: Vec<u8>,
    /// The workspace (UUID or slug) the transcription is for.
    #[schema(format = "nonblank")]
    workspace_id: String,
    /// The spoken language, ISO 639-1 (`en`, `es`, …); blank is as if absent.
    #[schema(format = "language-tag-or-blank", nullable = false)]
    language: Option<String>,
}
