//! Typed settings: an optional TOML file, then the environment on top of it.
//!
//! Unknown keys in the file are an error (a typo must not silently fall back to a default), and
//! every secret is a `SecretString`, so it cannot reach a log line through `Debug`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Everything that can go wrong while reading the configuration. Each message names the file key
/// or the environment variable to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// How requests are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// API keys are required (the default).
    Keys,
    /// Every request acts as the admin of the default workspace. Loopback only.
    Off,
}

/// Deadlines applied to every upstream call. There is deliberately no total cap: a long answer
/// that keeps streaming is healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub first_token: Duration,
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(120),
            idle: Duration::from_secs(60),
        }
    }
}

/// The HTTP version spoken to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamHttp {
    /// HTTP/2 (h2 over TLS, h2c with prior knowledge in cleartext) instead of HTTP/1.1. The
    /// upstream must speak it: there is no fallback.
    pub http2: bool,
    /// With HTTP/2, the most answers streamed at once on one connection; more open another
    /// connection. Keep it at or under the server's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub http2_max_streams: usize,
}

impl Default for UpstreamHttp {
    fn default() -> Self {
        Self {
            http2: false,
            http2_max_streams: 100,
        }
    }
}

/// The range accepted for `http2_max_streams`.
const HTTP2_MAX_STREAMS: std::ops::RangeInclusive<usize> = 1..=10_000;

/// Price of one model, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// One configured OpenAI-compatible provider, after presets and the environment are applied.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    pub name: String,
    pub base_url: String,
    pub api_key: Option<SecretString>,
    pub models: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub timeouts: UpstreamTimeouts,
    pub http: UpstreamHttp,
    pub prices: BTreeMap<String, Price>,
    /// The largest `max_tokens` a client may ask of a model; models not listed get
    /// [`DEFAULT_MAX_TOKENS`].
    pub max_tokens: BTreeMap<String, u32>,
    /// Models (`provider/model`) tried in order when this provider fails before the first delta.
    pub fallbacks: Vec<String>,
}

/// The `max_tokens` cap of a model the provider file gives none for.
pub const DEFAULT_MAX_TOKENS: u32 = 131_072;

/// Request and context limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted JSON body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Largest accepted message, in characters.
    pub max_message_chars: usize,
    /// Most messages of history sent upstream; the oldest are trimmed first.
    pub max_context_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_message_chars: 100_000,
            max_context_messages: 200,
        }
    }
}

/// What one client connection may hold: how long it may take to send a request head, stay idle
/// between requests or stall a request body, how large a head may be, and how many connections
/// may be open at once. An open response (an SSE stream) is never cut by these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection that has not sent a complete request head by then is closed.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long is answered 408.
    pub body_timeout: Duration,
    /// The largest request head, in bytes (431 beyond; HTTP/2: the header list size).
    pub max_header_bytes: usize,
    /// The most header fields in a request head (431 beyond; HTTP/1.1).
    pub max_header_fields: usize,
    /// The most connections open at once; `None` is 80% of the open-file limit that the
    /// listener finds when it starts (the rest is left to the database and the upstreams).
    pub max_connections: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            max_header_fields: 100,
            max_connections: None,
        }
    }
}

/// The resolved configuration of one sluice process.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: SecretString,
    pub redis_url: Option<SecretString>,
    pub auth: AuthMode,
    pub admin_key: Option<SecretString>,
    pub default_model: Option<String>,
    pub providers: Vec<ProviderSettings>,
    pub upstream: UpstreamTimeouts,
    /// The HTTP version for providers that do not set their own.
    pub upstream_http: UpstreamHttp,
    /// Interval of SSE keep-alive comments.
    pub keepalive: Duration,
    /// Interval at which the running text of every generation is written to the database.
    pub checkpoint_interval: Duration,
    /// How long a shutdown waits for running generations before saving them as `incomplete`.
    pub shutdown_grace: Duration,
    pub limits: Limits,
    /// What one client connection may hold.
    pub connections: ConnectionLimits,
    /// Other names for models: alias → `provider/model`.
    pub aliases: BTreeMap<String, String>,
    /// Origins whose pages may call sluice from the browser (CORS).
    pub cors_origins: CorsOrigins,
    /// The internet variant's search backend and page fetcher.
    pub search: crate::search::SearchSettings,
    /// The workspace API answers a message post with a task to poll, unless the request asks
    /// otherwise (`AGENT_ASYNC_ENABLED`).
    pub agent_async: bool,
    /// Where `transcribe-audio` sends uploads.
    pub transcription: TranscriptionSettings,
    /// Requests per key per window.
    pub rate_limits: RateLimits,
    /// The browser session cookie is always `Secure` (as `__Host-sluice_session` at the root
    /// path), not only when a proxy says the request came over HTTPS.
    pub secure_cookies: bool,
}

