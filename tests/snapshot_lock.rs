//! The snapshot directory lock: one store per partition in this process, one process per
//! directory. The cross-process cases re-execute this test binary as the second process.

mod snapshot_util;

use std::path::Path;
use std::process::Command;

use ringwait::snapshot::{LockHolder, SnapshotError, SnapshotStore};
use snapshot_util::*;

const CHILD_DIR_ENV: &str = "RINGWAIT_SNAPSHOT_LOCK_CHILD_DIR";

/// Not a test on its own: the body of the second process. Without the variable it does nothing.
/// The child process of the tests below that need another process (with `--ignored
/// --exact`); not a test of its own.
#[test]
#[ignore = "the child process of another_process_cannot_open_...: its parent runs it"]
fn child_process_tries_to_open_the_directory() {
    let dir = std::env::var_os(CHILD_DIR_ENV)
        .expect("run only by its parent test, which sets the directory");
    // Another partition than the parent's: the directory as a whole belongs to the parent.
    let outcome = match SnapshotStore::open(&dir, OP, 5, 4096) {
        Ok(_) => "opened".to_string(),
        Err(SnapshotError::Locked {
            holder: LockHolder::OtherProcess,
            dir: d,
        }) => {
            format!("locked:{}", d.display())
        }
        Err(e) => format!("error:{e}"),
    };
    println!("CHILD_OUTCOME={outcome}");
}

fn child_outcome(dir: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_tries_to_open_the_directory",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("CHILD_OUTCOME=").map(|(_, o)| o))
        .unwrap_or_else(|| {
            panic!(
                "child printed no outcome: stdout {stdout:?} stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[test]
fn another_process_cannot_open_a_directory_held_by_a_live_store() {
    let dir = TempDir::new("lock-child");
    let store = SnapshotStore::open(dir.path(), OP, PART, 4096).unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(
        child_outcome(dir.path()),
        format!("locked:{}", canonical.display())
    );
    drop(store);
    assert_eq!(
        child_outcome(dir.path()),
        "opened",
        "the lock is released on drop"
    );
}

#[test]
fn second_store_for_the_same_partition_in_this_process_is_locked() {
    let dir = TempDir::new("lock-same");
    let store = SnapshotStore::open(dir.path(), OP, PART, 4096).unwrap();
    let err = SnapshotStore::open(dir.path(), OP, PART, 4096).unwrap_err();
    match &err {
        SnapshotError::Locked { dir: d, holder } => {
            assert_eq!(d, &dir.path().canonicalize().unwrap());
            assert_eq!(
                *holder,
                LockHolder::ThisProcess {
                    operator_id: OP,
                    partition: PART
                }
            );
        }
        other => panic!("expected Locked, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("is locked by a live store of this process"),
        "{err}"
    );
    drop(store);
    SnapshotStore::open(dir.path(), OP, PART, 4096).expect("free again after drop");
}

#[test]
fn same_directory_through_another_path_is_still_locked() {
    let dir = TempDir::new("lock-alias");
    let _store = SnapshotStore::open(dir.path(), OP, PART, 4096).unwrap();
    let alias = dir.path().join("..").join(dir.path().file_name().unwrap());
    assert!(matches!(
        SnapshotStore::open(&alias, OP, PART, 4096),
        Err(SnapshotError::Locked { .. })
    ));
}

#[test]
fn partitions_of_one_process_share_the_directory_from_many_threads() {
    let dir = TempDir::new("lock-partitions");
    let path = dir.path().to_path_buf();
    let threads: Vec<_> = (0..4u32)
        .map(|partition| {
            let path = path.clone();
            std::thread::spawn(move || {
                for round in 0..20u64 {
                    let mut store = SnapshotStore::open(&path, OP, partition, 4096).unwrap();
                    let epoch = store.latest().map_or(1, |m| m.epoch + 1);
                    store.write(meta(epoch), &payload(epoch, 100)).unwrap();
                    assert_eq!(epoch, round + 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for partition in 0..4 {
        let rec = SnapshotStore::recover(&path, OP, partition)
            .unwrap()
            .unwrap();
        assert_eq!(rec.meta, meta(20));
    }
    // All stores are gone: another process may take the directory now.
    assert_eq!(child_outcome(&path), "opened");
}
