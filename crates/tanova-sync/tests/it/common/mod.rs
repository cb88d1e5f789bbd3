//! Test environment: a temporary folder, state and home, the emulator on loopback, and the real binary.

pub mod browser;
pub mod docker;
pub mod live;
pub mod net;
pub mod redirect;
pub mod redis_server;
pub mod rsyslog;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
pub use tanova_emulator::{Emulator, Knobs, DEFAULT_API_KEY};

pub const BIN: &str = env!("CARGO_BIN_EXE_tanova-sync");

/// One test's world: a CV folder, a state directory, a home, and an emulator.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub emulator: Emulator,
    /// The agents started through it ([`TestEnv::spawn`], [`TestEnv::track`]):
    /// pid and start time, which together name one process.
    agents: Mutex<Vec<(i32, String)>>,
}

/// A test that fails while agents it started still run would leave them
/// running after it (a shared-ledger test once left two `watch` agents
/// behind): whatever the test, its agents end with its `TestEnv`. Only its
/// own: `cargo test` runs the other tests in the same process.
impl Drop for TestEnv {
    fn drop(&mut self) {
        let agents = self.agents.get_mut().unwrap_or_else(|p| p.into_inner());
        for (pid, started) in agents.drain(..) {
            // Not the same start time: that agent was waited for, and the pid is another's now.
            if start_time(pid).as_deref() == Some(started.as_str()) {
                // SAFETY: kill(2) on a child this test started; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// When the process `pid` started (field 22 of `/proc/PID/stat`), while it exists.
fn start_time(pid: i32) -> Option<String> {
    stat_field(pid, 22)
}

/// The state of process `pid` (`R`, `S`, `Z`, … from `/proc/PID/stat`), `None` once it is gone.
pub fn process_state(pid: u32) -> Option<String> {
    stat_field(pid as i32, 3)
}

/// Field `n` (from 1) of `/proc/PID/stat`, while the process exists.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state …": the name may hold spaces, so count fields after its ')'.
    let (_, fields) = stat.rsplit_once(") ")?;
    fields.split(' ').nth(n.checked_sub(3)?).map(str::to_string)
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with_knobs(Knobs::default())
    }

    pub fn with_knobs(knobs: Knobs) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("cvs")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let emulator = Emulator::start_in_thread(knobs).expect("emulator starts");
        TestEnv {
            dir,
            emulator,
            agents: Mutex::default(),
        }
    }

    pub fn folder(&self) -> PathBuf {
        self.dir.path().join("cvs")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Write a file under the CV folder, creating its parents.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.folder().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Write `n` distinct small CVs in a few subfolders.
    pub fn write_many(&self, n: usize) {
        for i in 0..n {
            self.write(
                &format!("role{}/cv{i}.txt", i % 7),
                format!("CV number {i}\n"),
            );
        }
    }

    /// The command, with the environment pointing at this test's world only.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("TANOVA_FOLDER_PATH", self.folder())
            .env("TANOVA_API_KEY", DEFAULT_API_KEY)
            .env("TANOVA_URL", self.emulator.url())
            .env("TANOVA_STATE_DIR", self.state_dir());
        cmd
    }

    /// Run to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        finish(&mut self.command(args))
    }

    /// Run to completion with `vars` removed from the environment, e.g. the
    /// key, so that it comes from the config file.
    pub fn run_without(&self, vars: &[&str], args: &[&str]) -> Run {
        let mut cmd = self.command(args);
        for var in vars {
            cmd.env_remove(var);
        }
        finish(&mut cmd)
    }

    /// Run to completion with `vars` set over the test's own.
    pub fn run_with(&self, vars: &[(&str, &str)], args: &[&str]) -> Run {
        let mut cmd = self.command(args);
        cmd.envs(vars.iter().copied());
        finish(&mut cmd)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        self.track(&child);
        child
    }

    /// Kill `child` when this environment is dropped, if it still runs then.
    pub fn track(&self, child: &Child) {
        let pid = child.id() as i32;
        if let Some(started) = start_time(pid) {
            let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
            agents.push((pid, started));
        }
    }

    /// The names of the files the emulator received, sorted.
    pub fn uploaded_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .emulator
            .uploads()
            .into_iter()
            .map(|u| u.filename)
            .collect();
        names.sort();
        names
    }

    /// Write a config file in the test's working directory (read as ./tanova-config.json).
    pub fn config(&self, json: Value) -> PathBuf {
        let path = self.dir.path().join("tanova-config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        path
    }
}

/// Run a command made by [`TestEnv::command`] (and changed further) to completion.
pub fn finish(cmd: &mut Command) -> Run {
    Run::from(cmd.output().expect("binary runs"))
}

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Keys the tests give the agent. Every run's output is searched for them:
/// nothing beyond a key's first 15 characters may ever be printed.
pub const KEYS_USED: &[&str] = &[
    DEFAULT_API_KEY,
    "tanova_sk_wrong_key_123456",
    SECRET_KEY,
    ROTATED_KEY,
];
/// The key an emulator is rotated to while an agent watches.
pub const ROTATED_KEY: &str = "tanova_sk_rotated_NEWNEWNEWNEW77";
pub const SECRET_KEY: &str = "tanova_sk_live_SECRETSECRETSECRET42";

