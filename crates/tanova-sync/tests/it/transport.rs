//! Transport: rustls with the system's roots plus `ca_file`, and HTTPS_PROXY / NO_PROXY honoured.

use crate::common::net;
use crate::common::*;
use serde_json::json;

fn https_env() -> (TestEnv, net::TlsFront, String) {
    let env = TestEnv::new();
    env.write("a.pdf", "over https");
    let front = net::tls_front(env.emulator.addr());
    let url = format!("https://localhost:{}", front.port);
    (env, front, url)
}

#[test]
fn a_private_ca_is_refused_until_ca_file_trusts_it() {
    let (env, front, url) = https_env();
    env.config(json!({ "retry_count": 0 }));
    let refused = env.run_with(&[("TANOVA_URL", &url)], &["sync"]);
    refused.assert_code(1);
    assert!(
        refused.stderr.to_lowercase().contains("certificate"),
        "{}",
        refused.stderr
    );
    assert_eq!(env.emulator.stats().uploads, 0);

    let ca = env.dir.path().join("corporate-ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    env.config(json!({ "retry_count": 0, "ca_file": ca }));
    let run = env.run_with(&[("TANOVA_URL", &url)], &["sync", "--json"]);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    assert_eq!(env.emulator.stats().uploads, 1);
}

#[test]
fn a_bad_ca_file_is_a_config_error_naming_it() {
    let env = TestEnv::new();
    let ca = env.dir.path().join("not-a-cert.pem");
    std::fs::write(&ca, "hello").unwrap();
    env.config(json!({ "ca_file": ca }));
    let run = env.run(&["sync"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("ca_file") && run.stderr.contains("not-a-cert.pem"),
        "{}",
        run.stderr
    );
}

#[test]
fn https_proxy_is_used_and_no_proxy_bypasses_it() {
    let (env, front, url) = https_env();
    let ca = env.dir.path().join("ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    env.config(json!({ "ca_file": ca }));
    let proxy = net::connect_proxy();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);

    let run = env.run_with(
        &[("TANOVA_URL", &url), ("HTTPS_PROXY", &proxy_url)],
        &["sync", "--json"],
    );
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    let through_proxy = proxy.tunnels();
    assert!(through_proxy >= 1, "the requests went through the proxy");

    env.write("b.pdf", "direct");
    let run = env.run_with(
        &[
            ("TANOVA_URL", &url),
            ("HTTPS_PROXY", &proxy_url),
            ("NO_PROXY", "localhost"),
        ],
        &["sync", "--json"],
    );
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    assert_eq!(
        proxy.tunnels(),
        through_proxy,
        "NO_PROXY bypassed the proxy"
    );
}
