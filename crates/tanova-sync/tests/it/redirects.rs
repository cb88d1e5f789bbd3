//! Redirects: the API key is sent only to the configured origin; a redirect
//! elsewhere, or one that would turn a POST into a GET, stops the run with a
//! message naming both URLs, and holds no file.

use crate::common::live::{LiveAgent, WAIT};
use crate::common::redirect::{Foreign, Front};
use crate::common::*;
use serde_json::json;

const HEALTH: &str = "/api/sync/health";
const CHECK: &str = "/api/sync/check-duplicate";
const UPLOAD: &str = "/api/sync/upload";

fn sync_through(env: &TestEnv, front: &Front) -> Run {
    env.run_with(&[("TANOVA_URL", &front.url())], &["sync", "--json"])
}

#[test]
fn a_redirect_to_another_origin_is_not_followed_and_the_key_not_sent() {
    let env = TestEnv::new();
    env.write("role/a.pdf", "a CV that must not go elsewhere");
    env.config(json!({ "retry_count": 1, "retry_delay": 0.05 }));
    let front = Front::start(env.emulator.addr());
    let foreign = Foreign::start();
    for path in [HEALTH, CHECK, UPLOAD] {
        for status in [301, 302, 303, 307, 308] {
            front.clear();
            let to = format!("{}{path}", foreign.url());
            front.redirect(path, status, &to);
            let run = sync_through(&env, &front);
            let case = format!("{status} on {path}\nstderr:\n{}", run.stderr);
            // Like an unreachable service: the run stops, exit 1, not a key or usage error.
            assert_eq!(run.code, 1, "{case}");
            assert!(run.stderr.contains(&to), "names the target: {case}");
            assert!(
                run.stderr.contains(&format!("{}{path}", front.url())),
                "names the origin's URL: {case}"
            );
            assert!(run.stderr.contains("not sent"), "{case}");
            let seen = foreign.requests();
            assert!(
                seen.iter().all(|s| !s.had_key),
                "the foreign host got the key: {case}: {seen:?}"
            );
            assert!(
                seen.is_empty(),
                "the redirect was followed: {case}: {seen:?}"
            );
            assert_eq!(env.emulator.stats().uploads, 0, "{case}");
        }
    }
    // No file was held as a permanent failure: once the origin answers, it is delivered.
    front.clear();
    let run = sync_through(&env, &front);
    run.assert_code(0);
    assert_eq!(run.count("synced"), 1, "{}", run.stdout);
    assert_eq!(env.emulator.stats().uploads, 1);
}

/// A watching agent whose service starts redirecting uploads to another host
/// ends as `sync` does (exit 1, both URLs named, the key not sent). It used to
/// stop its pipeline and stay up doing nothing, so no service manager restarted
/// it and `/health` said nothing was wrong.
#[test]
fn a_redirect_met_while_watching_ends_the_agent_with_exit_1() {
    let env = TestEnv::new();
    env.write("first.pdf", "a CV sent before the redirect");
    let front = Front::start(env.emulator.addr());
    let foreign = Foreign::start();
    let mut command = env.command(&["watch"]);
    command.env("TANOVA_URL", front.url());
    let agent = LiveAgent::start_command(command);
    assert!(wait_for_uploads(&env, 1, WAIT), "{}", agent.log());
    let to = format!("{}{UPLOAD}", foreign.url());
    front.redirect(UPLOAD, 307, &to);
    env.write("second.pdf", "a CV written after the service moved");
    let (code, log) = agent.exit_within(WAIT);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&to), "names the target: {log}");
    assert!(log.contains("not sent"), "{log}");
    assert!(foreign.requests().is_empty(), "{:?}", foreign.requests());
    assert_eq!(env.emulator.stats().uploads, 1);
}

#[test]
fn a_307_or_308_on_the_same_origin_is_followed_with_method_and_body() {
    let env = TestEnv::new();
    env.config(json!({ "retry_count": 0 }));
    let front = Front::start(env.emulator.addr());
    for (i, status) in [307, 308].into_iter().enumerate() {
        env.write(
            &format!("role/cv{status}.pdf"),
            format!("CV moved by {status}"),
        );
        for path in [HEALTH, CHECK, UPLOAD] {
            front.redirect(path, status, &format!("/moved{path}"));
        }
        let run = sync_through(&env, &front);
        run.assert_code(0);
        assert_eq!(run.count("synced"), 1, "{status}: {}", run.stdout);
        assert_eq!(env.emulator.stats().uploads, i as u64 + 1, "{status}");
        let moved: Vec<_> = front
            .requests()
            .into_iter()
            .filter(|s| s.path.starts_with("/moved"))
            .collect();
        for path in [CHECK, UPLOAD] {
            assert!(
                moved
                    .iter()
                    .any(|s| s.path == format!("/moved{path}") && s.method == "POST"),
                "{status}: {path} was not re-sent as a POST: {moved:?}"
            );
        }
    }
}

#[test]
fn a_301_302_303_to_a_post_names_tanova_url_as_probably_wrong() {
    let env = TestEnv::new();
    env.write("role/a.pdf", "a CV");
    env.config(json!({ "retry_count": 0 }));
    let front = Front::start(env.emulator.addr());
    for status in [301, 302, 303] {
        front.clear();
        // A GET may follow any redirect on its own origin...
        front.redirect(HEALTH, status, &format!("/moved{HEALTH}"));
        // ...but a POST turned into a GET would fail every file.
        front.redirect(CHECK, status, &format!("/moved{CHECK}"));
        let run = sync_through(&env, &front);
        assert_eq!(run.code, 1, "{status}\n{}", run.stderr);
        assert!(
            run.stderr.contains("tanova_url") && run.stderr.contains("probably wrong"),
            "{status}: {}",
            run.stderr
        );
        assert!(
            front
                .requests()
                .iter()
                .any(|s| s.path == format!("/moved{HEALTH}")),
            "{status}: the GET redirect was not followed"
        );
        assert_eq!(env.emulator.stats().uploads, 0);
    }
    front.clear();
    sync_through(&env, &front).assert_code(0);
    assert_eq!(env.emulator.stats().uploads, 1);
}
