//! `ringwait enrich` refuses what would lose or mix data, before it writes anything: the
//! same file under two names, a failed start, another job's checkpoint, a full disk. Each
//! case checks the bytes of every file involved afterwards.

mod job_support;

use std::process::{Command, Output};

use job_support::*;

#[test]
fn output_equal_to_input_is_refused_under_any_name() {
    let d = Dir::new("same");
    let input = d.path("a.jsonl");
    write_input(&input, 1000, None, "a");
    std::os::unix::fs::symlink(&input, d.path("link.jsonl")).unwrap();
    std::fs::hard_link(&input, d.path("hard.jsonl")).unwrap();
    let before = snapshot(&d.0);
    for output in ["a.jsonl", "link.jsonl", "hard.jsonl"] {
        let o = ringwait(&["enrich", "--input", &input, "--output", &d.path(output)]);
        assert!(!o.status.success(), "{output}");
        assert!(
            stderr(&o).contains("is the same file as --input"),
            "{output}: {}",
            stderr(&o)
        );
        assert_eq!(snapshot(&d.0), before, "{output}: no file changed");
    }
}

#[test]
fn a_failed_start_leaves_the_existing_output_untouched() {
    let d = Dir::new("failed-start");
    let input = d.path("in.jsonl");
    write_input(&input, 100, None, "a");
    let out = d.path("precious.jsonl");
    std::fs::write(&out, PRECIOUS).unwrap();
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let before = snapshot(&d.0);
    let cases: [(&[&str], &str); 5] = [
        (&["--input", &d.path("missing.jsonl")], "--input"),
        (
            &["--input", &input, "--lookup", &dead],
            "could not be reached",
        ),
        (&["--input", &input, "--capacity", "0"], "--capacity"),
        (
            &["--input", &input, "--report", &d.path("no/such/dir/r.svg")],
            "--report",
        ),
        (
            &[
                "--input",
                &input,
                "--on-error",
                &format!("side-output:{}", d.path("nodir/s")),
            ],
            "side-output",
        ),
    ];
    for (extra, says) in cases {
        let mut args = vec!["enrich", "--output", &out];
        args.extend_from_slice(extra);
        let o = ringwait(&args);
        assert!(!o.status.success(), "{extra:?}");
        assert!(stderr(&o).contains(says), "{extra:?}: {}", stderr(&o));
        assert_eq!(
            snapshot(&d.0),
            before,
            "{extra:?}: no file changed or appeared"
        );
    }
}

#[test]
fn side_output_on_the_output_and_files_inside_the_checkpoint_dir_are_refused() {
    let d = Dir::new("side");
    let input = d.path("in.jsonl");
    write_input(&input, 1000, None, "a");
    let out = d.path("x.jsonl");
    std::fs::write(&out, PRECIOUS).unwrap();
    std::fs::create_dir(d.path("ck")).unwrap();
    let before = snapshot(&d.0);
    refused(
        &[
            "enrich",
            "--input",
            &input,
            "--output",
            &out,
            "--on-error",
            &format!("side-output:{out}"),
        ],
        "same file as --output",
    );
    refused(
        &[
            "enrich",
            "--input",
            &input,
            "--output",
            &d.path("ck/out.jsonl"),
            "--checkpoint-dir",
            &d.path("ck"),
        ],
        "inside --checkpoint-dir",
    );
    refused(
        &[
            "enrich",
            "--input",
            &input,
            "--output",
            &d.path("o2.jsonl"),
            "--checkpoint-dir",
            &out,
        ],
        "--checkpoint-dir",
    );
    assert_eq!(snapshot(&d.0), before);
}

/// Runs a checkpointed job over `input` that fails at line 30,001 (so a checkpoint exists).
fn failed_checkpointed_run(d: &Dir, input: &str) -> Output {
    ringwait(&[
        "enrich",
        "--input",
        input,
        "--output",
        &d.path("out.jsonl"),
        "--checkpoint-dir",
        &d.path("ck"),
        "--checkpoint-interval-ms",
        "5",
        "--partitions",
        "1",
        "--no-pin",
        "--quiet",
    ])
}

