//! Which client `X-Request-Id` sluice adopts.
//!
//! The id is echoed in the response and written to every log line of the request, so a client
//! value is kept only when it is 1-128 visible ASCII characters (0x21-0x7E): no spaces, no
//! non-ASCII bytes, nothing long enough to bloat the log. Any other value is dropped before the
//! request-id layer runs, which then makes its own, exactly as for a request that sent none. The
//! dropped value is never logged.

use axum::http::{HeaderMap, HeaderName, Request};

/// The longest client request id kept.
const MAX_LEN: usize = 128;

/// Removes `header` from the request unless it holds exactly one acceptable value.
pub fn drop_unusable<B>(header: &HeaderName, mut request: Request<B>) -> Request<B> {
    if !usable(request.headers(), header) {
        request.headers_mut().remove(header);
    }
    request
}

/// True when the header is absent (nothing to drop) or present once with an acceptable value.
/// Several values are refused: which one a layer would pick is not something to rely on.
fn usable(headers: &HeaderMap, header: &HeaderName) -> bool {
    let mut values = headers.get_all(header).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => {
            let bytes = value.as_bytes();
            (1..=MAX_LEN).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7E).contains(b))
        }
        (Some(_), Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const ID: HeaderName = HeaderName::from_static("x-request-id");

    fn kept(values: &[&[u8]]) -> bool {
        let mut request = Request::new(());
        for v in values {
            let value = HeaderValue::from_bytes(v).unwrap();
            request.headers_mut().append(ID, value);
        }
        let request = drop_unusable(&ID, request);
        request.headers().contains_key(ID)
    }

    #[test]
    fn visible_ascii_up_to_128_characters_is_kept() {
        assert!(kept(&[b"abc-123_DEF.456"]));
        assert!(kept(&[b"!~{}[]:;/"]));
        assert!(kept(&["x".repeat(128).as_bytes()]));
        assert!(kept(&[b"x"]));
    }

    #[test]
    fn spaces_non_ascii_empty_and_overlong_values_are_dropped() {
        assert!(!kept(&[b"two words"]));
        assert!(!kept(&[b"tab\there"]));
        assert!(!kept(&["caf\u{e9}".as_bytes()]));
        assert!(!kept(&[b""]));
        assert!(!kept(&["x".repeat(129).as_bytes()]));
    }

    #[test]
    fn two_values_are_dropped_even_when_each_is_acceptable() {
        assert!(!kept(&[b"one", b"two"]));
    }
}
