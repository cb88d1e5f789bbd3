//! The plan step: given what the state knows about a checksum, decide what to do with the file.

/// What to do with a file whose checksum is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Already synced: nothing to do.
    Skip,
    /// Another file of this run with the same bytes is being delivered.
    SameContent,
    /// The server refused these bytes before; wait for `tanova-sync retry`.
    Refused(String),
    /// Send it.
    Deliver,
}

/// Decide, from what the state and the run know about the checksum.
pub fn plan(synced: bool, refused: Option<String>, claimed_in_run: bool) -> Plan {
    if synced {
        Plan::Skip
    } else if let Some(reason) = refused {
        Plan::Refused(reason)
    } else if claimed_in_run {
        Plan::SameContent
    } else {
        Plan::Deliver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let no = || Some("no".to_string());
        let table = [
            (false, None, false, Plan::Deliver),
            (true, None, false, Plan::Skip),
            (true, no(), true, Plan::Skip),
            (false, no(), false, Plan::Refused("no".into())),
            (false, no(), true, Plan::Refused("no".into())),
            (false, None, true, Plan::SameContent),
        ];
        for (synced, refused, claimed, want) in table {
            assert_eq!(
                plan(synced, refused.clone(), claimed),
                want,
                "{synced} {refused:?} {claimed}"
            );
        }
    }
}
