//! The page fetcher: one guarded GET per page, redirects followed by hand, a time limit and a
//! byte cap per page, and the body decoded to text.
//!
//! The guard is enforced where the address is chosen: the client's DNS resolver is ours
//! ([`GuardedResolver`]). It resolves the name once, refuses the whole answer if any address
//! is not public, and hands exactly those checked addresses to the connector, so there is no
//! second lookup between the check and the connection for a DNS-rebinding answer to slip into.
//! Address literals never reach a resolver, so every hop's URL is checked before it is
//! requested ([`guard::check_url`]). The client uses no proxy (a proxy would resolve names
//! itself, out of the guard's sight) and follows no redirect on its own.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use url::Url;

use super::extract::{self, PageKind};
use super::guard::{self, Refusal};
use super::settings::FetchSettings;

const USER_AGENT: &str = concat!(
    "Mozilla/5.0 (compatible; sluice/",
    env!("CARGO_PKG_VERSION"),
    "; web search for a chat answer)"
);

/// How host names become addresses.
#[derive(Clone, Debug, Default)]
pub enum Resolver {
    /// The system resolver (`getaddrinfo`, through tokio).
    #[default]
    System,
    /// A fixed map and nothing else: names not in it do not resolve. For tests, which must
    /// reach neither the internet nor a real DNS server.
    Static(StaticHosts),
}

/// A fixed name-to-address map for tests.
#[derive(Clone, Debug, Default)]
pub struct StaticHosts {
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// Names whose addresses the guard takes as public although they are not: lets a test
    /// stand a local server in for a public site (to test what happens after its first hop).
    pub treat_as_public: HashSet<String>,
}

impl StaticHosts {
    /// Maps `host` to `ip`.
    pub fn with(mut self, host: &str, ip: IpAddr) -> Self {
        self.hosts
            .entry(host.to_ascii_lowercase())
            .or_default()
            .push(ip);
        self
    }

    /// Maps `host` to `ip` and lets the guard take it as a public address.
    pub fn with_public(mut self, host: &str, ip: IpAddr) -> Self {
        self.treat_as_public.insert(host.to_ascii_lowercase());
        self.with(host, ip)
    }
}

/// The client's resolver: resolves once, checks every address, returns only checked ones.
struct GuardedResolver {
    resolver: Resolver,
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let resolver = self.resolver.clone();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let (addresses, exempt) = match &resolver {
                Resolver::System => {
                    let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
                    (found.map(|a| a.ip()).collect::<Vec<_>>(), false)
                }
                Resolver::Static(map) => (
                    map.hosts.get(&host).cloned().unwrap_or_default(),
                    map.treat_as_public.contains(&host),
                ),
            };
            if addresses.is_empty() {
                return Err(format!("{host} did not resolve to any address").into());
            }
            if !allow_private && !exempt {
                for ip in &addresses {
                    guard::check_ip(*ip)
                        .map_err(|r| Refusal::new(format!("{host} resolves to {}", r.reason)))?;
                }
            }
            let addrs: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A page read and decoded.
#[derive(Clone, Debug)]
pub struct Page {
    /// Where the page was read, after redirects.
    pub url: Url,
    pub kind: PageKind,
    /// The body as text (decoded from its charset).
    pub body: String,
    /// The byte cap stopped the download: `body` is a prefix of the page.
    pub truncated: bool,
    /// The encoding the body was decoded from.
    pub encoding: &'static str,
}

/// Why a page was not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The SSRF guard refused the URL or an address it resolves to (on any hop).
    Refused(Refusal),
    /// Not HTML or plain text: not downloaded.
    NotText {
        content_type: String,
    },
    /// The page did not arrive within the per-page time limit.
    Timeout,
    /// An error status, or a redirect without a usable `Location`.
    Status(u16),
    TooManyRedirects,
    InvalidUrl(String),
    /// Connecting or reading failed.
    Transport(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Refused(r) => r.fmt(f),
            FetchError::NotText { content_type } => {
                write!(f, "skipped: content type `{content_type}` is not text")
            }
            FetchError::Timeout => f.write_str("timed out"),
            FetchError::Status(s) => write!(f, "answered status {s}"),
            FetchError::TooManyRedirects => f.write_str("too many redirects"),
            FetchError::InvalidUrl(e) => write!(f, "invalid URL: {e}"),
            FetchError::Transport(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        // A refusal from the resolver arrives wrapped inside the connect error.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if let Some(refusal) = c.downcast_ref::<Refusal>() {
                return FetchError::Refused(refusal.clone());
            }
            cause = c.source();
        }
        if e.is_timeout() {
            return FetchError::Timeout;
        }
        // Without the URL: it is in the page report already.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        FetchError::Transport(text)
    }
}

/// Reads pages for the pipeline. Cheap to share: one client, one resolver.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    settings: Arc<FetchSettings>,
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .referer(false)
            .user_agent(USER_AGENT)
            .connect_timeout(settings.page_timeout)
            .dns_resolver(GuardedResolver {
                resolver: settings.resolver.clone(),
                allow_private: settings.allow_private,
            })
            .build()?;
        Ok(Self {
            client,
            settings: Arc::new(settings),
        })
    }

    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    /// Reads one page within the per-page time limit.
    pub async fn fetch(&self, url: &str) -> Result<Page, FetchError> {
        match tokio::time::timeout(self.settings.page_timeout, self.fetch_unbounded(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    async fn fetch_unbounded(&self, url: &str) -> Result<Page, FetchError> {
        let mut url = Url::parse(url).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        url.set_fragment(None);
        let mut hops = 0;
        loop {
            guard::check_url(&url, self.settings.allow_private).map_err(FetchError::Refused)?;
            let mut response = self
                .client
                .get(url.clone())
                .header(
                    ACCEPT,
                    "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1",
                )
                .send()
                .await?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or(FetchError::Status(status.as_u16()))?;
                hops += 1;
                if hops > self.settings.max_redirects {
                    return Err(FetchError::TooManyRedirects);
                }
                url = next;
                url.set_fragment(None);
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let Some(kind) = PageKind::from_content_type(&content_type) else {
                return Err(FetchError::NotText { content_type });
            };
            let cap = self.settings.max_page_bytes;
            let expected = response
                .content_length()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(16 * 1024);
            let mut body = Vec::with_capacity(expected.min(cap));
            let mut truncated = false;
            while let Some(chunk) = response.chunk().await? {
                let room = cap - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            // Dropping the response here closes the connection: the rest is never read.
            drop(response);
            let (text, encoding) = extract::decode(&body, &content_type, kind);
            return Ok(Page {
                url,
                kind,
                body: text,
                truncated,
                encoding: encoding.name(),
            });
        }
    }
}
