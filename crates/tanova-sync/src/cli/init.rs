//! `tanova-sync init`: ask for the folder, the key and the service, check the key, write `tanova-config.json` (0600).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::{Exit, GlobalArgs};
use crate::api::{ApiClient, ApiError, Timeouts};
use crate::config::{self, ApiKey, API_KEY_PREFIX, DEFAULT_CONFIG_FILE, DEFAULT_URL};

/// Ask, check, write. Answers come from stdin, so it can be scripted too.
pub async fn init(global: &GlobalArgs, force: bool) -> Exit {
    let target = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    if target.exists() && !force {
        eprintln!(
            "error: {} already exists; use --force to replace it",
            target.display()
        );
        return Exit::Usage;
    }
    match ask_and_write(&target).await {
        Ok(()) => Exit::Ok,
        Err(message) => {
            eprintln!("error: {message}");
            Exit::Usage
        }
    }
}

async fn ask_and_write(target: &Path) -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let here = std::env::current_dir().map_err(|e| e.to_string())?;

    let folder = ask(
        &mut input,
        "Folder of CVs to sync",
        Some(&here.display().to_string()),
    )?;
    let (folder, cvs) = check_folder(&folder)?;
    let key = ask_key(&mut input)?;
    if !key.starts_with(API_KEY_PREFIX) {
        eprintln!("note: Tanova keys start with `{API_KEY_PREFIX}`; checking this one anyway");
    }
    let url_text = ask(&mut input, "Tanova URL", Some(DEFAULT_URL))?;
    let key = ApiKey::new(key);
    let (url, agency) = check_key(&url_text, &key)
        .await
        .map_err(|e| format!("{e}; nothing was written"))?;
    println!("The key is valid for {agency}.");
    write_config(target, &folder, &key, &url)?;
    println!(
        "Wrote {} (readable only by you).\n\
         Next: run `tanova-sync` in this directory to upload the {cvs} CVs found in {} and keep watching for new ones,\n\
         or `tanova-sync sync` for a one-off sync, or `tanova-sync service install` to run it as a service.",
        target.display(),
        folder.display()
    );
    Ok(())
}

/// The folder as an absolute path, if it is a folder that can be read, and how many CVs it holds.
pub(super) fn check_folder(text: &str) -> Result<(PathBuf, usize), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the folder is required".to_string());
    }
    let folder = std::path::absolute(text).map_err(|e| format!("{text}: {e}"))?;
    if !folder.is_dir() {
        return Err(format!("{} is not a folder", folder.display()));
    }
    std::fs::read_dir(&folder).map_err(|e| format!("{} cannot be read: {e}", folder.display()))?;
    let cvs = walkdir::WalkDir::new(&folder)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && crate::filter::is_candidate_path(e.path()))
        .count();
    Ok((folder, cvs))
}

/// Ask the service at `url_text` about `key` (`GET /api/sync/health`): the
/// URL, and the agency's name when the key is accepted.
pub(super) async fn check_key(url_text: &str, key: &ApiKey) -> Result<(url::Url, String), String> {
    let url = config::parse_url(url_text.trim(), false).map_err(|e| format!("tanova_url: {e}"))?;
    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        read: Duration::from_secs(20),
    };
    let api = ApiClient::new(&url, key, timeouts).map_err(|e| e.to_string())?;
    let health = api.health().await.map_err(|e| match e {
        ApiError::Rejected { .. } | ApiError::Misdirected { .. } => e.to_string(),
        other => format!("cannot check the key with {url}: {other}"),
    })?;
    let agency = health.agency.map_or_else(
        || "your agency".to_string(),
        |a| a.as_str().map_or(a.to_string(), str::to_string),
    );
    Ok((url, agency))
}

/// Write `tanova-config.json` (mode 0600): the folder, the key, and the URL unless it is the default.
pub(super) fn write_config(
    target: &Path,
    folder: &Path,
    key: &ApiKey,
    url: &url::Url,
) -> Result<(), String> {
    let mut config = json!({ "folder_path": folder, "api_key": key.expose() });
    if url.as_str().trim_end_matches('/') != DEFAULT_URL {
        config["tanova_url"] = json!(url.as_str().trim_end_matches('/'));
    }
    write_private(
        target,
        &serde_json::to_string_pretty(&config).expect("serializable"),
    )
}

/// One question; an empty answer takes the default.
fn ask(input: &mut impl BufRead, question: &str, default: Option<&str>) -> Result<String, String> {
    match default {
        Some(d) => print!("{question} [{d}]: "),
        None => print!("{question}: "),
    }
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let read = input.read_line(&mut line).map_err(|e| e.to_string())?;
    let answer = line.trim();
    match (answer.is_empty(), default) {
        (false, _) => Ok(answer.to_string()),
        (true, Some(d)) => Ok(d.to_string()),
        (true, None) if read == 0 => Err(format!("no answer for {question:?} (end of input)")),
        (true, None) => Err(format!("{question} is required")),
    }
}

/// The key, without echo on a terminal.
fn ask_key(input: &mut impl BufRead) -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let key = rpassword::prompt_password("API key (tanova_sk_…, not shown): ")
            .map_err(|e| e.to_string())?;
        let key = key.trim().to_string();
        return if key.is_empty() {
            Err("the API key is required".to_string())
        } else {
            Ok(key)
        };
    }
    ask(input, "API key (tanova_sk_…)", None)
}

/// Write a file only its owner can read: it holds the key. Whole or not at
/// all: the text goes to a new file beside it (0600 from its creation), which
/// then replaces it, so a crash, or a running agent re-reading its key,
/// never meets a config cut short.
pub(super) fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let named = |e: std::io::Error| format!("{}: {e}", path.display());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".tanova-")
        .tempfile_in(dir)
        .map_err(named)?;
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .map_err(named)?;
    file.persist(path).map_err(|e| named(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the config was truncated, then written, so a reader in
    /// between (the console's test, a running agent re-reading its key) found
    /// it empty, and a crash there left it so.
    #[test]
    fn a_private_file_is_replaced_whole_readable_only_by_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tanova-config.json");
        std::fs::write(&path, "{\"old\": true, \"longer than the new text\": 1}").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_private(&path, "{\"new\": true}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"new\": true}\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tanova-config.json"], "no temporary file is left");
        let missing = dir.path().join("no-such-dir").join("x.json");
        let e = write_private(&missing, "{}").unwrap_err();
        assert!(e.contains("no-such-dir"), "{e}");
    }
}