/// How many requests a key may make per window, unless the key has its own limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub secret: u32,
    pub publishable: u32,
    pub window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            secret: 1000,
            publishable: 100,
            window: Duration::from_secs(60),
        }
    }
}

/// The provider and model of `transcribe-audio` (`SLUICE_TRANSCRIPTION_PROVIDER`, `_MODEL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptionSettings {
    pub provider: String,
    pub model: String,
}

impl Default for TranscriptionSettings {
    fn default() -> Self {
        Self {
            provider: "openai".to_owned(),
            model: "whisper-1".to_owned(),
        }
    }
}

/// Which other origins' pages may call the API from a browser. Credentials (the session
/// cookie) are never allowed cross-origin: such pages authenticate with a key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: only same-origin pages (and non-browser clients).
    #[default]
    None,
    /// Any origin (`*`).
    Any,
    /// These origins, each `scheme://host[:port]`.
    List(Vec<String>),
}

impl CorsOrigins {
    /// Parses `SLUICE_CORS_ORIGINS`: `*`, or origins separated by commas.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, ConfigError> {
        let items: Vec<&str> = items
            .iter()
            .flat_map(|i| i.as_ref().split(','))
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        if items.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if items.contains(&"*") {
            if items.len() > 1 {
                return Err(ConfigError::Invalid(
                    "SLUICE_CORS_ORIGINS: `*` allows every origin and cannot be combined with a \
                     list"
                        .into(),
                ));
            }
            return Ok(CorsOrigins::Any);
        }
        let mut origins = Vec::with_capacity(items.len());
        for item in items {
            let rest = item
                .strip_prefix("https://")
                .or_else(|| item.strip_prefix("http://"));
            let valid = rest.is_some_and(|host| {
                !host.is_empty() && !host.contains(['/', '?', '#', ' ', '@']) && host.is_ascii()
            });
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "SLUICE_CORS_ORIGINS: `{item}` is not an origin such as \
                     https://app.example.com or http://localhost:3000 (scheme, host and \
                     optional port, no path)"
                )));
            }
            origins.push(item.to_ascii_lowercase());
        }
        Ok(CorsOrigins::List(origins))
    }
}

