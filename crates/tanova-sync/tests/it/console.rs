//! The web console end to end: `tanova-sync ui` against the emulator, driven in headless Chromium (banner, live updates, retry, pause and resume), and its refusals of requests without the token or from another origin.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::common::browser::Browser;
use crate::common::live::{client, client_builder, get, InProcessServer, LiveAgent as Agent, WAIT};
use crate::common::*;
use serde_json::json;

const NEW_KEY: &str = ROTATED_KEY;
/// The banner's state, as the page shows it now.
const STATE: &str = "(document.querySelector('#banner .banner') || {dataset: {}}).dataset.state";

fn ui(env: &TestEnv) -> Agent {
    Agent::start(env, &["ui", "--no-browser"])
}

/// Wait for the banner to reach `state`, with the page's HTML in the failure.
fn banner_reaches(browser: &mut Browser, state: &str, timeout: Duration) {
    let reached = browser.wait_for(&format!("{STATE} === '{state}'"), timeout);
    assert!(
        reached,
        "the banner never said {state}:\n{}",
        browser.html()
    );
}

/// Everything the page and the event stream show carries no key.
fn assert_no_key_anywhere(browser: &mut Browser, agent: &Agent) {
    assert_no_key(&browser.html());
    assert_no_key(&get(&agent.url("/")).2);
    assert_no_key(&events_for(agent, Duration::from_millis(1500)));
}

/// What `/events` sends in `how_long`.
fn events_for(agent: &Agent, how_long: Duration) -> String {
    let mut response = client_builder()
        .timeout(how_long)
        .build()
        .unwrap()
        .get(agent.url("/events"))
        .send()
        .expect("/events answers");
    assert_eq!(response.status().as_u16(), 200);
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < how_long {
        match response.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    text
}

#[test]
fn the_banner_says_syncing_then_up_to_date_then_paused_on_a_revoked_key_and_back() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 600,
        ..Knobs::default()
    });
    env.write_many(8);
    env.config(
        json!({ "settle_ms": 100, "retry_delay": 0.05, "retry_count": 1, "concurrency": 1 }),
    );
    let agent = ui(&env);
    let Some(mut browser) = Browser::start() else {
        agent.stop();
        return;
    };
    browser.open(&agent.console_url());
    // The token became a cookie and left the address bar.
    assert_eq!(
        browser.eval("location.search"),
        json!(""),
        "{}",
        browser.html()
    );
    banner_reaches(&mut browser, "syncing", WAIT);
    // The walk hands files over as it goes: all eight are counted within moments.
    assert!(
        browser.wait_for(
            "/^Syncing \\d of 8$/.test(document.querySelector('#state').textContent)",
            WAIT
        ),
        "{}",
        browser.html()
    );
    let loaded_at = browser.eval("performance.timeOrigin");
    banner_reaches(&mut browser, "up-to-date", WAIT);
    assert_eq!(browser.text("#state"), "Up to date");
    assert_eq!(
        browser.eval("performance.timeOrigin"),
        loaded_at,
        "live updates, not reloads"
    );
    assert_eq!(browser.eval("document.body.dataset.live"), json!("1"));
    // Times in the browser's locale and relative form; the chart has bars.
    let when = browser.text("#recent time");
    assert!(
        !when.contains("UTC") && (when.contains("ago") || when.contains("now")),
        "{when}"
    );
    assert!(browser.wait_for(
        "document.querySelectorAll('#chart rect.bar').length >= 1",
        WAIT
    ));
    browser.screenshot("console-up-to-date");
    // Without JavaScript the page says the same.
    let (_, _, raw) = get(&agent.url("/"));
    assert!(
        raw.contains("data-state=\"up-to-date\"") && raw.contains("http-equiv=\"refresh\""),
        "{raw}"
    );

    // The key is revoked: a new CV is refused, and the banner says what to do.
    env.emulator.set_knobs(|k| k.api_key = NEW_KEY.to_string());
    env.write("during.pdf", "written while the key is revoked");
    banner_reaches(&mut browser, "paused-key", WAIT);
    assert_eq!(browser.text("#state"), "Paused: the API key was rejected");
    assert!(
        browser.text("#banner p").contains("tanova-config.json"),
        "{}",
        browser.html()
    );
    browser.screenshot("console-key-rejected");
    assert_no_key_anywhere(&mut browser, &agent);

    // The key is accepted again: the agent finds out by itself and catches up.
    env.emulator
        .set_knobs(|k| k.api_key = DEFAULT_API_KEY.to_string());
    banner_reaches(&mut browser, "up-to-date", Duration::from_secs(40));
    assert!(wait_for_uploads(&env, 9, WAIT));
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert_no_key(&log);
}

