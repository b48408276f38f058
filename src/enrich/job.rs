//! What a checkpoint belongs to: the job record `<checkpoint dir>/job`.
//!
//! A checkpoint is only valid for the job that took it: the same input (path, size,
//! modification time, and a hash of its first and last 64 KiB, taken at the start), and the
//! same flags that decide what the output holds (output, key, into, prefix, mode, partitions,
//! lookup target) and the same key routing ([`super::ROUTING_VERSION`]). The record is
//! written when a fresh checkpointed run starts; a later run compares it field by field and
//! refuses another job, naming each difference. When the job finishes, the record says so,
//! and running it again does nothing.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{EnrichConfig, EnrichError, Input, Lookup};

/// File name of the job record inside the checkpoint directory.
pub(crate) const JOB_FILE: &str = "job";
const HEADER: &str = "ringwait enrich checkpoint job v1";
/// How records are encoded in this build's snapshots (`enrich::record`): the raw line and
/// its positions. A checkpoint written in another format is another job's.
const RECORD_FORMAT: &str = "raw-line-v1";
/// Bytes hashed at each end of the input.
const END_BYTES: u64 = 64 << 10;
/// The field that marks a finished job (not part of the identity).
const COMPLETE: &str = "complete-records";

/// The identity fields of a job, in a fixed order, with what each is called in messages.
const FIELDS: &[(&str, &str)] = &[
    ("input", "--input"),
    ("input-size", "the input's size in bytes"),
    ("input-mtime-ns", "the input's modification time (ns)"),
    ("input-head-hash", "the hash of the input's first 64 KiB"),
    ("input-tail-hash", "the hash of the input's last 64 KiB"),
    ("records", "--records (generated input)"),
    ("output", "--output"),
    ("side-output", "--on-error side-output"),
    ("key", "--key"),
    ("into", "--into"),
    ("key-prefix", "--key-prefix"),
    ("mode", "--mode"),
    ("partitions", "--partitions"),
    ("lookup", "--lookup"),
    ("value", "--command and --value-format"),
    ("routing", "the key routing hash"),
    ("record-format", "the format of records in snapshots"),
];

/// A job record: identity fields, and whether the job finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobRecord {
    fields: BTreeMap<String, String>,
}

