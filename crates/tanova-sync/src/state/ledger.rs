//! The ledger: where the synced set and claims are shared between agents — this machine only, or Redis.
//!
//! The local SQLite store stays the path cache, the failure log and a write-through
//! mirror of the synced set (synced never becomes unsynced), so a checksum this
//! machine knows as synced costs no call to the ledger. Only unknown checksums ask it.

use std::convert::Infallible;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::redis::{Claim, RedisLedger, RedisUrl, Renewal};
use super::Result;
use crate::deliver::backoff;

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
        retries: u32,
        base: Duration,
        cancel: &CancellationToken,
    ) -> Result<Ledger> {
        let Some(url) = url else {
            return Ok(Ledger::Local);
        };
        let redis = RedisLedger::new(url, lease)?;
        let mut attempt = 0;
        loop {
            match redis.ping().await {
                Ok(()) => return Ok(Ledger::Redis(Box::new(redis))),
                Err(e) if attempt >= retries || cancel.is_cancelled() => return Err(e),
                Err(_) => {}
            }
            let delay = backoff::delay(attempt, base, None, rand::random::<f64>());
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Ledger::Redis(_))
    }

    /// Claim the bytes for this agent, or learn that they are synced or taken.
    pub async fn claim(&self, checksum: &str) -> Result<Claim> {
        match self {
            Ledger::Local => Ok(Claim::Claimed),
            Ledger::Redis(redis) => redis.claim(checksum).await,
        }
    }

    /// Renew the claim every third of its lease, for as long as it is polled.
    /// Never returns: race it against the delivery.
    pub async fn keep_claim(&self, checksum: &str, on_lost: impl Fn(&str)) -> Infallible {
        let Ledger::Redis(redis) = self else {
            return std::future::pending().await;
        };
        let every = redis.lease() / 3;
        let mut lost = false;
        loop {
            tokio::time::sleep(every).await;
            match redis.renew(checksum).await {
                Ok(Renewal::Renewed) => {}
                Ok(Renewal::Retaken) => {
                    tracing::debug!("the claim on {checksum} had lapsed and was taken again");
                }
                Ok(Renewal::Lost) if !lost => {
                    lost = true;
                    on_lost(checksum);
                }
                Ok(Renewal::Lost) => {}
                // Logged by the ledger once per outage; the next renewal may work.
                Err(e) => tracing::debug!("{e}"),
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

    /// How long a claim lives unrenewed (None: claims are not shared).
    pub fn lease(&self) -> Option<Duration> {
        match self {
            Ledger::Local => None,
            Ledger::Redis(redis) => Some(redis.lease()),
        }
    }
}
