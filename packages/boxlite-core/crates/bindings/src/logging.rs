//! Engine logs: to stderr through `tracing`.

/// Engine logs go to stderr through `tracing`, filtered by BOXLITE_LOG, else RUST_LOG
/// (default: warnings).
pub(crate) fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BOXLITE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