#[test]
fn a_checkpoint_refuses_another_input_and_a_missing_commit_file() {
    let d = Dir::new("other-input");
    let (a, b, c) = (d.path("a.jsonl"), d.path("b.jsonl"), d.path("c.jsonl"));
    write_input(&a, 60_000, Some(30_000), "a");
    write_input(&b, 60_000, Some(30_000), "b"); // same length, other bytes
    write_input(&c, 70_000, Some(30_000), "c");
    let o = failed_checkpointed_run(&d, &a);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 30001"), "{}", stderr(&o));
    let before = snapshot(&d.0);
    // The same path with other contents of the same length.
    std::fs::rename(&a, d.path("a.saved")).unwrap();
    std::fs::copy(&b, &a).unwrap();
    let o = failed_checkpointed_run(&d, &a);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("holds the checkpoint of another job"), "{err}");
    assert!(
        err.contains("the hash of the input's first 64 KiB"),
        "{err}"
    );
    assert!(err.contains("rm -r"), "says how to start over: {err}");
    // Another path, another length.
    let o = failed_checkpointed_run(&d, &c);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("--input"), "{err}");
    assert!(err.contains("the input's size in bytes 2"), "{err}");
    std::fs::remove_file(&a).unwrap();
    std::fs::rename(d.path("a.saved"), &a).unwrap();
    let mut after = snapshot(&d.0);
    after.remove(&d.0.join("b.jsonl"));
    after.remove(&d.0.join("c.jsonl"));
    let mut want = before.clone();
    want.remove(&d.0.join("b.jsonl"));
    want.remove(&d.0.join("c.jsonl"));
    assert_eq!(after, want, "the refused runs changed nothing");

    // The commit file deleted next to the job record and the partition's snapshot.
    let commit = d.0.join("ck/op-0-p4294967295.snap");
    assert!(commit.exists());
    std::fs::remove_file(&commit).unwrap();
    let o = failed_checkpointed_run(&d, &a);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("commit file"), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
}

