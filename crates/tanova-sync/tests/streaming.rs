//! Uploads stream from disk: a file far larger than the memory the agent (or the emulator) uses goes up whole.
//!
//! Its own test binary, apart from `it`, with one test: so that the test
//! process's own peak memory is the emulator's (plus the harness), and so that
//! the agent is started from a small process (on Linux a child's `ru_maxrss`
//! counts the parent's memory it was forked from, before its exec).

#![cfg(target_os = "linux")]

// This binary uses a few of the shared helpers.
#[allow(dead_code)]
#[path = "it/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::process::Stdio;

use common::*;
use serde_json::json;

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 200 * MIB;
/// Far below the file's size: what streaming buys.
const MEMORY_LIMIT: u64 = 60 * MIB;

/// The peak resident memory of this process so far (`VmHWM`), in bytes.
fn own_peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Wait for the child with wait4(2): its exit code and its peak resident memory in bytes.
fn wait_with_peak_rss(child: std::process::Child) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, with pointers to live locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    assert!(libc::WIFEXITED(status), "the agent did not exit normally");
    // ru_maxrss is in KiB on Linux.
    (libc::WEXITSTATUS(status), usage.ru_maxrss as u64 * 1024)
}

#[test]
fn a_200_mib_file_uploads_in_flat_memory_on_both_sides() {
    let env = TestEnv::with_knobs(Knobs {
        max_upload_bytes: SIZE,
        ..Knobs::default()
    });
    // Sparse, with a few marks so that the bytes are not all alike.
    let path = env.folder().join("big scan.pdf");
    let mut file = File::create(&path).unwrap();
    file.set_len(SIZE).unwrap();
    for (i, offset) in [0, SIZE / 3, SIZE / 2, SIZE - 16].into_iter().enumerate() {
        file.seek(SeekFrom::Start(offset)).unwrap();
        write!(file, "mark {i}").unwrap();
    }
    drop(file);
    env.config(json!({ "max_file_size_mb": 250 }));

    let emulator_before = own_peak_rss();
    let out = env.dir.path().join("stdout");
    let child = env
        .command(&["sync", "--json"])
        .stdout(File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (code, agent_peak) = wait_with_peak_rss(child);
    let emulator_growth = own_peak_rss().saturating_sub(emulator_before);

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["synced"], 1, "{summary}");
    assert_eq!(summary["bytes_uploaded"], SIZE);
    let stats = env.emulator.stats();
    assert_eq!(
        (stats.uploads, stats.bytes_received, stats.rejected_checksum),
        (1, SIZE, 0),
        "the emulator hashed every byte and found the checksum right"
    );
    assert_eq!(env.emulator.uploads()[0].size, SIZE);

    eprintln!(
        "{} MiB uploaded: agent peak RSS {:.1} MiB, emulator growth {:.1} MiB",
        SIZE / MIB,
        agent_peak as f64 / MIB as f64,
        emulator_growth as f64 / MIB as f64
    );
    assert!(
        agent_peak < MEMORY_LIMIT,
        "the agent peaked at {} MiB uploading a {} MiB file",
        agent_peak / MIB,
        SIZE / MIB
    );
    assert!(
        emulator_growth < MEMORY_LIMIT,
        "the emulator grew by {} MiB receiving a {} MiB file",
        emulator_growth / MIB,
        SIZE / MIB
    );
}
