//! The ledger: where the synced set and claims are shared between agents — this machine only, or Redis.
//!
//! The local SQLite store stays the path cache, the failure log and a write-through
//! mirror of the synced set (synced never becomes unsynced), so a checksum this
//! machine knows as synced costs no call to the ledger. Only unknown checksums ask it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::redis::{Claim, RedisLedger, RedisUrl, Renewal};
use super::Result;
use crate::fence::Fence;
use crate::retry;

/// How long to wait between renewals of a lease, and before trying a failed renewal again.
pub fn renewal_waits(lease: Duration) -> (Duration, Duration) {
    let every = lease / 3;
    let soon = (lease / 12).clamp(Duration::from_millis(20), Duration::from_secs(1));
    (every, soon.min(every))
}

/// Who else must hear about a synced checksum, and who may deliver one.
pub enum Ledger {
    /// One agent: the SQLite store is the whole truth; claims always succeed
    /// (the engine's in-run claim set already keeps one upload per checksum).
    Local,
    /// Several agents share the synced set and take leases in Redis.
    Redis(Box<RedisLedger>),
}

impl Ledger {
    /// The ledger for `url`: local without one; else Redis, once it answers. An
    /// unreachable Redis is asked `retries` more times, with backoff from `base`.
    pub async fn connect(
        url: Option<&RedisUrl>,
        lease: Duration,
        in_flight_grace: Duration,
        retries: u32,
        base: Duration,
        cancel: &CancellationToken,
    ) -> Result<Ledger> {
        let Some(url) = url else {
            return Ok(Ledger::Local);
        };
        let redis = RedisLedger::new(url, lease, in_flight_grace)?;
        let policy = retry::Policy::retries(retries, base);
        let answered = retry::with_backoff(
            &policy,
            cancel,
            |_| async { redis.ping().await.map_err(retry::Again::new) },
            |_, _, _| {},
        )
        .await;
        match answered {
            Ok(()) => Ok(Ledger::Redis(Box::new(redis))),
            Err(retry::Ended::GaveUp(e) | retry::Ended::Stopped(e)) => Err(e),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Ledger::Redis(_))
    }

    /// Claim the bytes for this agent, or learn that they are synced or taken.
    pub async fn claim(&self, checksum: &str) -> Result<Claim> {
        match self {
            Ledger::Local => Ok(Claim::Claimed {
                wait: Duration::ZERO,
            }),
            Ledger::Redis(redis) => redis.claim(checksum).await,
        }
    }

    /// Renew the claim every third of its lease, for as long as it is polled,
    /// extending `fence` with each renewal. A renewal that fails (a slow or briefly
    /// missing Redis) is tried again soon, while the lease still runs; once
    /// another agent holds the claim the fence is lost. Never returns: race it against the delivery.
    pub async fn keep_claim(
        &self,
        checksum: &str,
        fence: Option<Arc<Fence>>,
        on_lost: impl Fn(&str),
    ) -> Infallible {
        let (Ledger::Redis(redis), Some(fence)) = (self, fence) else {
            return std::future::pending().await;
        };
        let lease = redis.lease();
        let (every, soon) = renewal_waits(lease);
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            let sent = Instant::now();
            match redis.renew(checksum).await {
                Ok(Renewal::Renewed) => {
                    fence.extend(sent + lease);
                    wait = every;
                }
                Ok(Renewal::Retaken) => {
                    tracing::debug!("the claim on {checksum} had lapsed and was taken again");
                    fence.extend(sent + lease);
                    wait = every;
                }
                Ok(Renewal::Lost) => {
                    fence.lose();
                    on_lost(checksum);
                    return std::future::pending().await;
                }
                // Logged by the ledger once per outage; the next renewal may work.
                Err(e) => {
                    tracing::debug!("{e}");
                    wait = soon;
                }
            }
        }
    }

    /// Record the bytes as synced in the shared set and release the claim.
    /// Local: nothing to do, the store records it.
    pub async fn record_synced(&self, checksum: &str, candidate: Option<&str>) -> Result<()> {
        match self {
            Ledger::Local => Ok(()),
            Ledger::Redis(redis) => redis.record_synced(checksum, candidate).await,
        }
    }

    /// Give the claim back so another agent may try.
    pub async fn release(&self, checksum: &str) -> Result<()> {
        match self {
            Ledger::Local => Ok(()),
            Ledger::Redis(redis) => redis.release(checksum).await,
        }
    }

    /// The suppression rules shared with other agents (none when nothing is shared).
    pub async fn rules(&self) -> Result<Vec<crate::privacy::Rule>> {
        match self {
            Ledger::Local => Ok(Vec::new()),
            Ledger::Redis(redis) => redis.rules().await,
        }
    }

    /// Share an audit record with other agents. Local: the store keeps it.
    pub async fn record_audit(&self, entry: &crate::privacy::AuditEntry) -> Result<()> {
        match self {
            Ledger::Local => Ok(()),
            Ledger::Redis(redis) => redis.record_audit(entry).await,
        }
    }

    /// How long a claim lives unrenewed (None: claims are not shared).
    pub fn lease(&self) -> Option<Duration> {
        match self {
            Ledger::Local => None,
            Ledger::Redis(redis) => Some(redis.lease()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_often_enough_to_survive_a_missed_one() {
        let ms = Duration::from_millis;
        let table = [
            (ms(30_000), ms(10_000), ms(1_000)),
            (ms(3_000), ms(1_000), ms(250)),
            (ms(120), ms(40), ms(20)),
        ];
        for (lease, every, soon) in table {
            assert_eq!(renewal_waits(lease), (every, soon), "{lease:?}");
            // Two failed renewals and a good one still land within the lease.
            assert!(every + soon * 2 < lease, "{lease:?}");
        }
    }
}
