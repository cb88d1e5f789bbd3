//! Configuration: `tanova-config.json`, `TANOVA_*` variables and flags, validated once into an immutable [`Config`].

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde_json::{Map, Value};

pub use crate::api::ApiKey;
use crate::error::Invalid;
use crate::filter::DEFAULT_MAX_FILE_SIZE;
use crate::settings::{
    PrivacySettings, WatchMode, WatchSettings, DEFAULT_POLL_EVERY, DEFAULT_RESCAN_EVERY,
    DEFAULT_SETTLE, MAX_RETAIN_DAYS,
};
use crate::state::redis::{RedisUrl, DEFAULT_LEASE, MAX_LEASE, MIN_LEASE};

/// The config file read from the current directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "tanova-config.json";
pub const DEFAULT_URL: &str = "https://tanova.ai";
pub const DEFAULT_RETRY_COUNT: u32 = 3;
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The adaptive limit's ceiling when `max_workers` is not given.
pub const DEFAULT_CEILING: usize = 64;
/// The longest wait for the next bytes of an answer; the service parses CVs for seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a one-shot `sync` waits for an unreachable shared ledger before it stops.
pub const DEFAULT_LEDGER_TIMEOUT: Duration = Duration::from_secs(60);
/// The most files per batch upload when the service offers batches (and `batch_size` is not given).
pub const DEFAULT_BATCH_SIZE: usize = 10;
/// The name of the systemd credential holding the key, in `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_NAME: &str = "tanova-api-key";
/// Keys look like this; anything else is probably a paste error.
pub const API_KEY_PREFIX: &str = "tanova_sk_";

/// Every setting, declared once: its key (also the field of [`Raw`]), its
/// type in the file, the `TANOVA_*` variable that overrides it, and the flag
/// that overrides both (name, value name, help). From this come the known keys
/// (others are warned about), the raw values, the reading of the file, of the
/// variables and of the flags ([`SettingFlags`], which the CLI flattens into
/// its global flags); [`validate`] then turns the raw values into [`Config`],
/// one section at a time, with the defaults named below. README's "Config
/// keys" table documents each key (a test keeps the two in step).
macro_rules! settings {
    ($(
        $key:ident: $kind:ident $(= $env:literal)?
        $(; flag $flag:literal $value:ident: $help:expr)?,
    )*) => {
        /// Every key the config file may hold.
        const KNOWN_KEYS: &[&str] = &[$(stringify!($key)),*];

        /// Each setting a `TANOVA_*` variable overrides, with its variable.
        const ENV_VARS: &[(&str, &str)] = &[$($((stringify!($key), $env),)?)*];

        /// Values read from every source, not yet validated.
        #[derive(Default)]
        struct Raw {
            $($key: Option<Sourced<settings!(@type $kind)>>,)*
        }

        /// The settings a flag overrides, as clap reads them: the CLI
        /// flattens this into its global flags.
        #[derive(Clone, Debug, Default, clap::Args)]
        pub struct SettingFlags {
            $($(
                #[arg(
                    long = $flag,
                    global = true,
                    value_name = stringify!($value),
                    help = flag_help($help, stringify!($key)),
                )]
                pub $key: Option<settings!(@type $kind)>,
            )?)*
        }

        /// Read every known key of the file, typed, into `raw`.
        fn read_fields(file: &FileFields<'_>, raw: &mut Raw) -> Result<(), ConfigError> {
            $(raw.$key = file.$kind(stringify!($key))?;)*
            Ok(())
        }

        /// The settings a `TANOVA_*` variable overrides, each with its variable.
        fn read_env_fields(
            env: &dyn Fn(&str) -> Option<String>,
            raw: &mut Raw,
        ) -> Result<(), ConfigError> {
            $($(
                if let Some(v) = env_value(env, $env) {
                    raw.$key = Some(EnvValue::parse(v, stringify!($key))?);
                }
            )?)*
            Ok(())
        }

        /// The flags given, over the file and the variables.
        fn read_flags(flags: &SettingFlags, raw: &mut Raw) {
            $($(
                if let Some(value) = &flags.$key {
                    raw.$key = Some(Sourced {
                        value: value.clone(),
                        origin: concat!("flag --", $flag).to_string(),
                    });
                }
            )?)*
        }
    };
    (@type string) => { String };
    (@type integer) => { u64 };
    (@type number) => { f64 };
    (@type boolean) => { bool };
    (@type strings) => { Vec<String> };
}