#[test]
fn retry_and_pause_in_the_browser_change_what_the_agent_does() {
    let env = TestEnv::with_knobs(Knobs {
        reject_filename_contains: Some("unreadable".into()),
        ..Knobs::default()
    });
    env.write("good.pdf", "a CV");
    env.write(
        "Sales/unreadable-scan.pdf",
        "the server refuses this one at first",
    );
    env.config(json!({ "settle_ms": 100, "retry_delay": 0.05 }));
    let agent = ui(&env);
    let Some(mut browser) = Browser::start() else {
        agent.stop();
        return;
    };
    browser.open(&agent.console_url());
    let retry = "#failures form input[value='Sales/unreadable-scan.pdf'] ~ button";
    assert!(
        browser.wait_for(&format!("document.querySelector(\"{retry}\")"), WAIT),
        "no retry button for the refused file:\n{}",
        browser.html()
    );
    browser.screenshot("console-failure");
    assert_eq!(env.uploaded_names(), ["good.pdf"]);

    // The server accepts it now; one click and it arrives.
    env.emulator
        .set_knobs(|k| k.reject_filename_contains = None);
    browser.click(retry);
    assert!(
        wait_until(WAIT, || env.uploaded_names().len() == 2),
        "{:?}\n{}\n{}",
        env.uploaded_names(),
        agent.log(),
        browser.html()
    );
    assert!(browser.wait_for(
        "document.querySelector('#failures').textContent.includes('None.')",
        WAIT
    ));

    // Pause: a new CV waits, and the banner says so. Resume: it goes.
    browser.wait_for("document.querySelector('#do-pause')", WAIT);
    browser.click("#do-pause");
    banner_reaches(&mut browser, "paused-user", WAIT);
    env.write("later.pdf", "a CV that arrives while paused");
    assert!(
        browser.wait_for(
            "document.querySelector('#banner p').textContent.includes('1 waiting')",
            WAIT
        ),
        "{}",
        browser.html()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        env.uploaded_names().len(),
        2,
        "nothing goes out while paused"
    );
    // The keyboard reaches the button: it is a real, focusable control.
    assert!(browser.wait_for("document.querySelector('#do-resume')", WAIT));
    browser.click("#do-resume");
    assert!(wait_until(WAIT, || env.uploaded_names().len() == 3));
    banner_reaches(&mut browser, "up-to-date", WAIT);
    assert_no_key_anywhere(&mut browser, &agent);
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
}

