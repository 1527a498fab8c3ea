//! Upstream model providers behind one trait that speaks sluice's own stream enum.
//!
//! Vendor types never leave this module: the generation core sees `StreamEvent`s and
//! `ProviderError`s only.

mod audio;
mod connections;
mod demo;
mod event_stream;
mod openai;

use std::sync::Arc;

use futures::stream::BoxStream;
use serde_json::{Map, Value, json};

use crate::config::{DEFAULT_MAX_TOKENS, Price, ProviderSettings, Settings, UpstreamTimeouts};
use crate::domain::{PromptMessage, Usage};

pub use crate::domain::ToolCallDelta;
pub use audio::{AudioUpload, MAX_AUDIO_BYTES, Transcript};
pub use demo::{DEMO_MODEL, DemoProvider};
pub use openai::OpenAiCompatible;

/// What the core asks of a provider, in OpenAI's wire vocabulary (every provider is
/// OpenAI-compatible), so that a dialect can relay a client's request faithfully.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub model: String,
    /// Messages as OpenAI's chat API takes them.
    pub messages: Vec<Value>,
    /// Every other request field (`temperature`, `tools`, `stop`, …), relayed as given. The
    /// provider adds `stream` and `stream_options` itself.
    pub params: Map<String, Value>,
}

impl ChatRequest {
    /// A request from plain role/content messages and the chat's sampling settings.
    pub fn from_prompt(
        model: String,
        messages: &[PromptMessage],
        temperature: Option<f64>,
        top_p: Option<f64>,
        max_tokens: Option<u32>,
    ) -> Self {
        let messages = messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        let mut params = Map::new();
        if let Some(t) = temperature {
            params.insert("temperature".into(), json!(t));
        }
        if let Some(p) = top_p {
            params.insert("top_p".into(), json!(p));
        }
        if let Some(m) = max_tokens {
            params.insert("max_tokens".into(), json!(m));
        }
        Self {
            model,
            messages,
            params,
        }
    }

    /// The most output tokens this request may produce: its own `max_completion_tokens` or
    /// `max_tokens`, else `cap` (the model's).
    pub fn max_output_tokens(&self, cap: u32) -> u32 {
        ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| self.params.get(*k).and_then(Value::as_u64))
            .map_or(cap, |n| u32::try_from(n).unwrap_or(u32::MAX).min(cap))
    }

    /// A rough token count of the prompt, for when the provider reports no usage.
    pub fn estimate_prompt_tokens(&self) -> u32 {
        self.messages
            .iter()
            .map(|m| Usage::estimate_tokens(&message_text(m)))
            .sum()
    }
}

/// The text of a message whose content is a string or an array of content parts.
pub fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// One item of a provider's answer stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// Text, exactly as the model produced it.
    Delta(String),
    /// A piece of a tool call.
    ToolCall(ToolCallDelta),
    /// Token counts reported by the provider.
    Usage(Usage),
    /// The model finished, with its (normalised) reason. More `Usage` may follow.
    Done { finish_reason: String },
}

pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// Why an upstream call failed. Messages may be logged; `public_message` is what clients see.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("upstream answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("could not reach upstream: {0}")]
    Connect(String),
    #[error("upstream sent nothing for {0:?} ({1})")]
    Timeout(std::time::Duration, &'static str),
    #[error("upstream stream failed: {0}")]
    Stream(String),
    #[error("upstream reported an error: {0}")]
    Reported(String),
    #[error("upstream ended the stream before the answer was finished")]
    Truncated,
}

