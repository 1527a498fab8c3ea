//! Search settings: which backend, its key or address, and the fetcher's limits, read from the
//! environment with errors that name the variable to fix.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::fetch::Resolver;

/// The selected search backend and what it needs.
#[derive(Clone, Debug, Default)]
pub enum Provider {
    /// DuckDuckGo's HTML results page: no key.
    #[default]
    DuckDuckGo,
    /// A SearXNG instance's JSON API (the instance must enable `format=json`).
    Searxng {
        url: Url,
    },
    Brave {
        api_key: SecretString,
    },
    Tavily {
        api_key: SecretString,
    },
    /// No search: the internet variant answers without sources and says so.
    None,
}

impl Provider {
    /// The name used in `SLUICE_SEARCH_PROVIDER`, logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::DuckDuckGo => "duckduckgo",
            Provider::Searxng { .. } => "searxng",
            Provider::Brave { .. } => "brave",
            Provider::Tavily { .. } => "tavily",
            Provider::None => "none",
        }
    }
}

/// Limits and policy of the page fetcher.
#[derive(Clone, Debug)]
pub struct FetchSettings {
    /// How many results are asked for and how many of their pages are read.
    pub max_pages: usize,
    /// Per page, from the first connection to the last byte, redirects included.
    pub page_timeout: Duration,
    /// Bytes read per page; the rest is not downloaded and the prefix is used.
    pub max_page_bytes: usize,
    /// One deadline for the whole search step, counted from its start (the search request
    /// included): pages not read and extracted by then are left out.
    pub deadline: Duration,
    /// Redirect hops followed per page, each checked by the guard.
    pub max_redirects: usize,
    /// Lets the fetcher reach loopback and private addresses (tests and closed networks only).
    pub allow_private: bool,
    /// How host names become addresses. Always [`Resolver::System`] from the environment; tests
    /// use a static map.
    pub resolver: Resolver,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            max_pages: 5,
            page_timeout: Duration::from_secs(5),
            max_page_bytes: 2 * 1024 * 1024,
            deadline: Duration::from_secs(10),
            max_redirects: 5,
            allow_private: false,
            resolver: Resolver::System,
        }
    }
}

/// Everything the search pipeline is configured with.
#[derive(Clone, Debug)]
pub struct SearchSettings {
    pub provider: Provider,
    /// Replaces the backend's public address (DuckDuckGo, Brave, Tavily: the full endpoint URL;
    /// SearXNG: its base URL). For tests and forwarding proxies; not read from the environment.
    pub endpoint: Option<Url>,
    /// Time allowed for the search request itself.
    pub search_timeout: Duration,
    /// How many ranked passages become numbered sources.
    pub max_sources: usize,
    pub fetch: FetchSettings,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            provider: Provider::DuckDuckGo,
            endpoint: None,
            search_timeout: Duration::from_secs(5),
            max_sources: 5,
            fetch: FetchSettings::default(),
        }
    }
}

/// A search setting that cannot be used, naming the variable to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

impl std::error::Error for SettingsError {}

fn invalid(variable: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        message: message.into(),
    }
}

impl SearchSettings {
    /// Reads the search variables from `env` (the process environment, as a map). Unset or
    /// empty variables keep their defaults; a selected backend without its key or URL is an
    /// error naming the missing variable.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let var = |name: &str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut settings = SearchSettings::default();
        let provider = var("SLUICE_SEARCH_PROVIDER").map(|p| p.to_ascii_lowercase());
        settings.provider = match provider.as_deref() {
            None | Some("duckduckgo") => Provider::DuckDuckGo,
            Some("none") => Provider::None,
            Some("searxng") => {
                let raw = var("SLUICE_SEARXNG_URL").ok_or_else(|| {
                    invalid(
                        "SLUICE_SEARXNG_URL",
                        "SLUICE_SEARCH_PROVIDER=searxng needs the instance's base URL, such \
                         as http://127.0.0.1:8888",
                    )
                })?;
                let url = Url::parse(&raw)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                    .ok_or_else(|| {
                        invalid(
                            "SLUICE_SEARXNG_URL",
                            format!("`{raw}` is not an http(s) URL"),
                        )
                    })?;
                Provider::Searxng { url }
            }
            Some("brave") => Provider::Brave {
                api_key: key(env, "BRAVE_API_KEY", "brave")?,
            },
            Some("tavily") => Provider::Tavily {
                api_key: key(env, "TAVILY_API_KEY", "tavily")?,
            },
            Some(other) => {
                return Err(invalid(
                    "SLUICE_SEARCH_PROVIDER",
                    format!(
                        "`{other}` is not one of `duckduckgo`, `searxng`, `brave`, `tavily`, \
                         `none`"
                    ),
                ));
            }
        };
        if let Some(v) = var("SLUICE_FETCH_ALLOW_PRIVATE") {
            settings.fetch.allow_private = match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(invalid(
                        "SLUICE_FETCH_ALLOW_PRIVATE",
                        format!("`{v}` is not `true` or `false`"),
                    ));
                }
            };
        }
        let number = |name: &'static str, min: u64, max: u64| -> Result<Option<u64>, _> {
            match var(name) {
                None => Ok(None),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        invalid(name, format!("`{v}` must be a number from {min} to {max}"))
                    }),
            }
        };
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = number("SLUICE_FETCH_MAX_PAGES", 1, 20)? {
            settings.fetch.max_pages = count(n);
        }
        if let Some(ms) = number("SLUICE_FETCH_TIMEOUT_MS", 100, 120_000)? {
            settings.fetch.page_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number("SLUICE_FETCH_MAX_BYTES", 1024, 64 * 1024 * 1024)? {
            settings.fetch.max_page_bytes = count(n);
        }
        if let Some(ms) = number("SLUICE_FETCH_DEADLINE_MS", 100, 300_000)? {
            settings.fetch.deadline = Duration::from_millis(ms);
        }
        if let Some(ms) = number("SLUICE_SEARCH_TIMEOUT_MS", 100, 120_000)? {
            settings.search_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number("SLUICE_SEARCH_MAX_SOURCES", 1, 20)? {
            settings.max_sources = count(n);
        }
        Ok(settings)
    }
}