impl Settings {
    /// Settings for a process that serves `database_url` with everything else at its default:
    /// no provider (so the demo model answers), keys required.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: SecretString::from(database_url.into()),
            redis_url: None,
            auth: AuthMode::Keys,
            admin_key: None,
            default_model: None,
            providers: Vec::new(),
            upstream: UpstreamTimeouts::default(),
            upstream_http: UpstreamHttp::default(),
            keepalive: Duration::from_secs(15),
            checkpoint_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            limits: Limits::default(),
            connections: ConnectionLimits::default(),
            aliases: BTreeMap::new(),
            cors_origins: CorsOrigins::None,
            search: crate::search::SearchSettings::default(),
            agent_async: false,
            secure_cookies: false,
            transcription: TranscriptionSettings::default(),
            rate_limits: RateLimits::default(),
        }
    }

    /// Reads the file (explicit path, else `./sluice.toml` if present) and then the environment.
    pub fn load(explicit_file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let file = match explicit_file {
            Some(path) => Some(path.to_path_buf()),
            None => match env.get("SLUICE_CONFIG") {
                Some(path) => Some(PathBuf::from(path)),
                None => {
                    let default = PathBuf::from("sluice.toml");
                    default.exists().then_some(default)
                }
            },
        };
        let file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse_file(&text).map_err(|message| ConfigError::Parse { path, message })?
            }
            None => FileConfig::default(),
        };
        Self::from_parts(file, &env)
    }

    /// Merges a parsed file with an environment map; the environment wins.
    pub fn from_parts(
        file: FileConfig,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        // A yes-or-no variable.
        let flag = |name: &str| -> Result<Option<bool>, ConfigError> {
            var(name)
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Ok(true),
                    "false" | "0" | "no" => Ok(false),
                    _ => Err(ConfigError::Invalid(format!(
                        "{name}: `{v}` is not `true` or `false`"
                    ))),
                })
                .transpose()
        };
        let mut settings = Settings::new(
            var("SLUICE_DATABASE_URL")
                .or(file.database_url)
                .unwrap_or_else(|| "sqlite://sluice.db?mode=rwc".to_owned()),
        );

        if let Some(listen) = var("SLUICE_LISTEN").or(file.listen) {
            settings.listen = listen.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "SLUICE_LISTEN: `{listen}` is not an address:port such as 127.0.0.1:8080"
                ))
            })?;
        }
        settings.redis_url = var("SLUICE_REDIS_URL")
            .or(file.redis_url)
            .map(SecretString::from);
        settings.auth = match var("SLUICE_AUTH").or(file.auth).as_deref() {
            None | Some("keys") => AuthMode::Keys,
            Some("off") => AuthMode::Off,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "SLUICE_AUTH: `{other}` is not one of `keys`, `off`"
                )));
            }
        };
        settings.admin_key = var("SLUICE_ADMIN_KEY")
            .or(file.admin_key)
            .map(SecretString::from);
        settings.default_model = var("SLUICE_DEFAULT_MODEL").or(file.default_model);

        let secs = |name: &str, file_value: Option<u64>| -> Result<Option<Duration>, ConfigError> {
            match var(name) {
                Some(v) => v
                    .parse::<u64>()
                    .map(|s| Some(Duration::from_secs(s)))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "{name}: `{v}` is not a whole number of seconds"
                        ))
                    }),
                None => Ok(file_value.map(Duration::from_secs)),
            }
        };
        let upstream_file = file.upstream.unwrap_or_default();
        if let Some(d) = secs(
            "SLUICE_UPSTREAM_CONNECT_TIMEOUT_SECS",
            upstream_file.connect_timeout_secs,
        )? {
            settings.upstream.connect = d;
        }
        if let Some(d) = secs(
            "SLUICE_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS",
            upstream_file.first_token_timeout_secs,
        )? {
            settings.upstream.first_token = d;
        }
        if let Some(d) = secs(
            "SLUICE_UPSTREAM_IDLE_TIMEOUT_SECS",
            upstream_file.idle_timeout_secs,
        )? {
            settings.upstream.idle = d;
        }
        for (name, file_value, target) in [
            (
                "SLUICE_TRANSCRIPTION_PROVIDER",
                file.transcription_provider,
                &mut settings.transcription.provider,
            ),
            (
                "SLUICE_TRANSCRIPTION_MODEL",
                file.transcription_model,
                &mut settings.transcription.model,
            ),
        ] {
            if let Some(v) = var(name).or(file_value) {
                if v.trim().is_empty() {
                    return Err(ConfigError::Invalid(format!("{name} must not be empty")));
                }
                *target = v.trim().to_owned();
            }
        }
        let rate_file = file.rate_limits.unwrap_or_default();
        for (name, file_value, target) in [
            (
                "SLUICE_RATE_LIMIT_SECRET",
                rate_file.secret,
                &mut settings.rate_limits.secret,
            ),
            (
                "SLUICE_RATE_LIMIT_PUBLISHABLE",
                rate_file.publishable,
                &mut settings.rate_limits.publishable,
            ),
        ] {
            let value = match var(name) {
                Some(v) => Some(v.parse::<u32>().map_err(|_| {
                    ConfigError::Invalid(format!("{name}: `{v}` is not a whole number"))
                })?),
                None => file_value,
            };
            if let Some(n) = value {
                if n == 0 {
                    return Err(ConfigError::Invalid(format!(
                        "{name} must be at least 1 request per window"
                    )));
                }
                *target = n;
            }
        }
        if let Some(d) = secs("SLUICE_RATE_LIMIT_WINDOW_SECS", rate_file.window_secs)? {
            if d.is_zero() {
                return Err(ConfigError::Invalid(
                    "SLUICE_RATE_LIMIT_WINDOW_SECS must be at least 1".into(),
                ));
            }
            settings.rate_limits.window = d;
        }
        if let Some(on) = flag("AGENT_ASYNC_ENABLED")? {
            settings.agent_async = on;
        }
        if let Some(on) = flag("SLUICE_SECURE_COOKIES")?.or(file.secure_cookies) {
            settings.secure_cookies = on;
        }
        if let Some(http2) = flag("SLUICE_UPSTREAM_HTTP2")? {
            settings.upstream_http.http2 = http2;
        } else if let Some(http2) = upstream_file.http2 {
            settings.upstream_http.http2 = http2;
        }
        match var("SLUICE_UPSTREAM_HTTP2_MAX_STREAMS") {
            Some(v) => {
                settings.upstream_http.http2_max_streams = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| HTTP2_MAX_STREAMS.contains(n))
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "SLUICE_UPSTREAM_HTTP2_MAX_STREAMS: `{v}` must be a number from 1 \
                             to 10000"
                        ))
                    })?;
            }
            None => {
                if let Some(n) = upstream_file.http2_max_streams {
                    settings.upstream_http.http2_max_streams =
                        max_streams("[upstream] http2_max_streams", n)?;
                }
            }
        }
        if let Some(d) = secs("SLUICE_KEEPALIVE_SECS", file.keepalive_secs)? {
            if d.is_zero() {
                return Err(ConfigError::Invalid(
                    "SLUICE_KEEPALIVE_SECS / keepalive_secs must be at least 1".into(),
                ));
            }
            settings.keepalive = d;
        }
        if let Some(d) = secs("SLUICE_SHUTDOWN_GRACE_SECS", file.shutdown_grace_secs)? {
            settings.shutdown_grace = d;
        }
        match var("SLUICE_CHECKPOINT_INTERVAL_MS") {
            Some(v) => {
                let ms = v
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (10..=1000).contains(ms))
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "SLUICE_CHECKPOINT_INTERVAL_MS: `{v}` must be a number from 10 to 1000"
                        ))
                    })?;
                settings.checkpoint_interval = Duration::from_millis(ms);
            }
            None => {
                if let Some(ms) = file.checkpoint_interval_ms {
                    if !(10..=1000).contains(&ms) {
                        return Err(ConfigError::Invalid(
                            "checkpoint_interval_ms must be from 10 to 1000".into(),
                        ));
                    }
                    settings.checkpoint_interval = Duration::from_millis(ms);
                }
            }
        }
        let connections_file = file.connections.unwrap_or_default();
        for (name, file_value, slot) in [
            (
                "SLUICE_HEADER_TIMEOUT_SECS",
                connections_file.header_timeout_secs,
                &mut settings.connections.header_timeout,
            ),
            (
                "SLUICE_IDLE_TIMEOUT_SECS",
                connections_file.idle_timeout_secs,
                &mut settings.connections.idle_timeout,
            ),
            (
                "SLUICE_BODY_TIMEOUT_SECS",
                connections_file.body_timeout_secs,
                &mut settings.connections.body_timeout,
            ),
        ] {
            if let Some(d) = secs(name, file_value)? {
                if d.is_zero() {
                    return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
                }
                *slot = d;
            }
        }
        match var("SLUICE_MAX_CONNECTIONS") {
            Some(v) => {
                let n = v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "SLUICE_MAX_CONNECTIONS: `{v}` is not a number of connections (1 or more)"
                    ))
                })?;
                settings.connections.max_connections = Some(n);
            }
            None => {
                if let Some(n) = connections_file.max_connections {
                    if n == 0 {
                        return Err(ConfigError::Invalid(
                            "[connections] max_connections must be at least 1".into(),
                        ));
                    }
                    settings.connections.max_connections = Some(n);
                }
            }
        }
        if let Some(limits) = file.limits {
            if let Some(v) = limits.max_body_bytes {
                settings.limits.max_body_bytes = v;
            }
            if let Some(v) = limits.max_message_chars {
                settings.limits.max_message_chars = v;
            }
            if let Some(v) = limits.max_context_messages {
                settings.limits.max_context_messages = v.max(1);
            }
        }

        settings.providers = resolve_providers(
            file.providers,
            env,
            settings.upstream,
            settings.upstream_http,
        )?;
        settings.aliases = file.aliases;
        settings.cors_origins = match var("SLUICE_CORS_ORIGINS") {
            Some(v) => CorsOrigins::parse(&[v])?,
            None => CorsOrigins::parse(&file.cors_origins)?,
        };
        settings.search = crate::search::SearchSettings::from_env(env)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that hold whatever the source of the settings (also for settings built in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth == AuthMode::Off && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "SLUICE_AUTH=off serves every request as an admin, so it only binds a loopback \
                 address; {} is not one (change SLUICE_LISTEN or set SLUICE_AUTH=keys)",
                self.listen
            )));
        }
        if let Some(key) = &self.admin_key
            && (!key.expose_secret().starts_with("sk_live_") || key.expose_secret().len() < 30)
        {
            return Err(ConfigError::Invalid(
                "SLUICE_ADMIN_KEY must be a secret key: `sk_live_` followed by at least 22 \
                 random characters"
                    .into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for provider in &self.providers {
            if !seen.insert(provider.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "provider `{}` is configured twice",
                    provider.name
                )));
            }
            if !(provider.base_url.starts_with("http://")
                || provider.base_url.starts_with("https://"))
            {
                return Err(ConfigError::Invalid(format!(
                    "provider `{}`: base_url `{}` is not an http(s) URL",
                    provider.name, provider.base_url
                )));
            }
            if let Some(key) = &provider.api_key
                && key.expose_secret().contains(['\n', '\r'])
            {
                return Err(ConfigError::Invalid(format!(
                    "provider `{}`: its API key contains a line break",
                    provider.name
                )));
            }
            if let Some((model, _)) = provider.max_tokens.iter().find(|(_, cap)| **cap == 0) {
                return Err(ConfigError::Invalid(format!(
                    "provider `{}`: max_tokens of `{model}` must be at least 1",
                    provider.name
                )));
            }
        }
        Ok(())
    }

    /// The `SLUICE_DATABASE_URL` in use (it may carry a password: never log it).
    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }
}

