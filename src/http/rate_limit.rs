//! Rate-limit headers. The `Auth` extractor counts a request once against its key's limit and
//! leaves the decision in the request's [`RateSlot`]; this layer writes it on the response,
//! whatever the handler answered (a 429 included). Requests without a key (probes, the docs,
//! public links) carry no headers.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::policy::RateDecision;

pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Where one request's rate decision is kept between the extractor and the response.
#[derive(Clone, Default)]
pub struct RateSlot(Arc<Mutex<Option<RateDecision>>>);

impl RateSlot {
    pub fn get(&self) -> Option<RateDecision> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, decision: RateDecision) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(decision);
    }
}

/// Gives the request a slot, and the response the headers of what was decided in it.
pub async fn headers(mut request: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(decision) = slot.get() {
        let headers = response.headers_mut();
        headers.insert(LIMIT, HeaderValue::from(decision.limit));
        headers.insert(REMAINING, HeaderValue::from(decision.remaining));
        headers.insert(RESET, HeaderValue::from(decision.reset_secs()));
    }
    response
}
