//! Configuration: `tanova-config.json`, `TANOVA_*` variables and flags, validated once into an immutable [`Config`].

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde_json::{Map, Value};

use crate::filter::DEFAULT_MAX_FILE_SIZE;
use crate::watch::{
    WatchMode, WatchSettings, DEFAULT_POLL_EVERY, DEFAULT_RESCAN_EVERY, DEFAULT_SETTLE,
};

/// The config file read from the current directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "tanova-config.json";
pub const DEFAULT_URL: &str = "https://tanova.ai";
pub const DEFAULT_RETRY_COUNT: u32 = 3;
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(2);
/// The adaptive limit's ceiling when `max_workers` is not given.
pub const DEFAULT_CEILING: usize = 64;
/// The longest wait for the next bytes of an answer; the service parses CVs for seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Keys look like this; anything else is probably a paste error.
pub const API_KEY_PREFIX: &str = "tanova_sk_";

/// Every key the config file may hold; others are reported as unknown.
const KNOWN_KEYS: &[&str] = &[
    "folder_path",
    "api_key",
    "tanova_url",
    "retry_count",
    "retry_delay",
    "max_workers",
    "concurrency",
    "max_file_size_mb",
    "state_dir",
    "allow_insecure_http",
    "request_timeout",
    "watch_mode",
    "settle_ms",
    "rescan_interval",
    "poll_interval",
];

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
    pub concurrency: Concurrency,
    pub max_file_size: u64,
    pub state_dir: PathBuf,
    pub request_timeout: Duration,
    pub watch: WatchSettings,
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

/// An API key that prints only its first 15 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }
    /// The full key, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The first 15 characters followed by an ellipsis: safe to print.
    pub fn redacted(&self) -> String {
        let shown: String = self.0.chars().take(15).collect();
        format!("{shown}…")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
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

/// Settings given on the command line; they win over the environment and the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub folder: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub max_workers: Option<usize>,
    pub concurrency: Option<usize>,
    /// `--poll`: rescans only, no file-system events.
    pub poll: bool,
}

/// One raw value with the place it came from, so errors can name it.
struct Sourced<T> {
    value: T,
    origin: String,
}

/// Values read from one source, not yet validated.
#[derive(Default)]
struct Raw {
    folder_path: Option<Sourced<String>>,
    api_key: Option<Sourced<String>>,
    tanova_url: Option<Sourced<String>>,
    retry_count: Option<Sourced<u64>>,
    retry_delay: Option<Sourced<f64>>,
    max_workers: Option<Sourced<u64>>,
    concurrency: Option<Sourced<u64>>,
    max_file_size_mb: Option<Sourced<f64>>,
    state_dir: Option<Sourced<String>>,
    allow_insecure_http: Option<Sourced<bool>>,
    request_timeout: Option<Sourced<f64>>,
    watch_mode: Option<Sourced<String>>,
    settle_ms: Option<Sourced<u64>>,
    rescan_interval: Option<Sourced<f64>>,
    poll_interval: Option<Sourced<f64>>,
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
    let mut raw = Raw::default();

    let file = match &overrides.config_file {
        Some(path) => Some(path.clone()),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            default.is_file().then_some(default)
        }
    };
    if let Some(path) = &file {
        read_file(path, &mut raw, &mut warnings)?;
    }
    read_env(env, &mut raw)?;
    apply_overrides(overrides, &mut raw);
    let config = validate(raw, env, &mut warnings)?;
    Ok(Loaded { config, warnings })
}

fn read_file(path: &Path, raw: &mut Raw, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&origin, "file", format!("cannot read: {e}")))?;
    let value: Value = serde_json::from_str(&text)
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
            warnings.push(format!("{origin}: unknown key `{key}` is ignored"));
        }
    }
    let file = FileFields { map: &map, origin };
    raw.folder_path = file.string("folder_path")?;
    raw.api_key = file.string("api_key")?;
    raw.tanova_url = file.string("tanova_url")?;
    raw.retry_count = file.integer("retry_count")?;
    raw.retry_delay = file.number("retry_delay")?;
    raw.max_workers = file.integer("max_workers")?;
    raw.concurrency = file.integer("concurrency")?;
    raw.max_file_size_mb = file.number("max_file_size_mb")?;
    raw.state_dir = file.string("state_dir")?;
    raw.allow_insecure_http = file.boolean("allow_insecure_http")?;
    raw.request_timeout = file.number("request_timeout")?;
    raw.watch_mode = file.string("watch_mode")?;
    raw.settle_ms = file.integer("settle_ms")?;
    raw.rescan_interval = file.number("rescan_interval")?;
    raw.poll_interval = file.number("poll_interval")?;
    Ok(())
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
        ConfigError::new(&self.origin, key, format!("expected {expected}, got {got}"))
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

    fn boolean(&self, key: &str) -> Result<Option<Sourced<bool>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(self.sourced(*b)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }
}

fn read_env(env: &dyn Fn(&str) -> Option<String>, raw: &mut Raw) -> Result<(), ConfigError> {
    let string = |name: &str| {
        env(name).filter(|v| !v.is_empty()).map(|value| Sourced {
            value,
            origin: format!("environment variable {name}"),
        })
    };
    if let Some(v) = string("TANOVA_FOLDER_PATH") {
        raw.folder_path = Some(v);
    }
    if let Some(v) = string("TANOVA_API_KEY") {
        raw.api_key = Some(v);
    }
    if let Some(v) = string("TANOVA_URL") {
        raw.tanova_url = Some(v);
    }
    if let Some(v) = string("TANOVA_STATE_DIR") {
        raw.state_dir = Some(v);
    }
    if let Some(v) = string("TANOVA_MAX_WORKERS") {
        let n = v.value.trim().parse::<u64>().map_err(|_| {
            ConfigError::new(
                &v.origin,
                "max_workers",
                format!("expected a whole number, got {:?}", v.value),
            )
        })?;
        raw.max_workers = Some(Sourced {
            value: n,
            origin: v.origin,
        });
    }
    Ok(())
}

