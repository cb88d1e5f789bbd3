//! The knobs that shape how the emulator behaves: key, latency, capacity and injected faults.
//!
//! Every knob can change while the emulator runs, so a test can stage a key
//! rotation, an outage or a stalled server in the middle of an agent's run.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API key the emulator accepts unless told otherwise.
pub const DEFAULT_API_KEY: &str = "tanova_sk_emulator_0000000000000000";

/// Run-time behaviour of the emulator. Every field has a default, so a partial
/// JSON object (or `Knobs { capacity: 4, ..Default::default() }`) is enough.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Knobs {
    /// The only accepted value of `X-Tanova-API-Key`. A request is judged by
    /// the key in force when it arrives: rotating the key refuses new requests
    /// with the old one (401), not uploads already being received.
    pub api_key: String,
    /// Simulated AI processing time of an accepted upload, while it counts as in flight.
    pub upload_latency_ms: u64,
    /// Delay before answering check-duplicate.
    pub check_latency_ms: u64,
    /// Uploads accepted at once; past it the answer is 429. 0 means unlimited.
    pub capacity: usize,
    /// Value of the `Retry-After` header on a 429.
    pub retry_after_s: u64,
    /// Probability that an upload answers 500 or 503 (in a batch: each file's result).
    pub error_rate: f64,
    /// Probability that an upload's connection is dropped without an answer (in a batch: the whole request).
    pub drop_rate: f64,
    /// Probability that check-duplicate answers 500 or 503.
    pub check_error_rate: f64,
    /// Uploads whose filename contains this are refused with `reject_status`.
    pub reject_filename_contains: Option<String>,
    /// Status used for `reject_filename_contains`.
    pub reject_status: u16,
    /// Largest accepted file; bigger ones get 413.
    pub max_upload_bytes: u64,
    /// Probability that a successful check-duplicate or upload (already
    /// recorded) answers 200 with a body that is not JSON.
    pub garbage_rate: f64,
    /// Most files in one `POST /api/sync/upload-batch`, advertised in the health
    /// answer as `"batch":{"maxFiles":N}`. 0: no batch endpoint (404, not advertised).
    pub batch_max_files: usize,
    /// Advertise the batch endpoint but answer 404 there, like a deployment without the route.
    pub batch_not_found: bool,
    /// Checksums (hex, any case) a "corporate proxy" blocks: check-duplicate and
    /// uploads of them (claimed or received; in a batch: that file's result,
    /// with the page's text as its `message`) answer 403 with an HTML page
    /// instead of the contract's JSON. Health is not affected.
    pub forbid_checksums: Vec<String>,
    /// Every API request (health included, `/_emulator/*` excluded) meets this
    /// outage instead of the service. `None`: normal service.
    pub outage: Option<Outage>,
    /// Fully received and verified uploads wait (counted in `Stats::held`)
    /// until this is false again, then are processed and recorded as usual,
    /// whether or not the client is still there.
    pub hold_uploads: bool,
    /// The upload endpoints read request bodies no faster than this; 0 means unlimited.
    pub read_bytes_per_sec: u64,
}

/// How the service is out, for [`Knobs::outage`]. In JSON: `"drop"`, `"html502"`,
/// `"html200"` or `"hang"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outage {
    /// The connection is closed without an answer, as with `drop_rate`.
    Drop,
    /// 502 with a proxy's HTML "Bad Gateway" page.
    Html502,
    /// 200 with an HTML sign-in page, as a captive portal, a proxy's
    /// maintenance page or a website at the wrong URL answers: a success
    /// status for a request the service never saw.
    Html200,
    /// No answer (the client's read timeout decides) until `outage` no longer
    /// says `hang`; then 503 `{"message":"service restarting"}`.
    Hang,
}

impl std::str::FromStr for Outage {
    type Err = String;

