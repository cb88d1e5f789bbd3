//! Suppression rules (`tanova-sync forget`): what they match, pure and table-tested —
//! emails case-insensitively, names case- and accent-insensitively, paths and globs
//! relative to the folder, checksums exactly.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Invalid;

/// What a rule matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// The email taken from the file name (`meta::email`), case-insensitively.
    Email,
    /// A path or glob relative to the folder.
    Path,
    /// The SHA-256 of the bytes.
    Checksum,
    /// Text the file name contains, case- and accent-insensitively.
    Name,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Email => "email",
            RuleKind::Path => "path",
            RuleKind::Checksum => "checksum",
            RuleKind::Name => "name",
        }
    }
}

/// One suppression rule: files it matches are never uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Short random hex, the same in the state and the ledger (`forget --remove ID`).
    pub id: String,
    pub kind: RuleKind,
    /// Normalised when the rule is made (see [`Rule::new`]).
    pub value: String,
    /// Why (an erasure request, its reference).
    pub reason: String,
    /// The date of the request, `YYYY-MM-DD`.
    pub date: String,
    /// When the rule was recorded, in Unix seconds.
    pub created_at: i64,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {} ({} {:?}",
            self.id,
            self.kind.as_str(),
            self.value
        )?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        write!(f, ", {})", self.date)
    }
}

impl Rule {
    /// A new rule with a fresh id, its value checked and normalised:
    /// emails and checksums lowercased, paths made relative with `/` separators.
    pub fn new(
        kind: RuleKind,
        value: &str,
        reason: &str,
        date: &str,
        now: i64,
    ) -> Result<Rule, Invalid> {
        Ok(Rule {
            id: format!("{:08x}", rand::random::<u32>()),
            kind,
            value: normalise(kind, value)?,
            reason: reason.trim().to_string(),
            date: check_date(date)?.to_string(),
            created_at: now,
        })
    }

    /// Whether the rule matches a file, or an audit record of one.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        match self.kind {
            RuleKind::Checksum => subject.checksum == Some(self.value.as_str()),
            RuleKind::Email => subject
                .email
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(&self.value)),
            RuleKind::Name => subject
                .path
                .map(file_name)
                .is_some_and(|name| fold(name).contains(&fold(&self.value))),
            RuleKind::Path => subject.path.is_some_and(|p| path_matches(&self.value, p)),
        }
    }
}

/// What a rule is matched against. Any part may be unknown (not hashed yet, pruned).
#[derive(Clone, Copy, Debug, Default)]
pub struct Subject<'a> {
    /// Relative to the folder, `/`-separated.
    pub path: Option<&'a str>,
    /// The email taken from the file name.
    pub email: Option<&'a str>,
    /// Lowercase hex.
    pub checksum: Option<&'a str>,
}

/// The rules in force: a file matching any of them is suppressed.
#[derive(Clone, Debug, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// The rules, each once by id (the state and the ledger may both hold one).
    pub fn new(mut rules: Vec<Rule>) -> Rules {
        rules.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        rules.dedup_by(|a, b| a.id == b.id);
        Rules(rules)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.0.iter()
    }

    /// The first rule that matches.
    pub fn matching(&self, subject: &Subject<'_>) -> Option<&Rule> {
        self.0.iter().find(|r| r.matches(subject))
    }
}

fn normalise(kind: RuleKind, value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Invalid(format!("--{}: empty", kind.as_str())));
    }
    match kind {
        RuleKind::Email if !value.contains('@') => Err(Invalid(format!(
            "--email {value:?}: not an email address (no @)"
        ))),
        RuleKind::Email => Ok(value.to_ascii_lowercase()),
        RuleKind::Checksum => {
            let sum = value.to_ascii_lowercase();
            if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(sum)
            } else {
                Err(Invalid(format!(
                    "--checksum {value:?}: expected 64 hex characters (a SHA-256)"
                )))
            }
        }
        RuleKind::Path => {
            let path = relative(value);
            if path.is_empty() || path.split('/').any(|part| part == "..") {
                Err(Invalid(format!(
                    "--path {value:?}: expected a file, folder or glob inside the CV folder"
                )))
            } else {
                Ok(path)
            }
        }
        RuleKind::Name => Ok(value.to_string()),
    }
}

/// A path relative to the folder as rules and audit records keep it: `/` separators,
/// no leading `./` or `/`, no trailing `/`.
pub fn relative(path: &str) -> String {
    let path = path.replace('\\', "/");
    let mut path = path.as_str();
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    path.trim_matches('/').to_string()
}

/// `YYYY-MM-DD`, a real calendar date.
pub fn check_date(date: &str) -> Result<&str, Invalid> {
    let date = date.trim();
    parse_date(date)
        .map(|_| date)
        .ok_or_else(|| Invalid(format!("{date:?}: expected a date as YYYY-MM-DD")))
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn parse_date(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > days_in[m as usize - 1] {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Howard Hinnant's days-from-civil.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a path rule (a file, a folder, or a glob) covers `path`.
/// A glob without `/` is matched against the file name at any depth.
pub fn path_matches(rule: &str, path: &str) -> bool {
    if !rule.contains(['*', '?']) {
        return path == rule
            || path
                .strip_prefix(rule)
                .is_some_and(|rest| rest.starts_with('/'));
    }
    let target = if rule.contains('/') {
        path
    } else {
        file_name(path)
    };
    let pattern: Vec<char> = rule.chars().collect();
    let text: Vec<char> = target.chars().collect();
    glob(&pattern, &text)
}

/// `*` any run within one folder, `**` any run across folders (`**/` also none), `?` one character.
fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern {
        [] => text.is_empty(),
        ['*', '*', '/', rest @ ..] => {
            (0..=text.len()).any(|i| (i == 0 || text[i - 1] == '/') && glob(rest, &text[i..]))
        }
        ['*', '*', rest @ ..] => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        ['*', rest @ ..] => {
            let end = text.iter().position(|&c| c == '/').unwrap_or(text.len());
            (0..=end).any(|i| glob(rest, &text[i..]))
        }
        ['?', rest @ ..] => text.first().is_some_and(|&c| c != '/') && glob(rest, &text[1..]),
        [c, rest @ ..] => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// Text for comparing names: lowercase, accents removed (precomposed or combining),
/// and `_`, `-`, `.` and runs of spaces read as one space.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if ('\u{300}'..='\u{36f}').contains(&c) {
            continue;
        }
        if c == '_' || c == '-' || c == '.' || c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
            continue;
        }
        match base_letters(c) {
            Some(base) => out.push_str(base),
            None => out.push(c),
        }
    }
    out
}

