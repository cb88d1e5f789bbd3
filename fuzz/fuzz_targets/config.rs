//! Fuzz the config file parser: any text gives a config, warnings or an error naming a field, never a panic, and never an error repeating a secret.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    if let Err(e) = tanova_sync::config::check_text(text) {
        // Every error names what is wrong.
        assert!(!e.field.is_empty());
        // ...and never repeats a secret: the key beyond its first 15
        // characters, or any secret field's text (a key pasted in the wrong place).
        let shown = e.to_string();
        for field in tanova_sync::config::SECRET_FIELDS {
            if let Some(value) = parsed.as_ref().and_then(|v| v.get(*field)) {
                for secret in secrets_in(field, value) {
                    assert!(
                        !shown.contains(secret),
                        "the error repeats {field}'s secret {secret:?}: {shown}"
                    );
                }
            }
        }
    }
    let _ = tanova_sync::config::parse_url(text, false);
});

/// The parts of a secret field's value that must never be shown: `api_key`
/// past its first 15 characters; anything that looks like a key (`tanova_sk_…`)
/// past its first 15, whatever its type or depth; a URL's password. Only runs
/// of 8 characters or more, which cannot appear in a message by chance.
fn secrets_in<'a>(field: &str, value: &'a serde_json::Value) -> Vec<&'a str> {
    let past_15 = |s: &'a str| {
        let (i, _) = s.char_indices().nth(15)?;
        let rest = &s[i..];
        (rest.len() >= 8).then_some(rest)
    };
    let mut out = Vec::new();
    if let (Some(key), "api_key") = (value.as_str(), field) {
        out.extend(past_15(key));
    }
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::String(s) => {
                if s.starts_with("tanova_sk_") {
                    out.extend(past_15(s));
                }
                out.extend(url_password(s));
            }
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    out
}

/// The password of `scheme://user:password@host`, when long enough to be told apart from the message.
fn url_password(s: &str) -> Option<&str> {
    let rest = &s[s.find("://")? + 3..];
    let userinfo = &rest[..rest.rfind('@')?];
    let password = &userinfo[userinfo.find(':')? + 1..];
    (password.len() >= 8).then_some(password)
}
