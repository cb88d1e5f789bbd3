//! `tanova-sync forget`: add, list and remove suppression rules, in the state and,
//! with a shared ledger, in Redis; `--purge` also deletes what the audit trail holds of the person.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::args::ForgetArgs;
use super::{report_error, Exit, GlobalArgs};
use crate::config::Config;
use crate::privacy::{Rule, RuleKind, Rules};
use crate::state::redis::RedisLedger;
use crate::state::sqlite::DB_FILE;
use crate::state::{Ledger, SqliteStore, StateError, Store};

/// Where the GDPR records are: this machine's state, and the shared ledger if there is one.
pub(super) struct Records {
    pub store: SqliteStore,
    pub shared: Option<Box<RedisLedger>>,
}

impl Records {
    /// Open the state and connect the ledger when `state_url` is set. A missing
    /// state is created to write to, and read as empty only to look with a ledger beside it.
    pub async fn open(
        config: &Config,
        writing: bool,
        cancel: &CancellationToken,
    ) -> Result<Records, (Exit, String)> {
        let missing = !config.state_dir.join(DB_FILE).exists();
        if missing && !writing && config.state_url.is_none() {
            return Err((
                Exit::Usage,
                format!(
                    "no state in {} yet: nothing has been synced with this state directory",
                    config.state_dir.display()
                ),
            ));
        }
        let store = if missing && !writing {
            SqliteStore::open_read_only(&config.state_dir)
        } else {
            SqliteStore::open(&config.state_dir)
        }
        .map_err(|e| (Exit::Usage, format!("state error: {e}")))?;
        let shared = match crate::agent::open_ledger(config, cancel).await {
            Ok(Ledger::Redis(redis)) => Some(redis),
            Ok(Ledger::Local) => None,
            Err(e) => {
                return Err((
                    Exit::SomeFailed,
                    format!("cannot reach the shared state: {e}"),
                ))
            }
        };
        Ok(Records { store, shared })
    }

    /// Every rule, from the state and the ledger, each once.
    pub async fn rules(&self) -> Result<Rules, StateError> {
        let mut rules = self.store.suppression_rules()?;
        if let Some(redis) = &self.shared {
            rules.extend(redis.rules().await?);
        }
        Ok(Rules::new(rules))
    }
}

/// `tanova-sync forget …`.
pub async fn forget(
    global: &GlobalArgs,
    config: &Config,
    args: &ForgetArgs,
    cancel: &CancellationToken,
) -> Exit {
    let records = match Records::open(config, true, cancel).await {
        Ok(records) => records,
        Err((exit, e)) => {
            report_error(global, &e);
            return exit;
        }
    };
    let done = if args.list {
        list(global, &records).await
    } else if let Some(id) = &args.remove {
        remove(global, &records, id).await
    } else {
        add(global, config, &records, args).await
    };
    done.unwrap_or_else(|(exit, message)| {
        report_error(global, &message);
        exit
    })
}

type Done = Result<Exit, (Exit, String)>;

fn state_failed(e: StateError) -> (Exit, String) {
    (Exit::SomeFailed, e.to_string())
}

/// The rule the flags describe.
fn rule_of(config: &Config, args: &ForgetArgs, now: i64) -> Result<Rule, String> {
    let (kind, value) = match (&args.email, &args.path, &args.checksum, &args.name) {
        (Some(v), ..) => (RuleKind::Email, v.clone()),
        (_, Some(v), ..) => (RuleKind::Path, inside_folder(&config.folder, v)?),
        (_, _, Some(v), _) => (RuleKind::Checksum, v.clone()),
        (.., Some(v)) => (RuleKind::Name, v.clone()),
        _ => return Err("forget: give --email, --path, --checksum or --name".to_string()),
    };
    let today = crate::privacy::audit::rfc3339(now)[..10].to_string();
    let date = args.date.as_deref().unwrap_or(&today);
    let reason = args.reason.as_deref().unwrap_or("");
    Rule::new(kind, &value, reason, date, now).map_err(|e| format!("forget: {e}"))
}

/// A path given absolute (inside the folder) is made relative to it.
fn inside_folder(folder: &Path, path: &str) -> Result<String, String> {
    let given = Path::new(path);
    if !given.is_absolute() {
        return Ok(path.to_string());
    }
    given
        .strip_prefix(folder)
        .map(|rel| crate::privacy::rules::relative(&rel.to_string_lossy()))
        .map_err(|_| {
            format!(
                "forget: --path {path}: not inside the CV folder {}; give it relative to the folder",
                folder.display()
            )
        })
}

async fn add(global: &GlobalArgs, config: &Config, records: &Records, args: &ForgetArgs) -> Done {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let rule = rule_of(config, args, now).map_err(|e| (Exit::Usage, e))?;
    records.store.add_rule(&rule).map_err(state_failed)?;
    if let Some(redis) = &records.shared {
        redis.add_rule(&rule).await.map_err(|e| {
            (
                Exit::SomeFailed,
                format!(
                    "{e}: rule {} is recorded on this machine only, so other agents do not \
                     know it yet; run the command again once Redis answers",
                    rule.id
                ),
            )
        })?;
    }
    let mut purged = 0;
    if args.purge {
        purged = records
            .store
            .purge(&rule, &config.folder)
            .map_err(state_failed)?;
        if let Some(redis) = &records.shared {
            purged += redis.purge_audit(&rule).await.map_err(state_failed)?;
        }
    }
    if global.json {
        let out = serde_json::json!({ "added": rule, "purged": args.purge.then_some(purged) });
        println!("{out}");
    } else if !global.quiet {
        let where_ = if records.shared.is_some() {
            "this machine's state and the shared ledger"
        } else {
            "this machine's state"
        };
        println!("Added {rule} to {where_}: files it matches are never uploaded.");
        if args.purge {
            println!("Purged the path, name and email of {purged} audit records.");
        }
    }
    Ok(Exit::Ok)
}

#[derive(Serialize)]
struct Listed<'a> {
    rules: Vec<&'a Rule>,
}

async fn list(global: &GlobalArgs, records: &Records) -> Done {
    let rules = records.rules().await.map_err(state_failed)?;
    if global.json {
        let listed = Listed {
            rules: rules.iter().collect(),
        };
        println!("{}", serde_json::to_string(&listed).expect("serializable"));
    } else if rules.is_empty() {
        println!("No suppression rules.");
    } else {
        println!(
            "{:<8}  {:<10}  {:<8}  {:<40}  reason",
            "id", "date", "kind", "value"
        );
        for r in rules.iter() {
            println!(
                "{:<8}  {:<10}  {:<8}  {:<40}  {}",
                r.id,
                r.date,
                r.kind.as_str(),
                r.value,
                r.reason
            );
        }
    }
    Ok(Exit::Ok)
}

async fn remove(global: &GlobalArgs, records: &Records, id: &str) -> Done {
    let mut removed = records.store.remove_rule(id).map_err(state_failed)?;
    if let Some(redis) = &records.shared {
        removed |= redis.remove_rule(id).await.map_err(state_failed)?;
    }
    if !removed {
        return Err((
            Exit::SomeFailed,
            format!("forget --remove {id}: no such rule; `tanova-sync forget --list` lists them"),
        ));
    }
    if global.json {
        println!("{}", serde_json::json!({ "removed": id }));
    } else if !global.quiet {
        println!(
            "Removed rule {id}: files it matched are uploaded again on the next run or rescan."
        );
    }
    Ok(Exit::Ok)
}
