//! `log_target: syslog`: each event as one RFC 5424 message (facility daemon, the level as severity, the event's fields as structured data) to the local socket, or to a collector over UDP or TCP (octet-counted, RFC 6587).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The local syslog socket on Linux and most Unix systems.
const DEV_LOG: &str = "/dev/log";
/// RFC 5424 facility 3: system daemons.
const FACILITY_DAEMON: u8 = 3;
/// The SD-ID of the event's fields. 32473 is the enterprise number RFC 5612
/// sets aside for examples and private use: Tanova has none registered.
const SD_ID: &str = "tanova@32473";
/// How long a TCP collector may take to accept a connection or a message.
const TCP_TIMEOUT: Duration = Duration::from_secs(2);

/// Where syslog messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogAddr {
    /// A local datagram socket (`/dev/log`, `unix:///PATH`).
    Unix(PathBuf),
    /// `udp://HOST:PORT`.
    Udp(String),
    /// `tcp://HOST:PORT`.
    Tcp(String),
}

impl SyslogAddr {
    pub fn local() -> Self {
        SyslogAddr::Unix(PathBuf::from(DEV_LOG))
    }

    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?}: expected SCHEME://…"))?;
        let host_port = |rest: &str| -> Result<String, String> {
            match rest.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                    Ok(rest.to_string())
                }
                _ => Err(format!(
                    "{text:?}: a syslog collector needs a host and a port, like {scheme}://127.0.0.1:514"
                )),
            }
        };
        match scheme.to_ascii_lowercase().as_str() {
            "udp" => host_port(rest).map(SyslogAddr::Udp),
            "tcp" => host_port(rest).map(SyslogAddr::Tcp),
            "unix" if rest.starts_with('/') => Ok(SyslogAddr::Unix(PathBuf::from(rest))),
            "unix" => Err(format!("{text:?}: expected unix:///ABSOLUTE/PATH")),
            _ => Err(format!(
                "{text:?}: a syslog target is udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH"
            )),
        }
    }
}

impl std::fmt::Display for SyslogAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogAddr::Unix(path) => write!(f, "unix://{}", path.display()),
            SyslogAddr::Udp(addr) => write!(f, "udp://{addr}"),
            SyslogAddr::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// The open connection to the syslog daemon or collector.
enum Sink {
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixDatagram),
    Udp(UdpSocket),
    /// Reconnected once per message after a failure.
    Tcp {
        addr: SocketAddr,
        stream: Option<TcpStream>,
    },
}

/// A tracing layer writing RFC 5424 messages.
pub struct SyslogLayer {
    sink: Mutex<Sink>,
    hostname: String,
    pid: u32,
}

impl SyslogLayer {
    /// Connect now, so that an unreachable syslog is a config error, not silence.
    pub fn connect(addr: &SyslogAddr) -> Result<Self, String> {
        let fail = |e: std::io::Error| format!("cannot reach syslog at {addr}: {e}");
        let sink = match addr {
            #[cfg(unix)]
            SyslogAddr::Unix(path) => {
                let socket = std::os::unix::net::UnixDatagram::unbound().map_err(fail)?;
                socket.connect(path).map_err(fail)?;
                Sink::Unix(socket)
            }
            #[cfg(not(unix))]
            SyslogAddr::Unix(_) => {
                return Err(format!(
                    "{addr}: no local syslog socket on this system; give a collector as udp:// or tcp://"
                ))
            }
            SyslogAddr::Udp(host_port) => {
                let to = resolve(host_port).map_err(fail)?;
                let any: SocketAddr = if to.is_ipv4() {
                    "0.0.0.0:0".parse().expect("an address")
                } else {
                    "[::]:0".parse().expect("an address")
                };
                let socket = UdpSocket::bind(any).map_err(fail)?;
                socket.connect(to).map_err(fail)?;
                Sink::Udp(socket)
            }
            SyslogAddr::Tcp(host_port) => {
                let to = resolve(host_port).map_err(fail)?;
                Sink::Tcp {
                    addr: to,
                    stream: Some(tcp(to).map_err(fail)?),
                }
            }
        };
        Ok(SyslogLayer {
            sink: Mutex::new(sink),
            hostname: hostname(),
            pid: std::process::id(),
        })
    }