/// An API key from `variable`: required, and usable as a header value.
fn key(
    env: &HashMap<String, String>,
    variable: &'static str,
    provider: &str,
) -> Result<SecretString, SettingsError> {
    let raw = env.get(variable).map(|v| v.trim()).unwrap_or_default();
    if raw.is_empty() {
        return Err(invalid(
            variable,
            format!("SLUICE_SEARCH_PROVIDER={provider} needs an API key in {variable}"),
        ));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            variable,
            "the key contains whitespace or control characters",
        ));
    }
    Ok(SecretString::from(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_duckduckgo_with_the_documented_limits() {
        let s = SearchSettings::from_env(&env(&[])).unwrap();
        assert_eq!(s.provider.name(), "duckduckgo");
        assert_eq!(s.fetch.max_pages, 5);
        assert_eq!(s.fetch.page_timeout, Duration::from_secs(5));
        assert_eq!(s.fetch.max_page_bytes, 2 * 1024 * 1024);
        assert_eq!(s.fetch.deadline, Duration::from_secs(10));
        assert_eq!(s.max_sources, 5);
        assert!(!s.fetch.allow_private);
    }

    #[test]
    fn a_selected_backend_without_its_setting_names_the_variable() {
        for (provider, variable) in [
            ("searxng", "SLUICE_SEARXNG_URL"),
            ("brave", "BRAVE_API_KEY"),
            ("tavily", "TAVILY_API_KEY"),
        ] {
            let e = SearchSettings::from_env(&env(&[("SLUICE_SEARCH_PROVIDER", provider)]))
                .unwrap_err();
            assert_eq!(e.variable, variable);
            assert!(e.to_string().contains(variable), "{e}");
        }
    }

    #[test]
    fn backends_take_their_keys_and_urls() {
        let s = SearchSettings::from_env(&env(&[
            ("SLUICE_SEARCH_PROVIDER", "Brave"),
            ("BRAVE_API_KEY", " BSA-key "),
        ]))
        .unwrap();
        match s.provider {
            Provider::Brave { api_key } => assert_eq!(api_key.expose_secret(), "BSA-key"),
            other => panic!("{other:?}"),
        }
        let s = SearchSettings::from_env(&env(&[
            ("SLUICE_SEARCH_PROVIDER", "searxng"),
            ("SLUICE_SEARXNG_URL", "http://10.1.2.3:8888/"),
        ]))
        .unwrap();
        assert!(matches!(s.provider, Provider::Searxng { .. }));
        let s = SearchSettings::from_env(&env(&[("SLUICE_SEARCH_PROVIDER", "none")])).unwrap();
        assert_eq!(s.provider.name(), "none");
    }

    #[test]
    fn keys_never_appear_in_debug_output() {
        let s = SearchSettings::from_env(&env(&[
            ("SLUICE_SEARCH_PROVIDER", "tavily"),
            ("TAVILY_API_KEY", "tvly-very-secret"),
        ]))
        .unwrap();
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("SLUICE_SEARCH_PROVIDER", "google"),
            ("SLUICE_FETCH_ALLOW_PRIVATE", "maybe"),
            ("SLUICE_FETCH_MAX_PAGES", "0"),
            ("SLUICE_FETCH_TIMEOUT_MS", "soon"),
            ("SLUICE_FETCH_MAX_BYTES", "12"),
            ("SLUICE_FETCH_DEADLINE_MS", "-1"),
            ("SLUICE_SEARCH_TIMEOUT_MS", "0"),
            ("SLUICE_SEARCH_MAX_SOURCES", "99"),
        ] {
            let e = SearchSettings::from_env(&env(&[(name, value)])).unwrap_err();
            assert_eq!(e.variable, name, "{e}");
        }
        let e = SearchSettings::from_env(&env(&[
            ("SLUICE_SEARCH_PROVIDER", "searxng"),
            ("SLUICE_SEARXNG_URL", "ftp://x"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "SLUICE_SEARXNG_URL");
        let e = SearchSettings::from_env(&env(&[
            ("SLUICE_SEARCH_PROVIDER", "brave"),
            ("BRAVE_API_KEY", "a\nb"),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "BRAVE_API_KEY");
    }

    #[test]
    fn limits_and_the_private_switch_are_read() {
        let s = SearchSettings::from_env(&env(&[
            ("SLUICE_FETCH_ALLOW_PRIVATE", "true"),
            ("SLUICE_FETCH_MAX_PAGES", "3"),
            ("SLUICE_FETCH_TIMEOUT_MS", "1500"),
            ("SLUICE_FETCH_MAX_BYTES", "65536"),
            ("SLUICE_FETCH_DEADLINE_MS", "4000"),
            ("SLUICE_SEARCH_TIMEOUT_MS", "2500"),
            ("SLUICE_SEARCH_MAX_SOURCES", "8"),
        ]))
        .unwrap();
        assert!(s.fetch.allow_private);
        assert_eq!(s.fetch.max_pages, 3);
        assert_eq!(s.fetch.page_timeout, Duration::from_millis(1500));
        assert_eq!(s.fetch.max_page_bytes, 65536);
        assert_eq!(s.fetch.deadline, Duration::from_millis(4000));
        assert_eq!(s.search_timeout, Duration::from_millis(2500));
        assert_eq!(s.max_sources, 8);
    }
}