fn apply_overrides(overrides: &Overrides, raw: &mut Raw) {
    let flag = |name: &str| format!("flag --{name}");
    if let Some(folder) = &overrides.folder {
        raw.folder_path = Some(Sourced {
            value: folder.to_string_lossy().into_owned(),
            origin: flag("folder"),
        });
    }
    if let Some(dir) = &overrides.state_dir {
        raw.state_dir = Some(Sourced {
            value: dir.to_string_lossy().into_owned(),
            origin: flag("state-dir"),
        });
    }
    if overrides.poll {
        raw.watch_mode = Some(Sourced {
            value: "poll".to_string(),
            origin: flag("poll"),
        });
    }
    if let Some(n) = overrides.max_workers {
        raw.max_workers = Some(Sourced {
            value: n as u64,
            origin: flag("max-workers"),
        });
    }
    if let Some(n) = overrides.concurrency {
        raw.concurrency = Some(Sourced {
            value: n as u64,
            origin: flag("concurrency"),
        });
    }
}

fn validate(
    raw: Raw,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    const HINT: &str = "set it in tanova-config.json";
    let folder = raw.folder_path.ok_or_else(|| {
        ConfigError::new(
            "config",
            "folder_path",
            format!("missing: {HINT}, TANOVA_FOLDER_PATH or --folder"),
        )
    })?;
    let folder_path = PathBuf::from(&folder.value);
    match std::fs::metadata(&folder_path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ConfigError::new(
                folder.origin,
                "folder_path",
                format!("{} is not a directory", folder_path.display()),
            ))
        }
        Err(e) => {
            return Err(ConfigError::new(
                folder.origin,
                "folder_path",
                format!("{}: {e}", folder_path.display()),
            ))
        }
    }

    let key = raw.api_key.ok_or_else(|| {
        ConfigError::new(
            "config",
            "api_key",
            format!("missing: {HINT} or TANOVA_API_KEY"),
        )
    })?;
    let key_value = key.value.trim().to_string();
    if key_value.is_empty() {
        return Err(ConfigError::new(key.origin, "api_key", "is empty"));
    }
    if !key_value.starts_with(API_KEY_PREFIX) {
        warnings.push(format!(
            "{}: api_key does not start with `{API_KEY_PREFIX}`; is it the right key?",
            key.origin
        ));
    }

    let allow_insecure = raw.allow_insecure_http.as_ref().is_some_and(|s| s.value);
    let url = match raw.tanova_url {
        Some(s) => parse_url(&s.value, allow_insecure)
            .map_err(|m| ConfigError::new(s.origin, "tanova_url", m))?,
        None => Url::parse(DEFAULT_URL).expect("default URL is valid"),
    };

    let retry_count = raw
        .retry_count
        .map_or(DEFAULT_RETRY_COUNT, |s| s.value.min(100) as u32);
    let retry_delay = raw.retry_delay.map_or(DEFAULT_RETRY_DELAY, |s| {
        Duration::from_secs_f64(s.value.min(3600.0))
    });
    let in_range = |s: Sourced<u64>, field: &str| {
        if (1..=1024).contains(&s.value) {
            Ok(s.value as usize)
        } else {
            Err(ConfigError::new(
                s.origin,
                field,
                format!("expected 1 to 1024, got {}", s.value),
            ))
        }
    };
    let ceiling = raw
        .max_workers
        .map(|s| in_range(s, "max_workers"))
        .transpose()?;
    let concurrency = match raw
        .concurrency
        .map(|s| in_range(s, "concurrency"))
        .transpose()?
    {
        Some(n) => Concurrency::Fixed(n),
        None => Concurrency::Adaptive {
            ceiling: ceiling.unwrap_or(DEFAULT_CEILING),
        },
    };
    let max_file_size = match raw.max_file_size_mb {
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
    let state_dir = match raw.state_dir {
        Some(s) => PathBuf::from(s.value),
        None => default_state_dir(env),
    };

    let request_timeout = match raw.request_timeout {
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

    let watch = WatchSettings {
        mode: match raw.watch_mode {
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
        settle: raw.settle_ms.map_or(DEFAULT_SETTLE, |s| {
            Duration::from_millis(s.value.min(60_000))
        }),
        rescan_every: positive_seconds(
            raw.rescan_interval,
            "rescan_interval",
            DEFAULT_RESCAN_EVERY,
        )?,
        poll_every: positive_seconds(raw.poll_interval, "poll_interval", DEFAULT_POLL_EVERY)?,
    };

    Ok(Config {
        folder: folder_path,
        api_key: ApiKey::new(key_value),
        url,
        retry_count,
        retry_delay,
        concurrency,
        max_file_size,
        state_dir,
        request_timeout,
        watch,
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

/// `~/.tanova`, where the Python script kept its history.
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let home = env("HOME")
        .or_else(|| env("USERPROFILE"))
        .unwrap_or_else(|| ".".to_string());
    PathBuf::from(home).join(".tanova")
}

/// Parse the service URL, refusing to send the key in the clear to another host.
pub fn parse_url(text: &str, allow_insecure_http: bool) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "{text} is plain http to a non-loopback host: the API key would travel unencrypted \
                 (use https, or set allow_insecure_http: true)"
            ))
        }
        other => return Err(format!("{text}: unsupported scheme {other:?} (use https)")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text}: no host"));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
