//! zoo server: registry, object store, runtimes and the HTTP API.
//!
//! `run(Config)` starts a server; `build_app(AppState)` gives the router (tests use it).

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod service;
pub mod store;
pub mod ui;

pub use config::Config;
use service::Services;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub keys: Arc<auth::KeyChecker>,
    pub sessions: Arc<auth::session::Sessions>,
}

impl AppState {
    /// Open the registry and store named by the config, load the runtimes,
    /// bootstrap the admin key and sweep leftovers of a previous run.
    pub async fn open(config: Config) -> anyhow::Result<AppState> {
        tokio::fs::create_dir_all(&config.data_dir).await?;
        api::set_body_budget(config.max_inflight_body_bytes);
        let registry = registry::open(&config.database_url()).await?;
        let store = store::open(&config.store_url(), config.create_bucket).await?;
        auth::bootstrap(registry.as_ref(), &config.data_dir, config.admin_key.is_some()).await?;
        let runtimes = runtime::Runtimes::init(&config);
        let breaker = Arc::new(registry::breaker::Breaker::default());
        let keys = Arc::new(auth::KeyChecker::new(registry.clone(), config.admin_key.as_deref(), breaker.clone()));
        let sessions = Arc::new(auth::session::Sessions::open(
            config.session_secret.as_deref(),
            &config.data_dir,
            Duration::from_secs(config.session_ttl_secs.max(60)),
            config.secure_cookies,
        )?);
        let mut services = Services::new(config, registry, store, runtimes);
        services.breaker = breaker;
        let services = Arc::new(services);
        services.sweep(true).await?;
        let state = AppState { services, keys, sessions };
        state.follow_other_replicas();
        Ok(state)
    }

    /// Apply changes made through other replicas: unload deleted versions, forget
    /// revoked keys at once.
    fn follow_other_replicas(&self) {
        let Some(mut events) = self.services.registry.events() else { return };
        let (services, keys) = (self.services.clone(), self.keys.clone());
        tokio::spawn(async move {
            use registry::RegistryEvent;
            loop {
                match events.recv().await {
                    Ok(RegistryEvent::VersionRemoved { model, version }) => {
                        services.unload(&model, &version);
                        services.metrics.forget(&model, Some(&version));
                    }
                    Ok(RegistryEvent::ModelRemoved { model }) => {
                        services.unload_model(&model);
                        services.metrics.forget(&model, None);
                    }
                    Ok(RegistryEvent::KeyRevoked { id }) => keys.forget(&id),
                    Ok(RegistryEvent::AliasMoved { model, version: Some(version), .. }) => {
                        let services = services.clone();
                        tokio::spawn(async move {
                            // Warm first, then route: the alias's requests here
                            // find the version loaded.
                            services.preload(&model, &version).await;
                            services.forget_routes(&model);
                        });
                    }
                    Ok(
                        RegistryEvent::VersionReady { model, .. }
                        | RegistryEvent::AliasMoved { model, version: None, .. },
                    ) => services.forget_routes(&model),
                    Ok(RegistryEvent::Resync) => {
                        services.unload_all();
                        keys.forget_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "fell behind the registry change feed; reloading lazily");
                        services.unload_all();
                        keys.forget_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// The HTTP application.
pub fn build_app(state: AppState) -> Router {
    let (router, mut openapi) = api::router().split_for_parts();
    api::finish(&mut openapi);
    let request_id = HeaderName::from_static(zoo_api::headers::REQUEST_ID);
    router
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), api::health::track))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .route("/models/{name}/docs", axum::routing::get(api::model_docs::model_docs_page))
        .merge(ui::router())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let id = req.headers().get(zoo_api::headers::REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, key = tracing::field::Empty)
                }))
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
}

/// Set up logging: text or JSON lines, filtered by `RUST_LOG` (default info).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Start the server and run until SIGINT or SIGTERM, then drain: `/readyz`
/// answers 503 (for `shutdown_delay_secs` after SIGTERM, still serving), then
/// the listener closes and the requests in flight get `shutdown_timeout_secs`
/// to finish.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let sweep_every = Duration::from_secs(config.sweep_interval_secs.max(1));
    let delay = Duration::from_secs(config.shutdown_delay_secs);
    let bound = Duration::from_secs(config.shutdown_timeout_secs);
    let state = AppState::open(config).await?;
    state.services.spawn_sweeper(sweep_every);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!("zoo: listening on http://{addr}");
    println!("zoo: API docs at http://{addr}/docs, catalogue JSON at http://{addr}/v1/models");
    tracing::info!(%addr, "listening");
    let services = state.services.clone();
    let (closing, closed) = tokio::sync::oneshot::channel::<()>();
    let drain = async move {
        let signal = shutdown_signal().await;
        services.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        if signal == Signal::Term && !delay.is_zero() {
            tracing::info!(?signal, delay_secs = delay.as_secs(), "draining: /readyz answers 503, still serving");
            tokio::time::sleep(delay).await;
        }
        tracing::info!(
            ?signal,
            timeout_secs = bound.as_secs(),
            "draining: closed to new connections, finishing requests in flight"
        );
        let _ = closing.send(());
    };
    let serve = axum::serve(listener, build_app(state)).with_graceful_shutdown(drain).into_future();
    let out_of_time = async move {
        match closed.await {
            Ok(()) => tokio::time::sleep(bound).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = serve => served?,
        () = out_of_time => tracing::warn!(timeout_secs = bound.as_secs(), "requests still in flight at the shutdown timeout: exiting"),
    }
    tracing::info!("stopped");
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Int,
    Term,
}

async fn shutdown_signal() -> Signal {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => Signal::Int,
        _ = term => Signal::Term,
    }
}