/// The file's shape. Every key is optional; unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub auth: Option<String>,
    pub admin_key: Option<String>,
    pub default_model: Option<String>,
    pub transcription_provider: Option<String>,
    pub transcription_model: Option<String>,
    pub rate_limits: Option<FileRateLimits>,
    pub keepalive_secs: Option<u64>,
    pub checkpoint_interval_ms: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub upstream: Option<FileUpstream>,
    pub limits: Option<FileLimits>,
    pub connections: Option<FileConnections>,
    #[serde(default)]
    pub providers: Vec<FileProvider>,
    /// Other names for models: `fast = "groq/llama-3.3-70b-versatile"`.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Origins allowed by CORS: `["https://app.example.com"]` or `["*"]`.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// The session cookie is always `Secure`.
    pub secure_cookies: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub connect_timeout_secs: Option<u64>,
    pub first_token_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub http2: Option<bool>,
    pub http2_max_streams: Option<usize>,
}

/// Checks a file's `http2_max_streams`.
fn max_streams(key: &str, n: usize) -> Result<usize, ConfigError> {
    if HTTP2_MAX_STREAMS.contains(&n) {
        Ok(n)
    } else {
        Err(ConfigError::Invalid(format!(
            "{key} must be a number from 1 to 10000, not {n}"
        )))
    }
}

