//! Which certificate authorities the HTTP client trusts: the platform's, or Mozilla's bundled roots where the platform has none, plus `ca_file`; rustls on the ring provider.
//!
//! On Linux (and other Unix but macOS) the platform's store is the one
//! `ca-certificates` installs (or `SSL_CERT_FILE` / `SSL_CERT_DIR`). A minimal
//! container image has none: the client then trusts the Mozilla roots compiled
//! into the binary (`webpki-root-certs`) instead of failing. On macOS and
//! Windows the operating system's verifier is always there and is used.

use reqwest::{Certificate, ClientBuilder};

/// Where the client's trusted roots come from, for the log and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's verifier (macOS, Windows).
    Platform { extra: usize },
    /// The system's certificate store (Linux): how many certificates it gave.
    System { count: usize, extra: usize },
    /// No usable system store: Mozilla's roots built into the binary.
    Bundled { count: usize, extra: usize },
}

impl std::fmt::Display for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, extra) = match self {
            Roots::Platform { extra } => ("the operating system's store".to_string(), *extra),
            Roots::System { count, extra } => {
                (format!("the system's {count} CA certificates"), *extra)
            }
            Roots::Bundled { count, extra } => (
                format!("the {count} bundled Mozilla roots (no system CA store was found)"),
                *extra,
            ),
        };
        match extra {
            0 => write!(f, "{what}"),
            n => write!(f, "{what} plus {n} from ca_file"),
        }
    }
}

/// Make ring the process's rustls provider (once; the HTTP client and the
/// Redis client both ask for the process default).
pub fn install_provider() {
    // An error means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `builder` trusting the platform's roots (or the bundled ones) and `extra`.
pub fn with_roots(builder: ClientBuilder, extra: &[Certificate]) -> (ClientBuilder, Roots) {
    install_provider();
    platform(builder, extra)
}

#[cfg(any(target_os = "macos", target_os = "windows"))]
fn platform(builder: ClientBuilder, extra: &[Certificate]) -> (ClientBuilder, Roots) {
    (
        builder.tls_certs_merge(extra.iter().cloned()),
        Roots::Platform { extra: extra.len() },
    )
}

#[cfg(not(any(target_os = "macos", target_os = "windows")))]
fn platform(builder: ClientBuilder, extra: &[Certificate]) -> (ClientBuilder, Roots) {
    let found = rustls_native_certs::load_native_certs();
    // A certificate rustls cannot take as a root would fail the whole client: leave it out.
    let system: Vec<Certificate> = found
        .certs
        .iter()
        .filter(|der| rustls::RootCertStore::empty().add((*der).clone()).is_ok())
        .filter_map(|der| Certificate::from_der(der).ok())
        .collect();
    for error in &found.errors {
        tracing::debug!("system CA store: {error}");
    }
    let (roots, chosen) = if system.is_empty() {
        let bundled = bundled();
        let count = bundled.len();
        (
            bundled,
            Roots::Bundled {
                count,
                extra: extra.len(),
            },
        )
    } else {
        let count = system.len();
        (
            system,
            Roots::System {
                count,
                extra: extra.len(),
            },
        )
    };
    let builder = builder.tls_certs_only(roots.into_iter().chain(extra.iter().cloned()));
    (builder, chosen)
}

/// What to do about a certificate the client refused, when `e` (or one of
/// its causes) is one: the machine's clock for a certificate out of its
/// validity (a clock that is off makes every certificate look so), `ca_file`
/// for an unknown issuer (a proxy that inspects TLS). `None` for other errors.
pub fn refusal_hint(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as Cert;
    let refused = refused_certificate(e)?;
    let clock = || humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    Some(match refused {
        Cert::Expired | Cert::ExpiredContext { .. } => format!(
            "the service's certificate has expired by this machine's clock, which says {}: if \
             that is wrong, set the clock right (turn on NTP); if it is right, the service's \
             certificate needs renewing",
            clock()
        ),
        Cert::NotValidYet | Cert::NotValidYetContext { .. } => format!(
            "the service's certificate is not valid yet by this machine's clock, which says {}: \
             the clock is probably behind; set it right (turn on NTP)",
            clock()
        ),
        Cert::UnknownIssuer => "the certificate is signed by a CA this machine does not trust: \
             behind a proxy that inspects TLS, put its CA certificate in ca_file"
            .to_string(),
        Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
            "the certificate is for another host name: is tanova_url right?".to_string()
        }
        _ => return None,
    })
}

/// The certificate error among `e`'s causes. An `io::Error` hides the error
/// it wraps from `source()` (it answers that error's own source), and
/// hyper's connector wraps rustls's in two of them, so each is opened by hand.
fn refused_certificate<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::CertificateError> {
    let mut cause = Some(e);
    while let Some(error) = cause {
        let mut wrapped = Some(error);
        while let Some(inner) = wrapped {
            if let Some(rustls::Error::InvalidCertificate(refused)) = inner.downcast_ref() {
                return Some(refused);
            }
            wrapped = inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|inner| inner as &(dyn std::error::Error + 'static));
        }
        cause = error.source();
    }
    None
}

/// Mozilla's roots as shipped in the binary.
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
fn bundled() -> Vec<Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| Certificate::from_der(der).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_roots_all_parse() {
        #[cfg(not(any(target_os = "macos", target_os = "windows")))]
        assert_eq!(
            bundled().len(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
        );
    }

    #[test]
    fn roots_say_where_they_come_from() {
        let table = [
            (
                Roots::System {
                    count: 140,
                    extra: 0,
                },
                "the system's 140 CA certificates",
            ),
            (
                Roots::Bundled {
                    count: 150,
                    extra: 1,
                },
                "the 150 bundled Mozilla roots (no system CA store was found) plus 1 from ca_file",
            ),
            (
                Roots::Platform { extra: 2 },
                "the operating system's store plus 2 from ca_file",
            ),
        ];
        for (roots, want) in table {
            assert_eq!(roots.to_string(), want);
        }
    }

    #[test]
    fn a_refused_certificate_is_found_under_its_wrappers_and_explained() {
        use rustls::CertificateError as Cert;
        // As hyper's connector hands it on: rustls's error in two io::Errors.
        let wrapped = |refused: Cert| {
            let tls = rustls::Error::InvalidCertificate(refused);
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls))
        };
        let table = [
            (
                wrapped(Cert::Expired),
                Some("has expired by this machine's clock"),
            ),
            (
                wrapped(Cert::NotValidYet),
                Some("is not valid yet by this machine's clock"),
            ),
            (
                wrapped(Cert::UnknownIssuer),
                Some("put its CA certificate in ca_file"),
            ),
            (wrapped(Cert::NotValidForName), Some("is tanova_url right?")),
            (wrapped(Cert::BadSignature), None),
            (std::io::Error::other("connection refused"), None),
        ];
        for (error, want) in table {
            let hint = refusal_hint(&error);
            match want {
                Some(want) => assert!(
                    hint.as_deref().is_some_and(|h| h.contains(want)),
                    "{hint:?}"
                ),
                None => assert_eq!(hint, None, "{error}"),
            }
        }
    }
}