settings! {
    folder_path: string = "TANOVA_FOLDER_PATH";
        flag "folder" DIR: "The folder of CVs, over folder_path",
    // The key's variables take precedence over each other: see `read_env`.
    api_key: string,
    api_key_file: string,
    tanova_url: string = "TANOVA_URL",
    retry_count: integer,
    retry_delay: number,
    max_attempts: integer,
    max_workers: integer = "TANOVA_MAX_WORKERS";
        flag "max-workers" N: format!(
            "The most uploads at once: the ceiling of the adaptive limit, over max_workers \
             [default: {DEFAULT_CEILING}]"
        ),
    concurrency: integer;
        flag "concurrency" N: "Pin the number of uploads at once (no adaptive limit), over concurrency",
    max_file_size_mb: number,
    state_dir: string = "TANOVA_STATE_DIR";
        flag "state-dir" DIR: "Where the agent keeps its state [default: ~/.tanova]",
    state_url: string = "TANOVA_STATE_URL";
        flag "state-url" URL: "Share the synced set with other agents in Redis: \
            redis[s]://[user:password@]host:port/db",
    redis_ca_file: string,
    redis_client_cert: string,
    redis_client_key: string,
    lease_ms: integer,
    ledger_timeout: number,
    inflight_grace: number,
    allow_insecure_http: boolean,
    ca_file: string,
    follow_symlinks: boolean,
    request_timeout: number,
    max_requests_per_minute: integer = "TANOVA_MAX_REQUESTS_PER_MINUTE",
    batch_size: integer,
    listen: string = "TANOVA_LISTEN";
        flag "listen" ADDR: "Serve /health, /metrics and a status page at ADDR while syncing or \
            watching, like 127.0.0.1:9898 (port 0 picks one)",
    listen_public: boolean,
    listen_hosts: strings,
    log_format: string = "TANOVA_LOG_FORMAT";
        flag "log-format" FORMAT: "How log lines are written: text, or json (one object per line, \
            for log shippers) [default: text]",
    log_file: string;
        flag "log-file" FILE: "Write the log to FILE instead of stderr, rotated daily \
            (FILE's name gets the date)",
    log_target: string = "TANOVA_LOG_TARGET";
        flag "log-target" TARGET: "Where the log goes without a log file: stderr, stdout, journald, \
            syslog (/dev/log), or a syslog collector udp://HOST:PORT, tcp://HOST:PORT [default: stderr]",
    legacy_history: string;
        flag "legacy-history" FILE: "Also import this history file of tanova_sync.py (a JSON array \
            of checksums), over legacy_history; ~/.tanova/sync_history.json is always looked for",
    watch_mode: string,
    settle_ms: integer,
    rescan_interval: number,
    poll_interval: number,
    privacy_redact_logs: boolean = "TANOVA_PRIVACY_REDACT_LOGS",
    privacy_retain_days: integer = "TANOVA_PRIVACY_RETAIN_DAYS",
}

/// A flag's help, naming the variable that also sets it, if any.
fn flag_help(help: impl fmt::Display, key: &str) -> String {
    match ENV_VARS.iter().find(|(k, _)| *k == key) {
        Some((_, var)) => format!("{help} (env {var})"),
        None => help.to_string(),
    }
}

/// Fields whose value may be, or may hold, a secret: the key itself, URLs
/// that can carry a password. Errors about them describe the value's type or
/// shape, never the value.
pub const SECRET_FIELDS: &[&str] = &["api_key", "state_url", "tanova_url"];

/// What kind of JSON value this is, for errors that must not repeat it.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The validated settings of one run. Nothing downstream re-reads files or the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub folder: PathBuf,
    pub api_key: ApiKey,
    pub url: Url,
    /// How many times a transient failure is retried after the first attempt.
    pub retry_count: u32,
    /// The base of the exponential backoff.
    pub retry_delay: Duration,
    /// Runs (or rescans) on which a failing file is tried before it waits for `tanova-sync retry`.
    pub max_attempts: u32,
    pub concurrency: Concurrency,
    pub max_file_size: u64,
    /// Roots trusted besides the system's (`ca_file`: a corporate CA).
    pub extra_roots: Vec<reqwest::Certificate>,
    /// `sync --dry-run`: report what would be uploaded, send nothing.
    pub dry_run: bool,
    /// Follow symbolic links (they may lead outside the folder).
    pub follow_symlinks: bool,
    pub state_dir: PathBuf,
    /// The shared ledger (several agents, one folder); `None`: this machine's state only.
    pub state_url: Option<RedisUrl>,
    /// How long a claim in the shared ledger lives unrenewed.
    pub lease: Duration,
    pub request_timeout: Duration,
    /// After a crash, how long the bytes of an upload that was in flight wait
    /// before the server is asked about them again (at most `request_timeout`).
    pub inflight_grace: Duration,
    /// How long a one-shot `sync` waits for an unreachable shared ledger before it stops.
    pub ledger_timeout: Duration,
    /// Every API request waits for a token of this rate; `None`: no limit.
    pub max_requests_per_minute: Option<u32>,
    /// The most files per upload request when the service offers batches; 1: never batch.
    pub batch_size: usize,
    pub watch: WatchSettings,
    /// Serve `/health`, `/metrics` and the status page here while syncing or watching.
    pub listen: Option<std::net::SocketAddr>,
    /// Host names the status server also answers to (`listen_hosts`), besides loopback and `listen`.
    pub listen_hosts: Vec<String>,
    /// The log's format and destination.
    pub log: crate::logging::LogSettings,
    /// The script's history files to import, each once per content: the
    /// state directory's, `~/.tanova`'s of the user it runs as, and `legacy_history`.
    pub legacy_histories: Vec<PathBuf>,
    /// Personal data in logs and in the state.
    pub privacy: PrivacySettings,
}

