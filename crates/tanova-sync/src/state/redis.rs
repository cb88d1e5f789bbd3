//! The shared ledger in Redis: the synced-checksum set with candidate ids, and per-checksum claims (leases).
//!
//! Keys, under the prefix `tanova:` in the URL's database:
//! - `tanova:synced`: a hash, checksum → candidate id (`""` when unknown). It only grows.
//! - `tanova:claim:<checksum>`: the id of the agent uploading those bytes, with a TTL (the lease).
//! - `tanova:sending:<checksum>`: the same id, living the lease plus the in-flight grace, so an
//!   agent taking over a lapsed claim waits for the earlier request before asking the server.
//! - `tanova:rules` and `tanova:audit`: suppression rules and audit records (see `privacy.rs`).
//!
//! Every read-modify-write is one Lua script, so agents never race between a check and a claim.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use reqwest::Url;

use super::{Result, StateError};
use crate::error::Invalid;

mod privacy;

/// How long a claim lives without being renewed, unless `lease_ms` says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The shortest and longest lease `lease_ms` accepts.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

const PREFIX: &str = "tanova:";
/// Checksums sent to Redis per round trip by `state push`.
const PUSH_BATCH: usize = 1000;

/// A `redis://` or `rediss://` URL that never prints its password, with the
/// certificates a `rediss://` connection uses besides the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url, Option<RedisTls>);

/// What a TLS connection to Redis trusts and shows, as PEM bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// `redis_ca_file`: trusted instead of the system's roots (a private CA).
    pub ca: Option<Vec<u8>>,
    /// `redis_client_cert` and `redis_client_key`, for servers that ask for a client certificate.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisUrl {
    /// Check a `redis[s]://[user:password@]host[:port][/db]` URL. Errors never repeat the password.
    pub fn parse(text: &str) -> std::result::Result<Self, Invalid> {
        Self::parse_text(text).map_err(Invalid)
    }

    fn parse_text(text: &str) -> std::result::Result<Self, String> {
        // Text that does not parse is not repeated at all: it may be a
        // password, or a key pasted into the wrong field.
        let url = Url::parse(text.trim()).map_err(|e| {
            format!("not a valid URL ({e}); expected redis://[user:password@]host:port/db")
        })?;
        let scheme = url.scheme();
        if !matches!(scheme, "redis" | "rediss") {
            // Only the scheme: with another scheme the rest need not even be
            // split into host and password, so none of it is safe to show.
            return Err(if scheme.len() <= 10 {
                format!(
                    "unsupported scheme {scheme:?} (expected redis:// or rediss://host:port/db)"
                )
            } else {
                "unsupported scheme (expected redis:// or rediss://host:port/db)".to_string()
            });
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(format!(
                "{scheme}: no host (expected {scheme}://host:port/db)"
            ));
        };
        let db = url.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u32>().is_err() {
            // The URL up to its port, the password hidden: the path itself is not repeated.
            let user = match (url.username(), url.password()) {
                ("", None) => String::new(),
                (name, None) => format!("{name}@"),
                (name, Some(_)) => format!("{name}:***@"),
            };
            let port = url.port().map_or(String::new(), |p| format!(":{p}"));
            return Err(format!(
                "{scheme}://{user}{host}{port}: the path must be a database number, like \
                 redis://host:6379/0"
            ));
        }
        Ok(RedisUrl(url, None))
    }

    /// Connect with these certificates (`rediss://` only).
    pub fn with_tls(self, tls: RedisTls) -> std::result::Result<Self, Invalid> {
        self.tls(tls).map_err(Invalid)
    }

    fn tls(mut self, tls: RedisTls) -> std::result::Result<Self, String> {
        if !self.is_tls() {
            return Err(format!(
                "{}: certificates are for rediss:// (TLS) URLs; this one is plain redis://",
                self.redacted()
            ));
        }
        self.1 = Some(tls);
        Ok(self)
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "rediss"
    }

    /// The URL with any password replaced by `***`: safe to print.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }

    /// The full URL, for connecting only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This agent holds the lease: deliver, renewing it meanwhile. `wait`: an
    /// earlier upload of these bytes by another agent (whose claim lapsed) may
    /// still be in flight for this long; ask the server only after it.
    Claimed { wait: Duration },
    /// Another agent holds the lease (its id), and is delivering these bytes now.
    Busy { holder: String },
    /// Already synced (by any agent), with the candidate id when known.
    Synced { candidate: Option<String> },
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// The lease had expired (or Redis lost it) and nobody else held it: taken again.
    Retaken,
    /// Another agent holds it now, or the bytes were recorded as synced meanwhile.
    Lost,
}

