//! `tanova-sync healthcheck [URL]`, the container's HEALTHCHECK: exit 0 for a healthy agent's /health, 1 for a 503 or no answer, 2 for a URL that is not one.

use crate::common::live::{InProcessServer, LiveAgent};
use crate::common::*;
use serde_json::json;

#[test]
fn a_watching_agent_is_healthy_by_url_and_by_tanova_listen() {
    let env = TestEnv::new();
    env.write_many(2);
    env.config(json!({ "settle_ms": 100 }));
    let agent = LiveAgent::start(&env, &["watch"]);
    let addr = agent.base.trim_start_matches("http://").to_string();

    let by_url = env.run(&["healthcheck", &agent.url("/health")]);
    by_url.assert_code(0);
    let by_listen = env.run_with(&[("TANOVA_LISTEN", &addr)], &["healthcheck"]);
    by_listen.assert_code(0);
    let by_host_port = env.run(&["healthcheck", &addr]);
    by_host_port.assert_code(0);
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn an_unhealthy_agent_or_none_at_all_fails_the_check_saying_why() {
    use tanova_sync::metrics::Problem;

    let env = TestEnv::new();
    let running = InProcessServer::start("127.0.0.1:0", &env.folder());
    let (server, metrics) = (&running.server, &running.metrics);
    let url = format!("http://{}/health", server.addr());
    env.run(&["healthcheck", &url]).assert_code(0);

    metrics.set_problem(Problem::KeyRejected);
    let rejected = env.run(&["healthcheck", &url]);
    rejected.assert_code(1);
    assert!(
        rejected.stderr.contains("503") && rejected.stderr.contains("key_rejected"),
        "{}",
        rejected.stderr
    );
    running.stop();

    let closed = crate::common::redis_server::free_port();
    let nobody = env.run_with(
        &[("TANOVA_LISTEN", &format!("127.0.0.1:{closed}"))],
        &["healthcheck"],
    );
    nobody.assert_code(1);
    assert!(
        nobody
            .stderr
            .contains(&format!("http://127.0.0.1:{closed}/health: no answer")),
        "{}",
        nobody.stderr
    );

    let nonsense = env.run(&["healthcheck", "ftp://127.0.0.1/health"]);
    nonsense.assert_code(2);
    assert!(
        nonsense.stderr.contains("expected an http:// URL"),
        "{}",
        nonsense.stderr
    );
}
