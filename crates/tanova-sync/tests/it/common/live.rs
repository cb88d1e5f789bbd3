//! A running agent with `--listen` on a free loopback port, and a plain HTTP client for it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

pub const WAIT: Duration = Duration::from_secs(20);

/// A running agent with `--listen 127.0.0.1:0`, and the address it printed.
pub struct LiveAgent {
    pub child: Child,
    pub base: String,
    pub stderr: Arc<Mutex<String>>,
    /// What it printed on stdout (`ui` prints the console's URL there).
    pub stdout: Arc<Mutex<String>>,
}

impl LiveAgent {
    pub fn start(env: &TestEnv, args: &[&str]) -> LiveAgent {
        Self::start_command(env.command(args))
    }

    /// Start `command` with `--listen 127.0.0.1:0` added, and read the address it prints.
    pub fn start_command(mut command: Command) -> LiveAgent {
        command.args(["--listen", "127.0.0.1:0"]);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stdout = Arc::new(Mutex::new(String::new()));
        {
            let pipe = child.stdout.take().unwrap();
            let stdout = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut all = stdout.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                    }
                    let mut all = stderr.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let addr = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "no `listening on` line on stderr:\n{}",
                stderr.lock().unwrap()
            )
        });
        LiveAgent {
            child,
            base: format!("http://{addr}"),
            stderr,
            stdout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, and the exit code with everything it wrote to stderr.
    pub fn stop(mut self) -> (i32, String) {
        signal(&self.child, libc::SIGTERM);
        let start = Instant::now();
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            if start.elapsed() > WAIT {
                let _ = self.child.kill();
                panic!("the agent did not stop:\n{}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr.lock().unwrap().clone();
        (code, stderr)
    }
}

/// A test that fails before `stop` leaves no agent behind: the agent is
/// killed with its `LiveAgent` (those started through `start_command` are no
/// `TestEnv`'s, and failing runs left theirs watching until killed by hand).
impl Drop for LiveAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client builder for the tests' own requests: ring installed first (the
/// agent's reqwest brings no crypto provider of its own, and with one process
/// per test nothing else may have installed it), no proxy.
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    tanova_sync::api::tls::install_provider();
    reqwest::blocking::Client::builder().no_proxy()
}

pub fn client() -> reqwest::blocking::Client {
    client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn get(url: &str) -> (u16, String, String) {
    let response = client()
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().unwrap())
}

impl LiveAgent {
    /// `/health`: its status code and JSON body.
    pub fn health(&self) -> (u16, serde_json::Value) {
        let (status, _, body) = get(&self.url("/health"));
        (
            status,
            serde_json::from_str(&body).expect("/health is JSON"),
        )
    }

    /// Wait, at most `within`, until `/health` answers 503 with `status`: its `reason`.
    pub fn problem_within(&self, status: &str, within: Duration) -> String {
        let mut reason = None;
        let said = wait_until(within, || {
            let (code, body) = self.health();
            if code == 503 && body["status"] == status {
                reason = Some(body["reason"].as_str().unwrap_or("").to_string());
            }
            reason.is_some()
        });
        assert!(said, "/health never said {status}:\n{}", self.log());
        reason.unwrap_or_default()
    }

    /// The console's URL with its token, from `ui`'s `The console: URL` line.
    pub fn console_url(&self) -> String {
        let mut url = None;
        let printed = wait_until(WAIT, || {
            url = self
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("The console: ").map(str::to_string));
            url.is_some()
        });
        assert!(printed, "no console URL on stdout:\n{}", self.log());
        url.unwrap()
    }

    /// Wait for the agent to exit by itself, at most `limit`: its exit code
    /// and log. Fails the test (and kills it) if it is still running.
    pub fn exit_within(mut self, limit: Duration) -> (i32, String) {
        let exited = wait_until(limit, || !self.child_alive());
        if !exited {
            let _ = self.child.kill();
            panic!("the agent did not exit by itself:\n{}", self.log());
        }
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        std::thread::sleep(Duration::from_millis(50));
        (code, self.log())
    }

    /// Whether the process is still running.
    pub fn child_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Everything the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// A status server run in process (no agent, no actions), with the metrics it
/// reports, so a test can set a problem and see /health change.
pub struct InProcessServer {
    pub server: tanova_sync::serve::StatusServer,
    pub metrics: Arc<tanova_sync::metrics::Metrics>,
    runtime: tokio::runtime::Runtime,
}

impl InProcessServer {
    /// Serve at `addr` ("127.0.0.1:0", or "0.0.0.0:0" as listen_public would), reporting on `folder`.
    pub fn start(addr: &str, folder: &std::path::Path) -> Self {
        use tanova_sync::metrics::{Gauges, Metrics};
        use tanova_sync::serve::{Sources, StatusServer};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let metrics = Arc::new(Metrics::new(folder));
        let sources = Sources {
            metrics: metrics.clone(),
            folder: folder.to_path_buf(),
            gauges: Arc::new(Gauges::default),
            actions: None,
        };
        let server = runtime
            .block_on(StatusServer::start(addr.parse().unwrap(), sources, &[]))
            .unwrap();
        InProcessServer {
            server,
            metrics,
            runtime,
        }
    }

    pub fn stop(self) {
        drop(self.server);
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
