//! Request limits that depend on the model a request resolved to, shared by every dialect.

use crate::error::{Error, Result};
use crate::providers::Resolved;

/// Refuses an output length above the model's cap (400 naming the field, in every dialect),
/// rather than relaying a number the upstream would refuse, or bill, far later. `field` is the
/// dialect's own name for it (`max_tokens`, `max_completion_tokens`, …). Fallbacks whose cap is
/// lower are dropped from `resolved`: they would refuse the request, so they are no fallback.
pub fn check_max_tokens(resolved: &mut Resolved, field: &str, requested: u64) -> Result<()> {
    if requested > u64::from(resolved.max_tokens) {
        return Err(Error::bad_request(
            field,
            format!(
                "`{field}` must be at most {} for model `{}/{}`",
                resolved.max_tokens,
                resolved.provider.name(),
                resolved.model
            ),
        ));
    }
    resolved
        .fallbacks
        .retain(|fallback| requested <= u64::from(fallback.max_tokens));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::check_max_tokens;
    use crate::config::UpstreamTimeouts;
    use crate::providers::{DemoProvider, Resolved};

    fn model(name: &str, max_tokens: u32) -> Resolved {
        Resolved {
            provider: Arc::new(DemoProvider::default()),
            model: name.to_owned(),
            price: None,
            max_tokens,
            timeouts: UpstreamTimeouts::default(),
            fallbacks: Vec::new(),
        }
    }

    #[test]
    fn a_request_up_to_the_cap_passes_and_above_it_is_refused_naming_the_field() {
        let mut resolved = model("m", 100);
        assert!(check_max_tokens(&mut resolved, "max_tokens", 100).is_ok());
        let refused = check_max_tokens(&mut resolved, "max_output_tokens", 101).unwrap_err();
        assert_eq!(refused.field(), Some("max_output_tokens"));
        assert!(refused.public_message().contains("100"), "{refused}");
    }

    #[test]
    fn fallbacks_whose_cap_is_below_the_request_are_not_tried() {
        let mut resolved = model("m", 1000);
        resolved.fallbacks = vec![model("small", 10), model("large", 1000)];
        check_max_tokens(&mut resolved, "max_tokens", 500).unwrap();
        let left: Vec<&str> = resolved
            .fallbacks
            .iter()
            .map(|f| f.model.as_str())
            .collect();
        assert_eq!(left, ["large"]);
    }
}
