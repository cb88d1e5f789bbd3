//! Network fixtures on loopback: a TLS front signed by a private CA, and a CONNECT proxy that counts tunnels.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Serve `run` on a runtime of its own, on a background thread for the rest of the test process.
fn in_background<F>(run: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()> + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run());
    });
}

/// HTTPS in front of a plain-HTTP backend, with a certificate for `localhost` from a private CA.
pub struct TlsFront {
    pub port: u16,
    /// The private CA, as a PEM file would hold it.
    pub ca_pem: String,
}

pub fn tls_front(backend: SocketAddr) -> TlsFront {
    tls_front_valid(backend, None)
}

/// [`tls_front`] with a certificate valid only from `valid.0` to `valid.1`
/// (rcgen's default, 1975 to 4096, when `None`): how a machine whose clock
/// is off sees the service's certificate.
pub fn tls_front_valid(
    backend: SocketAddr,
    valid: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
) -> TlsFront {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Example Agency Corporate CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    if let Some((not_before, not_after)) = valid {
        (leaf_params.not_before, leaf_params.not_after) = (not_before, not_after);
    }
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    in_background(move || async move {
        let listener = TcpListener::from_std(listener).unwrap();
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A handshake the client refuses (unknown CA) just ends here.
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    TlsFront {
        port,
        ca_pem: ca.pem(),
    }
}

/// An HTTP CONNECT proxy; `tunnels` counts the tunnels it opened, `plain`
/// the plain-HTTP requests it was handed (and refused with 405).
pub struct ConnectProxy {
    pub port: u16,
    pub tunnels: Arc<AtomicUsize>,
    pub plain: Arc<AtomicUsize>,
}

impl ConnectProxy {
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }

    pub fn plain(&self) -> usize {
        self.plain.load(Ordering::SeqCst)
    }
}

pub fn connect_proxy() -> ConnectProxy {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tunnels, plain) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counter, plain_counter) = (tunnels.clone(), plain.clone());
    in_background(move || async move {
        let listener = TcpListener::from_std(listener).unwrap();
        while let Ok((mut client, _)) = listener.accept().await {
            let (counter, plain_counter) = (counter.clone(), plain_counter.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let mut words = head.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                    plain_counter.fetch_add(1, Ordering::SeqCst);
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                // Only loopback targets: this proxy must never reach out.
                let Ok(addr) = tokio::net::lookup_host(target)
                    .await
                    .map(|mut a| a.find(|a| a.ip().is_loopback()))
                else {
                    return;
                };
                let Some(addr) = addr else { return };
                let Ok(mut upstream) = TcpStream::connect(addr).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    ConnectProxy {
        port,
        tunnels,
        plain,
    }
}
