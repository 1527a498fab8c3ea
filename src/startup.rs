//! Builds the application (database, providers, services, router) and runs it with graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::config::{ConfigError, ConnectionLimits, Settings};
use crate::generation::{Hub, HubConfig, Seams};
use crate::http::{self, AppState};
use crate::providers::Providers;
use crate::service::{self, Services};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Service(#[from] crate::Error),
    #[error("web search: {0}")]
    Search(#[from] crate::search::SetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// sluice without a listener: its router, to serve or to mount (`nest_service`) in another
/// axum application, and its services, to call the core without HTTP.
///
/// ```no_run
/// # async fn host() -> Result<(), Box<dyn std::error::Error>> {
/// let sluice = sluice::startup::Sluice::build(sluice::config::Settings::load(None)?).await?;
/// let app = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "my application" }))
///     .nest("/ai", sluice.router());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// // `into_make_service` prepares the router once rather than once per connection.
/// axum::serve(listener, app.into_make_service())
///     .with_graceful_shutdown(sluice.shutdown_signal())
///     .await?;
/// sluice.finish().await;
/// # Ok(()) }
/// ```
pub struct Sluice {
    router: axum::Router,
    services: Arc<Services>,
    checkpointer: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
}

impl Sluice {
    /// Connects and migrates the database, marks answers interrupted by the last stop
    /// `incomplete`, makes sure an admin key exists, builds the providers and the router, and
    /// starts checkpointing running answers.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        settings.validate()?;
        let providers = Arc::new(Providers::from_settings(&settings)?);
        Self::build_with_providers(settings, providers).await
    }

    /// Like [`Sluice::build`], with a ready provider registry.
    pub async fn build_with_providers(
        settings: Settings,
        providers: Arc<Providers>,
    ) -> Result<Self, StartError> {
        crate::telemetry::prometheus();
        let store = Store::open(settings.database_url()).await?;
        let credits: Arc<dyn crate::policy::Credits> =
            crate::policy::LocalCredits::new(store.clone());
        let prices = providers.clone();
        let price = move |provider: &str, model: &str, usage| {
            crate::generation::cost_micros(prices.price_of(provider, model), usage)
        };
        // With a shared Redis, several replicas may use this database; without one, this
        // process must be the only one (`Leases::join` refuses otherwise).
        let redis = settings.redis_url.as_ref().map(|u| u.expose_secret());
        let seams = Seams::new(&store, credits.clone(), redis, Arc::new(price))
            .map_err(ConfigError::Invalid)?;
        seams.leases.join().await.map_err(ConfigError::Invalid)?;
        let recovered = seams.leases.recover().await?;
        if recovered > 0 {
            tracing::warn!(
                count = recovered,
                "answers interrupted by the last stop marked incomplete"
            );
        }
        let default_workspace = service::bootstrap(&store, settings.admin_key.as_ref()).await?;
        if providers.is_demo() {
            tracing::warn!(
                "no provider configured: answering with the built-in `demo` model (a local echo); \
                 set OPENAI_API_KEY or configure [[providers]] for real answers"
            );
        } else {
            tracing::info!(models = ?providers.model_ids(), "providers ready");
        }
        let search = Arc::new(crate::search::Pipeline::new(&settings.search)?);
        tracing::info!(
            backend = search.backend_name(),
            "web search for the internet variant"
        );
        let hub = Hub::new(
            store.clone(),
            search,
            seams,
            HubConfig {
                checkpoint_interval: settings.checkpoint_interval,
            },
        );
        let checkpointer = hub.spawn_checkpointer();
        // One counter per key per window, in Redis when replicas share one; the limits
        // themselves come with the keys.
        let window = settings.rate_limits.window;
        let rate: Arc<dyn crate::policy::RateLimiter> = match &settings.redis_url {
            Some(url) => Arc::new(
                crate::policy::RedisRateLimiter::new(url.expose_secret(), window)
                    .map_err(ConfigError::Invalid)?,
            ),
            None => Arc::new(crate::policy::LocalRateLimiter::new(window)),
        };
        let services = Arc::new(Services::new(
            store,
            hub,
            providers,
            rate,
            credits,
            settings.transcription.clone(),
            settings.rate_limits,
            settings.limits,
            default_workspace,
        ));
        let router = http::router(AppState {
            services: services.clone(),
            auth: settings.auth,
            keepalive: settings.keepalive,
            cors: settings.cors_origins.clone(),
            agent_async: settings.agent_async,
            secure_cookies: settings.secure_cookies,
        });
        Ok(Self {
            router,
            services,
            checkpointer,
            grace: settings.shutdown_grace,
        })
    }

    /// The complete router (every dialect, with its middleware and state).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The domain services behind the router.
    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// Starts shutting down: open streams get their farewell and end, no generation starts.
    pub fn close(&self) {
        self.services.closing().cancel();
    }

    /// Resolves once [`Sluice::close`] was called; hand it to `with_graceful_shutdown`.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        self.services.closing().clone().cancelled_owned()
    }

    /// Lets running generations finish within the grace period, saves the rest as
    /// `incomplete`, and writes a last checkpoint. Call it after the server stopped.
    pub async fn finish(self) {
        tracing::info!("waiting for running generations");
        self.services.drain(self.grace).await;
        self.checkpointer.abort();
    }
}

/// A built, bound, not yet running sluice server.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    sluice: Sluice,
    connections: ConnectionLimits,
}

impl Application {
    /// Builds [`Sluice`] and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let (listen, connections) = (settings.listen, settings.connections);
        let sluice = Sluice::build(settings).await?;
        Self::bind(sluice, listen, connections).await
    }

    /// Like [`Application::build`], with a ready provider registry.
    pub async fn build_with_providers(
        settings: Settings,
        providers: Arc<Providers>,
    ) -> Result<Self, StartError> {
        let (listen, connections) = (settings.listen, settings.connections);
        let sluice = Sluice::build_with_providers(settings, providers).await?;
        Self::bind(sluice, listen, connections).await
    }

    async fn bind(
        sluice: Sluice,
        listen: SocketAddr,
        connections: ConnectionLimits,
    ) -> Result<Self, StartError> {
        let bind_error = |source| StartError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            addr,
            sluice,
            connections,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn services(&self) -> Arc<Services> {
        self.sluice.services()
    }

    /// Serves until `shutdown` resolves, then: stops accepting, ends open streams with `retry:`,
    /// lets running generations finish within the grace period, saves the rest as `incomplete`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let closing = self.sluice.services.closing().clone();
        tokio::spawn(async move {
            shutdown.await;
            closing.cancel();
        });
        tracing::info!(addr = %self.addr, "sluice listening on http://{}", self.addr);
        let served = crate::listener::serve(
            self.listener,
            self.sluice.router(),
            self.connections,
            self.sluice.shutdown_signal(),
        )
        .await;
        tracing::info!("no longer accepting");
        self.sluice.finish().await;
        served
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
