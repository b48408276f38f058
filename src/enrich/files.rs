//! The files a job touches, checked before any of them is opened for writing.
//!
//! Rules (the README's "What ringwait guarantees" states them for users):
//! - the input must exist and be readable; with checkpoints it must be a regular file;
//! - the output, the side output, the report and the checkpoint directory must be different
//!   files from the input and from each other, compared by device and inode (so a symlink or
//!   a second name for the same file is caught), and none may lie inside the checkpoint
//!   directory;
//! - a regular-file output is never written in place: the job writes a partial file beside
//!   it (`<output>.ringwait-partial-<pid>`, created new; a checkpointed job's is
//!   `<output>.ringwait-partial`) and renames it over the output only when the run is
//!   complete, so an existing output is replaced by a complete run or not at all (a device
//!   or a FIFO, such as `/dev/null`, is written directly);
//! - standard output redirected to a file is compared with the input and side output too.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{EnrichConfig, EnrichError, Input, OnError, Output};

/// Suffix of the file a run writes before it is complete.
pub const PARTIAL_SUFFIX: &str = ".ringwait-partial";

/// An output file and where its bytes go while the job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Staged {
    /// What the user named (symlinks resolved).
    pub final_path: PathBuf,
    /// Where the job writes: `final_path` + [`PARTIAL_SUFFIX`], or `final_path` itself for a
    /// device or a FIFO.
    pub write_path: PathBuf,
}

impl Staged {
    /// Whether the output is written beside its name and renamed at the end.
    pub fn is_staged(&self) -> bool {
        self.write_path != self.final_path
    }

    /// Moves the complete output to its name (atomically) and makes the rename durable.
    pub fn publish(&self) -> Result<(), EnrichError> {
        if !self.is_staged() {
            return Ok(());
        }
        let io = |cause| EnrichError::Io {
            what: "rename the finished output to its name",
            path: format!(
                "{} -> {}",
                self.write_path.display(),
                self.final_path.display()
            ),
            cause,
        };
        std::fs::rename(&self.write_path, &self.final_path).map_err(io)?;
        sync_parent(&self.final_path).map_err(io)
    }
}

/// `fsync` of the directory holding `path`, so that a rename or a new name in it is durable.
pub(crate) fn sync_parent(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(parent_of(path))?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The checked files of one run.
#[derive(Debug, Clone)]
pub(crate) struct JobFiles {
    /// The output, when it is a file.
    pub output: Option<Staged>,
    /// The side output of `--on-error side-output:PATH`.
    pub side: Option<Staged>,
}

impl JobFiles {
    pub fn staged(&self) -> impl Iterator<Item = &Staged> {
        [&self.output, &self.side].into_iter().flatten()
    }

    /// `fsync` of every output written beside its name, before the rename.
    pub fn sync_staged(&self) -> Result<(), EnrichError> {
        for s in self.staged().filter(|s| s.is_staged()) {
            std::fs::File::open(&s.write_path)
                .and_then(|f| f.sync_all())
                .map_err(|cause| {
                    EnrichError::io("sync the finished output", s.write_path.display(), cause)
                })?;
        }
        Ok(())
    }

    /// The partial file of a staged output, if it was created.
    pub fn partial_of(&self, staged: &Option<Staged>) -> Option<PathBuf> {
        staged
            .as_ref()
            .filter(|s| s.is_staged() && s.write_path.exists())
            .map(|s| s.write_path.clone())
    }

    /// Renames every finished output over its name.
    pub fn publish(&self) -> Result<(), EnrichError> {
        self.staged().try_for_each(Staged::publish)
    }

    /// `error` of a run that had begun writing, with where its output so far is (nothing to
    /// add for standard output or a device, which are written in place).
    pub fn incomplete(&self, error: EnrichError, resumable: bool) -> EnrichError {
        match (&error, self.partial_of(&self.output)) {
            (EnrichError::Flag { .. } | EnrichError::Incomplete { .. }, _) => error,
            (_, Some(partial)) => EnrichError::Incomplete {
                error: Box::new(error),
                partial,
                side_partial: self.partial_of(&self.side),
                resumable,
            },
            _ => error,
        }
    }
}

/// Where a run writes: the output, and the side output if there is one.
pub(crate) type Writers = (Box<dyn Write + Send>, Option<Box<dyn Write + Send>>);

/// Opens the outputs of a run without checkpoints. Each staged output gets a partial file
/// of its own, `<output>.ringwait-partial-<pid>` (`-<pid>-<n>` if that exists), created new:
/// no file that exists is ever truncated, not another run's partial output, nor a
/// checkpointed job's (which is `<output>.ringwait-partial`). Devices are opened for writing.
pub(crate) fn open_plain(
    config: &EnrichConfig,
    files: &mut JobFiles,
) -> Result<Writers, EnrichError> {
    let out: Box<dyn Write + Send> = match &mut files.output {
        Some(s) => open_staged(s, "create the output")?,
        None => Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        )),
    };
    let side = match (&mut files.side, &config.on_error) {
        (Some(s), OnError::SideOutput(_)) => Some(open_staged(s, "create the side output")?),
        _ => None,
    };
    Ok((out, side))
}