impl Config {
    /// The defaults for syncing `folder` to `url` with `key`, keeping the state
    /// in `state_dir`: what `demo` and in-process tests start from.
    pub fn for_folder(folder: PathBuf, key: ApiKey, url: Url, state_dir: PathBuf) -> Config {
        Config {
            folder,
            api_key: key,
            url,
            retry_count: DEFAULT_RETRY_COUNT,
            retry_delay: DEFAULT_RETRY_DELAY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            concurrency: Concurrency::Adaptive {
                ceiling: DEFAULT_CEILING,
            },
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            extra_roots: Vec::new(),
            dry_run: false,
            follow_symlinks: false,
            state_dir,
            state_url: None,
            lease: DEFAULT_LEASE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            inflight_grace: DEFAULT_REQUEST_TIMEOUT,
            ledger_timeout: DEFAULT_LEDGER_TIMEOUT,
            max_requests_per_minute: None,
            batch_size: DEFAULT_BATCH_SIZE,
            watch: WatchSettings::default(),
            listen: None,
            listen_hosts: Vec::new(),
            log: crate::logging::LogSettings::default(),
            legacy_histories: Vec::new(),
            privacy: PrivacySettings::default(),
        }
    }
}

/// How many uploads run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Found by the AIMD controller, between 1 and the ceiling (`max_workers`, else 64).
    Adaptive { ceiling: usize },
    /// Pinned by `concurrency: N`.
    Fixed(usize),
}

impl Concurrency {
    /// The most uploads that can ever be in flight.
    pub fn ceiling(&self) -> usize {
        match *self {
            Concurrency::Adaptive { ceiling } => ceiling,
            Concurrency::Fixed(n) => n,
        }
    }
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Concurrency::Adaptive { ceiling } => {
                write!(f, "adaptive concurrency, up to {ceiling} uploads at once")
            }
            Concurrency::Fixed(n) => write!(f, "{n} uploads at once"),
        }
    }
}

/// A configuration problem: where it came from, which field, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {field}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(origin: impl Into<String>, field: &str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.into(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// What the command line gives: the config file to read, the settings'
/// flags (they win over the environment and the file), and the flags that
/// are not settings.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub flags: SettingFlags,
    /// `--dry-run`: send nothing.
    pub dry_run: bool,
    /// `--poll`: rescans only, no file-system events (sets `watch_mode`).
    pub poll: bool,
}

/// One raw value with the place it came from, so errors can name it.
struct Sourced<T> {
    value: T,
    origin: String,
}

/// The result of loading: the config and warnings worth showing the user.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Load the config the way the Python script did: the file, then `TANOVA_*`
/// variables over it, then flags over both. `env` is passed in so tests can
/// use their own.
pub fn load(
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let raw = gather(overrides, env, &mut warnings)?;
    let mut config = validate(raw, env, &mut warnings)?;
    config.dry_run = overrides.dry_run;
    Ok(Loaded { config, warnings })
}

/// Only the state directory, for commands that look at the state without
/// syncing (`status`, `retry`): they need no folder and no key.
pub fn state_dir(
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, ConfigError> {
    let raw = gather(overrides, env, &mut Vec::new())?;
    Ok(raw
        .state_dir
        .map_or_else(|| default_state_dir(env), |s| PathBuf::from(s.value)))
}

/// The raw values of every source, later ones over earlier ones.
fn gather(
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Raw, ConfigError> {
    let mut raw = Raw::default();
    let file = match &overrides.config_file {
        Some(path) => Some(path.clone()),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            default.is_file().then_some(default)
        }
    };
    if let Some(path) = &file {
        read_file(path, &mut raw, warnings)?;
    }
    read_env(env, &mut raw)?;
    apply_overrides(overrides, &mut raw);
    Ok(raw)
}

fn read_file(path: &Path, raw: &mut Raw, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&origin, "file", format!("cannot read: {e}")))?;
    parse_text(&text, &origin, raw, warnings)?;
    if raw.api_key.is_some() {
        if let Some(mode) = readable_by_others(path) {
            warnings.push(format!(
                "{origin} holds the API key and is readable by other users (mode {mode:o}); \
                 run `chmod 600 {origin}`, or move the key to api_key_file or TANOVA_API_KEY"
            ));
        }
    }
    Ok(())
}

/// Parse and type-check the text of a config file as [`load`] does, touching
/// neither the disk nor the environment. Returns the warnings. The fuzz target
/// (`fuzz/fuzz_targets/config.rs`) drives this: no input may make it panic.
pub fn check_text(text: &str) -> Result<Vec<String>, ConfigError> {
    let mut raw = Raw::default();
    let mut warnings = Vec::new();
    parse_text(text, "input", &mut raw, &mut warnings)?;
    if let Some(url) = raw.tanova_url {
        parse_url(&url.value, raw.allow_insecure_http.is_some_and(|s| s.value))
            .map_err(|m| ConfigError::new("input", "tanova_url", m))?;
    }
    if let Some(url) = raw.state_url.filter(|s| !s.value.trim().is_empty()) {
        RedisUrl::parse(&url.value).map_err(|m| ConfigError::new("input", "state_url", m))?;
    }
    Ok(warnings)
}

fn parse_text(
    text: &str,
    origin: &str,
    raw: &mut Raw,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let origin = origin.to_string();
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::new(&origin, "file", format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ConfigError::new(
            &origin,
            "file",
            "expected a JSON object like {\"folder_path\": …, \"api_key\": …}",
        ));
    };
    for key in map.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            // A key pasted as a field name is shown only as far as a key may be.
            let shown = if key.starts_with(API_KEY_PREFIX) {
                ApiKey::new(key.clone()).redacted()
            } else {
                key.clone()
            };
            warnings.push(format!("{origin}: unknown key `{shown}` is ignored"));
        }
    }
    if map.contains_key("api_key") && map.contains_key("api_key_file") {
        return Err(ConfigError::new(
            &origin,
            "api_key_file",
            "set either api_key or api_key_file, not both",
        ));
    }
    read_fields(&FileFields { map: &map, origin }, raw)
}