impl JobRecord {
    /// The record of the job `config` describes, run with `partitions` and writing
    /// `output` (its resolved path).
    pub fn of(
        config: &EnrichConfig,
        partitions: usize,
        output: &Path,
    ) -> Result<JobRecord, EnrichError> {
        let mut f = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            f.insert(k.to_string(), v);
        };
        match &config.input {
            Input::Generated(n) => put("records", n.to_string()),
            Input::File(path) => {
                for (k, v) in input_identity(path)? {
                    put(k, v);
                }
            }
            Input::Stdin | Input::RedisStream(_) | Input::Kafka(_) => {
                unreachable!("checked: a checkpointed run reads a file or generated input")
            }
        }
        put("output", absolute(output).display().to_string());
        if let super::OnError::SideOutput(path) = &config.on_error {
            put("side-output", absolute(path).display().to_string());
        }
        put("key", config.key_field.clone());
        put("into", config.into_field.clone());
        put("key-prefix", config.key_prefix.clone());
        put("mode", config.mode.to_string());
        put("partitions", partitions.to_string());
        put(
            "lookup",
            match &config.lookup {
                Lookup::Builtin { keys } => format!("builtin with {keys} keys"),
                // Never the password: the job record is a plain file.
                Lookup::Redis(url) => url.without_credentials(),
            },
        );
        if config.value != super::ValueSpec::default() {
            // Written only when not the default, so that the records of jobs started before
            // the flags existed still match.
            let format = format!("{:?}", config.value.format).to_lowercase();
            put("value", format!("{} as {format}", config.value.command));
        }
        put("routing", super::ROUTING_VERSION.to_string());
        put("record-format", RECORD_FORMAT.to_string());
        Ok(JobRecord { fields: f })
    }

    /// Records in the output when the job finished, if it did.
    pub fn completed_records(&self) -> Option<u64> {
        self.fields.get(COMPLETE).and_then(|v| v.parse().ok())
    }

    /// Each way `self` (from the checkpoint) differs from `run` (this run), as
    /// "FLAG OLD (this run: NEW)".
    pub fn differences(&self, run: &JobRecord) -> Vec<String> {
        FIELDS
            .iter()
            .filter_map(|(key, label)| {
                let (old, new) = (self.fields.get(*key), run.fields.get(*key));
                (old != new).then(|| {
                    let show = |v: Option<&String>| match v {
                        None => "(none)".to_string(),
                        Some(s) if s.is_empty() || s.contains(char::is_whitespace) => {
                            format!("{s:?}")
                        }
                        Some(s) => s.clone(),
                    };
                    format!("{label} {} (this run: {})", show(old), show(new))
                })
            })
            .collect()
    }

    /// Reads the record in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<JobRecord>, EnrichError> {
        let path = dir.join(JOB_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(cause) => {
                return Err(EnrichError::io(
                    "read the checkpoint's job record",
                    path.display(),
                    cause,
                ))
            }
        };
        let corrupt = || {
            EnrichError::flag(
                "--checkpoint-dir",
                format!(
                    "{} is not a ringwait job record: remove {} to start over",
                    path.display(),
                    dir.display()
                ),
            )
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(corrupt());
        }
        let mut fields = BTreeMap::new();
        for line in lines {
            let (k, v) = line.split_once('=').ok_or_else(corrupt)?;
            let v: String = serde_json::from_str(v).map_err(|_| corrupt())?;
            fields.insert(k.to_string(), v);
        }
        Ok(Some(JobRecord { fields }))
    }

    /// Writes the record to `dir` atomically (a temporary file, fsync, rename, fsync of the
    /// directory).
    pub fn save(&self, dir: &Path) -> Result<(), EnrichError> {
        let path = dir.join(JOB_FILE);
        let tmp = dir.join(format!("{JOB_FILE}.tmp"));
        let mut text = format!("{HEADER}\n");
        for (k, v) in &self.fields {
            let v = serde_json::to_string(v).expect("a string serialises");
            text.push_str(&format!("{k}={v}\n"));
        }
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|cause| {
            EnrichError::io("write the checkpoint's job record", path.display(), cause)
        })
    }

    /// Marks the job finished with `records` records, and saves it.
    pub fn save_complete(&mut self, dir: &Path, records: u64) -> Result<(), EnrichError> {
        self.fields.insert(COMPLETE.into(), records.to_string());
        self.save(dir)
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The input's identity: path, size, modification time, and a hash of each end.
fn input_identity(path: &Path) -> Result<Vec<(&'static str, String)>, EnrichError> {
    let err = |cause| EnrichError::io("read the input", path.display(), cause);
    let mut file = std::fs::File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    let size = meta.len();
    let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    let mut buf = vec![0u8; END_BYTES.min(size) as usize];
    file.read_exact(&mut buf).map_err(err)?;
    let head = super::key_hash(&buf);
    file.seek(std::io::SeekFrom::Start(size - buf.len() as u64))
        .map_err(err)?;
    file.read_exact(&mut buf).map_err(err)?;
    let tail = super::key_hash(&buf);
    Ok(vec![
        ("input", absolute(path).display().to_string()),
        ("input-size", size.to_string()),
        ("input-mtime-ns", mtime_ns.to_string()),
        ("input-head-hash", format!("{head:016x}")),
        ("input-tail-hash", format!("{tail:016x}")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_differences_are_named() {
        let d = std::env::temp_dir().join(format!("rw-job-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let input = d.join("in.jsonl");
        std::fs::write(&input, "{\"key\":\"k:1\"}\n".repeat(10_000)).unwrap();
        let config = EnrichConfig {
            input: Input::File(input.clone()),
            ..EnrichConfig::default()
        };
        let mut job = JobRecord::of(&config, 2, &d.join("out")).unwrap();
        job.save(&d).unwrap();
        assert_eq!(JobRecord::load(&d).unwrap().as_ref(), Some(&job));
        assert_eq!(job.completed_records(), None);

        let other = EnrichConfig {
            key_field: "sym".into(),
            ..config.clone()
        };
        let diffs = job.differences(&JobRecord::of(&other, 1, &d.join("out")).unwrap());
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert_eq!(diffs[0], "--key key (this run: sym)");
        assert_eq!(diffs[1], "--partitions 2 (this run: 1)");

        // Same length, other bytes at the end: the tail hash tells them apart.
        let mut text = "{\"key\":\"k:1\"}\n".repeat(9_999);
        text.push_str("{\"key\":\"k:2\"}\n");
        std::fs::write(&input, text).unwrap();
        let diffs = job.differences(&JobRecord::of(&config, 2, &d.join("out")).unwrap());
        assert!(diffs.iter().any(|d| d.contains("last 64 KiB")), "{diffs:?}");

        job.save_complete(&d, 10_000).unwrap();
        assert_eq!(
            JobRecord::load(&d).unwrap().unwrap().completed_records(),
            Some(10_000)
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
