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
        let Some(parsed) = &parsed else { return };
        for field in tanova_sync::config::SECRET_FIELDS {
            let Some(value) = parsed.get(*field) else {
                continue;
            };
            for secret in secrets_in(field, value) {
                assert!(
                    !shown.contains(secret) || own_words(parsed, field, secret),
                    "the error repeats {field}'s secret {secret:?}: {shown}"
                );
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
    // A run of one or two characters repeated (",,,,,,,,") is in the message by
    // chance as often as not: real secrets are not like that.
    let varied = |s: &&str| s.chars().collect::<std::collections::HashSet<_>>().len() >= 4;
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
    out.retain(varied);
    out
}

/// The password of `scheme://user:password@host` as the URL parser the agent
/// uses reads it (a naive split finds "passwords" the parser does not), when
/// long enough to be told apart from the message.
fn url_password(s: &str) -> Option<&str> {
    let parsed = url::Url::parse(s).ok()?;
    let password = parsed.password()?;
    // Text that stands elsewhere in the URL too (the user name, the host) is
    // shown as that part: its showing says nothing about the password. Judged
    // on the URL as parsed, since the parser drops tabs and newlines: a
    // password written "a\tb" is "ab", which may stand only in the host.
    let mut without = parsed.clone();
    let _ = without.set_password(None);
    if without.as_str().contains(password) || s.matches(password).count() > 1 {
        return None;
    }
    // Borrow it from the input, where it stands as the parser read it.
    let at = s.find(password)?;
    let password = &s[at..at + password.len()];
    (password.len() >= 8).then_some(password)
}

/// Whether `secret` is in the error only by chance, as the message's own words
/// (a field name, say): with the secret changed in `field`'s value, the error
/// still holds it.
fn own_words(parsed: &serde_json::Value, field: &str, secret: &str) -> bool {
    let changed: String = secret
        .chars()
        .map(|c| if c == 'Z' { 'Y' } else { 'Z' })
        .collect();
    let mut other = parsed.clone();
    let Some(value) = other.get_mut(field) else {
        return false;
    };
    replace_in(value, secret, &changed);
    match tanova_sync::config::check_text(&other.to_string()) {
        Err(e) => e.to_string().contains(secret),
        Ok(_) => false,
    }
}

fn replace_in(value: &mut serde_json::Value, from: &str, to: &str) {
    match value {
        serde_json::Value::String(s) => *s = s.replace(from, to),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| replace_in(v, from, to)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| replace_in(v, from, to)),
        _ => {}
    }
}