    fn send(&self, message: &str) {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        // A lost log line cannot itself be logged: it is dropped.
        match &mut *sink {
            #[cfg(unix)]
            Sink::Unix(socket) => {
                let _ = socket.send(message.as_bytes());
            }
            Sink::Udp(socket) => {
                let _ = socket.send(message.as_bytes());
            }
            Sink::Tcp { addr, stream } => {
                let framed = format!("{} {message}", message.len());
                for _ in 0..2 {
                    if stream.is_none() {
                        *stream = tcp(*addr).ok();
                    }
                    let Some(s) = stream.as_mut() else { return };
                    if s.write_all(framed.as_bytes()).is_ok() {
                        return;
                    }
                    *stream = None;
                }
            }
        }
    }
}

fn resolve(host_port: &str) -> std::io::Result<SocketAddr> {
    host_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"))
}

fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TCP_TIMEOUT)?;
    stream.set_write_timeout(Some(TCP_TIMEOUT))?;
    Ok(stream)
}

impl<S: Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = format_message(&Message {
            severity: severity(meta.level()),
            timestamp: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            hostname: &self.hostname,
            pid: self.pid,
            msgid: if meta.target() == super::FILE_TARGET {
                "file"
            } else {
                "-"
            },
            fields: &fields.pairs,
            text: &fields.message,
        });
        self.send(&line);
    }
}

/// What one RFC 5424 message is made of.
struct Message<'a> {
    severity: u8,
    timestamp: String,
    hostname: &'a str,
    pid: u32,
    msgid: &'a str,
    fields: &'a [(&'static str, String)],
    text: &'a str,
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`.
fn format_message(m: &Message<'_>) -> String {
    let pri = FACILITY_DAEMON * 8 + m.severity;
    let mut out = format!(
        "<{pri}>1 {} {} tanova-sync {} {} ",
        m.timestamp, m.hostname, m.pid, m.msgid
    );
    if m.fields.is_empty() {
        out.push('-');
    } else {
        out.push('[');
        out.push_str(SD_ID);
        for (name, value) in m.fields {
            let _ = write!(out, " {name}=\"{}\"", escape_param(value));
        }
        out.push(']');
    }
    if !m.text.is_empty() {
        out.push(' ');
        out.push_str(m.text);
    }
    out
}

/// RFC 5424 §6.3.3: `"`, `\` and `]` are escaped with a backslash in a PARAM-VALUE.
fn escape_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The machine's name as RFC 5424 wants it (printable ASCII, no spaces), or `-`.
fn hostname() -> String {
    let name = machine_name().unwrap_or_default();
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()) && name.len() <= 255 {
        name
    } else {
        "-".to_string()
    }
}

#[cfg(unix)]
fn machine_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(not(unix))]
fn machine_name() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

/// An event's message and its other fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.pairs.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.pairs.push((field.name(), format!("{value:?}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_rfc_5424() {
        let fields = vec![
            ("file", r#"/cv/a "b" [c].pdf"#.to_string()),
            ("checksum", "ab12".to_string()),
        ];
        let table = [
            (
                Message {
                    severity: 6,
                    timestamp: "2026-12-01T00:00:00.000000Z".into(),
                    hostname: "box",
                    pid: 42,
                    msgid: "file",
                    fields: &fields,
                    text: "uploaded",
                },
                r#"<30>1 2026-12-01T00:00:00.000000Z box tanova-sync 42 file [tanova@32473 file="/cv/a \"b\" [c\].pdf" checksum="ab12"] uploaded"#,
            ),
            (
                Message {
                    severity: 3,
                    timestamp: "T".into(),
                    hostname: "-",
                    pid: 1,
                    msgid: "-",
                    fields: &[],
                    text: "state: disk full",
                },
                "<27>1 T - tanova-sync 1 - - state: disk full",
            ),
        ];
        for (message, want) in table {
            assert_eq!(format_message(&message), want);
        }
    }

    #[test]
    fn levels_map_to_severities() {
        let table = [
            (Level::ERROR, 3),
            (Level::WARN, 4),
            (Level::INFO, 6),
            (Level::DEBUG, 7),
            (Level::TRACE, 7),
        ];
        for (level, want) in table {
            assert_eq!(severity(&level), want, "{level}");
        }
    }
}