/// Claim unless synced; a second claim by the same agent extends its lease.
/// `tanova:sending:<checksum>` outlives the claim by the in-flight grace: an
/// agent frozen mid-upload (its claim lapsed) may still complete its request,
/// so the next claimer learns how long to wait before asking the server.
const CLAIM: &str = r"
local c = redis.call('HGET', KEYS[1], ARGV[1])
if c then return {'synced', c} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return {'busy', holder} end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
local earlier = redis.call('GET', KEYS[3])
local wait = 0
if earlier and earlier ~= ARGV[2] then wait = redis.call('PTTL', KEYS[3]) end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4])
return {'claimed', tostring(wait)}
";

/// Extend our lease; take it again if it is gone and the bytes are not synced.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if (not v) and redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

/// Record as synced (a known candidate id wins over none), and release our claim, at once.
const RECORD: &str = r"
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  redis.call('HSETNX', KEYS[1], ARGV[1], '')
end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
if redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
return 1
";

/// Release a claim only if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A connection to the shared ledger. Reconnects by itself; cheap to share.
pub struct RedisLedger {
    conn: ConnectionManager,
    url: RedisUrl,
    agent: String,
    lease: Duration,
    /// How long an upload may still be in flight after its agent stopped renewing its claim.
    in_flight_grace: Duration,
    /// Set while Redis cannot be reached, so an outage is logged once, and its end too.
    down: AtomicBool,
    /// The class of the last error reply, so each is logged once until Redis answers well.
    last_refusal: std::sync::Mutex<Option<String>>,
    claim: Script,
    renew: Script,
    record: Script,
    release: Script,
}

impl RedisLedger {
    /// Prepare the connection; nothing is sent until the first call (see [`RedisLedger::ping`]).
    pub fn new(url: &RedisUrl, lease: Duration, in_flight_grace: Duration) -> Result<Self> {
        let err = |e: RedisError| redis_error(url, &e);
        let client = match &url.1 {
            Some(tls) => redis::Client::build_with_tls(
                url.expose(),
                redis::TlsCertificates {
                    client_tls: tls
                        .client
                        .as_ref()
                        .map(|(cert, key)| redis::ClientTlsConfig {
                            client_cert: cert.clone(),
                            client_key: key.clone(),
                        }),
                    root_cert: tls.ca.clone(),
                },
            ),
            None => redis::Client::open(url.expose()),
        }
        .map_err(err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            // Few quick reconnect attempts per failure: the callers wait and retry with their own backoff.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(err)?;
        Ok(RedisLedger {
            conn,
            url: url.clone(),
            agent: agent_id(),
            lease,
            in_flight_grace,
            down: AtomicBool::new(false),
            last_refusal: std::sync::Mutex::new(None),
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            record: Script::new(RECORD),
            release: Script::new(RELEASE),
        })
    }

    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// This agent's id, the value of its claims: host, pid and a random part.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Check that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let answer = redis::cmd("PING").query_async::<String>(&mut conn).await;
        self.seen(answer).map(drop)
    }

    /// Claim these bytes for this agent unless they are synced or another agent holds them.
    pub async fn claim(&self, checksum: &str) -> Result<Claim> {
        let mut conn = self.conn.clone();
        let answer = self
            .claim
            .key(synced_key())
            .key(claim_key(checksum))
            .key(sending_key(checksum))
            .arg(checksum)
            .arg(&self.agent)
            .arg(self.lease.as_millis() as u64)
            .arg((self.lease + self.in_flight_grace).as_millis() as u64)
            .invoke_async::<Vec<String>>(&mut conn)
            .await;
        let answer = self.seen(answer)?;
        Ok(match answer.first().map(String::as_str) {
            Some("claimed") => {
                let ms = answer
                    .get(1)
                    .and_then(|w| w.parse::<i64>().ok())
                    .unwrap_or(0);
                Claim::Claimed {
                    wait: Duration::from_millis(ms.max(0) as u64).min(self.in_flight_grace),
                }
            }
            Some("synced") => Claim::Synced {
                candidate: answer.get(1).filter(|c| !c.is_empty()).cloned(),
            },
            _ => Claim::Busy {
                holder: answer.get(1).cloned().unwrap_or_default(),
            },
        })
    }