/// The unaccented letters of a lowercase Latin letter with a diacritic.
fn base_letters(c: char) -> Option<&'static str> {
    Some(match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĳ' => "ij",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' | 'ŉ' => "n",
        'ò'..='ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'þ' => "th",
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: RuleKind, value: &str) -> Rule {
        Rule::new(kind, value, "erasure", "2026-11-30", 0).unwrap()
    }

    #[test]
    fn folding_ignores_case_accents_and_separators() {
        let table = [
            ("José García", "jose garcia"),
            ("JOSÉ_GARCÍA", "jose garcia"),
            // Decomposed: e + combining acute.
            ("Jose\u{301}", "jose"),
            ("Müller-Lüdenscheidt", "muller ludenscheidt"),
            ("Straße", "strasse"),
            ("Łukasz Żółć", "lukasz zolc"),
            ("Ærøskøbing", "aeroskobing"),
            ("İpek", "ipek"),
            ("a__b  c", "a b c"),
            ("李明", "李明"),
        ];
        for (text, want) in table {
            assert_eq!(fold(text), want, "{text}");
        }
    }

    #[test]
    fn globs_and_paths() {
        // (rule, path, matches)
        let table = [
            ("Sales/jane.pdf", "Sales/jane.pdf", true),
            ("Sales", "Sales/jane.pdf", true),
            ("Sales", "Sales_old/jane.pdf", false),
            ("Sales/jane.pdf", "Sales/jane.pdf.bak", false),
            ("*.docx", "a/b/cv.docx", true),
            ("*.docx", "a/b/cv.pdf", false),
            ("*smith*", "Nurse/John_Smith.pdf", false),
            ("*Smith*", "Nurse/John_Smith.pdf", true),
            ("Nurse/*.pdf", "Nurse/a.pdf", true),
            ("Nurse/*.pdf", "Nurse/x/a.pdf", false),
            ("Nurse/**/*.pdf", "Nurse/x/y/a.pdf", true),
            ("Nurse/**/*.pdf", "Nurse/a.pdf", true),
            ("**/a.pdf", "a.pdf", true),
            ("cv?.txt", "role1/cv1.txt", true),
            ("cv?.txt", "role1/cv10.txt", false),
        ];
        for (rule, path, want) in table {
            assert_eq!(path_matches(rule, path), want, "{rule} ~ {path}");
        }
    }

    #[test]
    fn rules_match_their_kind_only() {
        let sum = "ab".repeat(32);
        let rules = [
            rule(RuleKind::Email, " John@Example.COM "),
            rule(RuleKind::Name, "josé garcía"),
            rule(RuleKind::Path, "./Sales/"),
            rule(RuleKind::Checksum, &sum.to_uppercase()),
        ];
        let subject = |path, email, checksum| Subject {
            path,
            email,
            checksum,
        };
        // (subject, which rules match)
        let table: [(Subject, [bool; 4]); 6] = [
            (
                subject(
                    Some("x/john_doe_john@example.com.pdf"),
                    Some("john@EXAMPLE.com"),
                    None,
                ),
                [true, false, false, false],
            ),
            (
                subject(Some("Nurse/Jose_Garcia_CV.pdf"), None, None),
                [false, true, false, false],
            ),
            (
                subject(Some("Nurse/GARCÍA, José.pdf"), None, None),
                [false, false, false, false],
            ),
            (
                subject(Some("Sales/a.pdf"), None, Some(&sum)),
                [false, false, true, true],
            ),
            (subject(None, None, Some(&sum)), [false, false, false, true]),
            (subject(None, None, None), [false; 4]),
        ];
        for (s, want) in table {
            let got = rules.each_ref().map(|r| r.matches(&s));
            assert_eq!(got, want, "{s:?}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let table = [
            (RuleKind::Email, "john.example.com", "--email"),
            (RuleKind::Checksum, "abc", "--checksum"),
            (RuleKind::Path, "../elsewhere", "--path"),
            (RuleKind::Path, "/", "--path"),
            (RuleKind::Name, "  ", "--name"),
        ];
        for (kind, value, flag) in table {
            let err = Rule::new(kind, value, "", "2026-01-01", 0).unwrap_err();
            assert!(err.0.starts_with(flag), "{value}: {err}");
        }
        let dates = [
            ("2026-02-29", false),
            ("2024-02-29", true),
            ("2026-13-01", false),
            ("26-01-01", false),
            ("2026-1-1", false),
            ("2026-12-31", true),
        ];
        for (date, ok) in dates {
            assert_eq!(check_date(date).is_ok(), ok, "{date}");
        }
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-12-01"), Some(20_788));
    }

    #[test]
    fn the_same_rule_from_the_state_and_the_ledger_counts_once() {
        let a = rule(RuleKind::Name, "x");
        let rules = Rules::new(vec![a.clone(), rule(RuleKind::Name, "y"), a]);
        assert_eq!(rules.len(), 2);
    }
}
