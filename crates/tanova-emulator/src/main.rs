//! `tanova-emulator`: runs the emulated Tanova sync API on loopback until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use clap::Parser;
use tanova_emulator::{Emulator, Knobs, Outage, DEFAULT_API_KEY};

/// A local server that speaks the Tanova sync API, with knobs for latency,
/// capacity and injected faults. Prints `listening on http://ADDR` on stdout
/// once ready; logs go to stderr. Inspect it under /_emulator/ (stats, uploads,
/// knobs, preload, reset).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "TANOVA_EMULATOR_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Allow listening on a non-loopback address.
    #[arg(long, env = "TANOVA_EMULATOR_ALLOW_REMOTE")]
    allow_remote: bool,
    /// The only accepted X-Tanova-API-Key.
    #[arg(long, env = "TANOVA_EMULATOR_API_KEY", default_value = DEFAULT_API_KEY)]
    api_key: String,
    /// Simulated processing time of each accepted upload, in milliseconds; 0 answers at once.
    #[arg(long, env = "TANOVA_EMULATOR_UPLOAD_LATENCY_MS", default_value_t = 0)]
    upload_latency_ms: u64,
    /// Delay before answering check-duplicate, in milliseconds; 0 answers at once.
    #[arg(long, env = "TANOVA_EMULATOR_CHECK_LATENCY_MS", default_value_t = 0)]
    check_latency_ms: u64,
    /// Uploads accepted at once; more get 429. 0 means unlimited.
    #[arg(long, env = "TANOVA_EMULATOR_CAPACITY", default_value_t = 0)]
    capacity: usize,
    /// Retry-After seconds sent with a 429.
    #[arg(long, env = "TANOVA_EMULATOR_RETRY_AFTER_S", default_value_t = 1)]
    retry_after_s: u64,
    /// Probability (0..1) that an upload answers 500 or 503.
    #[arg(long, env = "TANOVA_EMULATOR_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Probability (0..1) that an upload's connection is dropped without an answer.
    #[arg(long, env = "TANOVA_EMULATOR_DROP_RATE", default_value_t = 0.0)]
    drop_rate: f64,
    /// Probability (0..1) that check-duplicate answers 500 or 503.
    #[arg(long, env = "TANOVA_EMULATOR_CHECK_ERROR_RATE", default_value_t = 0.0)]
    check_error_rate: f64,
    /// Refuse uploads whose filename contains this text (with --reject-status).
    #[arg(long, env = "TANOVA_EMULATOR_REJECT_FILENAME_CONTAINS")]
    reject_filename_contains: Option<String>,
    /// Status for refused filenames.
    #[arg(long, env = "TANOVA_EMULATOR_REJECT_STATUS", default_value_t = 422)]
    reject_status: u16,
    /// Largest accepted file in bytes; bigger ones get 413.
    #[arg(long, env = "TANOVA_EMULATOR_MAX_UPLOAD_BYTES", default_value_t = Knobs::default().max_upload_bytes)]
    max_upload_bytes: u64,
    /// Offer POST /api/sync/upload-batch with up to this many files per request
    /// (advertised in the health answer); 0 means not offered.
    #[arg(long, env = "TANOVA_EMULATOR_BATCH_MAX_FILES", default_value_t = 0)]
    batch_max_files: usize,
    /// Advertise the batch endpoint but answer 404 there.
    #[arg(long, env = "TANOVA_EMULATOR_BATCH_NOT_FOUND")]
    batch_not_found: bool,
    /// Answer 403 with a proxy's HTML page to check-duplicates and uploads of
    /// this checksum (repeatable, or comma-separated).
    #[arg(
        long = "forbid-checksum",
        env = "TANOVA_EMULATOR_FORBID_CHECKSUMS",
        value_delimiter = ','
    )]
    forbid_checksums: Vec<String>,
    /// Start in an outage: drop (close connections), html502 (a proxy's 502
    /// page), html200 (a captive portal's sign-in page, status 200) or hang (no answer until the outage is cleared via /_emulator/knobs).
    #[arg(long, env = "TANOVA_EMULATOR_OUTAGE")]
    outage: Option<Outage>,
    /// Hold fully received uploads until the hold is cleared via /_emulator/knobs.
    #[arg(long, env = "TANOVA_EMULATOR_HOLD_UPLOADS")]
    hold_uploads: bool,
    /// Read upload bodies no faster than this many bytes a second; 0 means unlimited.
    #[arg(long, env = "TANOVA_EMULATOR_READ_BYTES_PER_SEC", default_value_t = 0)]
    read_bytes_per_sec: u64,
}

impl Args {
    fn knobs(self) -> Knobs {
        Knobs {
            api_key: self.api_key,
            upload_latency_ms: self.upload_latency_ms,
            check_latency_ms: self.check_latency_ms,
            capacity: self.capacity,
            retry_after_s: self.retry_after_s,
            error_rate: self.error_rate,
            drop_rate: self.drop_rate,
            check_error_rate: self.check_error_rate,
            reject_filename_contains: self.reject_filename_contains,
            reject_status: self.reject_status,
            max_upload_bytes: self.max_upload_bytes,
            batch_max_files: self.batch_max_files,
            batch_not_found: self.batch_not_found,
            forbid_checksums: self.forbid_checksums,
            outage: self.outage,
            hold_uploads: self.hold_uploads,
            read_bytes_per_sec: self.read_bytes_per_sec,
            ..Knobs::default()
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "refusing to listen on {}: not a loopback address (pass --allow-remote to override)",
            args.listen
        );
    }
    let listen = args.listen;
    let emulator = Emulator::start_on(listen, args.knobs())
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // Scripts read the port from this line, so it is the only thing on stdout.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", emulator.url())?;
    stdout.flush()?;
    tracing::info!(knobs = ?emulator.knobs(), "emulator ready");
    shutdown_signal().await?;
    tracing::info!("shutting down");
    drop(emulator);
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