impl ProviderError {
    /// A stable code for `error` events and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Timeout(..) => "upstream_timeout",
            ProviderError::Truncated => "upstream_truncated",
            _ => "upstream_error",
        }
    }

    /// Whether another provider might succeed where this one failed (before any delta): not
    /// when the request itself was refused.
    pub fn may_fall_back(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => true,
        }
    }

    /// Text safe to show a client. Upstream messages of authentication failures are withheld:
    /// they can quote part of the operator's key.
    pub fn public_message(&self) -> String {
        match self {
            ProviderError::Status { status, message }
                if !matches!(status, 401 | 403) && *status < 500 =>
            {
                format!(
                    "upstream provider answered HTTP {status}: {}",
                    truncate(message, 300)
                )
            }
            ProviderError::Status { status, .. } => {
                format!("upstream provider answered HTTP {status}")
            }
            ProviderError::Connect(_) => "could not reach the upstream provider".to_owned(),
            ProviderError::Timeout(d, what) => {
                format!(
                    "upstream provider sent nothing for {}s ({what})",
                    d.as_secs()
                )
            }
            ProviderError::Stream(_) => "the upstream stream broke off".to_owned(),
            ProviderError::Reported(message) => {
                format!(
                    "upstream provider reported an error: {}",
                    truncate(message, 300)
                )
            }
            ProviderError::Truncated => {
                "the upstream provider ended the stream before the answer was finished".to_owned()
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The name clients use (`openai`, `groq`, … or `demo`).
    fn name(&self) -> &str;
    /// Whether the provider can honour this request field; a field it cannot is refused with a
    /// 400 naming it rather than silently dropped.
    fn accepts(&self, _param: &str) -> bool {
        true
    }
    /// Starts a streaming completion. Errors before the first byte of the answer come back here;
    /// later ones arrive in the stream.
    async fn stream(&self, request: ChatRequest) -> Result<EventStream, ProviderError>;
    /// Transcribes an upload through the provider's `/audio/transcriptions`, relaying it as it
    /// arrives.
    async fn transcribe(
        &self,
        _model: &str,
        _upload: AudioUpload,
    ) -> Result<Transcript, ProviderError> {
        Err(ProviderError::Reported(format!(
            "the provider `{}` does not transcribe audio",
            self.name()
        )))
    }
}

/// A provider and model chosen for one request.
#[derive(Clone)]
pub struct Resolved {
    pub provider: Arc<dyn Provider>,
    pub model: String,
    pub price: Option<Price>,
    /// The largest `max_tokens` a client may ask of this model.
    pub max_tokens: u32,
    pub timeouts: UpstreamTimeouts,
    /// Tried in order if this one fails before its first delta.
    pub fallbacks: Vec<Resolved>,
}

/// Every configured provider, and the rules that pick one for a request.
pub struct Providers {
    entries: Vec<(Arc<dyn Provider>, ProviderSettings)>,
    aliases: std::collections::BTreeMap<String, String>,
    default: Option<(usize, String)>,
    demo: Option<Arc<dyn Provider>>,
}

impl Providers {
    pub fn from_settings(settings: &Settings) -> Result<Self, crate::config::ConfigError> {
        let mut entries: Vec<(Arc<dyn Provider>, ProviderSettings)> = Vec::new();
        for p in &settings.providers {
            let provider = OpenAiCompatible::new(p).map_err(|e| {
                crate::config::ConfigError::Invalid(format!("provider `{}`: {e}", p.name))
            })?;
            entries.push((Arc::new(provider), p.clone()));
        }
        let mut registry = Self::new(entries, settings.default_model.as_deref())?;
        registry.set_aliases(settings.aliases.clone())?;
        Ok(registry)
    }

    /// Adds model aliases; each must name a model this registry can serve.
    pub fn set_aliases(
        &mut self,
        aliases: std::collections::BTreeMap<String, String>,
    ) -> Result<(), crate::config::ConfigError> {
        for (alias, target) in &aliases {
            if self.resolve_model(target).is_none() {
                return Err(crate::config::ConfigError::Invalid(format!(
                    "alias `{alias}` names `{target}`, which no configured provider serves"
                )));
            }
        }
        self.aliases = aliases;
        Ok(())
    }

    /// Resolves a model id as OpenAI clients send it: `provider/model`, a listed model name, or
    /// an alias.
    pub fn resolve_model(&self, id: &str) -> Option<Resolved> {
        let id = self.aliases.get(id).map_or(id, String::as_str);
        if id.is_empty() {
            return None;
        }
        self.resolve(None, Some(id))
    }

    /// Builds the registry from ready providers (tests and embedders use this directly).
    pub fn new(
        entries: Vec<(Arc<dyn Provider>, ProviderSettings)>,
        default_model: Option<&str>,
    ) -> Result<Self, crate::config::ConfigError> {
        let demo: Option<Arc<dyn Provider>> = if entries.is_empty() {
            Some(Arc::new(DemoProvider::default()))
        } else {
            None
        };
        let mut registry = Self {
            entries,
            aliases: std::collections::BTreeMap::new(),
            default: None,
            demo,
        };
        registry.default = match default_model {
            Some(spec) => {
                let (index, model) = registry.find(None, Some(spec)).ok_or_else(|| {
                    crate::config::ConfigError::Invalid(format!(
                        "SLUICE_DEFAULT_MODEL: `{spec}` names no configured provider or model"
                    ))
                })?;
                Some((index, model))
            }
            None => registry
                .entries
                .iter()
                .enumerate()
                .find_map(|(i, (_, s))| s.models.first().map(|m| (i, m.clone()))),
        };
        for (_, settings) in &registry.entries {
            if let Some(bad) = settings
                .fallbacks
                .iter()
                .find(|spec| registry.find(None, Some(spec)).is_none())
            {
                return Err(crate::config::ConfigError::Invalid(format!(
                    "provider `{}`: fallback `{bad}` names no configured provider or model",
                    settings.name
                )));
            }
        }
        if registry.default.is_none() && !registry.entries.is_empty() {
            return Err(crate::config::ConfigError::Invalid(
                "no default model: list a model under a provider or set SLUICE_DEFAULT_MODEL"
                    .into(),
            ));
        }
        Ok(registry)
    }

    /// The configured provider called `name` (never the demo model).
    pub fn named(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.entries
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(p, _)| p.clone())
    }

    /// True when no provider is configured and the built-in demo model answers.
    pub fn is_demo(&self) -> bool {
        self.demo.is_some()
    }

    /// The configured providers' names, each with the models it lists (none: any model).
    pub fn catalogue(&self) -> Vec<(String, Vec<String>)> {
        self.entries
            .iter()
            .map(|(_, s)| (s.name.clone(), s.models.clone()))
            .collect()
    }

    /// The largest output cap of any model served: the most `max_tokens` any request may ask.
    pub fn largest_output_cap(&self) -> u32 {
        self.entries
            .iter()
            .flat_map(|(_, s)| s.max_tokens.values().copied())
            .fold(DEFAULT_MAX_TOKENS, u32::max)
    }

    /// `provider/model` names of every listed model, default first.
    pub fn model_ids(&self) -> Vec<String> {
        if self.is_demo() {
            return vec![DEMO_MODEL.to_owned()];
        }
        let mut out = Vec::new();
        if let Some((i, m)) = &self.default {
            out.push(format!("{}/{m}", self.entries[*i].1.name));
        }
        for (_, s) in &self.entries {
            for m in &s.models {
                let id = format!("{}/{m}", s.name);
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// Index of the provider and the model name for a provider and/or model request.
    /// The configured price of a provider's model, by the names an answer was saved with.
    pub fn price_of(&self, provider: &str, model: &str) -> Option<crate::config::Price> {
        self.entries
            .iter()
            .find(|(_, s)| s.name.eq_ignore_ascii_case(provider))
            .and_then(|(_, s)| s.prices.get(model).copied())
    }

    fn find(&self, provider: Option<&str>, model: Option<&str>) -> Option<(usize, String)> {
        let by_name = |name: &str| {
            self.entries
                .iter()
                .position(|(_, s)| s.name.eq_ignore_ascii_case(name))
        };
        match (provider, model) {
            (Some(p), Some(m)) => by_name(p).map(|i| (i, m.to_owned())),
            (Some(p), None) => {
                let i = by_name(p)?;
                let model = self.entries[i].1.models.first().cloned().or_else(|| {
                    self.default
                        .as_ref()
                        .filter(|(d, _)| *d == i)
                        .map(|(_, m)| m.clone())
                })?;
                Some((i, model))
            }
            (None, Some(m)) => {
                if let Some((p, rest)) = m.split_once('/')
                    && let Some(i) = by_name(p)
                {
                    return Some((i, rest.to_owned()));
                }
                self.entries
                    .iter()
                    .position(|(_, s)| s.models.iter().any(|x| x == m))
                    .map(|i| (i, m.to_owned()))
            }
            (None, None) => self.default.clone(),
        }
    }

    /// Checks a stored choice of provider and model: the provider must be configured (any case)
    /// and the model one it lists (any model for a provider that lists none); a model alone must
    /// be `provider/model` or listed by a provider. `Err` names the field at fault.
    pub fn check_choice(
        &self,
        provider: Option<&str>,
        model: Option<&str>,
    ) -> Result<(), &'static str> {
        if self.is_demo() {
            return match (provider, model) {
                (Some(p), _) if p != DEMO_MODEL => Err("ai_provider"),
                (_, Some(m)) if m != DEMO_MODEL => Err("ai_model"),
                _ => Ok(()),
            };
        }
        let entry = |name: &str| {
            self.entries
                .iter()
                .find(|(_, s)| s.name.eq_ignore_ascii_case(name))
        };
        match (provider, model) {
            (Some(p), model) => {
                let (_, settings) = entry(p).ok_or("ai_provider")?;
                match model {
                    Some(m)
                        if !settings.models.is_empty()
                            && !settings.models.iter().any(|x| x == m) =>
                    {
                        Err("ai_model")
                    }
                    _ => Ok(()),
                }
            }
            (None, Some(m)) => self.find(None, Some(m)).map(|_| ()).ok_or("ai_model"),
            (None, None) => Ok(()),
        }
    }

    /// Picks the provider and model for a request; `None`s fall back to the default model.
    pub fn resolve(&self, provider: Option<&str>, model: Option<&str>) -> Option<Resolved> {
        if let Some(demo) = &self.demo {
            let wants_demo = provider.is_none_or(|p| p == DEMO_MODEL)
                && model.is_none_or(|m| m == DEMO_MODEL || m == "demo/demo");
            return wants_demo.then(|| Resolved {
                provider: demo.clone(),
                model: DEMO_MODEL.to_owned(),
                price: None,
                max_tokens: DEFAULT_MAX_TOKENS,
                timeouts: UpstreamTimeouts::default(),
                fallbacks: Vec::new(),
            });
        }
        let (i, model) = self.find(provider, model)?;
        let mut resolved = self.entry(i, model);
        resolved.fallbacks = self.entries[i]
            .1
            .fallbacks
            .iter()
            .filter_map(|spec| self.find(None, Some(spec)).map(|(j, m)| self.entry(j, m)))
            .collect();
        Some(resolved)
    }

    fn entry(&self, index: usize, model: String) -> Resolved {
        let (provider, settings) = &self.entries[index];
        Resolved {
            provider: provider.clone(),
            price: settings.prices.get(&model).copied(),
            max_tokens: settings
                .max_tokens
                .get(&model)
                .copied()
                .unwrap_or(DEFAULT_MAX_TOKENS),
            timeouts: settings.timeouts,
            model,
            fallbacks: Vec::new(),
        }
    }
}
