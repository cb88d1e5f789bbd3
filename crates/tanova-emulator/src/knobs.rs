//! The knobs that shape how the emulator behaves: key, latency, capacity and injected faults.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API key the emulator accepts unless told otherwise.
pub const DEFAULT_API_KEY: &str = "tanova_sk_emulator_0000000000000000";

/// Run-time behaviour of the emulator. Every field has a default, so a partial
/// JSON object (or `Knobs { capacity: 4, ..Default::default() }`) is enough.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Knobs {
    /// The only accepted value of `X-Tanova-API-Key`.
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
    fn chance_bounds() {
        assert!(!chance(0.0));
        assert!(!chance(f64::NAN));
        assert!(chance(1.0));
        assert!(chance(7.0));
    }
}
