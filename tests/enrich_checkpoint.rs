//! `ringwait enrich --checkpoint-dir`: the flags' rules (what is refused, and why), one process
//! per directory, and a finished job that is run again changes nothing.

mod job_support;

use std::path::PathBuf;
use std::process::Stdio;

use job_support::{bin, ids, ringwait, stderr};
use std::time::{Duration, Instant};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rw-enrich-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn standard_output_and_standard_input_are_refused() {
    let d = dir("refused");
    let ck = d.join("ck");
    let o = ringwait(&["enrich", "--records", "10", "--checkpoint-dir", s(&ck)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--output PATH"), "{}", stderr(&o));
    let out = d.join("out.jsonl");
    let o = ringwait(&[
        "enrich",
        "--input",
        "-",
        "--output",
        s(&out),
        "--checkpoint-dir",
        s(&ck),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("standard input"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_finished_job_run_again_gives_the_same_output_and_other_partitions_are_refused() {
    let d = dir("again");
    let (ck, out) = (d.join("ck"), d.join("out.jsonl"));
    let args = |p: &'static str| {
        vec![
            "enrich".to_string(),
            "--records".into(),
            "3000".into(),
            "--builtin-keys".into(),
            "1000".into(),
            "--output".into(),
            s(&out).into(),
            "--checkpoint-dir".into(),
            s(&ck).into(),
            "--checkpoint-interval-ms".into(),
            "10".into(),
            "--partitions".into(),
            p.into(),
            "--no-pin".into(),
            "--quiet".into(),
        ]
    };
    let run = |p| {
        let a = args(p);
        ringwait(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run("2");
    assert!(o.status.success(), "{}", stderr(&o));
    let first = std::fs::read(&out).unwrap();
    assert_eq!(first.iter().filter(|b| **b == b'\n').count(), 3000);
    let o = run("2");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already complete (3000 records in its output)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), first, "nothing changes");
    std::fs::remove_file(&out).unwrap();
    let o = run("2");
    assert!(
        !o.status.success(),
        "a complete job whose output is gone is not reported done"
    );
    assert!(stderr(&o).contains("is gone"), "{}", stderr(&o));
    let o = run("1");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--partitions 2"),
        "says what to change: {}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_second_process_on_the_same_checkpoint_dir_is_refused() {
    let d = dir("lock");
    let ck = d.join("ck");
    let out = d.join("a.jsonl");
    let args = [
        "enrich",
        "--records",
        "100000000",
        "--output",
        s(&out),
        "--checkpoint-dir",
        s(&ck),
        "--partitions",
        "1",
        "--no-pin",
        "--quiet",
    ];
    let mut first = bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first one owns the directory.
    let started = Instant::now();
    while !ck.join("op-0-p0.snap").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same command again: the same job, so only the lock stands in its way.
    let o = ringwait(&args);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn key_ordered_and_unordered_jobs_with_checkpoints_write_every_record_once() {
    for mode in ["key-ordered", "unordered"] {
        let d = dir(mode);
        let out = d.join("out.jsonl");
        let o = ringwait(&[
            "enrich",
            "--records",
            "4000",
            "--builtin-keys",
            "1000",
            "--mode",
            mode,
            "--output",
            s(&out),
            "--checkpoint-dir",
            s(&d.join("ck")),
            "--checkpoint-interval-ms",
            "5",
            "--partitions",
            "2",
            "--no-pin",
            "--quiet",
        ]);
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        let mut ids = ids(s(&out));
        ids.sort();
        assert_eq!(ids, (0..4000).collect::<Vec<_>>(), "{mode}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A record failing under `--on-error fail` stops the job (the writer cancels the checkpoints;
/// partitions waiting for the final checkpoint do not hang), and the same command with
/// `--on-error skip` then resumes and finishes.
#[test]
fn a_failed_record_stops_a_checkpointed_job_and_a_rerun_resumes() {
    let d = dir("fail");
    let input = d.join("in.jsonl");
    let mut text = String::new();
    for i in 0..3000 {
        let key = if i == 1500 {
            "h:5".to_string()
        } else {
            format!("k:{i}")
        };
        text.push_str(&format!("{{\"id\":{i},\"key\":\"{key}\"}}\n"));
    }
    std::fs::write(&input, text).unwrap();
    let (out, ck) = (d.join("out.jsonl"), d.join("ck"));
    let run = |policy: &str| {
        ringwait(&[
            "enrich",
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--builtin-keys",
            "5000",
            "--on-error",
            policy,
            "--checkpoint-dir",
            s(&ck),
            "--checkpoint-interval-ms",
            "10",
            "--partitions",
            "2",
            "--no-pin",
            "--quiet",
        ])
    };
    let started = Instant::now();
    let o = run("fail");
    assert!(started.elapsed() < Duration::from_secs(60), "no hang");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 1501"), "{}", stderr(&o));
    let o = run("skip");
    assert!(o.status.success(), "{}", stderr(&o));
    let ids = ids(s(&out));
    let want: Vec<u64> = (0..3000).filter(|i| *i != 1500).collect();
    assert_eq!(ids, want);
    std::fs::remove_dir_all(&d).unwrap();
}