/// Typed access to the config file's fields, with errors that name them.
struct FileFields<'a> {
    map: &'a Map<String, Value>,
    origin: String,
}

impl FileFields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn sourced<T>(&self, value: T) -> Option<Sourced<T>> {
        Some(Sourced {
            value,
            origin: self.origin.clone(),
        })
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> ConfigError {
        // A secret field's value is never repeated, nor a list or object
        // anywhere: a key pasted into the wrong place would be printed whole.
        let shown = if SECRET_FIELDS.contains(&key) || got.is_array() || got.is_object() {
            type_name(got).to_string()
        } else {
            got.to_string()
        };
        ConfigError::new(
            &self.origin,
            key,
            format!("expected {expected}, got {shown}"),
        )
    }

    fn string(&self, key: &str) -> Result<Option<Sourced<String>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(self.sourced(s.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn integer(&self, key: &str) -> Result<Option<Sourced<u64>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => Ok(self.sourced(n)),
                None => Err(self.wrong(key, "a whole number ≥ 0", v)),
            },
        }
    }

    fn number(&self, key: &str) -> Result<Option<Sourced<f64>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) if n >= 0.0 => Ok(self.sourced(n)),
                _ => Err(self.wrong(key, "a number ≥ 0", v)),
            },
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Sourced<Vec<String>>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong(key, "a list of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| self.sourced(v)),
            Some(other) => Err(self.wrong(key, "a list of strings", other)),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<Sourced<bool>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(self.sourced(*b)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }
}

/// A variable's value, named after the variable, when it is set and not empty.
fn env_value(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<Sourced<String>> {
    env(name).filter(|v| !v.is_empty()).map(|value| Sourced {
        value,
        origin: format!("environment variable {name}"),
    })
}

/// A setting's value as a variable gives it: text, read as the setting's type.
trait EnvValue: Sized {
    fn parse(v: Sourced<String>, field: &str) -> Result<Sourced<Self>, ConfigError>;
}

impl EnvValue for String {
    fn parse(v: Sourced<String>, _field: &str) -> Result<Sourced<Self>, ConfigError> {
        Ok(v)
    }
}

impl EnvValue for bool {
    fn parse(v: Sourced<String>, field: &str) -> Result<Sourced<Self>, ConfigError> {
        let value = match v.value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                return Err(ConfigError::new(
                    &v.origin,
                    field,
                    format!("expected true or false, got {:?}", v.value),
                ))
            }
        };
        Ok(Sourced {
            value,
            origin: v.origin,
        })
    }
}

impl EnvValue for u64 {
    fn parse(v: Sourced<String>, field: &str) -> Result<Sourced<Self>, ConfigError> {
        let value = v.value.trim().parse::<u64>().map_err(|_| {
            ConfigError::new(
                &v.origin,
                field,
                format!("expected a whole number, got {:?}", v.value),
            )
        })?;
        Ok(Sourced {
            value,
            origin: v.origin,
        })
    }
}

fn read_env(env: &dyn Fn(&str) -> Option<String>, raw: &mut Raw) -> Result<(), ConfigError> {
    read_env_fields(env, raw)?;
    // A systemd credential (`LoadCredential=tanova-api-key:…`, as `service
    // install` writes it) beats the config file's key; the TANOVA_API_KEY*
    // variables below beat it.
    if let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        let path = Path::new(&dir).join(CREDENTIAL_NAME);
        if path.is_file() {
            raw.api_key = None;
            raw.api_key_file = Some(Sourced {
                value: path.display().to_string(),
                origin: format!("systemd credential {CREDENTIAL_NAME}"),
            });
        }
    }
    // The environment's key beats the file's, whichever form either takes.
    if let Some(v) = env_value(env, "TANOVA_API_KEY_FILE") {
        raw.api_key = None;
        raw.api_key_file = Some(v);
    }
    if let Some(v) = env_value(env, "TANOVA_API_KEY") {
        raw.api_key = Some(v);
        raw.api_key_file = None;
    }
    Ok(())
}

fn apply_overrides(overrides: &Overrides, raw: &mut Raw) {
    read_flags(&overrides.flags, raw);
    if overrides.poll {
        raw.watch_mode = Some(Sourced {
            value: "poll".to_string(),
            origin: "flag --poll".to_string(),
        });
    }
}

/// Turn the raw values into the [`Config`], one section at a time; each
/// takes the fields it owns from `raw`.
fn validate(
    mut raw: Raw,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let folder = folder(&mut raw)?;
    let api_key = api_key(&mut raw, warnings)?;
    let transport = transport(&mut raw)?;
    let delivery = delivery(&mut raw)?;
    let ledger = ledger(&mut raw, transport.request_timeout)?;
    let state_dir = match raw.state_dir.take() {
        Some(s) => PathBuf::from(s.value),
        None => default_state_dir(env),
    };
    let (listen, listen_hosts) = listening(&mut raw)?;
    Ok(Config {
        folder,
        api_key,
        url: transport.url,
        retry_count: delivery.retry_count,
        retry_delay: delivery.retry_delay,
        max_attempts: delivery.max_attempts,
        concurrency: delivery.concurrency,
        max_file_size: delivery.max_file_size,
        follow_symlinks: raw.follow_symlinks.take().is_some_and(|s| s.value),
        dry_run: false,
        extra_roots: transport.extra_roots,
        legacy_histories: legacy_histories(&mut raw, &state_dir, env)?,
        state_dir,
        state_url: ledger.state_url,
        lease: ledger.lease,
        request_timeout: transport.request_timeout,
        inflight_grace: ledger.inflight_grace,
        ledger_timeout: ledger.timeout,
        max_requests_per_minute: delivery.max_requests_per_minute,
        batch_size: delivery.batch_size,
        watch: watch_settings(&mut raw)?,
        listen,
        listen_hosts,
        log: log_settings(&mut raw)?,
        privacy: privacy(&mut raw)?,
    })
}