    /// Parses the JSON name: `drop`, `html502`, `html200` or `hang`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "drop" => Ok(Outage::Drop),
            "html502" => Ok(Outage::Html502),
            "html200" => Ok(Outage::Html200),
            "hang" => Ok(Outage::Hang),
            other => Err(format!(
                "unknown outage {other:?}: expected drop, html502, html200 or hang"
            )),
        }
    }
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            api_key: DEFAULT_API_KEY.to_owned(),
            upload_latency_ms: 0,
            check_latency_ms: 0,
            capacity: 0,
            retry_after_s: 1,
            error_rate: 0.0,
            drop_rate: 0.0,
            check_error_rate: 0.0,
            reject_filename_contains: None,
            reject_status: 422,
            max_upload_bytes: 200 * 1024 * 1024,
            garbage_rate: 0.0,
            batch_max_files: 0,
            batch_not_found: false,
            forbid_checksums: Vec::new(),
            outage: None,
            hold_uploads: false,
            read_bytes_per_sec: 0,
        }
    }
}

impl Knobs {
    /// Returns these knobs with the fields present in `patch` replaced.
    /// Unknown fields are an error, so a typo does not silently do nothing.
    pub fn patched(&self, patch: &Value) -> Result<Knobs, String> {
        let Value::Object(changes) = patch else {
            return Err("knobs must be a JSON object".to_owned());
        };
        let mut merged = match serde_json::to_value(self) {
            Ok(Value::Object(fields)) => fields,
            _ => return Err("knobs are not serializable".to_owned()),
        };
        for (name, value) in changes {
            if !merged.contains_key(name) {
                return Err(format!("unknown knob: {name}"));
            }
            merged.insert(name.clone(), value.clone());
        }
        serde_json::from_value(Value::Object(merged)).map_err(|e| format!("invalid knobs: {e}"))
    }

    /// True if any of `checksums` is in `forbid_checksums`.
    pub(crate) fn forbids<'a>(&self, checksums: impl IntoIterator<Item = &'a str>) -> bool {
        checksums.into_iter().any(|checksum| {
            let checksum = checksum.trim();
            self.forbid_checksums
                .iter()
                .any(|forbidden| forbidden.trim().eq_ignore_ascii_case(checksum))
        })
    }
}

/// True with probability `p`; values outside 0..=1 (or NaN) behave like the nearest bound.
pub(crate) fn chance(p: f64) -> bool {
    p > 0.0 && rand::random::<f64>() < p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_changes_only_given_fields() {
        let knobs = Knobs::default();
        let patched = knobs
            .patched(&json!({"capacity": 3, "api_key": "k"}))
            .unwrap();
        assert_eq!(patched.capacity, 3);
        assert_eq!(patched.api_key, "k");
        assert_eq!(patched.reject_status, 422);
    }

    #[test]
    fn patch_rejects_unknown_and_ill_typed_fields() {
        let knobs = Knobs::default();
        assert!(knobs.patched(&json!({"capacty": 3})).is_err());
        assert!(knobs.patched(&json!({"capacity": "three"})).is_err());
        assert!(knobs.patched(&json!([1])).is_err());
    }

    #[test]
    fn outage_modes_by_name() {
        let knobs = Knobs::default();
        for (name, mode) in [
            ("drop", Outage::Drop),
            ("html502", Outage::Html502),
            ("html200", Outage::Html200),
            ("hang", Outage::Hang),
        ] {
            let patched = knobs.patched(&json!({ "outage": name })).unwrap();
            assert_eq!(patched.outage, Some(mode));
            assert_eq!(name.parse::<Outage>(), Ok(mode));
        }
        assert!(knobs.patched(&json!({"outage": "down"})).is_err());
        let on = knobs.patched(&json!({"outage": "hang"})).unwrap();
        assert_eq!(on.patched(&json!({"outage": null})).unwrap().outage, None);
    }

    #[test]
    fn forbidden_checksums_ignore_case() {
        let knobs = Knobs {
            forbid_checksums: vec!["ABC1".to_owned()],
            ..Knobs::default()
        };
        assert!(knobs.forbids(["00", "abc1"]));
        assert!(!knobs.forbids(["abc", ""]));
        assert!(!Knobs::default().forbids(["abc1"]));
    }

    #[test]
    fn chance_bounds() {
        assert!(!chance(0.0));
        assert!(!chance(f64::NAN));
        assert!(chance(1.0));
        assert!(chance(7.0));
    }
}