/// Panic if `text` shows more of a key than its first 15 characters.
pub fn assert_no_key(text: &str) {
    for key in KEYS_USED {
        assert!(
            !text.contains(&key[..16]),
            "the API key leaked into the output:\n{text}"
        );
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert_no_key(&run.stdout);
        assert_no_key(&run.stderr);
        run
    }
}

impl Run {
    /// Wait for a child made by [`TestEnv::spawn`] to exit.
    pub fn wait(child: Child) -> Run {
        Run::from(child.wait_with_output().expect("the agent's output"))
    }

    /// The `--json` summary: the one JSON object on stdout.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn count(&self, key: &str) -> u64 {
        self.json()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in {}", self.stdout))
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The first of `names` found on PATH: a tool the calling test needs. Where
/// none is, the test should be skipped: this says so and returns `None`. With
/// `CI` set it panics instead, so that a missing tool fails the run rather than
/// passing it green (`.ci/run` installs every tool the tests use).
pub fn require_tool(names: &[&str], install: &str) -> Option<PathBuf> {
    let paths: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let found = names
        .iter()
        .flat_map(|name| paths.iter().map(move |dir| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() {
        let tool = names.join(" or ");
        assert!(
            !tools_required(),
            "{tool} is not installed, and CI is set: the tests that need it must run ({install})"
        );
        eprintln!("SKIPPED: {tool} is not installed ({install}); CI runs this test");
    }
    found
}

/// Whether a test must fail rather than skip when its tool is missing: with
/// `CI` set (.ci/run), unless `TANOVA_TOOLS_OPTIONAL` says this CI lacks the
/// Linux-only tools (the GitHub matrix on macOS and Windows).
pub fn tools_required() -> bool {
    std::env::var_os("CI").is_some() && std::env::var_os("TANOVA_TOOLS_OPTIONAL").is_none()
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    tanova_sync::hash::sha256_hex(bytes)
}

/// Send a signal to a running child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with the pid of a child we own; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({sig})");
}

/// SIGTERM the child and collect its output, asserting it exits within `limit`.
pub fn stop(child: Child, limit: Duration) -> Run {
    signal(&child, libc::SIGTERM);
    let start = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if start.elapsed() > limit {
            // SAFETY: as above; the test is failing, make sure the child does not linger.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let output = waiter.join().unwrap();
            panic!(
                "the agent did not exit within {limit:?} of SIGTERM; its stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::from(waiter.join().unwrap())
}

/// The `--json` run synced `synced` files and failed one, `broken.pdf`, with the
/// words of an emulator set to refuse it (`reject_filename_contains: "broken"`).
pub fn assert_only_broken_pdf_failed(run: &Run, synced: u64) {
    run.assert_code(1);
    let j = run.json();
    assert_eq!(
        (j["synced"].as_u64(), j["failed"].as_u64()),
        (Some(synced), Some(1))
    );
    let failure = &j["failures"][0];
    assert!(failure["path"].as_str().unwrap().ends_with("broken.pdf"));
    assert_eq!(
        failure["reason"],
        "refused by the server (422): Could not parse document (injected)"
    );
}

/// Revoke the key after the fourth upload of a 60-file `sync --json --max-workers 2`
/// against an emulator with `knobs`, and check that the run stops at once: exit 2,
/// the key named as the reason, not every file synced, and none failed one by one.
/// Returns the world, for checks of its own.
pub fn key_revoked_mid_run(knobs: Knobs) -> TestEnv {
    let env = TestEnv::with_knobs(knobs);
    env.write_many(60);
    let child = env.spawn(&["sync", "--json", "--max-workers", "2"]);
    assert!(wait_until(Duration::from_secs(20), || env
        .emulator
        .stats()
        .uploads
        >= 4));
    env.emulator
        .set_knobs(|k| k.api_key = "tanova_sk_revoked".into());
    let run = Run::wait(child);
    run.assert_code(2);
    let j = run.json();
    assert!(
        j["stopped"]
            .as_str()
            .unwrap()
            .contains("API key was rejected"),
        "{j}"
    );
    assert!(j["synced"].as_u64().unwrap() < 60);
    assert_eq!(j["failed"], 0, "files are not failed one by one");
    env
}

/// Wait until the emulator has received `n` uploads (unique checksums).
pub fn wait_for_uploads(env: &TestEnv, n: u64, timeout: Duration) -> bool {
    wait_until(timeout, || env.emulator.stats().unique_checksums >= n)
}

/// An API client for `emulator` with `key`, and short timeouts.
pub fn client(emulator: &Emulator, key: &str) -> tanova_sync::api::ApiClient {
    let url = tanova_sync::config::parse_url(&emulator.url(), false).unwrap();
    let timeouts = tanova_sync::api::Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(5),
    };
    tanova_sync::api::ApiClient::new(&url, &tanova_sync::config::ApiKey::new(key), timeouts)
        .unwrap()
}
