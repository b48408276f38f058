//! Opening a checkpointed run: the job record, the writer's last commit, and the outputs cut
//! back to it.

use std::io::Write;
use std::path::Path;

use super::files::{JobFiles, Staged};
use super::job::{JobRecord, JOB_FILE};
use super::output::{self, WriterCheckpoint};
use super::{EnrichConfig, EnrichError, Input, Output};
use crate::config::OperatorConfig;
use crate::runtime::checkpoint::{Checkpointing, Coordinator};
use crate::snapshot::{snapshot_path, SnapshotStore};

/// The job record of this run, checked against the checkpoint directory's.
pub(crate) struct JobCheck {
    /// This run's record.
    pub record: JobRecord,
    /// Records in the output, if the job finished in an earlier run (nothing to do).
    pub completed: Option<u64>,
}

/// The open outputs and checkpoint state of a checkpointed run.
pub(crate) struct CheckpointRun {
    pub out: Box<dyn Write + Send>,
    pub side: Option<Box<dyn Write + Send>>,
    pub writer: WriterCheckpoint,
    pub checkpointing: Checkpointing,
    /// The job record, marked complete at the end.
    pub job: JobRecord,
    /// The committed state resumed from, if any.
    pub resumed: Option<Resumed>,
}

/// The commit a run resumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Its epoch.
    pub epoch: u64,
    /// Records the output held at that commit.
    pub records: u64,
}

/// Refuses another job's checkpoint (naming each difference), a directory with snapshots
/// but no job record, and a job record whose commit file is gone. A finished job's outputs
/// are renamed into place if a crash came between its last two steps. Writes nothing else.
pub(crate) fn check_job(
    config: &EnrichConfig,
    dir: &Path,
    partitions: usize,
    operator: &OperatorConfig,
    files: &JobFiles,
) -> Result<JobCheck, EnrichError> {
    check_flags(config)?;
    let output = files.output.as_ref().expect("checked: a file output");
    let record = JobRecord::of(config, partitions, &output.final_path)?;
    let Some(stored) = JobRecord::load(dir)? else {
        refuse_unknown_snapshots(dir)?;
        refuse_foreign_partials(files)?;
        return Ok(JobCheck {
            record,
            completed: None,
        });
    };
    let diffs = stored.differences(&record);
    if !diffs.is_empty() {
        return Err(another_job(dir, &diffs));
    }
    if let Some(records) = stored.completed_records() {
        publish_finished(files)?;
        if !output.final_path.exists() {
            return Err(flag(format!(
                "the job in {} is complete, but its output {} is gone: remove the directory \
                 (rm -r {}) to run the job again",
                dir.display(),
                output.final_path.display(),
                dir.display()
            )));
        }
        return Ok(JobCheck {
            record,
            completed: Some(records),
        });
    }
    let commit_file = snapshot_path(dir, operator.operator_id(), output::WRITER_PARTITION);
    if !commit_file.exists() {
        return Err(flag(format!(
            "{} has a job record but its commit file {} is missing: the checkpoint cannot be \
             trusted; remove {} to start over",
            dir.display(),
            commit_file.display(),
            dir.display()
        )));
    }
    Ok(JobCheck {
        record,
        completed: None,
    })
}

/// Takes the directory's lock, saves the job record of a fresh job, reads the writer's last
/// commit, and opens the outputs cut back to it. Run after every check: it is the first step
/// that writes.
pub(crate) fn prepare(
    config: &EnrichConfig,
    dir: &Path,
    partitions: usize,
    operator: &OperatorConfig,
    files: &JobFiles,
    job: JobCheck,
) -> Result<CheckpointRun, EnrichError> {
    let output = files.output.as_ref().expect("checked: a file output");
    let op_id = operator.operator_id();
    let store = SnapshotStore::open(dir, op_id, output::WRITER_PARTITION, 4096)?;
    if !dir.join(JOB_FILE).exists() {
        job.record.save(dir)?;
    }
    let committed = SnapshotStore::recover(dir, op_id, output::WRITER_PARTITION)?;
    let commit = match &committed {
        None => output::Commit::default(),
        Some(rec) => output::Commit::decode(&rec.meta, &rec.payload).ok_or_else(|| {
            EnrichError::Internal(format!(
                "the commit record in {} has an unknown layout",
                dir.display()
            ))
        })?,
    };
    let resumed = committed.as_ref().map(|rec| Resumed {
        epoch: rec.meta.epoch,
        records: commit.records,
    });
    let newest = crate::runtime::checkpoint::newest_epoch(dir, op_id, partitions)?;
    let first_epoch = newest.max(resumed.map_or(0, |r| r.epoch)) + 1;
    let (out, out_file) = open_truncated(output, commit.output_len, "open the output")?;
    let (side, side_file) = match &files.side {
        Some(staged) => {
            let (w, f) = open_truncated(staged, commit.side_len, "open the side output")?;
            (Some(w), Some(f))
        }
        None => (None, None),
    };
    let coordinator = Coordinator::new(partitions, first_epoch, false);
    let writer = WriterCheckpoint {
        store,
        coordinator: coordinator.clone(),
        out_file,
        side_file,
        written: commit.output_len,
        side_written: commit.side_len,
        next_index: commit.next_index,
        records: commit.records,
        partitions: partitions as u64,
    };
    let checkpointing = Checkpointing {
        dir: dir.to_path_buf(),
        interval: config.checkpoint_interval,
        restore_epoch: resumed.map(|r| r.epoch),
        coordinator,
    };
    Ok(CheckpointRun {
        out,
        side,
        writer,
        checkpointing,
        job: job.record,
        resumed,
    })
}

