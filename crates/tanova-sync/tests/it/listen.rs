//! `--listen`: /health, /metrics and the status page with a real HTTP client against the real binary, and the page in headless Chromium.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::live::{client, get, InProcessServer, LiveAgent as Agent, WAIT};
use crate::common::*;
use serde_json::{json, Value};

/// A file name that would be markup if the page did not escape it.
const EVIL: &str = "<img src=x onerror=alert(1)>.txt";
const REASON: &str = "refused by the server (422): Could not parse document (injected)";

fn health(agent: &Agent) -> (u16, Value) {
    let (status, content_type, body) = get(&agent.url("/health"));
    assert_eq!(content_type, "application/json");
    (
        status,
        serde_json::from_str(&body).expect("/health is JSON"),
    )
}

/// Three CVs to upload, one the server refuses, and one whose name is markup.
fn world() -> TestEnv {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("unreadable".into()),
        ..Knobs::default()
    });
    env.write("Nurse/alice_alice@example.com.pdf", "Alice's CV");
    env.write("bob.docx", "Bob's CV");
    env.write(EVIL, "a CV with a nasty name");
    env.write("unreadable-scan.pdf", "the server refuses this one");
    env.config(json!({ "settle_ms": 100, "retry_delay": 0.05 }));
    env
}

/// Wait for the agent to report `synced` uploads and `failed` failures on /health.
fn wait_for_counts(agent: &Agent, synced: u64, failed: u64) -> Value {
    let mut last = Value::Null;
    let reached = wait_until(WAIT, || {
        last = health(agent).1;
        last["counts"]["synced"] == synced && last["counts"]["failed"] == failed
    });
    assert!(reached, "counts never reached {synced}/{failed}: {last}");
    last
}

#[test]
fn health_metrics_and_the_page_while_watching() {
    let env = world();
    let agent = Agent::start(&env, &["watch"]);
    let body = wait_for_counts(&agent, 3, 1);
    let (status, _) = health(&agent);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let last = body["last_upload_at"].as_str().expect("an upload time");
    assert!(
        last.len() == 20 && last.ends_with('Z') && last.as_bytes()[10] == b'T',
        "RFC 3339: {last}"
    );
    for (key, want) in [
        ("found", 4),
        ("synced", 3),
        ("skipped", 0),
        ("duplicates", 0),
        ("failed", 1),
    ] {
        assert_eq!(body["counts"][key], want, "{key} in {body}");
    }
    assert_eq!(body["queue"], 0);
    assert_eq!(body["in_flight"], 0);
    assert!(body["concurrency_limit"].as_u64().unwrap() >= 1, "{body}");

    let (status, content_type, text) = get(&agent.url("/metrics"));
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, want) in [
        ("tanova_files_synced_total", 3.0),
        ("tanova_files_failed_total", 1.0),
        ("tanova_files_skipped_total", 0.0),
        ("tanova_files_duplicate_total", 0.0),
        ("tanova_uploads_in_flight", 0.0),
        ("tanova_queue_depth", 0.0),
        ("tanova_upload_duration_seconds_count", 3.0),
    ] {
        assert_eq!(samples.get(name), Some(&want), "{name} in\n{text}");
    }
    let bytes = ["Alice's CV", "Bob's CV", "a CV with a nasty name"]
        .iter()
        .map(|s| s.len() as f64)
        .sum::<f64>();
    assert_eq!(samples["tanova_bytes_uploaded_total"], bytes);
    assert!(samples["tanova_concurrency_limit"] >= 1.0);

    let (status, content_type, page) = get(&agent.url("/"));
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/html; charset=utf-8");
    for shown in [
        "alice_alice@example.com.pdf",
        "bob.docx",
        "unreadable-scan.pdf",
        REASON,
        "&lt;img src=x onerror=alert(1)&gt;.txt",
        "http-equiv=\"refresh\"",
    ] {
        assert!(page.contains(shown), "{shown:?} not on the page:\n{page}");
    }
    assert!(!page.contains("<img"), "a file name became markup:\n{page}");

    // The folder goes away (an unmounted share): the agent is not healthy.
    std::fs::rename(env.folder(), env.dir.path().join("gone")).unwrap();
    let mut last = Value::Null;
    let unhealthy = wait_until(WAIT, || {
        let (status, body) = health(&agent);
        last = body;
        status == 503
    });
    assert!(unhealthy, "{last}");
    assert_eq!(last["status"], "folder_missing");
    std::fs::rename(env.dir.path().join("gone"), env.folder()).unwrap();
    assert_eq!(health(&agent).0, 200, "healthy again once it is back");

    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn sync_serves_while_it_runs_and_the_env_var_turns_it_on() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 1500,
        ..Knobs::default()
    });
    env.write_many(6);
    env.config(json!({ "concurrency": 2 }));
    // TANOVA_LISTEN alone: the flag is not needed.
    let mut cmd = env.command(&["sync"]);
    cmd.env("TANOVA_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("listening on http://")
                .nth(1)
                .map(|r| r.split_whitespace().next().unwrap().to_string())
        })
        .expect("a listening line");
    std::thread::spawn(move || lines.for_each(drop));
    let url = format!("http://{addr}/health");
    let mut busy = Value::Null;
    assert!(wait_until(WAIT, || {
        busy = serde_json::from_str(&get(&url).2).unwrap();
        busy["in_flight"] == 2 && busy["counts"]["found"] == 6
    }));
    assert_eq!(busy["concurrency_limit"], 2, "{busy}");
    assert_eq!(busy["queue"], 4, "six found, two uploading: {busy}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        client().get(&url).send().is_err(),
        "the server stops with the run"
    );
}

