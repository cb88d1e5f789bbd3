//! The shared ledger over TLS (`rediss://`, a private CA, client certificates) and with an ACL user,
//! against a real `redis-server` with `--tls-port` and certificates made here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::redis_server::free_port;
use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

const USER: &str = "tanova-agent";
const PASSWORD: &str = "acl-password-SECRET-4242";

/// A CA, a server certificate for localhost, and a client certificate, as PEM files.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Agency Redis CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ),
            ("client", vec!["tanova-agent".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A redis-server with an ACL user, either plain or TLS-only.
struct Redis {
    child: Child,
    port: u16,
    tls: bool,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// `None` (printed) where redis-server is missing (with `CI` set, a panic); `certs` makes it TLS-only,
    /// `clients_need_certs` asks clients for a certificate too.
    fn start(certs: Option<&Certs>, clients_need_certs: bool) -> Option<Self> {
        require_tool(&["redis-server"], "apt-get install redis-server")?;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("redis.log");
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                // An ACL user, as managed services give out; the default user needs the password too.
                .args([
                    "--user",
                    USER,
                    "on",
                    &format!(">{PASSWORD}"),
                    "~*",
                    "&*",
                    "+@all",
                ])
                .args(["--requirepass", "default-user-password-4242"]);
            match certs {
                Some(c) => {
                    cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                        .arg("--tls-cert-file")
                        .arg(c.path("server.pem"))
                        .arg("--tls-key-file")
                        .arg(c.path("server.key"))
                        .arg("--tls-ca-cert-file")
                        .arg(c.path("ca.pem"))
                        .args([
                            "--tls-auth-clients",
                            if clients_need_certs { "yes" } else { "no" },
                        ]);
                }
                None => {
                    cmd.args(["--port", &port.to_string()]);
                }
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut redis = Redis {
                child,
                port,
                tls: certs.is_some(),
                _dir: tempfile::tempdir().unwrap(),
            };
            let ready = wait_until(Duration::from_secs(10), || {
                std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Ready to accept"))
                    || redis.child.try_wait().unwrap().is_some()
            });
            if ready && redis.child.try_wait().unwrap().is_none() {
                redis._dir = dir;
                return Some(redis);
            }
            let _ = redis.child.kill();
            let _ = redis.child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                !text.contains("TLS") || text.contains("Address already in use"),
                "redis-server refused its TLS settings (built without TLS?):\n{text}"
            );
        }
        panic!("redis-server did not start");
    }

    fn url(&self, password: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{USER}:{password}@localhost:{}/0", self.port)
    }

    /// HLEN tanova:synced, asked with redis-cli (over TLS with `certs`).
    fn synced(&self, certs: Option<&Certs>) -> u64 {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--user", USER, "--pass", PASSWORD, "--no-auth-warning"]);
        if let Some(c) = certs {
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(c.path("ca.pem"))
                .arg("--cert")
                .arg(c.path("client.pem"))
                .arg("--key")
                .arg(c.path("client.key"));
        }
        let out = cmd.args(["HLEN", "tanova:synced"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("redis-cli: {text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sync(env: &TestEnv, config: serde_json::Value) -> Run {
    env.config(config);
    env.run(&["sync", "--json"])
}

/// The error names the URL with the password hidden, and never the password.
fn assert_names_url_not_password(run: &Run, redis: &Redis, cause: &[&str]) {
    let shown = redis.url("***");
    assert!(
        run.stderr.contains(&shown),
        "want {shown} in:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(PASSWORD),
        "password shown:\n{}",
        run.stderr
    );
    assert!(
        !run.stdout.contains(PASSWORD),
        "password shown:\n{}",
        run.stdout
    );
    let lower = run.stderr.to_lowercase();
    assert!(
        cause.iter().any(|c| lower.contains(c)),
        "want one of {cause:?} in:\n{}",
        run.stderr
    );
}

#[test]
fn rediss_with_a_private_ca_and_an_acl_user() {
    let certs = Certs::make();
    let Some(redis) = Redis::start(Some(&certs), false) else {
        return;
    };
    let env = TestEnv::new();
    env.write("a.pdf", "shared over TLS");
    let ca = certs.path("ca.pem");

    // The server's CA is not the system's: refused, naming the URL and the cause.
    let run = sync(
        &env,
        json!({ "state_url": redis.url(PASSWORD), "retry_count": 0 }),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_names_url_not_password(&run, &redis, &["unknownissuer"]);
    assert!(run.stderr.contains("set redis_ca_file"), "{}", run.stderr);
    assert_eq!(env.emulator.stats().uploads, 0);

    // A wrong password: refused, naming the URL and the cause.
    let run = sync(
        &env,
        json!({ "state_url": redis.url("wrong-password"), "redis_ca_file": ca, "retry_count": 0 }),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_names_url_not_password(&run, &redis, &["authentication failed"]);

    // Trusting the CA, as the ACL user: the ledger works over TLS.
    let run = sync(
        &env,
        json!({ "state_url": redis.url(PASSWORD), "redis_ca_file": ca, "retry_count": 0 }),
    );
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    assert!(!run.stderr.contains(PASSWORD), "{}", run.stderr);
    assert_eq!(redis.synced(Some(&certs)), 1);
}

#[test]
fn rediss_with_a_client_certificate() {
    let certs = Certs::make();
    let Some(redis) = Redis::start(Some(&certs), true) else {
        return;
    };
    let env = TestEnv::new();
    env.write("a.pdf", "shared over mutual TLS");
    let ca = certs.path("ca.pem");
    let run = sync(
        &env,
        json!({ "state_url": redis.url(PASSWORD), "redis_ca_file": ca, "retry_count": 0 }),
    );
    assert_eq!(run.code, 1, "no client certificate: {}", run.stderr);
    assert_names_url_not_password(&run, &redis, &["certificaterequired"]);
    assert!(
        run.stderr.contains("set redis_client_cert"),
        "{}",
        run.stderr
    );

    let run = sync(
        &env,
        json!({
            "state_url": redis.url(PASSWORD), "redis_ca_file": ca, "retry_count": 0,
            "redis_client_cert": certs.path("client.pem"),
            "redis_client_key": certs.path("client.key"),
        }),
    );
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    assert_eq!(redis.synced(Some(&certs)), 1);
}

#[test]
fn redis_with_an_acl_user_and_tls_files_only_for_rediss() {
    let Some(redis) = Redis::start(None, false) else {
        return;
    };
    let env = TestEnv::new();
    env.write("a.pdf", "shared in plain Redis with an ACL user");
    let run = sync(
        &env,
        json!({ "state_url": redis.url(PASSWORD), "retry_count": 0 }),
    );
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1);
    assert_eq!(redis.synced(None), 1);

    let run = sync(
        &env,
        json!({ "state_url": redis.url("wrong-password"), "retry_count": 0 }),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_names_url_not_password(&run, &redis, &["authentication failed"]);

    // TLS files with a plain URL, a missing file, half a client pair: config errors naming them.
    let ca = env.dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let missing = Path::new("/no/such/ca.pem");
    for (extra, want) in [
        (json!({ "redis_ca_file": ca }), "rediss://"),
        (json!({ "redis_ca_file": missing }), "/no/such/ca.pem"),
        (json!({ "redis_client_cert": ca }), "redis_client_key"),
    ] {
        let mut config = json!({ "state_url": redis.url(PASSWORD) });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let run = sync(&env, config);
        assert_eq!(run.code, 2, "{extra}: {}", run.stderr);
        assert!(run.stderr.contains(want), "{extra}: {}", run.stderr);
        assert!(!run.stderr.contains(PASSWORD), "{}", run.stderr);
    }
}