fn flag(reason: String) -> EnrichError {
    EnrichError::flag("--checkpoint-dir", reason)
}

fn check_flags(config: &EnrichConfig) -> Result<(), EnrichError> {
    if !matches!(config.output, Output::File(_)) {
        return Err(flag(
            "needs --output PATH (standard output cannot be truncated back on restore)".into(),
        ));
    }
    if config.input == Input::Stdin {
        return Err(flag(
            "standard input cannot be replayed: use --input PATH".into(),
        ));
    }
    if config.checkpoint_interval.is_zero() {
        return Err(EnrichError::flag(
            "--checkpoint-interval-ms",
            "must be at least 1",
        ));
    }
    Ok(())
}

fn another_job(dir: &Path, diffs: &[String]) -> EnrichError {
    flag(format!(
        "{} holds the checkpoint of another job: {}. To resume it, run the command that \
         started it; to start this job over, remove the directory (rm -r {}) or use another \
         --checkpoint-dir",
        dir.display(),
        diffs.join("; "),
        dir.display()
    ))
}

/// Without a job record, a directory holding a snapshot belongs to a job ringwait cannot
/// identify (its record was deleted, or an older ringwait wrote it): refuse rather than start
/// over on top of it. Snapshot files that hold no snapshot yet (a job killed between
/// creating its commit file and writing its job record) are a fresh start.
fn refuse_unknown_snapshots(dir: &Path) -> Result<(), EnrichError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // a new directory
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((op, partition)) = parse_snapshot_name(&name) else {
            continue;
        };
        if SnapshotStore::recover(dir, op, partition)?.is_some() {
            return Err(flag(format!(
                "{} holds snapshots ({name}) but no job record ({JOB_FILE}): ringwait cannot \
                 tell which job they belong to; remove {} to start over",
                dir.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// `(operator id, partition)` of a snapshot file name `op-<id>-p<partition>.snap`.
fn parse_snapshot_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("op-")?.strip_suffix(".snap")?;
    let (op, partition) = rest.split_once("-p")?;
    Some((op.parse().ok()?, partition.parse().ok()?))
}

/// A fresh job must not take over a partial output it did not write: another job (with
/// another checkpoint directory) may be resuming it.
fn refuse_foreign_partials(files: &JobFiles) -> Result<(), EnrichError> {
    for staged in files.staged() {
        if staged.write_path.exists() {
            return Err(flag(format!(
                "{} exists, and this checkpoint directory did not write it: another job's \
                 output may be in progress there. Finish that job, or move the file away",
                staged.write_path.display()
            )));
        }
    }
    Ok(())
}

/// A finished job whose last step (the rename of its outputs) may not have happened.
fn publish_finished(files: &JobFiles) -> Result<(), EnrichError> {
    files
        .staged()
        .filter(|s| s.write_path.exists())
        .try_for_each(Staged::publish)
}

/// Opens `staged`'s file for writing at `len`, dropping anything after it (creating it when
/// `len` is 0).
fn open_truncated(
    staged: &Staged,
    len: u64,
    what: &'static str,
) -> Result<(Box<dyn Write + Send>, std::fs::File), EnrichError> {
    use std::io::Seek;
    let path = &staged.write_path;
    let io = |cause| EnrichError::io(what, path.display(), cause);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    let actual = f.metadata().map_err(io)?.len();
    if actual < len {
        return Err(io(std::io::Error::other(format!(
            "it is {actual} bytes long, shorter than its committed length {len}: it was \
             changed outside ringwait"
        ))));
    }
    f.set_len(len).map_err(io)?;
    f.seek(std::io::SeekFrom::Start(len)).map_err(io)?;
    let handle = f.try_clone().map_err(io)?;
    Ok((
        Box::new(std::io::BufWriter::with_capacity(1 << 16, f)),
        handle,
    ))
}