    /// Extend this agent's lease on the bytes.
    pub async fn renew(&self, checksum: &str) -> Result<Renewal> {
        let mut conn = self.conn.clone();
        let answer = self
            .renew
            .key(claim_key(checksum))
            .key(synced_key())
            .arg(&self.agent)
            .arg(self.lease.as_millis() as u64)
            .arg(checksum)
            .invoke_async::<i64>(&mut conn)
            .await;
        Ok(match self.seen(answer)? {
            1 => Renewal::Renewed,
            2 => Renewal::Retaken,
            _ => Renewal::Lost,
        })
    }

    /// Record the bytes as synced and release this agent's claim on them.
    pub async fn record_synced(&self, checksum: &str, candidate: Option<&str>) -> Result<()> {
        let mut conn = self.conn.clone();
        let answer = self
            .record
            .key(synced_key())
            .key(claim_key(checksum))
            .key(sending_key(checksum))
            .arg(checksum)
            .arg(candidate.unwrap_or(""))
            .arg(&self.agent)
            .invoke_async::<i64>(&mut conn)
            .await;
        self.seen(answer).map(drop)
    }

    /// Give up this agent's claim (the delivery failed or was stopped), so another may try.
    pub async fn release(&self, checksum: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let answer = self
            .release
            .key(claim_key(checksum))
            .key(sending_key(checksum))
            .arg(&self.agent)
            .invoke_async::<i64>(&mut conn)
            .await;
        self.seen(answer).map(drop)
    }

    /// Whether the ledger knows these bytes as synced.
    pub async fn is_synced(&self, checksum: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let answer = redis::cmd("HEXISTS")
            .arg(synced_key())
            .arg(checksum)
            .query_async::<bool>(&mut conn)
            .await;
        self.seen(answer)
    }

    /// How many checksums the ledger holds.
    pub async fn synced_count(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let answer = redis::cmd("HLEN")
            .arg(synced_key())
            .query_async::<u64>(&mut conn)
            .await;
        self.seen(answer)
    }

    /// Add synced checksums (with candidate ids when known) without overwriting
    /// what the ledger has. Returns how many were new to it.
    pub async fn push(&self, synced: &[(String, Option<String>)]) -> Result<u64> {
        let mut added = 0;
        for batch in synced.chunks(PUSH_BATCH) {
            let mut pipe = redis::pipe();
            for (checksum, candidate) in batch {
                pipe.cmd("HSETNX")
                    .arg(synced_key())
                    .arg(checksum)
                    .arg(candidate.as_deref().unwrap_or(""));
            }
            let mut conn = self.conn.clone();
            let answer = pipe.query_async::<Vec<u64>>(&mut conn).await;
            added += self.seen(answer)?.iter().sum::<u64>();
        }
        Ok(added)
    }

    /// Note whether Redis answered: an outage is logged when it starts and when it ends.
    fn seen<T>(&self, answer: redis::RedisResult<T>) -> Result<T> {
        match answer {
            Ok(value) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis at {} is back", self.url);
                }
                if let Some(class) = self
                    .last_refusal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    tracing::info!(
                        "Redis at {} accepts commands again (after {class})",
                        self.url
                    );
                }
                Ok(value)
            }
            Err(e) => {
                let unreachable = e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_connection_dropped();
                if unreachable {
                    if !self.down.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "Redis at {} is unreachable ({e}); files wait for it, and nothing is \
                             uploaded until it can be recorded",
                            self.url
                        );
                    }
                } else {
                    self.refused(&e);
                }
                Err(redis_error(&self.url, &e))
            }
        }
    }
}