#[test]
fn an_address_other_machines_reach_is_refused_unless_configured() {
    let env = TestEnv::new();
    let run = env.run(&["sync", "--listen", "0.0.0.0:9898"]);
    run.assert_code(2);
    assert!(run.stderr.contains("listen_public"), "{}", run.stderr);
    let run = env.run(&["sync", "--listen", "nonsense"]);
    run.assert_code(2);
    assert!(run.stderr.contains("listen"), "{}", run.stderr);
    // A port that is taken is an error at start, not a silent run without the server.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = env.run(&["sync", "--listen", &addr]);
    run.assert_code(2);
    assert!(run.stderr.contains("cannot listen on"), "{}", run.stderr);
}

/// One raw HTTP/1.1 GET with the `Host` header a browser would send: (status, head, body).
fn get_with_host(base: &str, path: &str, host: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

#[test]
fn a_page_on_another_host_name_gets_421_and_no_data() {
    // DNS rebinding: the browser connects to 127.0.0.1 but says Host: attacker.example.
    let env = world();
    env.config(json!({
        "settle_ms": 100, "retry_delay": 0.05, "listen_hosts": ["cvs.agency.test"]
    }));
    let agent = Agent::start(&env, &["watch"]);
    wait_for_counts(&agent, 3, 1);
    let port = agent.base.rsplit(':').next().unwrap().to_string();
    let security_headers = |head: &str, case: &str| {
        // The console's page sends its Origin to itself (its forms need it), nothing elsewhere.
        let referrer = if case == "the page" {
            "referrer-policy: same-origin"
        } else {
            "referrer-policy: no-referrer"
        };
        for header in [
            "x-content-type-options: nosniff",
            referrer,
            "cache-control: no-store",
        ] {
            assert!(head.contains(header), "{case}: no {header}:\n{head}");
        }
    };
    for path in ["/", "/health", "/metrics", "/nowhere"] {
        for host in [
            "attacker.example".to_string(),
            format!("attacker.example:{port}"),
            format!("localhost.attacker.example:{port}"),
        ] {
            let case = format!("{host} {path}");
            let (status, head, body) = get_with_host(&agent.base, path, &host);
            assert_eq!(status, 421, "{case}: {head}\n{body}");
            for secret in ["alice", "bob", "synced", "unreadable", "tanova_"] {
                assert!(!body.contains(secret), "{case} got data: {body}");
            }
            security_headers(&head, &case);
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_string(),
        // listen_hosts
        format!("cvs.agency.test:{port}"),
    ] {
        let (status, head, body) = get_with_host(&agent.base, "/health", &host);
        assert_eq!(status, 200, "{host}: {head}\n{body}");
        assert!(body.contains("\"synced\":3"), "{host}: {body}");
        security_headers(&head, &host);
    }
    let (status, head, _) = get_with_host(&agent.base, "/", &format!("[::1]:{port}"));
    assert_eq!(status, 200, "[::1]: {head}");
    security_headers(&head, "the page");
    agent.stop();
}

#[test]
fn a_rejected_key_answers_503() {
    use tanova_sync::metrics::Problem;

    let dir = tempfile::tempdir().unwrap();
    let running = InProcessServer::start("127.0.0.1:0", dir.path());
    let (server, metrics) = (&running.server, &running.metrics);
    let url = format!("http://{}/health", server.addr());
    assert_eq!(get(&url).0, 200);
    metrics.set_problem(Problem::KeyRejected);
    let (status, _, body) = get(&url);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("key_rejected"))
    );
    let (_, _, text) = get(&format!("http://{}/metrics", server.addr()));
    assert_eq!(parse_exposition(&text).unwrap()["tanova_healthy"], 0.0);
    running.stop();
}

