//! The Redis ledger's semantics against a real redis-server: claims, leases, renewal, records, push.

use std::time::Duration;

use crate::common::redis_server::RedisServer;
use tanova_sync::state::redis::{Claim, RedisLedger, RedisUrl, Renewal};

fn ledger(redis: &RedisServer, lease_ms: u64) -> RedisLedger {
    let url = RedisUrl::parse(&redis.url()).unwrap();
    RedisLedger::new(&url, Duration::from_millis(lease_ms), Duration::ZERO).unwrap()
}

/// A fresh claim, with no earlier upload to wait for.
const CLAIMED: Claim = Claim::Claimed {
    wait: Duration::ZERO,
};

fn sum(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[tokio::test]
async fn one_claim_per_checksum_until_recorded_then_synced_for_all() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (ledger(&redis, 30_000), ledger(&redis, 30_000));
    a.ping().await.unwrap();
    assert_eq!(a.claim(&sum(1)).await.unwrap(), CLAIMED);
    assert_eq!(
        a.claim(&sum(1)).await.unwrap(),
        CLAIMED,
        "claiming again is harmless"
    );
    assert_eq!(
        b.claim(&sum(1)).await.unwrap(),
        Claim::Busy {
            holder: a.agent().to_string()
        }
    );
    // Only the holder can release or renew.
    b.release(&sum(1)).await.unwrap();
    assert_eq!(b.renew(&sum(1)).await.unwrap(), Renewal::Lost);
    assert!(matches!(
        b.claim(&sum(1)).await.unwrap(),
        Claim::Busy { .. }
    ));

    a.record_synced(&sum(1), Some("cand_1")).await.unwrap();
    let synced = Claim::Synced {
        candidate: Some("cand_1".into()),
    };
    assert_eq!(b.claim(&sum(1)).await.unwrap(), synced);
    assert_eq!(a.claim(&sum(1)).await.unwrap(), synced);
    assert!(b.is_synced(&sum(1)).await.unwrap());
    // A later record without a candidate id keeps the known one.
    b.record_synced(&sum(1), None).await.unwrap();
    assert_eq!(a.claim(&sum(1)).await.unwrap(), synced);
    assert_eq!(a.synced_count().await.unwrap(), 1);

    // A released claim is free for the next agent.
    assert_eq!(a.claim(&sum(2)).await.unwrap(), CLAIMED);
    a.release(&sum(2)).await.unwrap();
    assert_eq!(b.claim(&sum(2)).await.unwrap(), CLAIMED);
}

#[tokio::test]
async fn a_lease_expires_unless_renewed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (ledger(&redis, 300), ledger(&redis, 300));
    assert_eq!(a.claim(&sum(3)).await.unwrap(), CLAIMED);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(a.renew(&sum(3)).await.unwrap(), Renewal::Renewed);
    }
    assert!(matches!(
        b.claim(&sum(3)).await.unwrap(),
        Claim::Busy { .. }
    ));
    // A dead agent stops renewing: its claim lapses and another takes over.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(b.claim(&sum(3)).await.unwrap(), CLAIMED);
    assert_eq!(a.renew(&sum(3)).await.unwrap(), Renewal::Lost);

    // With an in-flight grace, whoever takes over a lapsed claim learns how long
    // the frozen agent's request may still be in flight.
    let url = RedisUrl::parse(&redis.url()).unwrap();
    let grace = Duration::from_secs(2);
    let c = RedisLedger::new(&url, Duration::from_millis(300), grace).unwrap();
    let d = RedisLedger::new(&url, Duration::from_millis(300), grace).unwrap();
    assert_eq!(c.claim(&sum(5)).await.unwrap(), CLAIMED);
    tokio::time::sleep(Duration::from_millis(450)).await;
    match d.claim(&sum(5)).await.unwrap() {
        Claim::Claimed { wait } => {
            assert!(wait > Duration::from_secs(1) && wait <= grace, "{wait:?}")
        }
        other => panic!("{other:?}"),
    }
    d.record_synced(&sum(5), None).await.unwrap();

    // A lapsed claim nobody took is taken again by its renewal.
    assert_eq!(a.claim(&sum(4)).await.unwrap(), CLAIMED);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(a.renew(&sum(4)).await.unwrap(), Renewal::Retaken);
    assert!(matches!(
        b.claim(&sum(4)).await.unwrap(),
        Claim::Busy { .. }
    ));
    // Not once the bytes are synced.
    b.record_synced(&sum(5), None).await.unwrap();
    assert_eq!(a.renew(&sum(5)).await.unwrap(), Renewal::Lost);
}

#[tokio::test]
async fn push_adds_without_overwriting() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = ledger(&redis, 30_000);
    a.record_synced(&sum(1), Some("kept")).await.unwrap();
    let records: Vec<(String, Option<String>)> = (1..=250)
        .map(|n| (sum(n), Some(format!("c{n}"))))
        .chain([(sum(251), None)])
        .collect();
    assert_eq!(a.push(&records).await.unwrap(), 250);
    assert_eq!(a.push(&records).await.unwrap(), 0);
    assert_eq!(a.synced_count().await.unwrap(), 251);
    assert_eq!(
        a.claim(&sum(1)).await.unwrap(),
        Claim::Synced {
            candidate: Some("kept".into())
        }
    );
    assert_eq!(
        a.claim(&sum(251)).await.unwrap(),
        Claim::Synced { candidate: None }
    );
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_naming_the_url_without_its_password() {
    let port = crate::common::redis_server::free_port();
    let url = RedisUrl::parse(&format!("redis://:hunter2@127.0.0.1:{port}/0")).unwrap();
    let a = RedisLedger::new(&url, Duration::from_secs(1), Duration::ZERO).unwrap();
    let err = a.claim(&sum(1)).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