const HINT: &str = "set it in tanova-config.json";

/// `folder_path`: an existing folder, made absolute so the paths recorded in
/// the state do not depend on the working directory.
fn folder(raw: &mut Raw) -> Result<PathBuf, ConfigError> {
    let folder = raw.folder_path.take().ok_or_else(|| {
        ConfigError::new(
            "config",
            "folder_path",
            format!("missing: {HINT}, TANOVA_FOLDER_PATH or --folder"),
        )
    })?;
    let path = std::path::absolute(&folder.value).unwrap_or_else(|_| PathBuf::from(&folder.value));
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(ConfigError::new(
            folder.origin,
            "folder_path",
            format!("{} is not a directory", path.display()),
        )),
        Err(e) => Err(ConfigError::new(
            folder.origin,
            "folder_path",
            format!("{}: {e}", path.display()),
        )),
    }
}

/// `api_key` or `api_key_file`: present, not empty; a warning when it does not look like a key.
fn api_key(raw: &mut Raw, warnings: &mut Vec<String>) -> Result<ApiKey, ConfigError> {
    let key = match (raw.api_key.take(), raw.api_key_file.take()) {
        (Some(key), _) => key,
        (None, Some(file)) => read_key_file(file)?,
        (None, None) => {
            return Err(ConfigError::new(
                "config",
                "api_key",
                format!("missing: {HINT} (or api_key_file), TANOVA_API_KEY or TANOVA_API_KEY_FILE"),
            ))
        }
    };
    let value = key.value.trim().to_string();
    if value.is_empty() {
        return Err(ConfigError::new(key.origin, "api_key", "is empty"));
    }
    if !value.starts_with(API_KEY_PREFIX) {
        warnings.push(format!(
            "{}: api_key does not start with `{API_KEY_PREFIX}`; is it the right key?",
            key.origin
        ));
    }
    Ok(ApiKey::new(value))
}

/// How the service is reached.
struct Transport {
    url: Url,
    request_timeout: Duration,
    extra_roots: Vec<reqwest::Certificate>,
}

fn transport(raw: &mut Raw) -> Result<Transport, ConfigError> {
    let allow_insecure = raw.allow_insecure_http.take().is_some_and(|s| s.value);
    let url = match raw.tanova_url.take() {
        Some(s) => parse_url(&s.value, allow_insecure)
            .map_err(|m| ConfigError::new(s.origin, "tanova_url", m))?,
        None => Url::parse(DEFAULT_URL).expect("default URL is valid"),
    };
    let request_timeout = match raw.request_timeout.take() {
        None => DEFAULT_REQUEST_TIMEOUT,
        Some(s) if s.value > 0.0 => Duration::from_secs_f64(s.value.min(86_400.0)),
        Some(s) => {
            return Err(ConfigError::new(
                s.origin,
                "request_timeout",
                "must be more than 0 seconds",
            ))
        }
    };
    let extra_roots = raw
        .ca_file
        .take()
        .map(read_ca_file)
        .transpose()?
        .unwrap_or_default();
    Ok(Transport {
        url,
        request_timeout,
        extra_roots,
    })
}

/// How files are delivered: retries, concurrency, sizes, rates, batches.
struct Delivery {
    retry_count: u32,
    retry_delay: Duration,
    max_attempts: u32,
    concurrency: Concurrency,
    max_file_size: u64,
    max_requests_per_minute: Option<u32>,
    batch_size: usize,
}

fn delivery(raw: &mut Raw) -> Result<Delivery, ConfigError> {
    let retry_count = raw
        .retry_count
        .take()
        .map_or(DEFAULT_RETRY_COUNT, |s| s.value.min(100) as u32);
    let retry_delay = raw.retry_delay.take().map_or(DEFAULT_RETRY_DELAY, |s| {
        Duration::from_secs_f64(s.value.min(3600.0))
    });
    let max_attempts = match raw.max_attempts.take() {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(s) if s.value >= 1 => s.value.min(u32::MAX as u64) as u32,
        Some(s) => {
            return Err(ConfigError::new(
                s.origin,
                "max_attempts",
                "must be at least 1",
            ))
        }
    };
    let max_file_size = match raw.max_file_size_mb.take() {
        None => DEFAULT_MAX_FILE_SIZE,
        Some(s) if s.value > 0.0 => (s.value * 1024.0 * 1024.0) as u64,
        Some(s) => {
            return Err(ConfigError::new(
                s.origin,
                "max_file_size_mb",
                "must be more than 0",
            ))
        }
    };
    Ok(Delivery {
        retry_count,
        retry_delay,
        max_attempts,
        concurrency: concurrency(raw)?,
        max_file_size,
        max_requests_per_minute: whole_in(
            raw.max_requests_per_minute.take(),
            "max_requests_per_minute",
            1..=1_000_000,
            "(leave it out for no limit)",
        )?
        .map(|n| n as u32),
        batch_size: whole_in(
            raw.batch_size.take(),
            "batch_size",
            1..=1000,
            "(1: no batch uploads)",
        )?
        .map_or(DEFAULT_BATCH_SIZE, |n| n as usize),
    })
}