/// A POST to the console with these headers: (status, body).
fn post(agent: &Agent, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let no_redirects = client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = no_redirects
        .post(agent.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

#[test]
fn a_state_changing_request_without_the_token_or_from_another_origin_is_refused() {
    let env = TestEnv::new();
    env.write("a.pdf", "a CV");
    env.config(json!({ "settle_ms": 100 }));
    let agent = ui(&env);
    let url = agent.console_url();
    let token = url.split("token=").nth(1).unwrap().to_string();
    let cookie = format!(
        "tanova_console_{}={token}",
        agent.base.rsplit(':').next().unwrap()
    );
    let own_origin = agent.base.clone();
    let held = || {
        get(&agent.url("/"))
            .2
            .contains("data-state=\"paused-user\"")
    };
    assert!(wait_for_uploads(&env, 1, WAIT));

    // (case, headers, form body)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let refused: &[Case] = &[
        ("no token", vec![], ""),
        ("a wrong token", vec![("x-tanova-token", "0123")], ""),
        ("a wrong form token", vec![], "token=nope"),
        (
            "the token from another origin",
            vec![("cookie", &cookie), ("origin", "http://evil.example")],
            "",
        ),
        (
            "the token from another port",
            vec![("x-tanova-token", &token), ("origin", "http://127.0.0.1:1")],
            "",
        ),
        (
            "a cross-site fetch",
            vec![("cookie", &cookie), ("sec-fetch-site", "cross-site")],
            "",
        ),
        (
            "no token from the right origin",
            vec![("origin", &own_origin)],
            "",
        ),
    ];
    for (case, headers, body) in refused {
        let (status, text) = post(&agent, "/api/pause", headers, body);
        assert_eq!(status, 403, "{case}: {text}");
        assert!(!held(), "{case}: the agent paused");
    }
    // No CORS: a preflight is not answered with permission.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, agent.url("/api/pause"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .unwrap();
    assert!(
        !preflight.status().is_success()
            && preflight
                .headers()
                .keys()
                .all(|k| !k.as_str().starts_with("access-control")),
        "{preflight:?}"
    );
    let (status, _, _) = get(&agent.url("/?token=0000"));
    assert_eq!(status, 403, "a link with another agent's token");

    // The token, from the console's own origin: done.
    let (status, text) = post(
        &agent,
        "/api/pause",
        &[
            ("cookie", &cookie),
            ("origin", &own_origin),
            ("accept", "application/json"),
        ],
        "",
    );
    assert_eq!(
        (status, text.contains("uploads paused")),
        (200, true),
        "{text}"
    );
    assert!(held());
    let (status, _) = post(&agent, "/api/resume", &[("x-tanova-token", &token)], "");
    assert_eq!(status, 303, "a form's answer sends the browser back");
    assert!(!held());
    let (status, text) = post(
        &agent,
        "/api/retry",
        &[("x-tanova-token", &token)],
        "path=..%2F..%2Fetc%2Fpasswd",
    );
    assert_eq!(status, 404, "{text}");

    // A page on another origin, in a real browser that has the console's cookie.
    if let Some(mut browser) = Browser::start() {
        browser.open(&url);
        assert!(browser.wait_for("document.querySelector('#do-pause')", WAIT));
        let attack = format!(
            "data:text/html,<form method=post action='{}/api/pause'><button id=go>go</button></form>",
            agent.base
        );
        browser.open(&attack);
        browser.click("#go");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!held(), "a form on another origin paused the agent");
        // Back on the other origin (the refused form left the browser on the console's).
        browser.open(&attack);
        let fetched = browser.eval(&format!(
            "fetch('{}/api/pause', {{method: 'POST', credentials: 'include', mode: 'no-cors'}}).then(() => 'sent', () => 'failed')",
            agent.base
        ));
        assert!(fetched.is_string(), "{fetched}");
        std::thread::sleep(Duration::from_millis(500));
        assert!(!held(), "a fetch from another origin paused the agent");
    }
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn ui_finds_the_running_console_and_its_url_file_is_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.config(json!({ "settle_ms": 100 }));
    let agent = ui(&env);
    let url = agent.console_url();
    let file = env.state_dir().join("console-url");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "it holds the token");
    let again = env.run(&["ui", "--no-browser"]);
    again.assert_code(0);
    assert!(
        again.stdout.contains(&format!("The console: {url}")),
        "{}\n{}",
        again.stdout,
        again.stderr
    );
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!file.exists(), "removed when the agent stops");
}

#[test]
fn a_one_shot_sync_serves_the_dashboard_but_takes_no_actions() {
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 1500,
        ..Knobs::default()
    });
    env.write_many(4);
    env.config(json!({ "concurrency": 1 }));
    let agent = Agent::start(&env, &["sync"]);
    let mut page = String::new();
    let syncing = wait_until(WAIT, || {
        page = get(&agent.url("/")).2;
        page.contains("data-state=\"syncing\"")
    });
    assert!(syncing, "{page}");
    assert!(!page.contains("<form"), "{page}");
    let (status, text) = post(&agent, "/api/pause", &[], "");
    assert_eq!(status, 403, "{text}");
    agent.stop();
}

#[test]
fn on_a_public_address_the_console_needs_the_token_to_be_read_at_all() {
    let dir = tempfile::tempdir().unwrap();
    // listen_public: bound to every address; asked here over loopback only.
    let running = InProcessServer::start("0.0.0.0:0", dir.path());
    let server = &running.server;
    let base = format!("http://127.0.0.1:{}", server.addr().port());
    let url = server.console_url();
    assert!(url.starts_with(&format!("{base}/?token=")), "{url}");
    for path in ["/", "/events"] {
        let (status, _, body) = get(&format!("{base}{path}"));
        assert_eq!(status, 403, "{path} without the token: {body}");
        assert!(!body.contains(&dir.path().display().to_string()));
    }
    assert_eq!(
        get(&format!("{base}/health")).0,
        200,
        "monitoring needs no token"
    );
    let no_redirects = client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let first = no_redirects.get(&url).send().unwrap();
    assert_eq!(first.status().as_u16(), 303);
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("SameSite=Strict") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let page = no_redirects
        .get(format!("{base}/"))
        .header("cookie", pair)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self'"),
        "{csp}"
    );
    running.stop();
}

