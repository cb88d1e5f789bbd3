//! Starting and stopping: the threaded emulator and the binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tanova_emulator::{Emulator, Knobs};

/// A bare HTTP/1.1 GET, so plain `#[test]`s need no async client.
fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn threaded_emulator_serves_and_stops_on_drop() {
    let emulator = Emulator::start_in_thread(Knobs::default()).unwrap();
    assert!(emulator.url().starts_with("http://127.0.0.1:"));
    emulator.preload(["ab".to_owned()]);
    let answer = get(emulator.addr(), "/_emulator/stats").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"uploads\":0"), "{answer}");

    let addr = emulator.addr();
    drop(emulator);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "server still listening after drop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_prints_its_address_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tanova-emulator"))
        .args(["--listen", "127.0.0.1:0", "--api-key", "k"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    let answer = get(addr, "/_emulator/knobs");
    child.kill().unwrap();
    child.wait().unwrap();
    let answer = answer.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"api_key\":\"k\""), "{answer}");
}

#[test]
fn binary_refuses_a_non_loopback_address() {
    let output = Command::new(env!("CARGO_BIN_EXE_tanova-emulator"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-remote"));
}