/// `concurrency` pins the uploads at once; else `max_workers` caps the adaptive limit.
fn concurrency(raw: &mut Raw) -> Result<Concurrency, ConfigError> {
    let ceiling = whole_in(raw.max_workers.take(), "max_workers", 1..=1024, "")?;
    let pinned = whole_in(raw.concurrency.take(), "concurrency", 1..=1024, "")?;
    Ok(match pinned {
        Some(n) => Concurrency::Fixed(n as usize),
        None => Concurrency::Adaptive {
            ceiling: ceiling.map_or(DEFAULT_CEILING, |n| n as usize),
        },
    })
}

/// A whole number within `range`, if given; `note` follows the range in the error.
fn whole_in(
    raw: Option<Sourced<u64>>,
    field: &str,
    range: std::ops::RangeInclusive<u64>,
    note: &str,
) -> Result<Option<u64>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(s) if range.contains(&s.value) => Ok(Some(s.value)),
        Some(s) => {
            let note = if note.is_empty() {
                String::new()
            } else {
                format!(" {note}")
            };
            Err(ConfigError::new(
                s.origin,
                field,
                format!(
                    "expected {} to {}{note}, got {}",
                    range.start(),
                    range.end(),
                    s.value
                ),
            ))
        }
    }
}

/// The shared ledger and the waits around uploads in flight.
struct LedgerSettings {
    state_url: Option<RedisUrl>,
    lease: Duration,
    inflight_grace: Duration,
    timeout: Duration,
}

fn ledger(raw: &mut Raw, request_timeout: Duration) -> Result<LedgerSettings, ConfigError> {
    let state_url = match raw.state_url.take() {
        Some(s) if !s.value.trim().is_empty() => Some(
            RedisUrl::parse(&s.value)
                .map_err(|m| ConfigError::new(&s.origin, "state_url", m))
                .and_then(|url| {
                    redis_tls(
                        url,
                        raw.redis_ca_file.take(),
                        raw.redis_client_cert.take(),
                        raw.redis_client_key.take(),
                    )
                })?,
        ),
        _ => None,
    };
    let lease = match raw.lease_ms.take() {
        None => DEFAULT_LEASE,
        Some(s) => {
            let ms = Duration::from_millis(s.value);
            if !(MIN_LEASE..=MAX_LEASE).contains(&ms) {
                return Err(ConfigError::new(
                    s.origin,
                    "lease_ms",
                    format!(
                        "expected {} to {} milliseconds, got {}",
                        MIN_LEASE.as_millis(),
                        MAX_LEASE.as_millis(),
                        s.value
                    ),
                ));
            }
            ms
        }
    };
    let inflight_grace = match raw.inflight_grace.take() {
        None => request_timeout,
        Some(s) if s.value >= 0.0 => Duration::from_secs_f64(s.value).min(request_timeout),
        Some(s) => {
            return Err(ConfigError::new(
                s.origin,
                "inflight_grace",
                "must be 0 seconds or more",
            ))
        }
    };
    Ok(LedgerSettings {
        state_url,
        lease,
        inflight_grace,
        timeout: positive_seconds(
            raw.ledger_timeout.take(),
            "ledger_timeout",
            DEFAULT_LEDGER_TIMEOUT,
        )?,
    })
}

fn watch_settings(raw: &mut Raw) -> Result<WatchSettings, ConfigError> {
    Ok(WatchSettings {
        mode: match raw.watch_mode.take() {
            None => WatchMode::Events,
            Some(s) => match s.value.as_str() {
                "events" => WatchMode::Events,
                "poll" => WatchMode::Poll,
                other => {
                    return Err(ConfigError::new(
                        s.origin,
                        "watch_mode",
                        format!("expected \"events\" or \"poll\", got {other:?}"),
                    ))
                }
            },
        },
        settle: raw.settle_ms.take().map_or(DEFAULT_SETTLE, |s| {
            Duration::from_millis(s.value.min(60_000))
        }),
        rescan_every: positive_seconds(
            raw.rescan_interval.take(),
            "rescan_interval",
            DEFAULT_RESCAN_EVERY,
        )?,
        poll_every: positive_seconds(
            raw.poll_interval.take(),
            "poll_interval",
            DEFAULT_POLL_EVERY,
        )?,
    })
}

/// The status server's address and the extra Host names it answers to.
fn listening(raw: &mut Raw) -> Result<(Option<std::net::SocketAddr>, Vec<String>), ConfigError> {
    let public = raw.listen_public.take().is_some_and(|s| s.value);
    let listen = match raw.listen.take() {
        Some(s) if !s.value.trim().is_empty() => Some(
            crate::serve::parse_listen(&s.value, public)
                .map_err(|m| ConfigError::new(s.origin, "listen", m))?,
        ),
        _ => None,
    };
    let Some(hosts) = raw.listen_hosts.take() else {
        return Ok((listen, Vec::new()));
    };
    for host in &hosts.value {
        let bad = host.trim().is_empty()
            || host.contains(|c: char| c.is_whitespace() || "/@?#".contains(c));
        if bad {
            return Err(ConfigError::new(
                hosts.origin,
                "listen_hosts",
                format!("{host:?} is not a host name (expected names like \"files.agency.local\")"),
            ));
        }
    }
    Ok((listen, hosts.value))
}