impl RedisLedger {
    /// Redis answered with an error (NOAUTH, MISCONF, READONLY, OOM, WRONGTYPE…):
    /// it will not fix itself, so it is an ERROR, logged once per class until Redis answers well.
    fn refused(&self, e: &RedisError) {
        let class = e.code().unwrap_or("error").to_string();
        let mut last = self.last_refusal.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(class.as_str()) {
            return;
        }
        tracing::error!(
            "Redis at {} refused a command ({class}): {e}; files wait until it accepts them{}",
            self.url,
            advice(&class)
        );
        *last = Some(class);
    }
}

/// What to do about a Redis error class.
fn advice(class: &str) -> &'static str {
    match class {
        "NOAUTH" | "WRONGPASS" | "NOPERM" => " (check the user and password in state_url)",
        "MISCONF" => " (Redis cannot save to disk: check its disk and its logs)",
        "READONLY" => " (state_url points at a read-only replica: use the primary)",
        "OOM" => " (Redis is out of memory: raise maxmemory or use a noeviction policy)",
        "WRONGTYPE" => " (another program uses the tanova: keys in this database: use another /db)",
        _ => "",
    }
}

fn synced_key() -> String {
    format!("{PREFIX}synced")
}

fn sending_key(checksum: &str) -> String {
    format!("{PREFIX}sending:{checksum}")
}

fn claim_key(checksum: &str) -> String {
    format!("{PREFIX}claim:{checksum}")
}

fn redis_error(url: &RedisUrl, e: &RedisError) -> StateError {
    let mut message = e.to_string();
    // What to change, for the failures a new TLS or ACL setup meets first.
    let hint = if message.contains("UnknownIssuer") {
        " (the server's certificate is not signed by a CA this machine trusts: set \
         redis_ca_file to the CA that signed it)"
    } else if message.contains("CertificateRequired") {
        " (the server asks for a client certificate: set redis_client_cert and redis_client_key)"
    } else if message.contains("AuthenticationFailed") || message.contains("WRONGPASS") {
        " (check the user name and password in state_url: redis://user:password@host:port/db)"
    } else {
        ""
    };
    message.push_str(hint);
    StateError::Redis {
        url: url.redacted(),
        message,
    }
}

/// `host:pid:random`: unique per agent process, and says which machine holds a claim.
fn agent_id() -> String {
    format!(
        "{}:{}:{:08x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// This machine's name, as claims and audit records give it.
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if let Ok(name) = std::str::from_utf8(&buf[..end]) {
                if !name.is_empty() {
                    return name.to_string();
                }
            }
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "agent".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_never_show_the_password() {
        let ok = RedisUrl::parse("redis://:s3cret@cache.local:6380/2").unwrap();
        assert_eq!(ok.redacted(), "redis://:***@cache.local:6380/2");
        assert_eq!(format!("{ok:?} {ok}").matches("s3cret").count(), 0);
        assert_eq!(ok.expose(), "redis://:s3cret@cache.local:6380/2");
        RedisUrl::parse("redis://127.0.0.1").unwrap();
        RedisUrl::parse("redis://10.0.0.5:6379/").unwrap();
        let tls = RedisUrl::parse("rediss://user:pw@cache.local:6380/0").unwrap();
        assert!(tls.is_tls());
        assert_eq!(tls.redacted(), "rediss://user:***@cache.local:6380/0");
        let plain = RedisUrl::parse("redis://user:pw@cache.local/0").unwrap();
        assert!(plain
            .with_tls(RedisTls::default())
            .unwrap_err()
            .contains("rediss://"));
        let table = [
            ("http://host:6379", "unsupported scheme"),
            ("redis://:pw@host:6379/cache", "database number"),
            ("redis:///0", "no host"),
            ("redis://:pw@ho st:6379/0", "not a valid URL"),
        ];
        for (text, want) in table {
            let err = RedisUrl::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("pw@"), "{text}: the password is shown: {err}");
        }
    }

    #[test]
    fn agent_ids_differ_per_ledger() {
        assert_ne!(agent_id(), agent_id());
        assert!(agent_id().contains(&format!(":{}:", std::process::id())));
    }
}
