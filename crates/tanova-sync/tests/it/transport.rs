//! Transport: rustls with the system's roots (bundled Mozilla roots where there are none) plus `ca_file`, and HTTPS_PROXY / NO_PROXY honoured.

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
        refused
            .stderr
            .contains("signed by a CA this machine does not trust")
            && refused.stderr.contains("put its CA certificate in ca_file"),
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

/// A machine without a CA store (a minimal container image): the variables
/// point rustls-native-certs at nothing, as an image without ca-certificates does.
const NO_SYSTEM_STORE: [(&str, &str); 2] = [
    ("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt"),
    ("SSL_CERT_DIR", "/nonexistent/certs"),
];

#[test]
fn without_a_system_ca_store_the_bundled_roots_are_used_and_ca_file_adds_to_them() {
    // Regression (issue 13): "cannot build the HTTP client: builder error" on a
    // machine with no CA store, even for a plain http:// URL.
    let env = TestEnv::new();
    env.write("a.pdf", "no system store");
    let plain = env.run_with(&NO_SYSTEM_STORE, &["sync", "-vv"]);
    plain.assert_code(0);
    assert!(
        plain
            .stderr
            .contains("bundled Mozilla roots (no system CA store was found)"),
        "{}",
        plain.stderr
    );

    let (env, front, url) = https_env();
    let ca = env.dir.path().join("corporate-ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    env.config(json!({ "retry_count": 0, "ca_file": ca }));
    let mut vars = NO_SYSTEM_STORE.to_vec();
    vars.push(("TANOVA_URL", &url));
    let run = env.run_with(&vars, &["sync", "--json", "-vv"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("bundled Mozilla roots") && run.stderr.contains("plus 1 from ca_file"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emulator.stats().uploads, 1);
}

#[test]
fn with_a_system_ca_store_its_roots_are_used() {
    let env = TestEnv::new();
    env.write("a.pdf", "system store");
    let run = env.run(&["sync", "-vv"]);
    run.assert_code(0);
    // This machine has ca-certificates (rustls-native-certs finds them).
    assert!(
        run.stderr.contains("TLS: trusting the system's "),
        "{}",
        run.stderr
    );
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

/// Regression: with HTTP_PROXY set (as it is machine-wide in many offices), a
/// plain-http loopback `tanova_url` (the emulator, a local TLS sidecar) was
/// sent through the proxy, handing it the API key in clear; and the proxy's
/// "localhost" is not this machine's, so the run failed too.
#[test]
fn a_plain_http_loopback_url_is_reached_directly_never_through_a_proxy() {
    let env = TestEnv::new();
    env.write("a.pdf", "over loopback");
    let proxy = net::connect_proxy();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    for variable in ["HTTP_PROXY", "http_proxy", "ALL_PROXY"] {
        let run = env.run_with(&[(variable, &proxy_url)], &["sync", "--json"]);
        run.assert_code(0);
        assert_eq!(proxy.plain(), 0, "{variable}: the proxy was handed the key");
    }
    assert_eq!(env.emulator.stats().uploads, 1);
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

/// A machine whose clock is off sees every certificate as expired or not yet
/// valid: the run says so, with the clock's time and what to do, instead of
/// only rustls's "verification time 1796686449 (UNIX)".
#[test]
fn a_certificate_out_of_its_validity_names_this_machines_clock() {
    let ymd = rcgen::date_time_ymd;
    let table = [
        ((ymd(2020, 1, 1), ymd(2021, 1, 1)), "has expired"),
        ((ymd(2100, 1, 1), ymd(2101, 1, 1)), "is not valid yet"),
    ];
    for (valid, says) in table {
        let env = TestEnv::new();
        env.write("a.pdf", "a CV over https");
        let front = net::tls_front_valid(env.emulator.addr(), Some(valid));
        let ca = env.dir.path().join("corporate-ca.pem");
        std::fs::write(&ca, &front.ca_pem).unwrap();
        env.config(json!({ "retry_count": 0, "ca_file": ca }));
        let url = format!("https://localhost:{}", front.port);
        let run = env.run_with(&[("TANOVA_URL", &url)], &["sync"]);
        run.assert_code(1);
        assert!(
            run.stderr.contains(&format!(
                "the service's certificate {says} by this machine's clock, which says 20"
            )) && run.stderr.contains("NTP"),
            "{}",
            run.stderr
        );
        assert_eq!(env.emulator.stats().uploads, 0);
    }
}