/// Wherever the script kept its history: the state directory (the agent's
/// default is the script's ~/.tanova), the home of the user this runs as
/// (which differs with --state-dir or a service), and the file named.
fn legacy_histories(
    raw: &mut Raw,
    state_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<PathBuf>, ConfigError> {
    let mut histories = vec![
        state_dir.join(crate::state::legacy::HISTORY_FILE),
        default_state_dir(env).join(crate::state::legacy::HISTORY_FILE),
    ];
    if let Some(s) = raw
        .legacy_history
        .take()
        .filter(|s| !s.value.trim().is_empty())
    {
        let path = std::path::absolute(&s.value).unwrap_or_else(|_| PathBuf::from(&s.value));
        if !path.is_file() {
            return Err(ConfigError::new(
                s.origin,
                "legacy_history",
                format!("{}: no such file", path.display()),
            ));
        }
        histories.push(path);
    }
    histories.dedup();
    Ok(histories)
}

fn log_settings(raw: &mut Raw) -> Result<crate::logging::LogSettings, ConfigError> {
    Ok(crate::logging::LogSettings {
        format: match raw.log_format.take() {
            None => crate::logging::LogFormat::Text,
            Some(s) => crate::logging::LogFormat::parse(&s.value)
                .map_err(|m| ConfigError::new(s.origin, "log_format", m))?,
        },
        file: raw
            .log_file
            .take()
            .filter(|s| !s.value.trim().is_empty())
            .map(|s| PathBuf::from(s.value)),
        target: match raw.log_target.take() {
            None => crate::logging::LogTarget::Stderr,
            Some(s) => crate::logging::LogTarget::parse(&s.value)
                .map_err(|m| ConfigError::new(s.origin, "log_target", m))?,
        },
    })
}

/// `privacy_redact_logs`, and `privacy_retain_days`: at least one day.
fn privacy(raw: &mut Raw) -> Result<PrivacySettings, ConfigError> {
    let retain_days = match raw.privacy_retain_days.take() {
        None => None,
        Some(s) if (1..=MAX_RETAIN_DAYS).contains(&s.value) => Some(s.value as u32),
        Some(s) => {
            return Err(ConfigError::new(
                s.origin,
                "privacy_retain_days",
                format!(
                    "{} days: expected 1 to {MAX_RETAIN_DAYS} (leave it out to keep records)",
                    s.value
                ),
            ))
        }
    };
    Ok(PrivacySettings {
        redact_logs: raw.privacy_redact_logs.take().is_some_and(|s| s.value),
        retain_days,
    })
}

/// A duration in seconds that must be more than zero (a zero interval would spin).
fn positive_seconds(
    raw: Option<Sourced<f64>>,
    field: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match raw {
        None => Ok(default),
        Some(s) if s.value >= 0.01 => Ok(Duration::from_secs_f64(s.value.min(86_400.0))),
        Some(s) => Err(ConfigError::new(
            s.origin,
            field,
            "must be at least 0.01 seconds",
        )),
    }
}

/// Attach the TLS files to a `rediss://` URL, read now so that a missing or
/// wrong file is a config error naming it, not a failed connection later.
fn redis_tls(
    url: RedisUrl,
    ca: Option<Sourced<String>>,
    cert: Option<Sourced<String>>,
    key: Option<Sourced<String>>,
) -> Result<RedisUrl, ConfigError> {
    let pem = |file: &Sourced<String>, field: &str, what: &str| {
        let err = |m: String| ConfigError::new(&file.origin, field, format!("{}: {m}", file.value));
        let bytes = std::fs::read(&file.value).map_err(|e| err(e.to_string()))?;
        if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            return Err(err(format!("not a PEM file (expected {what})")));
        }
        Ok(bytes)
    };
    let client = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((
            pem(&cert, "redis_client_cert", "a certificate")?,
            pem(&key, "redis_client_key", "a private key")?,
        )),
        (Some(s), None) | (None, Some(s)) => {
            return Err(ConfigError::new(
                s.origin,
                "redis_client_cert",
                "redis_client_cert and redis_client_key go together: set both or neither",
            ))
        }
    };
    let origin = ca.as_ref().map(|s| s.origin.clone());
    let ca = ca
        .map(|s| pem(&s, "redis_ca_file", "a CA certificate"))
        .transpose()?;
    if ca.is_none() && client.is_none() {
        return Ok(url);
    }
    url.with_tls(crate::state::redis::RedisTls { ca, client })
        .map_err(|m| {
            ConfigError::new(
                origin.unwrap_or_else(|| "config".into()),
                "redis_ca_file",
                m,
            )
        })
}

/// The certificates of a PEM bundle, checked now so a bad file is a config error, not a failed upload.
fn read_ca_file(file: Sourced<String>) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let err = |m: String| ConfigError::new(&file.origin, "ca_file", format!("{}: {m}", file.value));
    let pem = std::fs::read(&file.value).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| err(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate".to_string()));
    }
    Ok(certs)
}

/// The key kept in a file of its own (first line, trimmed), so the config file holds no secret.
fn read_key_file(file: Sourced<String>) -> Result<Sourced<String>, ConfigError> {
    let text = std::fs::read_to_string(&file.value).map_err(|e| {
        ConfigError::new(&file.origin, "api_key_file", format!("{}: {e}", file.value))
    })?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    Ok(Sourced {
        value: key,
        origin: format!("{} ({})", file.origin, file.value),
    })
}

