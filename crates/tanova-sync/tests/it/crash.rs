//! Crash safety: SIGKILL at random moments, restart, and nothing is lost or uploaded twice.

use std::time::Duration;

use crate::common::*;
use rand::RngExt;

#[test]
fn kill_9_at_random_moments_loses_nothing_and_uploads_nothing_twice() {
    const FILES: usize = 2000;
    let env = TestEnv::with_knobs(Knobs {
        upload_latency_ms: 5,
        ..Knobs::default()
    });
    env.write_many(FILES);
    let mut rng = rand::rng();
    for _ in 0..10 {
        let mut child = env.spawn(&["sync", "--json", "-q"]);
        std::thread::sleep(Duration::from_millis(rng.random_range(50..1200)));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }
    let before_final = env.emulator.stats().unique_checksums;
    assert!(before_final > 0, "the killed runs uploaded something");

    let run = env.run(&["sync", "--json"]);
    run.assert_code(0);
    let j = run.json();
    assert_eq!(j["found"], FILES as u64);
    assert_eq!(j["failed"], 0);
    let stats = env.emulator.stats();
    assert_eq!(stats.unique_checksums, FILES as u64, "every file received");
    assert_eq!(stats.duplicate_uploads, 0, "none uploaded twice: {stats:?}");

    // The state is consistent: everything is synced and cached.
    let again = env.run(&["sync", "--json"]);
    again.assert_code(0);
    assert_eq!(
        (again.count("skipped"), again.count("hashed")),
        (FILES as u64, 0)
    );
}