#[test]
fn with_no_config_the_setup_page_checks_the_folder_and_key_writes_the_config_and_starts_syncing() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.write("Nurse/alice.pdf", "Alice's CV");
    env.write("bob.docx", "Bob's CV");
    // Nothing configures it: no file, no variables.
    let mut command = env.command(&["ui", "--no-browser"]);
    for var in ["TANOVA_FOLDER_PATH", "TANOVA_API_KEY", "TANOVA_URL"] {
        command.env_remove(var);
    }
    let agent = Agent::start_command(command);
    let Some(mut browser) = Browser::start() else {
        agent.stop();
        return;
    };
    let url = agent.console_url();
    // Saving needs the token, from the page's own origin.
    let folder_field = format!("folder={}", env.folder().display());
    let token = url.split("token=").nth(1).unwrap();
    for (case, headers) in [
        ("no token", vec![]),
        (
            "another origin",
            vec![("x-tanova-token", token), ("origin", "http://evil.example")],
        ),
    ] {
        let (status, text) = post(&agent, "/setup/save", &headers, &folder_field);
        assert_eq!(status, 403, "{case}: {text}");
    }
    assert_eq!(
        get(&agent.url("/")).0,
        403,
        "the page itself needs the token"
    );
    browser.open(&url);
    assert_eq!(
        browser.text("h1"),
        "Set up tanova-sync",
        "{}",
        browser.html()
    );
    let fill = |browser: &mut Browser, id: &str, value: &str| {
        let js = format!(
            "document.getElementById({}).value = {}; true",
            json!(id),
            json!(value)
        );
        assert_eq!(browser.eval(&js), json!(true));
    };
    // A folder that is not there, then the real one: checked, with its CVs counted.
    fill(&mut browser, "folder", "/nowhere/at/all");
    browser.click("#check-folder");
    assert!(browser.wait_for(
        "document.getElementById('folder-result').textContent.includes('is not a folder')",
        WAIT
    ));
    fill(&mut browser, "folder", env.folder().to_str().unwrap());
    browser.click("#check-folder");
    assert!(browser.wait_for(
        "document.getElementById('folder-result').textContent.includes('holds 2 CVs')",
        WAIT
    ));
    // A wrong key is refused by the service; the right one names the agency.
    browser.eval("document.querySelector('details').open = true");
    fill(&mut browser, "tanova_url", &env.emulator.url());
    fill(&mut browser, "api_key", "tanova_sk_wrong_key_123456");
    browser.click("#test-key");
    assert!(
        browser.wait_for(
            "/401|rejected|invalid/i.test(document.getElementById('key-result').textContent)",
            WAIT
        ),
        "{}",
        browser.html()
    );
    fill(&mut browser, "api_key", DEFAULT_API_KEY);
    browser.click("#test-key");
    assert!(browser.wait_for(
        "document.getElementById('key-result').textContent.includes('valid for Emulator Agency')",
        WAIT
    ));
    browser.screenshot("console-setup");
    assert_no_key(&browser.html());
    browser.click("#save");
    // The config is written as `init` writes it, and the same page becomes the dashboard.
    let config = env.dir.path().join("tanova-config.json");
    assert!(wait_until(WAIT, || config.exists()), "{}", agent.log());
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(written["api_key"], DEFAULT_API_KEY);
    assert_eq!(written["folder_path"], env.folder().to_str().unwrap());
    assert!(wait_for_uploads(&env, 2, WAIT), "{}", agent.log());
    assert!(
        browser.wait_for(
            &format!("{STATE} === 'up-to-date'"),
            Duration::from_secs(30)
        ),
        "{}\n{}",
        browser.html(),
        agent.log()
    );
    assert_no_key(&browser.html());
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
    assert_no_key(&log);
}
