//! `tanova-sync service install [--print]`: a service that runs `watch` with the current config file, written where the system looks for it.

use std::path::{Path, PathBuf};

use super::args::{GlobalArgs, ServiceInstallArgs};
use super::{report_error, Exit};
use crate::config::{self, ApiKey, Config, Overrides, SettingFlags, DEFAULT_CONFIG_FILE};
use crate::service::{self, ServiceSpec};

pub fn install(global: &GlobalArgs, args: &ServiceInstallArgs) -> Exit {
    let (spec, key) = match spec(global, args) {
        Ok(found) => found,
        Err(message) => {
            report_error(global, &message);
            return Exit::Usage;
        }
    };
    write_or_print(global, args, &spec, &key)
}

/// Where the key is kept for the systemd unit's `LoadCredential=`: readable by root only.
pub const KEY_FILE: &str = "/etc/tanova-sync/api-key";

/// Whether the service gets the key as a systemd credential (not launchd's way).
const BY_CREDENTIAL: bool = cfg!(all(unix, not(target_os = "macos")));

/// What the service runs: this binary, `watch`, the config file and the state
/// directory, all absolute, as the account it runs as; and the key to store.
fn spec(global: &GlobalArgs, args: &ServiceInstallArgs) -> Result<(ServiceSpec, ApiKey), String> {
    let file = absolute(&config_file(global)?)?;
    let account = account_warned(args.user.as_deref())?;
    // The service's own home, for its default state directory (~NAME/.tanova).
    let home = account.as_ref().map(|a| a.home.display().to_string());
    let env_as_service_user = |name: &str| match (name, &home) {
        ("HOME" | "USERPROFILE", Some(home)) => Some(home.clone()),
        _ => std::env::var(name).ok(),
    };
    let (state_dir, key) = settings_here(global, &file, &env_as_service_user)?;
    let seen = settings_as_service(&file, &state_dir, &key, &env_as_service_user)?;
    let log_dir = match &seen.log.file {
        Some(log) => Some(
            absolute(log)?
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        ),
        None => None,
    };
    let binary = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| format!("service install: cannot tell where this program is: {e}"))?;
    Ok((
        ServiceSpec {
            binary,
            key_file: key_file(args, &file)?,
            config_file: file,
            state_dir,
            folder: absolute(&seen.folder)?,
            log_dir,
            user: account.as_ref().map(|a| a.name.clone()),
            group: account.as_ref().map(|a| a.group.clone()),
        },
        key,
    ))
}

/// The config file the service will read: `--config`, or the one here.
fn config_file(global: &GlobalArgs) -> Result<PathBuf, String> {
    match &global.config {
        Some(file) => Ok(file.clone()),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => Ok(PathBuf::from(DEFAULT_CONFIG_FILE)),
        None => Err(format!(
            "service install: the service reads its settings from a config file, and there is none: \
             pass --config FILE or run it where {DEFAULT_CONFIG_FILE} is"
        )),
    }
}

/// The account the service runs as, warning about the ones it should not.
fn account_warned(user: Option<&str>) -> Result<Option<account::Account>, String> {
    let account = account::service_account(user)?;
    if let Some(a) = account.as_ref().filter(|a| a.uid == 0) {
        tracing::warn!(
            "the service will run as {}: a bug or a hostile file in the CV folder would then \
             have the whole machine; prefer --user with an ordinary account",
            a.name
        );
    }
    if account.as_ref().is_some_and(|a| a.name == "nobody") {
        tracing::warn!(
            "nobody is meant to own nothing, and systemd calls a service running as it unsafe: \
             prefer a dedicated account (useradd --system tanova)"
        );
    }
    Ok(account)
}

