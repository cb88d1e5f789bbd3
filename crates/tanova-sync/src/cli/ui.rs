//! `tanova-sync ui`: open the console. With no config it serves the setup page first (`setup.rs`); then it finds a running agent's console (the `console-url` file in the state directory), or starts a watching agent listening on loopback; it prints the URL and opens the browser where there is one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::args::{GlobalArgs, UiArgs};
use super::{load_config, report_error, watch_with, Exit};

/// The file in the state directory that holds the running console's URL (with its token).
pub const CONSOLE_URL_FILE: &str = "console-url";

/// `console-url`, written mode 0600 (it holds the token) while an agent runs; removed when it stops.
pub(super) struct ConsoleUrlFile(PathBuf);

impl ConsoleUrlFile {
    pub(super) fn write(state_dir: &Path, url: &str) -> Option<Self> {
        let path = state_dir.join(CONSOLE_URL_FILE);
        match super::init::write_private(&path, url) {
            Ok(()) => Some(ConsoleUrlFile(path)),
            Err(e) => {
                tracing::warn!("cannot write the console's address: {e}; `ui` will not find it");
                None
            }
        }
    }
}

impl Drop for ConsoleUrlFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn ui(global: &GlobalArgs, args: &UiArgs, cancel: &CancellationToken) -> Exit {
    let mut no_browser = args.no_browser;
    // No config at all: the setup page writes one, then the agent starts on its address.
    let mut listen = None;
    if let Some(target) = first_time(global) {
        let announced = |url: &str| announce(global, url, no_browser);
        match super::setup::run(target, cancel, &announced).await {
            Ok(Some(addr)) => listen = Some(addr),
            Ok(None) => return Exit::Interrupted,
            Err(e) => {
                report_error(global, &format!("cannot serve the setup page: {e}"));
                return Exit::Usage;
            }
        }
        // The browser is open already: it moves on to the dashboard by itself.
        no_browser = true;
    }
    let mut config = match load_config(global, |_| {}) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    if listen.is_none() {
        if let Some(url) = running_console(&config.state_dir).await {
            announce(global, &url, no_browser);
            return Exit::Ok;
        }
    }
    // The console is for this machine's user: loopback, whatever the config says.
    config.listen = listen.or(config.listen.filter(|addr| addr.ip().is_loopback()));
    if config.listen.is_none() {
        config.listen = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    }
    watch_with(global, &config, cancel, &|url: &str| {
        announce(global, url, no_browser)
    })
    .await
}

/// Where the setup page should write the config, when there is none: no
/// config file, and the environment does not make a config either.
fn first_time(global: &GlobalArgs) -> Option<PathBuf> {
    let target = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_FILE));
    if target.exists() {
        return None;
    }
    let overrides = super::global_overrides(global);
    crate::config::load(&overrides, &|name| std::env::var(name).ok())
        .is_err()
        .then_some(target)
}

/// The URL of a console that answers, from a running agent's `console-url`.
/// Only a loopback address is asked: the file could have been edited.
async fn running_console(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(CONSOLE_URL_FILE)).ok()?;
    let url = url::Url::parse(text.trim()).ok()?;
    if !crate::config::is_loopback(&url) || url.scheme() != "http" {
        return None;
    }
    // Plain HTTP on loopback, but reqwest is built without a default TLS provider.
    crate::api::tls::install_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()?;
    let health = url.join("/health").ok()?;
    // A 503 is an agent that answers (paused, waiting): its console is there.
    client.get(health).send().await.ok()?;
    Some(url.to_string())
}

/// Print the URL, and open it in the default browser when there is a desktop.
fn announce(global: &GlobalArgs, url: &str, no_browser: bool) {
    if global.json {
        println!("{}", serde_json::json!({ "console": url }));
    } else {
        println!("The console: {url}");
    }
    if no_browser {
        return;
    }
    match open_browser(url) {
        Ok(true) => {}
        Ok(false) => eprintln!("(no desktop here: open the address above in a browser)"),
        Err(e) => eprintln!("cannot open a browser ({e}): open the address above"),
    }
}

/// Start the platform's opener; `Ok(false)` when there is no desktop to open it on.
fn open_browser(url: &str) -> std::io::Result<bool> {
    let mut command = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        if !desktop {
            return Ok(false);
        }
        std::process::Command::new("xdg-open")
    };
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| true)
}
