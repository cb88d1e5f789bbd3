//! The plan step: given what the state knows about a checksum, decide what to do with the file.

use crate::state::Failure;

/// What to do with a file whose checksum is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Already synced: nothing to do.
    Skip,
    /// Another file of this run with the same bytes is being delivered.
    SameContent,
    /// Not sent again until `tanova-sync retry`: the server refused these
    /// bytes, or they failed on `max_attempts` runs already. The reason says which.
    Held(String),
    /// Send it.
    Deliver,
}

/// Decide, from what the state and the run know about the checksum.
/// `max_attempts` caps the runs (or rescans) on which a failing file is tried.
pub fn plan(
    synced: bool,
    failure: Option<&Failure>,
    max_attempts: u32,
    claimed_in_run: bool,
) -> Plan {
    if synced {
        return Plan::Skip;
    }
    match failure {
        Some(f) if f.permanent => Plan::Held(format!(
            "refused earlier, waiting for `tanova-sync retry`: {}",
            f.reason
        )),
        Some(f) if f.attempts >= max_attempts => Plan::Held(format!(
            "failed on {} runs, waiting for `tanova-sync retry`: {}",
            f.attempts, f.reason
        )),
        _ if claimed_in_run => Plan::SameContent,
        _ => Plan::Deliver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(permanent: bool, attempts: u32) -> Failure {
        Failure {
            path: "a.pdf".into(),
            checksum: Some("abc".into()),
            reason: "no".into(),
            permanent,
            attempts,
        }
    }

    #[test]
    fn table() {
        let refused = Plan::Held("refused earlier, waiting for `tanova-sync retry`: no".into());
        let gave_up = Plan::Held("failed on 5 runs, waiting for `tanova-sync retry`: no".into());
        let table = [
            // (synced, failure, claimed, want) with max_attempts = 5
            (false, None, false, Plan::Deliver),
            (true, None, false, Plan::Skip),
            (true, Some(failure(true, 1)), true, Plan::Skip),
            (false, Some(failure(true, 1)), false, refused.clone()),
            (false, Some(failure(true, 1)), true, refused),
            (false, Some(failure(false, 4)), false, Plan::Deliver),
            (false, Some(failure(false, 5)), false, gave_up),
            (false, Some(failure(false, 1)), true, Plan::SameContent),
            (false, None, true, Plan::SameContent),
        ];
        for (synced, failure, claimed, want) in table {
            assert_eq!(
                plan(synced, failure.as_ref(), 5, claimed),
                want,
                "{synced} {failure:?} {claimed}"
            );
        }
    }
}