#[test]
fn a_write_error_names_the_path_and_the_os_error() {
    let d = Dir::new("enospc");
    let input = d.path("in.jsonl");
    write_input(&input, 5000, None, "a");
    let o = ringwait(&[
        "enrich",
        "--input",
        &input,
        "--output",
        "/dev/full",
        "--quiet",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("/dev/full"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
}

/// A checkpointed job whose output disk fills: the job fails naming the file and ENOSPC, the
/// last commit stays, and once there is room the same command finishes exactly once. Needs a
/// small tmpfs, so root (as `.ci/run` has).
#[test]
fn a_full_disk_fails_the_checkpoint_and_keeps_the_last_commit() {
    let d = Dir::new("tmpfs");
    let mnt = d.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", &mnt])
        .status()
        .is_ok_and(|s| s.success());
    // Not a silent skip: the suite runs as root (it installs redis-server too), and a run
    // that cannot mount must say so by failing.
    assert!(
        mounted,
        "cannot mount a 1 MiB tmpfs on {mnt}: this test needs root (as .ci/run has)"
    );
    let unmount = Unmount(mnt.clone());
    let input = d.path("in.jsonl");
    write_input(&input, 40_000, None, "a"); // ~4 MB of output into 1 MB
    let out = format!("{mnt}/out.jsonl");
    let args = [
        "enrich",
        "--input",
        &input,
        "--output",
        &out,
        "--checkpoint-dir",
        &d.path("ck"),
        "--checkpoint-interval-ms",
        "5",
        "--partitions",
        "1",
        "--no-pin",
        "--quiet",
    ];
    let o = ringwait(&args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(&format!("{out}.ringwait-partial")), "{err}");
    let status = Command::new("mount")
        .args(["-o", "remount,size=64m", &mnt])
        .status()
        .unwrap();
    assert!(status.success());
    let o = ringwait(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resumed from checkpoint"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        ids(&out),
        (0..40_000).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    drop(unmount);
}

struct Unmount(String);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `ringwait enrich --input in.jsonl >> in.jsonl` would read its own output back until the
/// disk is full: standard output is compared with the input too.
#[test]
fn standard_output_redirected_onto_the_input_is_refused() {
    let d = Dir::new("stdout-input");
    let input = d.path("in.jsonl");
    write_input(&input, 100, None, "a");
    let before = std::fs::read(&input).unwrap();
    let append = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    let o = bin()
        .args(["enrich", "--input", &input, "--quiet"])
        .stdout(append)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("same file as --input"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

/// A checkpointed job's partial output (the one a stopped job resumes from) is never taken
/// over: a fresh checkpointed job refuses it, a run without checkpoints writes a partial
/// file of its own, and the partial file stays byte for byte.
#[test]
fn another_jobs_partial_output_is_never_taken_over() {
    let d = Dir::new("foreign-partial");
    let input = d.path("in.jsonl");
    write_input(&input, 500, None, "a");
    let out = d.path("out.jsonl");
    let partial = format!("{out}.ringwait-partial");
    std::fs::write(&partial, PRECIOUS).unwrap();
    refused(
        &[
            "enrich",
            "--input",
            &input,
            "--output",
            &out,
            "--checkpoint-dir",
            &d.path("ck"),
            "--quiet",
        ],
        "did not write it",
    );
    assert!(
        !d.0.join("ck").exists(),
        "a refused run creates no checkpoint directory"
    );
    let o = ringwait(&["enrich", "--input", &input, "--output", &out, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&out), (0..500).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(&partial).unwrap(), PRECIOUS);
}

/// Standard input redirected from the output file (`--input - --output f < f`, `--input -
/// < f >> f`, `--input - < f 1<> f`) would read its own output or overwrite its input: it is
/// refused like `--input f --output f`, and the file stays as it was.
#[test]
fn standard_input_from_the_output_file_is_refused() {
    let d = Dir::new("stdin-output");
    let file = d.path("f.jsonl");
    write_input(&file, 200, None, "a");
    let before = std::fs::read(&file).unwrap();
    let open = |append: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .append(append)
            .open(&file)
            .unwrap()
    };
    let cases: [(&str, &[&str], Option<std::fs::File>); 3] = [
        ("--output f < f", &["--output", &file], None),
        ("< f >> f", &["--output", "-"], Some(open(true))),
        ("< f 1<> f", &["--output", "-"], Some(open(false))),
    ];
    for (case, args, stdout) in cases {
        let mut cmd = bin();
        cmd.args(["enrich", "--input", "-", "--quiet"])
            .args(args)
            .stdin(std::fs::File::open(&file).unwrap());
        if let Some(out) = stdout {
            cmd.stdout(out);
        }
        let o = cmd.output().unwrap();
        assert!(!o.status.success(), "{case}");
        let err = stderr(&o);
        assert!(
            err.contains("standard input") && err.contains("is the same file as"),
            "{case}: {err}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), before, "{case}");
    }
}

/// A report path that is a directory, and an empty output path, are refused up front, not
/// after the whole run.
#[test]
fn a_directory_report_and_an_empty_output_are_refused_before_the_run() {
    let d = Dir::new("report-dir");
    let input = d.path("in.jsonl");
    write_input(&input, 100, None, "a");
    let out = d.path("out.jsonl");
    let before = snapshot(&d.0);
    refused(
        &[
            "enrich",
            "--input",
            &input,
            "--output",
            &out,
            "--report",
            &d.path(""),
        ],
        "--report",
    );
    refused(
        &["enrich", "--input", &input, "--output", ""],
        "--output: an empty path",
    );
    assert_eq!(snapshot(&d.0), before, "nothing written");
}