fn open_staged(s: &mut Staged, what: &'static str) -> Result<Box<dyn Write + Send>, EnrichError> {
    if !s.is_staged() {
        return create(&s.write_path, what);
    }
    let base = s.write_path.clone().into_os_string();
    let pid = std::process::id();
    for n in 1..1000u32 {
        let mut name = base.clone();
        name.push(if n == 1 {
            format!("-{pid}")
        } else {
            format!("-{pid}-{n}")
        });
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&name)
        {
            Ok(f) => {
                s.write_path = PathBuf::from(name);
                return Ok(Box::new(std::io::BufWriter::with_capacity(
                    1 << 16,
                    EarlyWriteback::new(f),
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(cause) => return Err(EnrichError::io(what, PathBuf::from(name).display(), cause)),
        }
    }
    Err(EnrichError::io(
        what,
        s.write_path.display(),
        std::io::Error::other("999 partial files of earlier runs are in the way"),
    ))
}

/// A staged output file whose written bytes the kernel starts writing to disk every
/// [`WRITEBACK_EVERY`] bytes (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait),
/// so that the `fsync` before the rename finds little left to do: the disk works while the
/// job runs instead of after it. Measured on the 100 MB enrich output: the final `fsync`
/// went from about 90 ms to 2-6 ms (`strace -T -e trace=fsync`).
pub(crate) struct EarlyWriteback {
    file: std::fs::File,
    written: u64,
    started: u64,
}

/// Bytes between two writeback starts.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl EarlyWriteback {
    fn new(file: std::fs::File) -> Self {
        EarlyWriteback {
            file,
            written: 0,
            started: 0,
        }
    }

    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range only reads its integer arguments; the descriptor is ours
        // and open. A failure is ignored on purpose: this is only a hint, and the fsync
        // before the rename reports any real write error.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.started as libc::off64_t,
                (self.written - self.started) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.started = self.written;
    }
}

impl Write for EarlyWriteback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn create(path: &Path, what: &'static str) -> Result<Box<dyn Write + Send>, EnrichError> {
    let f = std::fs::File::create(path)
        .map_err(|cause| EnrichError::io(what, path.display(), cause))?;
    Ok(Box::new(std::io::BufWriter::with_capacity(1 << 16, f)))
}

/// A file's identity: an existing file by device and inode; a file still to be created by its
/// directory's device and inode and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileId {
    Existing { dev: u64, ino: u64 },
    New { dev: u64, ino: u64, name: OsString },
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(FileId::Existing {
            dev: m.dev(),
            ino: m.ino(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = std::fs::metadata(parent_of(path))?;
            Ok(FileId::New {
                dev: dir.dev(),
                ino: dir.ino(),
                name: path.file_name().unwrap_or_default().to_os_string(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Checks every file of `config` (see the module docs); opens nothing for writing.
pub(crate) fn check(config: &EnrichConfig) -> Result<JobFiles, EnrichError> {
    let checkpointed = config.checkpoint_dir.is_some();
    let mut named: Vec<(&'static str, PathBuf)> = Vec::new();
    if let Input::File(path) = &config.input {
        check_input(path, checkpointed)?;
        named.push(("--input", path.clone()));
    }
    let output = match &config.output {
        Output::File(path) => Some(plan_output("--output", path, checkpointed)?),
        Output::Stdout | Output::RedisStream(_) | Output::Kafka(_) => None,
    };
    let side = match &config.on_error {
        OnError::SideOutput(path) => {
            Some(plan_output("--on-error side-output", path, checkpointed)?)
        }
        _ => None,
    };
    for (flag, staged) in [("--output", &output), ("--on-error side-output", &side)] {
        if let Some(s) = staged {
            named.push((flag, s.final_path.clone()));
            if s.is_staged() {
                named.push((flag, s.write_path.clone()));
            }
        }
    }
    if config.input == Input::Stdin && std_is_a_file("/dev/stdin") {
        // `--input - < in.jsonl` with the output (or `>`/`1<>`) on the same file.
        named.push(("standard input", PathBuf::from("/dev/stdin")));
    }
    if config.output == Output::Stdout && std_is_a_file("/dev/stdout") {
        // `--input in.jsonl >> in.jsonl` would read its own output back until the disk is full.
        named.push(("standard output", PathBuf::from("/dev/stdout")));
    }
    if let Some(report) = &config.report {
        if report.as_os_str().is_empty() || report.is_dir() {
            return Err(EnrichError::flag(
                "--report",
                format!("{:?} is not a file name", report.display().to_string()),
            ));
        }
        check_parent("--report", report)?;
        named.push(("--report", report.clone()));
    }
    if let Some(dir) = &config.checkpoint_dir {
        named.push(("--checkpoint-dir", dir.clone()));
    }
    refuse_same_files(&named)?;
    if let Some(dir) = &config.checkpoint_dir {
        refuse_inside(dir, &named)?;
    }
    Ok(JobFiles { output, side })
}

fn check_input(path: &Path, checkpointed: bool) -> Result<(), EnrichError> {
    let refuse =
        |reason: String| EnrichError::flag("--input", format!("{}: {reason}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    if meta.is_dir() {
        return Err(refuse("is a directory".into()));
    }
    if checkpointed && !meta.is_file() {
        return Err(refuse(
            "is not a regular file, so a checkpointed run cannot replay it".into(),
        ));
    }
    if meta.is_file() {
        return std::fs::File::open(path)
            .map(drop)
            .map_err(|e| refuse(format!("cannot be read ({e})")));
    }
    // A FIFO or a device is not opened here: opening and closing a FIFO would take its
    // writer's data (or its writer) away from the run.
    access(path, libc::R_OK).map_err(|e| refuse(format!("cannot be read ({e})")))
}

/// access(2): whether this process may use `path` as `mode` says.
fn access(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| std::io::Error::other("a NUL byte in the name"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access(2) only
    // reads it.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where an output named `path` is written; refuses a directory, a dangling symlink, a
/// missing parent directory, or (with checkpoints) anything but a regular file.
fn plan_output(flag: &'static str, path: &Path, checkpointed: bool) -> Result<Staged, EnrichError> {
    let refuse = |reason: String| EnrichError::flag(flag, format!("{}: {reason}", path.display()));
    if path.as_os_str().is_empty() {
        return Err(EnrichError::flag(flag, "an empty path"));
    }
    let resolved = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .map_err(|e| refuse(format!("is a symlink whose target cannot be used ({e})")))?,
        _ => path.to_path_buf(),
    };
    match std::fs::metadata(&resolved) {
        Ok(m) if m.is_dir() => Err(refuse("is a directory".into())),
        Ok(m) if !m.is_file() => {
            let ft = m.file_type();
            if checkpointed || !(ft.is_char_device() || ft.is_fifo() || ft.is_block_device()) {
                return Err(refuse(
                    "is not a regular file (a checkpointed run needs one it can truncate)".into(),
                ));
            }
            Ok(Staged {
                final_path: resolved.clone(),
                write_path: resolved,
            })
        }
        Ok(_) => Ok(staged(resolved)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            check_parent(flag, &resolved)?;
            Ok(staged(resolved))
        }
        Err(e) => Err(refuse(e.to_string())),
    }
}

fn staged(final_path: PathBuf) -> Staged {
    let mut name = final_path.as_os_str().to_os_string();
    name.push(PARTIAL_SUFFIX);
    Staged {
        write_path: PathBuf::from(name),
        final_path,
    }
}

/// The directory `path` would be created in must exist and be writable.
fn check_parent(flag: &'static str, path: &Path) -> Result<(), EnrichError> {
    let parent = parent_of(path);
    let refuse = |reason: String| {
        EnrichError::flag(
            flag,
            format!(
                "{}: its directory {} {reason}",
                path.display(),
                parent.display()
            ),
        )
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse("is not a directory".into())),
        Err(e) => return Err(refuse(format!("cannot be used ({e})"))),
    }
    access(parent, libc::W_OK | libc::X_OK).map_err(|e| refuse(format!("is not writable ({e})")))
}

/// Whether standard input or output (`/dev/stdin`, `/dev/stdout`) is a regular file
/// (redirected with `<`, `>`, `>>` or `<>`).
fn std_is_a_file(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Two different flags must not name the same file.
fn refuse_same_files(named: &[(&'static str, PathBuf)]) -> Result<(), EnrichError> {
    let mut ids = Vec::with_capacity(named.len());
    for (flag, path) in named {
        let id = file_id(path)
            .map_err(|e| EnrichError::flag(flag, format!("{}: {e}", path.display())))?;
        ids.push(id);
    }
    for (i, (flag_a, path_a)) in named.iter().enumerate() {
        for (j, (flag_b, path_b)) in named.iter().enumerate().skip(i + 1) {
            if flag_a != flag_b && ids[i] == ids[j] {
                return Err(EnrichError::flag(
                    flag_b,
                    format!(
                        "{} is the same file as {flag_a} {}: refusing to overwrite it",
                        path_b.display(),
                        path_a.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// No file of the job may live inside the checkpoint directory (a restore or a cleanup of
/// the directory would take it along).
fn refuse_inside(dir: &Path, named: &[(&'static str, PathBuf)]) -> Result<(), EnrichError> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(()); // nothing is inside a directory that does not exist yet
    };
    if !meta.is_dir() {
        return Err(EnrichError::flag(
            "--checkpoint-dir",
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    let dir_id = (meta.dev(), meta.ino());
    for (flag, path) in named {
        if *flag == "--checkpoint-dir" {
            continue;
        }
        let Ok(full) = std::fs::canonicalize(parent_of(path)) else {
            continue;
        };
        for ancestor in full.ancestors() {
            if let Ok(m) = std::fs::metadata(ancestor) {
                if (m.dev(), m.ino()) == dir_id {
                    return Err(EnrichError::flag(
                        flag,
                        format!(
                            "{} is inside --checkpoint-dir {}: keep the job's files outside it",
                            path.display(),
                            dir.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rw-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_second_name_for_the_input_is_refused_as_output() {
        let d = tmp("hardlink");
        let input = d.join("in.jsonl");
        std::fs::write(&input, "{\"key\":\"k:1\"}\n").unwrap();
        std::fs::hard_link(&input, d.join("other-name.jsonl")).unwrap();
        let config = EnrichConfig {
            input: Input::File(input.clone()),
            output: Output::File(d.join("other-name.jsonl")),
            ..EnrichConfig::default()
        };
        let err = check(&config).unwrap_err().to_string();
        assert!(err.contains("same file as --input"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn outputs_are_staged_and_devices_written_directly() {
        let s = plan_output("--output", Path::new("/dev/null"), false).unwrap();
        assert!(!s.is_staged());
        assert!(plan_output("--output", Path::new("/dev/null"), true).is_err());
        let d = tmp("staged");
        let s = plan_output("--output", &d.join("o.jsonl"), false).unwrap();
        assert_eq!(s.write_path, d.join("o.jsonl.ringwait-partial"));
        assert!(plan_output("--output", &d.join("missing/o.jsonl"), false).is_err());
        assert!(plan_output("--output", &d, false).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
