//! A real `redis-server` on a free port of 127.0.0.1, started by the test and stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{require_tool, wait_until};

/// A running Redis; its data (and append-only file) lives in a temporary folder.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// A Redis without persistence, or `None` (with the reason printed) where
    /// `redis-server` is not installed: the caller then skips its test
    /// ([`require_tool`]: with `CI` set, a missing Redis fails it instead).
    pub fn start() -> Option<Self> {
        Self::launch(false)
    }

    /// A Redis that fsyncs every write to its append-only file, so a restart keeps everything.
    pub fn start_persistent() -> Option<Self> {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Option<Self> {
        require_tool(&["redis-server"], "apt-get install redis-server")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            persistent,
        };
        // A port found free can be taken before Redis binds it: try a few.
        for _ in 0..5 {
            server.port = free_port();
            server.spawn();
            if server.wait_ready() {
                return Some(server);
            }
            server.kill();
        }
        panic!("redis-server did not start; see {}", server.log().display());
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", appendonly])
            .args(["--appendfsync", "always", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    fn wait_ready(&self) -> bool {
        wait_until(Duration::from_secs(10), || {
            self.connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        })
    }

    /// Kill it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port with the same data folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(self.wait_ready(), "redis-server restarts on {}", self.port);
    }

    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// How many checksums the shared ledger holds.
    pub fn synced_count(&self) -> u64 {
        let mut c = self.connection().expect("redis answers");
        redis::cmd("HLEN")
            .arg("tanova:synced")
            .query(&mut c)
            .expect("HLEN")
    }

    /// How many times a command was called, from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let mut c = self.connection().expect("redis answers");
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut c)
            .expect("INFO");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().expect("a count"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The command of an agent (`name`) with its own state directory, sharing `redis`.
pub fn agent(env: &super::TestEnv, redis: &RedisServer, name: &str, args: &[&str]) -> Command {
    let mut cmd = env.command(args);
    cmd.env(
        "TANOVA_STATE_DIR",
        env.dir.path().join(format!("state-{name}")),
    )
    .env("TANOVA_STATE_URL", redis.url());
    cmd
}
