//! A real `rsyslogd` listening on loopback UDP and TCP ports and on a socket of its own, started by the test and stopped when dropped; what it receives goes to a file, one line per message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis_server::free_port;
use super::{require_tool, wait_until};

/// Each message as `SEVERITY|APP-NAME|MSGID|STRUCTURED-DATA|MSG`.
const TEMPLATE: &str = "%syslogseverity-text%|%app-name%|%msgid%|%structured-data%|%msg%\\n";

pub struct Rsyslogd {
    child: Child,
    dir: tempfile::TempDir,
    pub udp_port: u16,
    pub tcp_port: u16,
}

impl Rsyslogd {
    /// A running rsyslogd, or `None` where it is not installed (with `CI` set, a failure instead).
    pub fn start() -> Option<Self> {
        let bin = match Path::new("/usr/sbin/rsyslogd") {
            p if p.is_file() => p.to_path_buf(),
            _ => require_tool(&["rsyslogd"], "apt-get install rsyslog")?,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let udp_port = free_udp_port();
        let tcp_port = free_port();
        // RFC 5424 on a local socket needs rsyslog's regular parser (its
        // special one expects the traditional local format), as README says.
        let conf = format!(
            r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
module(load="imtcp")
input(type="imuxsock" Socket="{dir}/log" CreatePath="on" UseSpecialParser="off" ParseHostname="on")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
template(name="fields" type="string" string="{TEMPLATE}")
*.* action(type="omfile" file="{dir}/received.log" template="fields")
"#,
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("rsyslogd.err")).unwrap(),
            ))
            .spawn()
            .expect("rsyslogd starts");
        let server = Rsyslogd {
            child,
            dir,
            udp_port,
            tcp_port,
        };
        let ready = wait_until(Duration::from_secs(10), || {
            server.socket().exists()
                && std::net::TcpStream::connect(("127.0.0.1", server.tcp_port)).is_ok()
        });
        assert!(
            ready,
            "rsyslogd did not start: {}",
            std::fs::read_to_string(server.dir.path().join("rsyslogd.err")).unwrap_or_default()
        );
        Some(server)
    }

    /// Its own local socket, as `/dev/log` is the system's.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The lines received so far from tanova-sync, split into their five parts.
    pub fn received(&self) -> Vec<[String; 5]> {
        std::fs::read_to_string(self.dir.path().join("received.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let parts: Vec<&str> = line.splitn(5, '|').collect();
                let parts: [String; 5] = parts
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
                    .try_into()
                    .ok()?;
                (parts[1] == "tanova-sync").then_some(parts)
            })
            .collect()
    }

    /// Everything in the output file, for assertions that nothing secret arrived.
    pub fn raw(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("received.log")).unwrap_or_default()
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
