//! The command line: global flags, commands and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Gets every CV in a folder into your Tanova account, exactly once.
///
/// A drop-in for tanova_sync.py: it reads the same tanova-config.json
/// (folder_path, api_key, tanova_url, retry_count, retry_delay, max_workers),
/// the same TANOVA_FOLDER_PATH / TANOVA_API_KEY / TANOVA_URL variables, and
/// imports the script's ~/.tanova/sync_history.json on first start.
///
/// With no command it does what the script did: an initial sync, then it
/// watches the folder until Ctrl+C.
///
/// Exit status: 0 all files synced (or watch stopped cleanly); 1 some files failed (listed with reasons);
/// 2 usage or config error, or the API key was rejected; 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "tanova-sync", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags accepted before or after the command name.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Config file [default: ./tanova-config.json if present]
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "FILE",
        env = "TANOVA_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// Where the agent keeps its state [default: ~/.tanova] (env TANOVA_STATE_DIR)
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The folder of CVs, over folder_path and TANOVA_FOLDER_PATH
    #[arg(long, global = true, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// The most uploads at once: the ceiling of the adaptive limit, over max_workers [default: 64]
    #[arg(long, global = true, value_name = "N")]
    pub max_workers: Option<usize>,
    /// Pin the number of uploads at once (no adaptive limit), over concurrency
    #[arg(long, global = true, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Print one JSON summary object on stdout at the end (progress stays on stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail in the log: -v for each file, -vv for HTTP retries and debugging
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors; no progress
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync the folder once: upload every new CV, print a summary, exit
    Sync,
    /// Sync, then keep watching the folder and upload new CVs as they arrive, until Ctrl+C (the default command)
    Watch(WatchArgs),
    /// Try it without an account: sync sample CVs (or --folder DIR, only read) to a local emulator over real HTTP
    Demo(DemoArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct WatchArgs {
    /// Poll only (rescan every poll_interval), for SMB/NFS shares that deliver no file-system events
    #[arg(long)]
    pub poll: bool,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// How many sample CVs to generate
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub files: usize,
    /// Simulated processing time of one upload, in milliseconds
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub latency_ms: u64,
    /// Uploads the emulator accepts at once (429 beyond)
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub capacity: usize,
}
