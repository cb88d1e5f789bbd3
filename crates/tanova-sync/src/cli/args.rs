//! The command line: global flags, commands and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::SettingFlags;

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
/// 2 usage or config error, or (sync) the API key was rejected; 130 interrupted.
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
    /// The settings' flags (--folder, --state-dir, --listen, …), declared with
    /// their keys in the config module's table.
    #[command(flatten)]
    pub settings: SettingFlags,
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
    /// Sync, then keep watching the folder and upload new CVs as they arrive, until Ctrl+C (the default command)
    ///
    /// A rejected key or a service that does not answer pauses uploads; the
    /// agent never exits for them. It says so in the log and on /health, checks
    /// again with backoff, reads a new key from the config file or api_key_file
    /// within seconds (or at once on SIGHUP), and then delivers what queued.
    Watch(WatchArgs),
    /// Open the web console: finds the running agent's, or starts watching with the console on loopback; prints its URL and opens the browser
    ///
    /// The URL carries a token that changes each time the agent starts; the
    /// console keeps it in a cookie after the first visit. Stop it with Ctrl+C.
    Ui(UiArgs),
    /// Sync the folder once: upload every new CV, print a summary, exit
    Sync(SyncArgs),
    /// Try it without an account: sync sample CVs (or --folder DIR, only read) to a local emulator over real HTTP
    Demo(DemoArgs),
    /// Set up: ask for the folder and key, check the key, write tanova-config.json (mode 0600)
    Init(InitArgs),
    /// Check the config, the folder, the state, the service and the key, and file watching
    Doctor,
    /// Show what the state holds: synced CVs, the last upload, failures with their reasons
    Status,
    /// Try failed files again on the next run: one file, a folder's files, or --all
    Retry(RetryArgs),
    /// Export the synced history in the Python script's format, to switch back to it
    History(HistoryArgs),
    /// GDPR erasure: never upload a person's CVs again, whatever their bytes, on any agent
    ///
    /// Adds a suppression rule (one of --email, --path, --checksum, --name) with a
    /// reason and a date; a file it matches is never uploaded, in any mode, and is
    /// counted as `suppressed`. Rules live in the state and, with state_url, in Redis,
    /// so every agent honours them. The rule is recorded before this returns success.
    Forget(ForgetArgs),
    /// GDPR access and audit: what was sent about a person, and when
    ///
    /// Lists every upload and duplicate (time, path, checksum, candidate, job hint,
    /// agent host, outcome) from the state and, with state_url, every agent's in Redis.
    /// Filters combine; --json prints JSON; --export writes CSV.
    Audit(AuditArgs),
    /// Manage the state: `state push` copies this machine's synced set into the shared Redis ledger
    #[command(subcommand)]
    State(StateCommand),
    /// Run the agent as a service: `service install` writes (or --print prints) a systemd unit, a launchd plist on macOS
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Print a shell completion script to stdout, e.g. `tanova-sync completions bash > /etc/bash_completion.d/tanova-sync`
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout, e.g. `tanova-sync man > /usr/local/share/man/man1/tanova-sync.1`
    Man,
    /// Ask the running agent's /health (at --listen / TANOVA_LISTEN, or URL): exit 0 if healthy, 1 if not; for a container's HEALTHCHECK
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct HealthcheckArgs {
    /// The status server's /health URL, or HOST:PORT [default: http://LISTEN/health, LISTEN from --listen or TANOVA_LISTEN, else 127.0.0.1:9898]
    #[arg(value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Install a hardened service that runs `watch` with the current config file
    Install(ServiceInstallArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServiceInstallArgs {
    /// Print the unit (or plist) to stdout instead of installing it
    #[arg(long)]
    pub print: bool,
    /// Where to write it [default: /etc/systemd/system, or ~/Library/LaunchAgents on macOS]
    #[arg(long, value_name = "DIR", hide = true)]
    pub dir: Option<PathBuf>,
    /// The account the service runs as [default: SUDO_USER under sudo, else you]; root only
    /// when named (`--user root`). Its home holds the state (~NAME/.tanova) unless the config says otherwise
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The root-only file the systemd unit loads the key from [default: /etc/tanova-sync/api-key]
    #[arg(long, value_name = "FILE", hide = true)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy the local state's synced checksums into Redis (state_url), to move an
    /// existing installation to shared mode; what Redis already has is kept
    Push,
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

#[derive(Debug, Args, Clone)]
#[command(group = clap::ArgGroup::new("which").required(true))]
pub struct RetryArgs {
    /// A failed file, or a folder whose failed files are all retried
    #[arg(group = "which")]
    pub path: Option<PathBuf>,
    /// Retry every failed file
    #[arg(long, group = "which")]
    pub all: bool,
}

#[derive(Debug, Args, Clone)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub action: HistoryAction,
}

#[derive(Debug, Subcommand, Clone)]
pub enum HistoryAction {
    /// Write the synced checksums as the Python script's sync_history.json, to switch back to it
    Export {
        /// The file to write (the script reads ~/.tanova/sync_history.json)
        #[arg(long, value_name = "FILE")]
        legacy: PathBuf,
    },
}

#[derive(Debug, Args, Clone, Default)]
pub struct UiArgs {
    /// Print the URL only; do not open a browser
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(Debug, Args, Clone, Default)]
#[command(group = clap::ArgGroup::new("what").required(true))]
#[command(group = clap::ArgGroup::new("rule"))]
pub struct ForgetArgs {
    /// Files whose name carries this email (`jane_doe_jane@x.org.pdf`), case-insensitively
    #[arg(long, groups = ["what", "rule"], value_name = "ADDR")]
    pub email: Option<String>,
    /// A file, a folder or a glob (`Sales/**/*Doe*`), relative to the CV folder; a glob
    /// without `/` matches file names at any depth
    #[arg(long, groups = ["what", "rule"], value_name = "PATH|GLOB")]
    pub path: Option<String>,
    /// These bytes (their SHA-256, as `audit` shows it)
    #[arg(long, groups = ["what", "rule"], value_name = "HEX")]
    pub checksum: Option<String>,
    /// File names containing this text, case- and accent-insensitively (`_`, `-`, `.` read as spaces)
    #[arg(long, groups = ["what", "rule"], value_name = "TEXT")]
    pub name: Option<String>,
    /// Why: the request and its reference, kept with the rule
    #[arg(long, value_name = "TEXT", requires = "rule")]
    pub reason: Option<String>,
    /// The date of the request, YYYY-MM-DD [default: today]
    #[arg(long, value_name = "DATE", requires = "rule")]
    pub date: Option<String>,
    /// Also delete the path, name and email of the matching audit records and state entries now
    /// (checksums and candidate ids stay, so nothing is uploaded again)
    #[arg(long, requires = "rule")]
    pub purge: bool,
    /// List the rules
    #[arg(long, group = "what")]
    pub list: bool,
    /// Remove the rule with this id (see --list)
    #[arg(long, group = "what", value_name = "ID")]
    pub remove: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct AuditArgs {
    /// Records of files whose name carries this email, case-insensitively
    #[arg(long, value_name = "ADDR")]
    pub email: Option<String>,
    /// Records of files whose name contains this text, case- and accent-insensitively
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// Records under this file, folder or glob, relative to the CV folder
    #[arg(long, value_name = "PATH|GLOB")]
    pub path: Option<String>,
    /// From this day (YYYY-MM-DD) or instant (RFC 3339), inclusive
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Up to this day (YYYY-MM-DD, inclusive) or instant (RFC 3339, exclusive)
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Write the records as CSV to FILE (for a subject access request)
    #[arg(long, value_name = "FILE.csv")]
    pub export: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct SyncArgs {
    /// Show what would be uploaded; send nothing and record nothing (files are still read to hash them)
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct InitArgs {
    /// Replace an existing config file
    #[arg(long)]
    pub force: bool,
}
