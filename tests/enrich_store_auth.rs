//! `ringwait enrich --lookup` against a real redis-server that requires authentication:
//! a password alone, an ACL user, the password from `REDIS_PASSWORD`, and the refusals of a
//! wrong or missing password (clear, before any output exists, never echoing the password).

mod common;
mod job_support;

use std::process::Output;

use common::redis::{call, RedisServer};
use ringwait::dataset::value_of;

const ADMIN_PW: &str = "s3cret-admin";
const APP_PW: &str = "app pw@1";

fn enrich(url: &str, input: &str, output: &str, env_password: Option<&str>) -> Output {
    let mut cmd = job_support::bin();
    cmd.args([
        "enrich",
        "--input",
        input,
        "--output",
        output,
        "--key",
        "k",
        "--key-prefix",
        "k:",
        "--lookup",
        url,
        "--partitions",
        "1",
        "--quiet",
    ])
    .env_remove("REDIS_PASSWORD");
    if let Some(pw) = env_password {
        cmd.env("REDIS_PASSWORD", pw);
    }
    cmd.output().expect("run ringwait")
}

use job_support::stderr;

#[test]
fn every_credential_form_logs_in_and_bad_ones_are_refused_before_writing() {
    let redis = RedisServer::start();
    redis.populate(100);
    let addr = redis.addr();
    // An ACL user that may only read, then a password on the default user (last: from now
    // on the helper's own connections would need it too).
    call(
        addr,
        &[
            b"ACL",
            b"SETUSER",
            b"app",
            b"on",
            format!(">{APP_PW}").as_bytes(),
            b"~*",
            b"+get",
            b"+mget",
            b"+ping",
            b"+select",
        ],
    )
    .unwrap();
    call(
        addr,
        &[b"CONFIG", b"SET", b"requirepass", ADMIN_PW.as_bytes()],
    )
    .unwrap();

    let dir = job_support::Dir::new("store-auth");
    let input = dir.0.join("in.jsonl");
    std::fs::write(&input, "{\"k\":1}\n{\"k\":2}\n").unwrap();
    let input = input.to_str().unwrap();
    let want = |k: u64| {
        format!(
            "{{\"k\":{k},\"value\":\"{}\"}}",
            String::from_utf8(value_of(k).to_vec()).unwrap()
        )
    };
    let good = [
        (format!("redis://:{ADMIN_PW}@{addr}"), None),
        (
            format!(
                "redis://app:{}@{addr}",
                APP_PW.replace(' ', "%20").replace('@', "%40")
            ),
            None,
        ),
        (format!("redis://{addr}"), Some(ADMIN_PW)),
        (format!("redis://app@{addr}/0"), Some(APP_PW)),
    ];
    for (i, (url, env)) in good.iter().enumerate() {
        let output = dir.0.join(format!("out-{i}.jsonl"));
        let o = enrich(url, input, output.to_str().unwrap(), *env);
        assert!(o.status.success(), "{i}: {}", stderr(&o));
        let got = std::fs::read_to_string(&output).unwrap();
        assert_eq!(got, format!("{}\n{}\n", want(1), want(2)), "{i}");
    }

    let bad = [
        (format!("redis://:wrong-pw@{addr}"), None, "WRONGPASS"),
        (format!("redis://app:wrong-pw@{addr}"), None, "WRONGPASS"),
        (format!("redis://{addr}"), None, "NOAUTH"),
        (format!("redis://{addr}"), Some("wrong-pw"), "WRONGPASS"),
    ];
    for (i, (url, env, says)) in bad.iter().enumerate() {
        let output = dir.0.join(format!("bad-{i}.jsonl"));
        let o = enrich(url, input, output.to_str().unwrap(), *env);
        let err = stderr(&o);
        assert!(!o.status.success(), "{i}: {err}");
        assert!(err.contains(says), "{i}: says why: {err}");
        assert!(
            err.contains(&addr.to_string()),
            "{i}: names the store: {err}"
        );
        assert!(
            !err.contains("wrong-pw") && !err.contains(ADMIN_PW),
            "{i}: {err}"
        );
        assert!(
            !output.exists(),
            "{i}: nothing is written before the store answers"
        );
    }
}
