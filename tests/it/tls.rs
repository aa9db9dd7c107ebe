//! `--ca-cert` with the certificates home servers actually have, against the HTTPS test
//! server: a self-signed certificate the server uses itself (made the way `openssl req -x509`
//! makes it: CA:TRUE), one with only a CN, an expired one — each trusted as a pin, with a warning
//! where a full check would refuse it — a different certificate refused with a message that
//! says so, a real CA that signed the server's certificate (full checks), and a file without a
//! certificate refused before anything is made.

use crate::protocol_server::{ServerConfig, TestServer};
use crate::util::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A certificate and its key, as PEM.
struct Made {
    cert: String,
    key: String,
}

/// How a test certificate is made.
struct Spec<'a> {
    /// subjectAltName entries (IPs or DNS names); empty: none at all.
    sans: &'a [&'a str],
    cn: &'a str,
    ca: bool,
    expired: bool,
}

fn params(spec: &Spec) -> CertificateParams {
    let sans: Vec<String> = spec.sans.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, spec.cn);
    if spec.ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    }
    if spec.expired {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    p
}

fn self_signed(spec: Spec) -> Made {
    let key = KeyPair::generate().unwrap();
    let cert = params(&spec).self_signed(&key).unwrap();
    Made {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A CA, and a server certificate it signed.
fn ca_and_server(server: Spec) -> (Made, Made) {
    let ca_key = KeyPair::generate().unwrap();
    let ca_params = params(&Spec {
        sans: &[],
        cn: "Home CA",
        ca: true,
        expired: false,
    });
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = params(&server).signed_by(&key, &issuer).unwrap();
    let ca = Made {
        cert: ca_cert.pem(),
        key: ca_key.serialize_pem(),
    };
    (
        ca,
        Made {
            cert: cert.pem(),
            key: key.serialize_pem(),
        },
    )
}

fn https_server(made: &Made) -> TestServer {
    let srv = TestServer::start(ServerConfig {
        tls: Some((made.cert.clone(), made.key.clone())),
        ..Default::default()
    });
    assert!(
        srv.base_url.starts_with("https://127.0.0.1:"),
        "{}",
        srv.base_url
    );
    srv
}

fn write(ws: &Workspace, name: &str, text: &str) -> std::path::PathBuf {
    let p = ws.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `run --from lib --to URL --ca-cert FILE`, with a deadline (a hang fails the test).
fn run_with_ca(ws: &Workspace, state: &Path, url: &str, ca: &Path) -> Out {
    let lib = ws.lib();
    let mut child = ws
        .cmd_with_state(
            state,
            &[
                "run",
                "--from",
                lib.to_str().unwrap(),
                "--to",
                url,
                "--ca-cert",
                ca.to_str().unwrap(),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bookferry starts");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            panic!("bookferry did not end within 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file migrated: each row final and not failed, the server holding exactly the library.
fn assert_all_sent(ws: &Workspace, state: &Path, srv: &TestServer, out: &Out) {
    assert_eq!(out.code, Some(0), "{}", out.both());
    let not_done = count_or_zero(
        state,
        "SELECT COUNT(*) FROM files WHERE state NOT IN ('uploaded', 'skipped')",
    );
    assert_eq!(not_done, 0, "{}", out.both());
    let held: BTreeSet<String> = srv.stored().keys().cloned().collect();
    assert_eq!(
        held,
        ws.unique_sha1s(),
        "the server holds exactly the library"
    );
}

/// The warning a pinned certificate gets when a full check would refuse it.
const PIN_WARNING: &str = "trusted anyway because it is the one in the file";

#[test]
fn a_self_signed_certificate_the_server_uses_itself_is_trusted_as_a_pin() {
    // As `openssl req -x509 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1` makes
    // it: basicConstraints CA:TRUE, and the server presents it as its own (rustls refused it
    // as "CaUsedAsEndEntity" when the file was taken as a root).
    let ws = Workspace::with_corpus_sized(6, 191, 4);
    let made = self_signed(Spec {
        sans: &["127.0.0.1"],
        cn: "127.0.0.1",
        ca: true,
        expired: false,
    });
    let srv = https_server(&made);
    let file = write(&ws, "server.pem", &made.cert);
    let out = run_with_ca(&ws, &ws.state(), &srv.base_url, &file);
    assert_all_sent(&ws, &ws.state(), &srv, &out);
    assert!(!out.stderr.contains(PIN_WARNING), "{}", out.stderr);
}

#[test]
fn a_pinned_certificate_with_only_a_cn_is_trusted_with_a_warning() {
    let ws = Workspace::with_corpus_sized(6, 192, 4);
    let made = self_signed(Spec {
        sans: &[],
        cn: "127.0.0.1",
        ca: false,
        expired: false,
    });
    let srv = https_server(&made);
    let file = write(&ws, "cn-only.pem", &made.cert);
    let out = run_with_ca(&ws, &ws.state(), &srv.base_url, &file);
    assert_all_sent(&ws, &ws.state(), &srv, &out);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(PIN_WARNING))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", out.stderr);
    assert!(
        warnings[0].contains(file.to_str().unwrap())
            && warnings[0].contains("is not issued for 127.0.0.1"),
        "{}",
        warnings[0]
    );
}

#[test]
fn an_expired_pinned_certificate_is_trusted_with_a_warning() {
    let ws = Workspace::with_corpus_sized(6, 193, 4);
    let made = self_signed(Spec {
        sans: &["127.0.0.1"],
        cn: "home",
        ca: false,
        expired: true,
    });
    let srv = https_server(&made);
    let file = write(&ws, "expired.pem", &made.cert);
    let out = run_with_ca(&ws, &ws.state(), &srv.base_url, &file);
    assert_all_sent(&ws, &ws.state(), &srv, &out);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(PIN_WARNING))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", out.stderr);
    assert!(
        warnings[0].contains("expired on") && warnings[0].contains("2020"),
        "{}",
        warnings[0]
    );
    assert!(!warnings[0].contains("not issued for"), "{}", warnings[0]);
}

#[test]
fn a_server_presenting_another_certificate_than_the_pinned_one_is_refused_saying_so() {
    let ws = Workspace::with_corpus_sized(6, 194, 4);
    let spec = || Spec {
        sans: &["127.0.0.1"],
        cn: "127.0.0.1",
        ca: true,
        expired: false,
    };
    let srv = https_server(&self_signed(spec()));
    // Same names, same kind, another key: not the server's certificate.
    let file = write(&ws, "other.pem", &self_signed(spec()).cert);
    let out = run_with_ca(&ws, &ws.state(), &srv.base_url, &file);
    assert_eq!(out.code, Some(2), "{}", out.both());
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("bookferry: error:"))
        .unwrap_or_else(|| panic!("no error line: {}", out.stderr));
    assert!(
        error.contains(&format!(
            "the server's certificate is not the one in --ca-cert {}",
            file.display()
        )),
        "{error}"
    );
    // Not the advice to give the flag that was given.
    assert!(!error.contains("trust its"), "{error}");
    assert_eq!(srv.stats().check_calls + srv.stats().uploads_total, 0);
    assert!(srv.stored().is_empty());
}

#[test]
fn a_ca_in_the_file_is_a_trust_root_with_full_checks() {
    let ws = Workspace::with_corpus_sized(6, 195, 4);
    // Signed by the CA, for 127.0.0.1: trusted.
    let (ca, server) = ca_and_server(Spec {
        sans: &["127.0.0.1"],
        cn: "nas",
        ca: false,
        expired: false,
    });
    let srv = https_server(&server);
    let file = write(&ws, "ca.pem", &ca.cert);
    let out = run_with_ca(&ws, &ws.state(), &srv.base_url, &file);
    assert_all_sent(&ws, &ws.state(), &srv, &out);
    assert!(!out.stderr.contains(PIN_WARNING), "{}", out.stderr);

    // Signed by the CA but for another name, or expired: a CA gets the full checks, no pass.
    for (n, spec) in [
        Spec {
            sans: &["nas.example"],
            cn: "nas.example",
            ca: false,
            expired: false,
        },
        Spec {
            sans: &["127.0.0.1"],
            cn: "nas",
            ca: false,
            expired: true,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let (ca, server) = ca_and_server(spec);
        let srv = https_server(&server);
        let file = write(&ws, &format!("ca{n}.pem"), &ca.cert);
        let state = ws.path().join(format!("refused{n}.db"));
        let out = run_with_ca(&ws, &state, &srv.base_url, &file);
        assert_eq!(out.code, Some(2), "{}", out.both());
        assert!(
            out.stderr.contains(&format!(
                "nor valid under a CA in it: invalid peer certificate: {}",
                ["certificate not valid for name", "certificate expired"][n]
            )),
            "{}",
            out.stderr
        );
        assert_eq!(srv.stats().check_calls + srv.stats().uploads_total, 0);
    }
}

#[test]
fn a_ca_cert_file_without_a_certificate_is_refused_before_anything_is_made() {
    let ws = Workspace::with_corpus_sized(3, 196, 4);
    let made = self_signed(Spec {
        sans: &["127.0.0.1"],
        cn: "127.0.0.1",
        ca: false,
        expired: false,
    });
    let srv = https_server(&made);
    for (name, text) in [("key.pem", made.key.as_str()), ("empty.pem", "")] {
        let file = write(&ws, name, text);
        let out = run_with_ca(&ws, &ws.state(), &srv.base_url, &file);
        assert_eq!(out.code, Some(2), "{name}: {}", out.both());
        assert!(
            out.stderr.contains(&format!(
                "--ca-cert {}: no certificate in the file",
                file.display()
            )),
            "{name}: {}",
            out.stderr
        );
        assert!(!ws.state().exists(), "{name}: a state DB was made");
        assert_eq!(srv.stats().check_calls + srv.stats().uploads_total, 0);
    }
}
