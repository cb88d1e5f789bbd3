//! Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): navigate, evaluate JavaScript, wait for the page. No client crate: JSON messages ended by NUL on fds 3 and 4.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::require_tool;

/// Chromium's flags for every test: headless, quiet, and reaching nothing but loopback.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--safebrowsing-disable-auto-update",
    "--lang=en-US",
    "--window-size=1100,1000",
    // Nothing but loopback is looked up, so the browser reaches nowhere else.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
];

/// A headless browser with one tab.
pub struct Browser {
    child: Child,
    commands: File,
    answers: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

/// A pipe whose ends close on exec: (read, write).
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is two ints, as pipe2 wants.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

impl Browser {
    /// Start Chromium, or `None` when it is missing and CI is not set (see `require_tool`).
    pub fn start() -> Option<Browser> {
        let binary = require_tool(
            &["chromium", "chromium-browser", "google-chrome"],
            "apt-get install -y chromium",
        )?;
        let profile = tempfile::tempdir().unwrap();
        let (to_browser_read, to_browser_write) = pipe();
        let (from_browser_read, from_browser_write) = pipe();
        let mut command = Command::new(binary);
        command
            .args(FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Out of the way first, so that 3 and 4 can be filled in either order.
                let read = libc::fcntl(to_browser_read, libc::F_DUPFD, 10);
                let write = libc::fcntl(from_browser_write, libc::F_DUPFD, 10);
                if read < 0 || write < 0 || libc::dup2(read, 3) < 0 || libc::dup2(write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("chromium starts");
        // SAFETY: the pipes' ends are ours; the child has its copies.
        let (commands, answers_file) = unsafe {
            libc::close(to_browser_read);
            libc::close(from_browser_write);
            (
                File::from_raw_fd(to_browser_write),
                File::from_raw_fd(from_browser_read),
            )
        };
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(answers_file);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop();
                if let Ok(value) = serde_json::from_slice(&message) {
                    if tx.send(value).is_err() {
                        return;
                    }
                }
                message.clear();
            }
        });
        let mut browser = Browser {
            child,
            commands,
            answers,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .expect("a tab");
        let target = target["targetId"].as_str().expect("a target").to_string();
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .expect("attached to the tab");
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        Some(browser)
    }

    /// Send one command and wait for its answer's `result`, or its `error`.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .expect("the browser takes commands");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .answers
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            if answer["id"] == id {
                return match answer.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(answer["result"].clone()),
                };
            }
        }
    }

    /// Go to `url` and wait until its document has loaded.
    pub fn open(&mut self, url: &str) {
        let session = self.session.clone();
        self.call(Some(&session), "Page.navigate", json!({ "url": url }))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            self.wait_for(
                "document.readyState === 'complete'",
                Duration::from_secs(20)
            ),
            "{url} never loaded"
        );
    }

    /// The value of a JavaScript expression in the page (promises awaited);
    /// `{"error": …}` while the page is between documents.
    pub fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let result = match self.call(
            Some(&session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        ) {
            Ok(result) => result,
            Err(error) => return json!({ "error": error }),
        };
        if let Some(exception) = result.get("exceptionDetails") {
            return json!({ "exception": exception.to_string() });
        }
        result["result"]["value"].clone()
    }

    /// Wait until `predicate` (JavaScript) is true; false at the deadline.
    pub fn wait_for(&mut self, predicate: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.eval(&format!("!!({predicate})")) == json!(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Click the element `selector` finds, as a user would (focus, then click).
    pub fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.focus(); e.click(); return true; }})()",
            s = json!(selector)
        );
        assert_eq!(
            self.eval(&js),
            json!(true),
            "nothing to click at {selector}"
        );
    }

    /// The whole document as HTML.
    pub fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// With `TANOVA_SCREENSHOTS=DIR`, save the page as `DIR/NAME.png` (README's pictures are made so).
    pub fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("TANOVA_SCREENSHOTS") else {
            return;
        };
        let session = self.session.clone();
        let shot = self
            .call(
                Some(&session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .expect("a screenshot");
        let png = base64_decode(shot["data"].as_str().expect("base64 data"));
        let path = std::path::Path::new(&dir).join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The text of the first element `selector` finds, or "".
    pub fn text(&mut self, selector: &str) -> String {
        let js = format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(selector)
        );
        self.eval(&js).as_str().unwrap_or_default().to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
