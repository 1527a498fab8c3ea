//! Builds the application (database, providers, services, router) and runs it with graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::config::{ConfigError, Settings};
use crate::generation::{Hub, HubConfig};
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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A built, bound, not yet running sluice.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    services: Arc<Services>,
    settings: Settings,
}

impl Application {
    /// Connects and migrates the database, recovers interrupted answers, bootstraps keys, builds
    /// the providers and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        settings.validate()?;
        let providers = Arc::new(Providers::from_settings(&settings)?);
        Self::build_with_providers(settings, providers).await
    }

    /// Like [`Application::build`], with a ready provider registry.
    pub async fn build_with_providers(
        settings: Settings,
        providers: Arc<Providers>,
    ) -> Result<Self, StartError> {
        crate::telemetry::prometheus();
        let store = Store::open(settings.database_url()).await?;
        let recovered = store.recover_interrupted().await?;
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
        let hub = Hub::new(
            store.clone(),
            providers.clone(),
            HubConfig {
                checkpoint_interval: settings.checkpoint_interval,
                max_context_messages: settings.limits.max_context_messages,
            },
        );
        let services = Arc::new(Services {
            store,
            hub,
            providers,
            limits: settings.limits,
            default_workspace,
        });
        let router = http::router(AppState {
            services: services.clone(),
            auth: settings.auth,
            keepalive: settings.keepalive,
        });
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
        Ok(Self {
            listener,
            addr,
            router,
            services,
            settings,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// Serves until `shutdown` resolves, then: stops accepting, ends open streams with `retry:`,
    /// lets running generations finish within the grace period, saves the rest as `incomplete`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let hub = self.services.hub.clone();
        let checkpointer = hub.spawn_checkpointer();
        let closing = hub.closing().clone();
        let signal_closing = closing.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal_closing.cancel();
        });
        tracing::info!(addr = %self.addr, "sluice listening on http://{}", self.addr);
        // Nagle's algorithm would hold small SSE frames back for up to 40 ms.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, self.router)
            .with_graceful_shutdown(closing.cancelled_owned())
            .await;
        tracing::info!("no longer accepting; waiting for running generations");
        hub.drain(self.settings.shutdown_grace).await;
        hub.checkpoint_all().await;
        checkpointer.abort();
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