/// The file's permission bits when group or others may read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// `~/.tanova`, where the Python script kept its history.
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let home = env("HOME")
        .or_else(|| env("USERPROFILE"))
        .unwrap_or_else(|| ".".to_string());
    PathBuf::from(home).join(".tanova")
}

/// Parse the service URL, refusing to send the key in the clear to another host.
pub fn parse_url(text: &str, allow_insecure_http: bool) -> Result<Url, Invalid> {
    url_of(text, allow_insecure_http).map_err(Invalid)
}

fn url_of(text: &str, allow_insecure_http: bool) -> Result<Url, String> {
    // The text is never repeated: it may be a key pasted into the wrong
    // field, or hold a password. The parsed host and scheme are safe to show.
    let url = Url::parse(text.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "holds a user name or password (user:password@); the API key is sent in a header, \
             so leave them out"
                .to_string(),
        );
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(&url) => {}
        // The host is not repeated either: it may be a key pasted into the URL (found by fuzzing).
        "http" => {
            return Err(
                "uses plain http to a non-loopback host: the API key would travel \
                 unencrypted (use https, or set allow_insecure_http: true)"
                    .to_string(),
            )
        }
        other if other.len() <= 10 => {
            return Err(format!("unsupported scheme {other:?} (use https)"))
        }
        _ => return Err("unsupported scheme (use https)".to_string()),
    }
    if url.host_str().unwrap_or("").is_empty() {
        return Err(format!("{}: no host", url.scheme()));
    }
    Ok(url)
}

/// Whether `url`'s host is this machine: `localhost` or a loopback address.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    /// The README's "Config keys" table documents every setting: a key added to
    /// the `settings!` table without its line there fails here.
    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("### Config keys").expect("the section exists");
        let section = &readme[start..];
        let section = &section[..section[3..].find("\n### ").map_or(section.len(), |i| i + 3)];
        for key in KNOWN_KEYS {
            assert!(
                section.contains(&format!("`{key}`")),
                "{key} is not in README's Config keys table"
            );
        }
    }

    use super::*;

    #[test]
    fn check_text_names_the_field_or_warns() {
        let table: &[(&str, Result<usize, &str>)] = &[
            (r#"{"folder_path": "/x", "api_key": "tanova_sk_1"}"#, Ok(0)),
            (r#"{"folder_pth": 1}"#, Ok(1)),
            (r#"{"max_workers": "five"}"#, Err("max_workers")),
            (r#"{"listen_hosts": "cvs.local"}"#, Err("listen_hosts")),
            (r#"{"listen_hosts": ["cvs.local", 7]}"#, Err("listen_hosts")),
            (r#"{"listen_hosts": ["cvs.local"]}"#, Ok(0)),
            (r#"{"retry_delay": -1}"#, Err("retry_delay")),
            (r#"{"tanova_url": "http://0.0.0.0"}"#, Err("tanova_url")),
            (
                r#"{"tanova_url": "http://0.0.0.0", "allow_insecure_http": true}"#,
                Ok(0),
            ),
            (
                r#"{"api_key": "a", "api_key_file": "b"}"#,
                Err("api_key_file"),
            ),
            (r#"[1, 2]"#, Err("file")),
            ("\u{0}", Err("file")),
            ("", Err("file")),
        ];
        for (text, want) in table {
            match (check_text(text), want) {
                (Ok(warnings), Ok(n)) => assert_eq!(warnings.len(), *n, "{text}: {warnings:?}"),
                (Err(e), Err(field)) => assert_eq!(e.field, *field, "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Flags win over the variables, which win over the file; a refused value
    /// names the source that gave it.
    #[test]
    fn flags_win_over_variables_over_the_file_and_errors_name_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tanova-config.json");
        let folder = dir.path().display().to_string();
        std::fs::write(
            &file,
            format!(r#"{{"folder_path": {folder:?}, "api_key": "tanova_sk_x", "max_workers": 3}}"#),
        )
        .unwrap();
        let vars = |workers: &'static str| {
            move |name: &str| (name == "TANOVA_MAX_WORKERS").then(|| workers.to_string())
        };
        let with_flag = |n: Option<u64>| Overrides {
            config_file: Some(file.clone()),
            flags: SettingFlags {
                max_workers: n,
                ..SettingFlags::default()
            },
            ..Overrides::default()
        };
        let ceiling = |o: &Overrides, env: &dyn Fn(&str) -> Option<String>| {
            load(o, env).map(|l| l.config.concurrency)
        };
        let none = |_: &str| None;
        let adaptive = |n| Concurrency::Adaptive { ceiling: n };
        assert_eq!(ceiling(&with_flag(None), &none).unwrap(), adaptive(3));
        assert_eq!(ceiling(&with_flag(None), &vars("7")).unwrap(), adaptive(7));
        assert_eq!(
            ceiling(&with_flag(Some(9)), &vars("7")).unwrap(),
            adaptive(9)
        );
        let err = ceiling(&with_flag(Some(0)), &vars("7")).unwrap_err();
        assert_eq!(
            (err.origin.as_str(), err.field.as_str()),
            ("flag --max-workers", "max_workers")
        );
        let err = ceiling(&with_flag(None), &vars("0")).unwrap_err();
        assert_eq!(err.origin, "environment variable TANOVA_MAX_WORKERS");
    }
}