#[test]
fn the_status_page_renders_in_headless_chromium() {
    let Some(browser) = require_tool(
        &["chromium", "chromium-browser", "google-chrome"],
        "apt-get install -y chromium",
    ) else {
        return;
    };
    let env = world();
    let agent = Agent::start(&env, &["watch"]);
    wait_for_counts(&agent, 3, 1);
    let profile = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(&browser)
        .args(crate::common::browser::FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(agent.url("/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: signal 0 only checks that our child still exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return;
            }
        }
        // SAFETY: our own child, which has hung.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let mut dom = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut dom).unwrap();
    let mut errors = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut errors).unwrap();
    let status = child.wait().unwrap();
    let _ = killer.join();
    assert!(status.success(), "chromium failed ({status}):\n{errors}");
    for shown in [
        "<title>tanova-sync status</title>",
        "alice_alice@example.com.pdf",
        "bob.docx",
        "unreadable-scan.pdf",
        REASON,
        // The markup-like name is text in the DOM, not an element.
        "&lt;img src=x onerror=alert(1)&gt;.txt",
    ] {
        assert!(
            dom.contains(shown),
            "{shown:?} not in the DOM:\n{dom}\n{errors}"
        );
    }
    assert!(
        !dom.contains("<img"),
        "a file name became an element:\n{dom}"
    );
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{stderr}");
}

/// Check Prometheus' text format and return each sample's value by its full
/// name with labels (`x_bucket{le="1"}`), and by its bare name when it has none.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    // Per histogram: (le, cumulative count) in order, then its _count.
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for (i, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            if !valid_name(name) || !help.insert(name.to_string()) {
                return Err(format!("{at}: bad or repeated HELP"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, kind) = (words.next().unwrap(), words.next().unwrap_or(""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("{at}: unknown type"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(format!("{at}: repeated TYPE"));
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(format!("{at}: stray comment or blank line"));
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("{at}: no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("{at}: value is not a number"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .ok_or(format!("{at}: unclosed labels"))?;
                let mut labels = BTreeMap::new();
                for pair in inner.split(',') {
                    let (key, quoted) = pair.split_once('=').ok_or(format!("{at}: bad label"))?;
                    let text = quoted
                        .strip_prefix('"')
                        .and_then(|q| q.strip_suffix('"'))
                        .ok_or(format!("{at}: unquoted label value"))?;
                    if !valid_name(key) {
                        return Err(format!("{at}: bad label name"));
                    }
                    labels.insert(key.to_string(), text.to_string());
                }
                (name, labels)
            }
        };
        if !valid_name(name) {
            return Err(format!("{at}: bad metric name"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !help.contains(family) || !types.contains_key(family) {
            return Err(format!("{at}: no HELP and TYPE before the sample"));
        }
        if types[family] == "counter" && !name.ends_with("_total") {
            return Err(format!("{at}: a counter's name ends with _total"));
        }
        if name.ends_with("_bucket") {
            let le = labels
                .get("le")
                .ok_or(format!("{at}: a bucket without le"))?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("{at}: bad le"))?
            };
            buckets
                .entry(family.to_string())
                .or_default()
                .push((le, value));
        }
        if samples.insert(series.to_string(), value).is_some() {
            return Err(format!("{at}: repeated series"));
        }
    }
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let list = buckets.get(family).ok_or(format!("{family}: no buckets"))?;
        if !list.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
            return Err(format!(
                "{family}: buckets are not ascending and cumulative: {list:?}"
            ));
        }
        let last = list.last().unwrap();
        let count = samples
            .get(&format!("{family}_count"))
            .ok_or(format!("{family}: no _count"))?;
        if last.0 != f64::INFINITY || last.1 != *count {
            return Err(format!(
                "{family}: the +Inf bucket {last:?} is not the count {count}"
            ));
        }
        if !samples.contains_key(&format!("{family}_sum")) {
            return Err(format!("{family}: no _sum"));
        }
    }
    Ok(samples)
}
