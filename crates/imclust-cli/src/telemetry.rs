//! Logs (tracing, pretty or JSON) and the Prometheus `/metrics` endpoint of the job commands.

use anyhow::{Context, Result};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Logs go to stderr; `RUST_LOG` overrides `default_filter`.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal: container logs and CI capture stderr as plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A second init (tests calling twice) is harmless.
    let _ = match format {
        LogFormat::Pretty => b.compact().try_init(),
        LogFormat::Json => b.json().flatten_event(true).try_init(),
    };
}

/// Serves `registry` as Prometheus text on `http://<listen>/metrics`; returns the bound address.
pub async fn serve_metrics(listen: &str, registry: Registry) -> Result<SocketAddr> {
    let registry = Arc::new(registry);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for /metrics on {listen}"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => (
                        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        text,
                    ),
                    Err(e) => ([(axum::http::header::CONTENT_TYPE, "text/plain")], format!("# encoding failed: {e}\n")),
                }
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the /metrics server stopped");
        }
    });
    // Scripts and tests read this line to find a port picked by the system (":0").
    eprintln!("metrics on http://{addr}/metrics");
    Ok(addr)
}
