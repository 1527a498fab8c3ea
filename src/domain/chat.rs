//! Chats and their messages as every layer above the store sees them: parsed once from the
//! rows, so that no dialect re-reads role or status strings or nullable token counts.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{KeyKind, MessageStatus, Role, Usage, display_text};
use crate::error::{Error, Result};

/// Longest accepted chat name, in characters.
pub const MAX_CHAT_NAME_CHARS: usize = 200;

/// A chat name as stored: trimmed, visible, no control or reordering characters, at most
/// [`MAX_CHAT_NAME_CHARS`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatName(String);

impl ChatName {
    /// Checks `text` under the rule for text people read; the error names `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        display_text(field, text, MAX_CHAT_NAME_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A sampling temperature: a finite number from 0 to 2, as every OpenAI-compatible provider
/// accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Temperature(f64);

impl Temperature {
    pub fn parse(field: &str, value: f64) -> Result<Self> {
        in_range(field, value, 0.0, 2.0).map(Self)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// A nucleus-sampling mass: a finite number from 0 to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopP(f64);

impl TopP {
    pub fn parse(field: &str, value: f64) -> Result<Self> {
        in_range(field, value, 0.0, 1.0).map(Self)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

fn in_range(field: &str, value: f64, low: f64, high: f64) -> Result<f64> {
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(Error::bad_request(
            field,
            format!("`{field}` must be a number from {low} to {high}"),
        ))
    }
}

/// What a chat asks of the model; `None` everywhere means the server's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatSettings {
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Sent first, as a `system` message, when not empty.
    pub system_prompt: Option<String>,
    pub temperature: Option<Temperature>,
    pub top_p: Option<TopP>,
    pub max_tokens: Option<u32>,
}

/// A chat.
#[derive(Clone, Debug, PartialEq)]
pub struct Chat {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    /// The end user the chat belongs to, when a key acted for one.
    pub end_user_id: Option<String>,
    /// The kind of key that created it (publishable keys see only their own kind's chats).
    pub created_via: KeyKind,
    pub settings: ChatSettings,
    /// Stored and returned as given (informational: answers come from the configured provider).
    pub agent_framework: Option<String>,
    /// The id of its public read-only link, while it has one.
    pub public_link_id: Option<Uuid>,
    /// The agent whose current version answers it, for an agent's chat.
    pub agent_id: Option<Uuid>,
    /// A client's own data about the chat, kept as given.
    pub metadata: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A message of a chat: a question, an answer, or a system message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub chat_id: Uuid,
    /// Its place in the chat, from 1.
    pub seq: i64,
    pub role: Role,
    pub content: String,
    pub status: MessageStatus,
    /// For an answer: the question it answers.
    pub reply_to: Option<Uuid>,
    pub finish_reason: Option<String>,
    /// For an answer: who answered it.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Token counts (zero where none was recorded).
    pub usage: Usage,
    pub cost_micros: Option<i64>,
    /// The sources an answer was given (the internet variant), as sent to readers.
    pub sources: Option<Value>,
    /// For an agent's answer: the agent's version that produced it.
    pub agent_version: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A chat shared with an end user, who may read it and nothing more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub user_id: String,
    /// Always `read`.
    pub permission: String,
    pub created_at: DateTime<Utc>,
}

/// A workspace: the tenant boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// Spending limit in micro-dollars; `None` is no limit.
    pub credit_limit_micros: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// A stored API key (its hash stays in the store; its prefix is for display).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// `None` for a kind this build does not know (refused like an unknown key).
    pub kind: Option<KeyKind>,
    pub name: Option<String>,
    /// The first characters of the key (`sk_live_abcd`), to tell keys apart.
    pub prefix: String,
    pub is_admin: bool,
    /// Origins a publishable key is bound to; `None` when it is not bound.
    pub allowed_origins: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Requests per rate-limit window; `None`: the default of its kind.
    pub rate_limit: Option<u32>,
}

impl ApiKey {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A workspace slug: 1 to 64 characters of `a-z`, `0-9` and `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(Error::bad_request(
                field,
                format!("`{field}` must be 1 to 64 characters of a-z, 0-9 and -"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An end user's id as a client names it (`X-User-Id`, a share's `user_id`): trimmed, 1 to 255
/// printable characters; the error names `field`.
pub fn end_user_id<'a>(field: &str, raw: &'a str) -> Result<&'a str> {
    let trimmed = raw.trim();
    if trimmed.is_empty()
        || trimmed.chars().nth(255).is_some()
        || trimmed.chars().any(char::is_control)
    {
        return Err(Error::bad_request(
            field,
            format!("{field} must be 1 to 255 printable characters"),
        ));
    }
    Ok(trimmed)
}

/// The most requests per window a key may be given.
pub const MAX_KEY_RATE_LIMIT: u32 = 1_000_000;

/// A key's own rate limit: 1 to [`MAX_KEY_RATE_LIMIT`] requests per window.
pub fn key_rate_limit(field: &str, n: u32) -> Result<u32> {
    if (1..=MAX_KEY_RATE_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(Error::bad_request(
            field,
            format!("{field} must be from 1 to {MAX_KEY_RATE_LIMIT} requests per window"),
        ))
    }
}

/// A language as a BCP 47 tag (`es`, `pt-BR`, `zh-Hant`): a 2- or 3-letter language, then
/// subtags of 2 to 8 letters or digits; the error names `field`.
pub fn language_tag<'a>(field: &str, raw: &'a str) -> Result<&'a str> {
    let mut parts = raw.split('-');
    let language = parts.next().unwrap_or_default();
    let valid = (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && parts
            .all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if valid {
        Ok(raw)
    } else {
        Err(Error::bad_request(
            field,
            format!("{field} must be a language code such as `es` or `pt-BR`"),
        ))
    }
}

/// A browser origin a publishable key may be bound to: scheme, host and optional port, no path.
pub fn check_origin(field: &str, origin: &str) -> Result<()> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(()),
        _ => Err(Error::bad_request(
            field,
            format!(
                "`{origin}` must look like https://example.com (scheme, host, optional port, no path)"
            ),
        )),
    }
}

/// A US-dollar amount as a decimal string (`"10"`, `"10.5"`, `"0.000001"`), in micro-dollars.
pub fn parse_usd(field: &str, text: &str) -> Result<i64> {
    let refuse = || {
        Error::bad_request(
            field,
            format!("`{field}` must be a non-negative amount in US dollars, such as \"10.00\""),
        )
    };
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    // At most 12 digits before the point, so that every amount accepted fits in micro-dollars.
    if whole.is_empty()
        || whole.len() > 12
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > 6
    {
        return Err(refuse());
    }
    let whole: i64 = whole.parse().map_err(|_| refuse())?;
    let fraction: i64 = format!("{fraction:0<6}").parse().map_err(|_| refuse())?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(refuse)
}

/// Micro-dollars as a decimal string with at least two decimals (`"10.00"`, `"0.000125"`).
pub fn format_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let fraction = format!("{:06}", abs % 1_000_000);
    let fraction = fraction.trim_end_matches('0');
    format!("{sign}{}.{fraction:0<2}", abs / 1_000_000)
}

/// What one answer cost, charged to a workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEntry {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub chat_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub estimated: bool,
    pub cost_micros: i64,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_are_recognised() {
        for ok in ["es", "pt-BR", "zh-Hant", "fil", "sr-Latn-RS"] {
            assert!(language_tag("target", ok).is_ok(), "{ok}");
        }
        for bad in ["", "e", "spanish", "es_ES", "es-", "12", "es-toolongsubtag"] {
            assert!(language_tag("target", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn temperatures_and_top_p_outside_their_range_are_refused_naming_the_field() {
        assert_eq!(Temperature::parse("temperature", 0.7).unwrap().get(), 0.7);
        assert!(Temperature::parse("temperature", 2.0).is_ok());
        let refused = Temperature::parse("temperature", 2.5).unwrap_err();
        assert_eq!(refused.field(), Some("temperature"));
        assert!(Temperature::parse("temperature", f64::NAN).is_err());
        assert!(TopP::parse("top_p", 1.0).is_ok());
        assert_eq!(TopP::parse("topP", -0.1).unwrap_err().field(), Some("topP"));
    }

    #[test]
    fn dollar_amounts_round_trip_through_micro_dollars() {
        assert_eq!(parse_usd("credit_limit", "10.00").unwrap(), 10_000_000);
        assert_eq!(parse_usd("credit_limit", "0.000001").unwrap(), 1);
        assert_eq!(parse_usd("credit_limit", "7").unwrap(), 7_000_000);
        for bad in ["", "-1", "1.0000001", "1e3", "ten", ".5", "1.2.3"] {
            assert_eq!(
                parse_usd("credit_limit", bad).unwrap_err().field(),
                Some("credit_limit"),
                "{bad}"
            );
        }
        assert_eq!(format_usd(10_000_000), "10.00");
        assert_eq!(format_usd(125), "0.000125");
        assert_eq!(format_usd(1_500_000), "1.50");
        assert_eq!(format_usd(0), "0.00");
    }

    #[test]
    fn slugs_and_origins_follow_their_rules() {
        assert!(Slug::parse("slug", "team-1").is_ok());
        assert!(Slug::parse("slug", "Team").is_err());
        assert!(check_origin("origins", "https://example.com:8443").is_ok());
        assert!(check_origin("origins", "https://example.com/").is_err());
        assert!(check_origin("origins", "example.com").is_err());
    }

    #[test]
    fn a_chat_name_is_the_display_text_rule_under_its_length_limit() {
        assert_eq!(ChatName::parse("name", "  hi ").unwrap().as_str(), "hi");
        let long = "x".repeat(MAX_CHAT_NAME_CHARS + 1);
        assert_eq!(
            ChatName::parse("name", &long).unwrap_err().field(),
            Some("name")
        );
    }
}