/// `[rate_limits]`: requests per key per window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimits {
    pub secret: Option<u32>,
    pub publishable: Option<u32>,
    pub window_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConnections {
    pub header_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_body_bytes: Option<usize>,
    pub max_message_chars: Option<usize>,
    pub max_context_messages: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProvider {
    pub name: String,
    pub base_url: Option<String>,
    /// Name of the environment variable holding the key; the key itself never sits in the file.
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub connect_timeout_secs: Option<u64>,
    pub first_token_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub http2: Option<bool>,
    pub http2_max_streams: Option<usize>,
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Per-model `max_tokens` caps: `max_tokens = { "gpt-4o-mini" = 16384 }`.
    #[serde(default)]
    pub max_tokens: BTreeMap<String, u32>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// Parses the TOML text, reporting the path of the offending key.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// A built-in preset: where a well-known provider lives and which variables configure it.
struct Preset {
    name: &'static str,
    base_url: &'static str,
    key_env: &'static str,
    /// Variable that overrides the base URL (and, for local servers, enables the preset).
    base_url_env: &'static str,
    local: bool,
    models: &'static [&'static str],
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "openai",
        base_url: "https://api.openai.com/v1",
        key_env: "OPENAI_API_KEY",
        base_url_env: "OPENAI_BASE_URL",
        local: false,
        models: &["gpt-4o-mini", "gpt-4o"],
    },
    Preset {
        name: "anthropic",
        base_url: "https://api.anthropic.com/v1",
        key_env: "ANTHROPIC_API_KEY",
        base_url_env: "ANTHROPIC_BASE_URL",
        local: false,
        models: &["claude-sonnet-4-5", "claude-haiku-4-5"],
    },
    Preset {
        name: "google",
        base_url: "https://generativelanguage.googleapis.com/v1beta/openai",
        key_env: "GEMINI_API_KEY",
        base_url_env: "GEMINI_BASE_URL",
        local: false,
        models: &["gemini-2.5-flash", "gemini-2.5-pro"],
    },
    Preset {
        name: "groq",
        base_url: "https://api.groq.com/openai/v1",
        key_env: "GROQ_API_KEY",
        base_url_env: "GROQ_BASE_URL",
        local: false,
        models: &["llama-3.3-70b-versatile"],
    },
    Preset {
        name: "deepseek",
        base_url: "https://api.deepseek.com/v1",
        key_env: "DEEPSEEK_API_KEY",
        base_url_env: "DEEPSEEK_BASE_URL",
        local: false,
        models: &["deepseek-chat", "deepseek-reasoner"],
    },
    Preset {
        name: "ollama",
        base_url: "http://127.0.0.1:11434/v1",
        key_env: "OLLAMA_API_KEY",
        base_url_env: "OLLAMA_BASE_URL",
        local: true,
        models: &["llama3.2"],
    },
    Preset {
        name: "vllm",
        base_url: "http://127.0.0.1:8000/v1",
        key_env: "VLLM_API_KEY",
        base_url_env: "VLLM_BASE_URL",
        local: true,
        models: &[],
    },
    Preset {
        name: "llamacpp",
        base_url: "http://127.0.0.1:8081/v1",
        key_env: "LLAMACPP_API_KEY",
        base_url_env: "LLAMACPP_BASE_URL",
        local: true,
        models: &[],
    },
];

