//! Sample CVs for the demo and benchmarks: small, distinct, in the folder layouts agencies use.

use std::io;
use std::path::{Path, PathBuf};

const FIRST: &[&str] = &[
    "Amira", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi",
    "Liam",
];
const LAST: &[&str] = &[
    "Okafor", "Smith", "Novak", "Patel", "Rossi", "Haddad", "Kim", "Moreau", "Silva", "Berg",
];
/// Role folders, a generic one (no job hint) and the root (no job hint).
const FOLDERS: &[&str] = &[
    "Sales Manager",
    "Registered Nurse",
    "CVs",
    "Software Engineer",
    "",
];
const EXTENSIONS: &[&str] = &["pdf", "txt", "md", "pdf", "docx"];

/// Write `count` distinct CVs under `root`; returns their paths.
pub fn write_samples(root: &Path, count: usize) -> io::Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        let first = FIRST[i % FIRST.len()];
        let last = LAST[(i / FIRST.len()) % LAST.len()];
        let folder = root.join(FOLDERS[i % FOLDERS.len()]);
        let ext = EXTENSIONS[i % EXTENSIONS.len()];
        std::fs::create_dir_all(&folder)?;
        let stem = if i % 3 == 0 {
            let email = format!(
                "{}.{}{}@example.com",
                first.to_lowercase(),
                last.to_lowercase(),
                i
            );
            format!("{first}_{last}_{email}")
        } else {
            format!("{first} {last} CV {i}")
        };
        let text = format!(
            "{first} {last}\nCandidate #{i}\nExperience: {} years in {}.\nSkills: communication, planning, teamwork.\n",
            2 + i % 15,
            if FOLDERS[i % FOLDERS.len()].is_empty() { "general roles" } else { FOLDERS[i % FOLDERS.len()] }
        );
        let path = folder.join(format!("{stem}.{ext}"));
        let bytes = match ext {
            "pdf" => pdf_with_text(&text),
            // Not a real Word document, but enough for the emulator, which only checks the checksum.
            _ => text.into_bytes(),
        };
        std::fs::write(&path, bytes)?;
        paths.push(path);
    }
    Ok(paths)
}

/// A minimal valid one-page PDF showing `text`.
pub fn pdf_with_text(text: &str) -> Vec<u8> {
    let escaped: String = text
        .lines()
        .map(|l| {
            l.replace('\\', "\\\\")
                .replace('(', "\\(")
                .replace(')', "\\)")
        })
        .map(|l| format!("({l}) Tj T* "))
        .collect();
    let content = format!("BT /F1 12 Tf 14 TL 72 720 Td {escaped}ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_distinct_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_samples(dir.path(), 30).unwrap();
        let mut sums: Vec<String> = paths
            .iter()
            .map(|p| crate::hash::sha256_hex(&std::fs::read(p).unwrap()))
            .collect();
        sums.sort();
        sums.dedup();
        assert_eq!(sums.len(), 30);
        assert!(paths.iter().all(|p| crate::filter::is_candidate_path(p)));
    }

    #[test]
    fn pdf_has_a_valid_xref() {
        let pdf = pdf_with_text("Jane (Doe)");
        let text = String::from_utf8(pdf.clone()).unwrap();
        let start: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(text[start..].starts_with("xref"));
        assert!(text.contains("(Jane \\(Doe\\)) Tj"));
    }
}
