//! The GDPR keys of the shared ledger, so every agent honours a rule set on any of them
//! and `audit` sees every agent's uploads:
//! - `tanova:rules`: a hash, rule id → the rule as JSON;
//! - `tanova:audit`: a list of audit records as JSON, appended at upload time.

use super::{RedisLedger, PREFIX};
use crate::privacy::{AuditEntry, Rule};
use crate::state::{Result, StateError};

fn rules_key() -> String {
    format!("{PREFIX}rules")
}

fn audit_key() -> String {
    format!("{PREFIX}audit")
}

impl RedisLedger {
    fn unreadable(&self, what: &str, e: serde_json::Error) -> StateError {
        StateError::Redis {
            url: self.url.redacted(),
            message: format!(
                "{what} is not what this agent wrote ({e}); another program uses the tanova: keys?"
            ),
        }
    }

    /// The rules every agent honours.
    pub async fn rules(&self) -> Result<Vec<Rule>> {
        let mut conn = self.conn.clone();
        let answer = redis::cmd("HVALS")
            .arg(rules_key())
            .query_async::<Vec<String>>(&mut conn)
            .await;
        self.seen(answer)?
            .iter()
            .map(|json| serde_json::from_str(json).map_err(|e| self.unreadable(&rules_key(), e)))
            .collect()
    }

    /// Record a rule for every agent.
    pub async fn add_rule(&self, rule: &Rule) -> Result<()> {
        let json = serde_json::to_string(rule).expect("a rule serializes");
        let mut conn = self.conn.clone();
        let answer = redis::cmd("HSET")
            .arg(rules_key())
            .arg(&rule.id)
            .arg(json)
            .query_async::<i64>(&mut conn)
            .await;
        self.seen(answer).map(drop)
    }

    /// Remove a rule; false when the ledger had none with this id.
    pub async fn remove_rule(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let answer = redis::cmd("HDEL")
            .arg(rules_key())
            .arg(id)
            .query_async::<i64>(&mut conn)
            .await;
        self.seen(answer).map(|n| n > 0)
    }

    /// Append an audit record.
    pub async fn record_audit(&self, entry: &AuditEntry) -> Result<()> {
        let json = serde_json::to_string(entry).expect("an audit record serializes");
        let mut conn = self.conn.clone();
        let answer = redis::cmd("RPUSH")
            .arg(audit_key())
            .arg(json)
            .query_async::<i64>(&mut conn)
            .await;
        self.seen(answer).map(drop)
    }

    /// Every agent's audit records, in the order they were appended.
    pub async fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        Ok(self
            .audit_list()
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    async fn audit_list(&self) -> Result<Vec<(String, AuditEntry)>> {
        let mut conn = self.conn.clone();
        let answer = redis::cmd("LRANGE")
            .arg(audit_key())
            .arg(0)
            .arg(-1)
            .query_async::<Vec<String>>(&mut conn)
            .await;
        self.seen(answer)?
            .into_iter()
            .map(|json| {
                let entry =
                    serde_json::from_str(&json).map_err(|e| self.unreadable(&audit_key(), e))?;
                Ok((json, entry))
            })
            .collect()
    }

    /// `forget --purge`: delete the personal parts of the records `rule` matches.
    pub async fn purge_audit(&self, rule: &Rule) -> Result<usize> {
        self.purge_audit_where(|e| rule.matches(&e.subject())).await
    }

    /// Delete the personal parts of the records `which` selects (and that still have
    /// any). The list is only ever appended to, so an index found stays that record's.
    pub async fn purge_audit_where(&self, which: impl Fn(&AuditEntry) -> bool) -> Result<usize> {
        let mut purged = 0;
        for (i, (_, mut entry)) in self.audit_list().await?.into_iter().enumerate() {
            let personal =
                entry.path.is_some() || entry.email.is_some() || entry.candidate_name.is_some();
            if !personal || !which(&entry) {
                continue;
            }
            entry.purge();
            let json = serde_json::to_string(&entry).expect("an audit record serializes");
            let mut conn = self.conn.clone();
            let answer = redis::cmd("LSET")
                .arg(audit_key())
                .arg(i)
                .arg(json)
                .query_async::<()>(&mut conn)
                .await;
            self.seen(answer)?;
            purged += 1;
        }
        Ok(purged)
    }
}
