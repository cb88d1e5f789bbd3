//! GDPR tools: suppression rules (`forget`), the audit trail (`audit`), and
//! keeping personal data out of logs (`privacy_redact_logs`) and old state (`privacy_retain_days`).

pub mod audit;
pub mod redact;
pub mod rules;

pub use audit::AuditEntry;
pub use rules::{Rule, RuleKind, Rules, Subject};