/// The state directory and the key as this command line sees them (its log
/// settings are not applied: this command's messages belong on the terminal).
fn settings_here(
    global: &GlobalArgs,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(PathBuf, ApiKey), String> {
    let here = Overrides {
        config_file: Some(file.to_path_buf()),
        flags: SettingFlags {
            folder_path: global.settings.folder_path.clone(),
            state_dir: global.settings.state_dir.clone(),
            state_url: global.settings.state_url.clone(),
            max_workers: global.settings.max_workers,
            concurrency: global.settings.concurrency,
            ..SettingFlags::default()
        },
        ..Overrides::default()
    };
    let current = config::load(&here, env).map_err(|e| format!("config error: {e}"))?;
    for warning in &current.warnings {
        tracing::warn!("{warning}");
    }
    Ok((
        absolute(&current.config.state_dir)?,
        current.config.api_key.clone(),
    ))
}

/// The settings as the service will see them: the file alone, with no
/// TANOVA_* variables and no other flags, but the key as the credential systemd hands it.
fn settings_as_service(
    file: &Path,
    state_dir: &Path,
    key: &ApiKey,
    env_as_service_user: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, String> {
    let key_for_service = key.expose().to_string();
    let service_env = |name: &str| match name {
        "HOME" | "USERPROFILE" => env_as_service_user(name),
        "TANOVA_API_KEY" if BY_CREDENTIAL => Some(key_for_service.clone()),
        _ => None,
    };
    let overrides = Overrides {
        config_file: Some(file.to_path_buf()),
        flags: SettingFlags {
            state_dir: Some(state_dir.display().to_string()),
            ..SettingFlags::default()
        },
        ..Overrides::default()
    };
    config::load(&overrides, &service_env)
        .map(|loaded| loaded.config)
        .map_err(|e| {
            format!(
                "service install: the service reads only {} (no TANOVA_* variables, no other flags), \
                 and with that alone: {e}; put the setting in the file",
                file.display()
            )
        })
}

/// Where the key is stored for systemd to hand the service (`LoadCredential=`), where it can be.
fn key_file(args: &ServiceInstallArgs, config_file: &Path) -> Result<Option<PathBuf>, String> {
    if !BY_CREDENTIAL {
        return Ok(None);
    }
    let key_file = std::path::absolute(args.key_file.as_deref().unwrap_or(Path::new(KEY_FILE)))
        .map_err(|e| format!("--key-file: {e}"))?;
    if config_holds_key(config_file) {
        tracing::warn!(
            "{} holds api_key too; the service gets the key from systemd instead, so remove \
             it from the file, which the service's user can read",
            config_file.display()
        );
    }
    Ok(Some(key_file))
}

/// Whether the config file itself names the key (not the environment).
fn config_holds_key(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("api_key").is_some_and(|k| !k.is_null()))
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.canonicalize().unwrap_or(path))
}

#[cfg(target_os = "macos")]
fn write_or_print(
    global: &GlobalArgs,
    args: &ServiceInstallArgs,
    spec: &ServiceSpec,
    _key: &ApiKey,
) -> Exit {
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".to_string()));
    let log = home.join("Library/Logs/tanova-sync.log");
    let plist = service::launchd_plist(spec, &log);
    if args.print {
        print!("{plist}");
        return Exit::Ok;
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| home.join("Library/LaunchAgents"));
    let path = dir.join(format!("{}.plist", service::LAUNCHD_LABEL));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, plist)) {
        report_error(global, &format!("cannot write {}: {e}", path.display()));
        return Exit::Usage;
    }
    println!(
        "Wrote {}.\nNext: launchctl load -w {}\nIts output goes to {}.",
        path.display(),
        path.display(),
        log.display()
    );
    Exit::Ok
}

#[cfg(all(unix, not(target_os = "macos")))]
fn write_or_print(
    global: &GlobalArgs,
    args: &ServiceInstallArgs,
    spec: &ServiceSpec,
    key: &ApiKey,
) -> Exit {
    let unit = service::systemd_unit(spec);
    let key_file = spec
        .key_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(KEY_FILE));
    if args.print {
        print!("{unit}");
        // On stderr, so that stdout can go straight to `sudo tee`; the key itself is never printed.
        eprintln!(
            "The unit loads the API key from {file} (LoadCredential=), which only root should \
             read. Create it with:\n  sudo install -d -m 700 {dir} && sudo sh -c 'umask 077; \
             cat > {file}'   # paste the key, then Ctrl+D",
            file = key_file.display(),
            dir = key_file.parent().unwrap_or(Path::new("/")).display(),
        );
        return Exit::Ok;
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(service::SYSTEMD_DIR));
    let path = dir.join(service::UNIT_NAME);
    if let Err(message) = install_unit(spec, key, &key_file, &path, &unit) {
        report_error(global, &message);
        return Exit::Usage;
    }
    println!(
        "Wrote {} and the key to {} (readable by root only; systemd hands it to the service).\n\
         Next: systemctl daemon-reload && systemctl enable --now tanova-sync\n\
         Then: systemctl status tanova-sync; its log: journalctl -u tanova-sync -f",
        path.display(),
        key_file.display()
    );
    Exit::Ok
}

