//! Speech to text through a provider's OpenAI-compatible `/audio/transcriptions`.
//!
//! The upload is relayed as it arrives: the form sent upstream is written here as a stream
//! whose middle is the client's file, chunk by chunk, so an upload is never held whole in
//! memory. Fields the client sent after its file (the language) are written after it, and the
//! form is closed only once the caller has accepted the whole upload: a refused upload (too
//! large, empty, an unknown workspace) ends the request body with an error, so the provider
//! never receives a complete form and transcribes nothing.

use std::io;

use axum::body::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use rand::distr::{Alphanumeric, SampleString};

/// The largest audio file accepted, as OpenAI's own limit (25 MB).
pub const MAX_AUDIO_BYTES: u64 = 25 * 1024 * 1024;

/// One file to transcribe, read as it arrives.
pub struct AudioUpload {
    /// The file's name as the client gave it (providers tell formats by its extension).
    pub file_name: String,
    pub content_type: String,
    /// The spoken language (ISO 639-1), when the client named it before the file.
    pub language: Option<String>,
    /// The file's bytes. An error aborts the upload.
    pub file: BoxStream<'static, io::Result<Bytes>>,
    /// Resolves once the rest of the client's form is read: the language when it came after
    /// the file, or an error that aborts the upload.
    pub rest: BoxFuture<'static, io::Result<Option<String>>>,
}

/// What the provider heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    pub text: String,
    /// The language the provider reports, if it does.
    pub language: Option<String>,
}

/// A `multipart/form-data` body: its boundary and its bytes as a stream.
pub struct Form {
    pub boundary: String,
    pub body: BoxStream<'static, io::Result<Bytes>>,
}

impl Form {
    /// The form `/audio/transcriptions` takes: `model`, `response_format`, `language`, `file`.
    pub fn for_transcription(model: &str, upload: AudioUpload) -> Form {
        let boundary = format!(
            "sluice-{}",
            Alphanumeric.sample_string(&mut rand::rng(), 32)
        );
        let mut head = String::new();
        text_part(&mut head, &boundary, "model", model);
        text_part(&mut head, &boundary, "response_format", "json");
        if let Some(language) = &upload.language {
            text_part(&mut head, &boundary, "language", language);
        }
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            quoted(&upload.file_name),
            single_line(&upload.content_type),
        ));
        let closing = boundary.clone();
        let rest = upload.rest;
        let tail = async move {
            let late = rest.await?;
            let mut tail = String::from("\r\n");
            if let Some(language) = late {
                text_part(&mut tail, &closing, "language", &language);
            }
            tail.push_str(&format!("--{closing}--\r\n"));
            Ok(Bytes::from(tail))
        };
        let body = stream::once(async move { Ok(Bytes::from(head)) })
            .chain(upload.file)
            .chain(stream::once(tail))
            .boxed();
        Form { boundary, body }
    }
}

fn text_part(out: &mut String, boundary: &str, name: &str, value: &str) {
    out.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
    ));
}

/// A value for a quoted header parameter, escaped as browsers do (`"`, CR, LF).
fn quoted(value: &str) -> String {
    value
        .replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn single_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn collect(form: Form) -> io::Result<Vec<u8>> {
        let chunks: Vec<Bytes> = form.body.try_collect().await?;
        Ok(chunks.concat())
    }

    fn upload(
        file: Vec<io::Result<Bytes>>,
        language: Option<&str>,
        rest: io::Result<Option<String>>,
    ) -> AudioUpload {
        AudioUpload {
            file_name: "a \"b\".mp3".into(),
            content_type: "audio/mpeg".into(),
            language: language.map(str::to_owned),
            file: stream::iter(file).boxed(),
            rest: Box::pin(async move { rest }),
        }
    }

    #[tokio::test]
    async fn the_form_carries_the_file_unchanged_and_late_fields_after_it() {
        let form = Form::for_transcription(
            "whisper-1",
            upload(
                vec![
                    Ok(Bytes::from_static(b"\x00\x01")),
                    Ok(Bytes::from_static(b"\xff")),
                ],
                None,
                Ok(Some("es".into())),
            ),
        );
        let b = form.boundary.clone();
        let body = collect(form).await.unwrap();
        let mut expected = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\njson\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a %22b%22.mp3\"\r\n\
             Content-Type: audio/mpeg\r\n\r\n"
        )
        .into_bytes();
        expected.extend_from_slice(b"\x00\x01\xff");
        expected.extend_from_slice(
            format!(
                "\r\n--{b}\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nes\r\n--{b}--\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(body, expected);
    }

    #[tokio::test]
    async fn a_refused_upload_never_closes_the_form() {
        let refused = Form::for_transcription(
            "whisper-1",
            upload(
                vec![Ok(Bytes::from_static(b"abc"))],
                Some("en"),
                Err(io::Error::other("unknown workspace")),
            ),
        );
        assert!(collect(refused).await.is_err());
        let cut = Form::for_transcription(
            "whisper-1",
            upload(
                vec![
                    Ok(Bytes::from_static(b"abc")),
                    Err(io::Error::other("too large")),
                ],
                None,
                Ok(None),
            ),
        );
        assert!(collect(cut).await.is_err());
    }
}