fn resolve_providers(
    file: Vec<FileProvider>,
    env: &HashMap<String, String>,
    defaults: UpstreamTimeouts,
    http: UpstreamHttp,
) -> Result<Vec<ProviderSettings>, ConfigError> {
    let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
    let mut out = Vec::new();
    for p in file {
        if p.name.is_empty() || p.name.contains('/') {
            return Err(ConfigError::Invalid(format!(
                "provider name `{}` must be non-empty and contain no `/`",
                p.name
            )));
        }
        let preset = PRESETS.iter().find(|preset| preset.name == p.name);
        let key_env = p
            .api_key_env
            .clone()
            .or(preset.map(|pr| pr.key_env.to_owned()));
        let base_url = preset
            .and_then(|pr| var(pr.base_url_env))
            .or(p.base_url.clone())
            .or(preset.map(|pr| pr.base_url.to_owned()))
            .ok_or_else(|| {
                ConfigError::Invalid(format!("provider `{}`: base_url is required", p.name))
            })?;
        let api_key = match &key_env {
            Some(name) => var(name).map(SecretString::from),
            None => None,
        };
        if api_key.is_none() && !preset.is_some_and(|pr| pr.local) && p.api_key_env.is_some() {
            return Err(ConfigError::Invalid(format!(
                "provider `{}`: environment variable {} (api_key_env) is not set",
                p.name,
                key_env.unwrap_or_default()
            )));
        }
        let models = if p.models.is_empty() {
            preset
                .map(|pr| pr.models.iter().map(|m| (*m).to_owned()).collect())
                .unwrap_or_default()
        } else {
            p.models
        };
        let timeouts = UpstreamTimeouts {
            connect: p
                .connect_timeout_secs
                .map_or(defaults.connect, Duration::from_secs),
            first_token: p
                .first_token_timeout_secs
                .map_or(defaults.first_token, Duration::from_secs),
            idle: p
                .idle_timeout_secs
                .map_or(defaults.idle, Duration::from_secs),
        };
        let provider_http = UpstreamHttp {
            http2: p.http2.unwrap_or(http.http2),
            http2_max_streams: match p.http2_max_streams {
                Some(n) => max_streams(&format!("provider `{}`: http2_max_streams", p.name), n)?,
                None => http.http2_max_streams,
            },
        };
        out.push(ProviderSettings {
            name: p.name,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            models,
            headers: p.headers,
            timeouts,
            http: provider_http,
            prices: p.prices,
            max_tokens: p.max_tokens,
            fallbacks: p.fallbacks,
        });
    }
    // Presets enabled by the environment alone: a key for hosted ones, a base URL for local ones.
    for preset in PRESETS {
        if out.iter().any(|p| p.name == preset.name) {
            continue;
        }
        let key = var(preset.key_env);
        let base = var(preset.base_url_env);
        let enabled = if preset.local {
            base.is_some()
        } else {
            key.is_some() || base.is_some()
        };
        if !enabled {
            continue;
        }
        out.push(ProviderSettings {
            name: preset.name.to_owned(),
            base_url: base
                .unwrap_or_else(|| preset.base_url.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            api_key: key.map(SecretString::from),
            models: preset.models.iter().map(|m| (*m).to_owned()).collect(),
            headers: BTreeMap::new(),
            timeouts: defaults,
            http,
            prices: BTreeMap::new(),
            max_tokens: BTreeMap::new(),
            fallbacks: Vec::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn unknown_file_keys_are_rejected_with_their_path() {
        let err = parse_file("listen = \"127.0.0.1:1\"\n[upstream]\nconect_timeout_secs = 3\n")
            .unwrap_err();
        assert!(err.contains("upstream"), "{err}");
        assert!(err.contains("conect_timeout_secs"), "{err}");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let file = parse_file("listen = \"127.0.0.1:1000\"\n").unwrap();
        let s = Settings::from_parts(file, &env(&[("SLUICE_LISTEN", "127.0.0.1:2000")])).unwrap();
        assert_eq!(s.listen.port(), 2000);
    }

    #[test]
    fn an_openai_key_enables_the_openai_preset() {
        let s = Settings::from_parts(FileConfig::default(), &env(&[("OPENAI_API_KEY", "sk-x")]))
            .unwrap();
        assert_eq!(s.providers.len(), 1);
        assert_eq!(s.providers[0].name, "openai");
        assert_eq!(s.providers[0].base_url, "https://api.openai.com/v1");
    }

    #[test]
    fn a_key_with_a_newline_is_refused_naming_the_provider() {
        let err = Settings::from_parts(FileConfig::default(), &env(&[("GROQ_API_KEY", "a\nb")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("groq"), "{err}");
        assert!(!err.contains("a\nb"), "the key must not be echoed: {err}");
    }

    #[test]
    fn a_base_url_that_is_not_http_is_refused_naming_the_provider() {
        let file = parse_file("[[providers]]\nname = \"local\"\nbase_url = \"ftp://x\"\n").unwrap();
        let err = Settings::from_parts(file, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("local"), "{err}");
    }

    #[test]
    fn max_tokens_caps_are_read_per_model_and_a_zero_cap_is_refused() {
        let provider = |caps: &str| {
            parse_file(&format!(
                "[[providers]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
                 models = [\"a\", \"b\"]\nmax_tokens = {{ {caps} }}\n"
            ))
            .unwrap()
        };
        let s = Settings::from_parts(provider("a = 8192"), &env(&[])).unwrap();
        assert_eq!(s.providers[0].max_tokens.get("a"), Some(&8192));
        assert_eq!(s.providers[0].max_tokens.get("b"), None);
        let err = Settings::from_parts(provider("b = 0"), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("local") && err.contains("max_tokens"), "{err}");
    }

    #[test]
    fn http2_is_set_for_all_providers_and_overridden_per_provider() {
        let file = parse_file(
            "[upstream]\nhttp2_max_streams = 50\n[[providers]]\nname = \"local\"\n\
             base_url = \"http://127.0.0.1:1/v1\"\nhttp2 = false\n",
        )
        .unwrap();
        let s = Settings::from_parts(
            file,
            &env(&[
                ("SLUICE_UPSTREAM_HTTP2", "true"),
                ("OPENAI_API_KEY", "sk-x"),
            ]),
        )
        .unwrap();
        let local = s.providers.iter().find(|p| p.name == "local").unwrap();
        let openai = s.providers.iter().find(|p| p.name == "openai").unwrap();
        assert!(!local.http.http2);
        assert_eq!(local.http.http2_max_streams, 50);
        assert!(openai.http.http2);
        assert_eq!(openai.http.http2_max_streams, 50);
    }

    #[test]
    fn bad_http2_settings_are_refused_naming_the_setting() {
        let refused = |pairs: &[(&str, &str)]| {
            Settings::from_parts(FileConfig::default(), &env(pairs))
                .unwrap_err()
                .to_string()
        };
        let err = refused(&[("SLUICE_UPSTREAM_HTTP2", "maybe")]);
        assert!(err.contains("SLUICE_UPSTREAM_HTTP2"), "{err}");
        let err = refused(&[("SLUICE_SECURE_COOKIES", "sometimes")]);
        assert!(err.contains("SLUICE_SECURE_COOKIES: `sometimes`"), "{err}");
        let on = Settings::from_parts(
            FileConfig::default(),
            &env(&[("SLUICE_SECURE_COOKIES", "yes")]),
        );
        assert!(on.unwrap().secure_cookies);
        let err = refused(&[("SLUICE_UPSTREAM_HTTP2_MAX_STREAMS", "0")]);
        assert!(err.contains("SLUICE_UPSTREAM_HTTP2_MAX_STREAMS"), "{err}");
        let file = parse_file(
            "[[providers]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
             http2_max_streams = 0\n",
        )
        .unwrap();
        let err = Settings::from_parts(file, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("local") && err.contains("http2_max_streams"),
            "{err}"
        );
    }

    #[test]
    fn auth_off_refuses_a_public_address() {
        let err = Settings::from_parts(
            FileConfig::default(),
            &env(&[("SLUICE_AUTH", "off"), ("SLUICE_LISTEN", "0.0.0.0:8080")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLUICE_LISTEN"), "{err}");
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let s = Settings::from_parts(
            FileConfig::default(),
            &env(&[
                ("OPENAI_API_KEY", "sk-very-secret"),
                ("SLUICE_DATABASE_URL", "postgres://u:pw@h/db"),
            ]),
        )
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("sk-very-secret"));
        assert!(!debug.contains("pw@h"));
    }
}