/// Write the key, the unit, and the folders the unit may write to (systemd
/// refuses to start it if they do not exist), owned by the service's user.
#[cfg(all(unix, not(target_os = "macos")))]
fn install_unit(
    spec: &ServiceSpec,
    key: &ApiKey,
    key_file: &Path,
    path: &Path,
    unit: &str,
) -> Result<(), String> {
    let sudo_hint = |e: &std::io::Error| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "; installing a system service takes root: run it with sudo, or \
                 `tanova-sync service install --print --config {} | sudo tee {}`",
                spec.config_file.display(),
                path.display()
            )
        } else {
            String::new()
        }
    };
    write_key(key_file, key).map_err(|e| {
        format!(
            "cannot write the key to {}: {e}{}",
            key_file.display(),
            sudo_hint(&e)
        )
    })?;
    std::fs::write(path, unit)
        .map_err(|e| format!("cannot write {}: {e}{}", path.display(), sudo_hint(&e)))?;
    let owner = spec.user.as_deref().map(account::lookup).transpose()?;
    for dir in std::iter::once(&spec.state_dir).chain(&spec.log_dir) {
        make_writable_dir(dir, owner.as_ref())
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Write the key to `path`, mode 0600 in a 0700 folder: only its owner (root) reads it.
#[cfg(all(unix, not(target_os = "macos")))]
fn write_key(path: &Path, key: &ApiKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: narrow it before the key goes in.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{}", key.expose())?;
    file.sync_all()
}

/// Create `dir` and, when root installs for another account, give it to that
/// account (a folder root made, or root still owns, would be read-only to it).
#[cfg(all(unix, not(target_os = "macos")))]
fn make_writable_dir(dir: &Path, owner: Option<&account::Account>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(dir)?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if let Some(owner) = owner.filter(|o| root && o.uid != 0) {
        if std::fs::metadata(dir)?.uid() == 0 {
            std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn write_or_print(
    global: &GlobalArgs,
    _args: &ServiceInstallArgs,
    spec: &ServiceSpec,
    _key: &ApiKey,
) -> Exit {
    let command = spec
        .args()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(" ");
    report_error(
        global,
        &format!(
            "service install writes systemd units and launchd plists; on Windows run `{command}` \
             with NSSM or Task Scheduler, as the README's Windows section shows"
        ),
    );
    Exit::Usage
}

/// Accounts: who the service runs as, from the system's user database.
mod account {
    use std::path::PathBuf;

    /// A user the service can run as.
    #[derive(Debug, Clone)]
    // launchd agents run as the logged-in user: macOS reads only the name.
    #[cfg_attr(target_os = "macos", allow(dead_code))]
    pub struct Account {
        pub name: String,
        pub group: String,
        pub home: PathBuf,
        pub uid: u32,
        pub gid: u32,
    }

    /// The account the service runs as: `--user`; else, under sudo, the user
    /// who ran sudo; else the user running this. Root only when named.
    /// `None` where accounts do not apply (not Unix).
    pub fn service_account(user: Option<&str>) -> Result<Option<Account>, String> {
        if !cfg!(unix) {
            return Ok(None);
        }
        if let Some(name) = user {
            return lookup(name).map(Some);
        }
        let sudo_user = std::env::var("SUDO_USER")
            .ok()
            .filter(|u| !u.is_empty() && u != "root");
        if is_root() {
            return match sudo_user {
                Some(name) => lookup(&name).map(Some),
                None => Err(
                    "service install: run as root with no SUDO_USER to say whose service \
                     it is: pass --user NAME, the account it runs as (its home gets the state, \
                     ~NAME/.tanova). `--user root` runs it as root, which is not recommended"
                        .to_string(),
                ),
            };
        }
        current().map(Some)
    }

    #[cfg(unix)]
    fn is_root() -> bool {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[cfg(not(unix))]
    fn is_root() -> bool {
        false
    }

    /// The user running this program.
    #[cfg(unix)]
    fn current() -> Result<Account, String> {
        // SAFETY: as above.
        let uid = unsafe { libc::geteuid() };
        from_passwd(|pwd, buf, result| unsafe {
            // SAFETY: every pointer is to a live local of the right size.
            libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result)
        })
        .ok_or_else(|| format!("service install: user id {uid} has no account; pass --user NAME"))
    }

    #[cfg(not(unix))]
    fn current() -> Result<Account, String> {
        Err("service install: accounts are a Unix matter".to_string())
    }

    /// The account named `name`.
    #[cfg(unix)]
    #[cfg_attr(target_os = "macos", allow(dead_code))]
    pub fn lookup(name: &str) -> Result<Account, String> {
        let missing = || format!("--user {name}: there is no such user on this machine");
        let c_name = std::ffi::CString::new(name).map_err(|_| missing())?;
        from_passwd(|pwd, buf, result| unsafe {
            // SAFETY: c_name is NUL-terminated; the other pointers are to live locals.
            libc::getpwnam_r(c_name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result)
        })
        .ok_or_else(missing)
    }

    #[cfg(not(unix))]
    pub fn lookup(name: &str) -> Result<Account, String> {
        Err(format!("--user {name}: accounts are a Unix matter"))
    }

    /// Run a `getpw*_r` call and read its entry, with its primary group's name.
    #[cfg(unix)]
    fn from_passwd(
        call: impl Fn(*mut libc::passwd, &mut Vec<libc::c_char>, *mut *mut libc::passwd) -> i32,
    ) -> Option<Account> {
        use std::ffi::CStr;
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: passwd is plain old data; zeroed is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        let rc = call(&mut pwd, &mut buf, &mut result);
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success the fields point into buf, NUL-terminated.
        let (name, home) = unsafe {
            (
                CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
            )
        };
        Some(Account {
            group: group_name(pwd.pw_gid).unwrap_or_else(|| pwd.pw_gid.to_string()),
            name,
            home: PathBuf::from(home),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }

    #[cfg(unix)]
    fn group_name(gid: libc::gid_t) -> Option<String> {
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: group is plain old data, overwritten by the call.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: every pointer is to a live local of the right size.
        let rc =
            unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success gr_name points into buf, NUL-terminated.
        Some(
            unsafe { std::ffi::CStr::from_ptr(grp.gr_name) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}
