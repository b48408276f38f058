//! `ringwait enrich --lookup rediss://…` against a real redis-server serving TLS with a
//! certificate from a CA this test makes: the CA given with `--tls-ca` is trusted; without it
//! (Mozilla's roots), or for a host name the certificate does not carry, the job refuses to
//! start and writes nothing. TLS and AUTH together.

mod common;
mod job_support;

use common::redis::{call, free_port, RedisServer};
use job_support::{ringwait, stderr, Dir};
use ringwait::dataset::value_of;
use ringwait::resp::OwnedFrame;

/// A CA, and a certificate for `localhost` (only) it signed: (CA PEM, cert PEM, key PEM).
fn make_certificates() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ringwait test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn a_tls_store_is_reached_with_its_ca_and_refused_without_it() {
    let redis = RedisServer::start();
    redis.populate(10);
    let dir = Dir::new("store-tls");
    let (ca, cert, key) = make_certificates();
    let ca_file = dir.path("ca.pem");
    let (cert_file, key_file) = (dir.path("server.pem"), dir.path("server.key"));
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let tls_port = free_port();
    let set = call(
        redis.addr(),
        &[
            b"CONFIG",
            b"SET",
            b"tls-cert-file",
            cert_file.as_bytes(),
            b"tls-key-file",
            key_file.as_bytes(),
            b"tls-ca-cert-file",
            ca_file.as_bytes(),
            b"tls-auth-clients",
            b"no",
            b"tls-port",
            tls_port.to_string().as_bytes(),
        ],
    )
    .unwrap();
    assert_eq!(
        set,
        OwnedFrame::Simple(b"OK".to_vec()),
        "redis-server serves TLS"
    );

    let input = dir.path("in.jsonl");
    std::fs::write(&input, "{\"key\":\"k:1\"}\n{\"key\":\"k:2\"}\n").unwrap();
    let want = (1..=2u64)
        .map(|k| {
            let v = String::from_utf8(value_of(k).to_vec()).unwrap();
            format!("{{\"key\":\"k:{k}\",\"value\":\"{v}\"}}\n")
        })
        .collect::<String>();
    let run = |url: &str, extra: &[&str], name: &str| {
        let output = dir.path(name);
        let mut args = vec![
            "enrich", "--input", &input, "--output", &output, "--lookup", url,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--partitions", "1", "--quiet"]);
        (ringwait(&args), output)
    };

    // Trusted through --tls-ca, with both batching settings.
    for batch in ["auto", "off"] {
        let url = format!("rediss://localhost:{tls_port}");
        let (o, out) = run(&url, &["--tls-ca", &ca_file, "--batch", batch], "ok.jsonl");
        assert!(o.status.success(), "{batch}: {}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), want, "{batch}");
    }

    // A burst bigger than rustls's default 64 KiB of unsent records: 5,000 lookups of
    // 80-byte keys in flight (all misses).
    let burst = dir.path("burst.jsonl");
    let long_key = "x".repeat(72);
    let lines: String = (0..20_000u64)
        .map(|i| format!("{{\"key\":\"{long_key}{i:06}\"}}\n"))
        .collect();
    std::fs::write(&burst, &lines).unwrap();
    let output = dir.path("burst-out.jsonl");
    let o = ringwait(&[
        "enrich",
        "--input",
        &burst,
        "--output",
        &output,
        "--lookup",
        &format!("rediss://localhost:{tls_port}"),
        "--tls-ca",
        &ca_file,
        "--batch",
        "off",
        "--capacity",
        "5000",
        "--partitions",
        "1",
        "--quiet",
    ]);
    assert!(o.status.success(), "burst: {}", stderr(&o));
    let out = std::fs::read_to_string(&output).unwrap();
    assert_eq!(out.lines().count(), 20_000);
    assert!(out.lines().all(|l| l.ends_with(",\"value\":null}")));

    // One write far bigger than rustls's default 64 KiB of unsent records: 20,000 GETs
    // submitted in one go on one TLS connection, then every reply.
    let tls = ringwait::lookup::TlsSettings::new("localhost", Some(std::path::Path::new(&ca_file)))
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let answered = common::redis::run(move || async move {
        use std::{cell::Cell, rc::Rc};
        type H =
            Box<dyn FnOnce(Result<ringwait::lookup::ReplyView<'_>, ringwait::lookup::LookupError>)>;
        let config = ringwait::lookup::ConnectionConfig {
            tls: Some(tls),
            ..Default::default()
        };
        let conn: ringwait::lookup::Connection<H> =
            ringwait::lookup::Connection::connect(addr, config)
                .await
                .unwrap();
        let ok = Rc::new(Cell::new(0u32));
        for i in 0..20_000u64 {
            let ok = ok.clone();
            let key = format!("k:{}", i % 10);
            let h: H = Box::new(move |r| {
                if r.is_ok_and(|v| v.value().is_some()) {
                    ok.set(ok.get() + 1);
                }
            });
            assert!(conn.get(key.as_bytes(), h).is_ok());
        }
        common::redis::until("every reply", || conn.pending() == 0).await;
        ok.get()
    });
    assert_eq!(answered, 20_000, "every GET of the big write answered");

    // TLS and AUTH together.
    call(
        redis.addr(),
        &[b"CONFIG", b"SET", b"requirepass", b"tls-pw"],
    )
    .unwrap();
    let url = format!("rediss://:tls-pw@localhost:{tls_port}");
    let (o, out) = run(&url, &["--tls-ca", &ca_file], "auth.jsonl");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);

    // Refusals: an unknown issuer (Mozilla's roots), a name the certificate does not carry,
    // --tls-ca without rediss://. Nothing is written.
    let plain = format!("redis://:tls-pw@127.0.0.1:{}", redis.port);
    let refused = [
        (
            format!("rediss://:tls-pw@localhost:{tls_port}"),
            vec![],
            "certificate",
        ),
        (
            format!("rediss://:tls-pw@127.0.0.1:{tls_port}"),
            vec!["--tls-ca", ca_file.as_str()],
            "certificate",
        ),
        (plain, vec!["--tls-ca", ca_file.as_str()], "--tls-ca"),
    ];
    for (i, (url, extra, says)) in refused.iter().enumerate() {
        let (o, out) = run(url, extra, &format!("bad-{i}.jsonl"));
        let err = stderr(&o);
        assert!(!o.status.success(), "{i}: {err}");
        assert!(err.contains(says), "{i}: {err}");
        assert!(
            !err.contains("tls-pw"),
            "{i}: the password is not shown: {err}"
        );
        assert!(!std::path::Path::new(&out).exists(), "{i}: nothing written");
    }
}
