//! Executor placement and the locked-memory check.
//!
//! glommio registers its I/O memory with io_uring, which counts against `RLIMIT_MEMLOCK`
//! unless the process holds `CAP_IPC_LOCK`. glommio's default (10 MiB per executor) is above
//! the 8 MiB limit common on Linux, so ringwait sizes it explicitly and checks the limit before
//! starting any executor: a too-low limit is a clear error, not a warning.

use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::PipelineError;

/// Locked memory glommio needs besides `io_memory` (its three rings and bookkeeping); an
/// estimate with margin.
const RING_OVERHEAD: u64 = 256 * 1024;

/// glommio refuses to start below this limit.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;

/// Executor settings shared by the partitions of a pipeline.
#[derive(Clone, Debug)]
pub(crate) struct ExecutorSettings {
    pub pin: bool,
    pub io_memory: usize,
    pub spin_before_park: Option<Duration>,
}

/// The CPU ids partitions are pinned to, in order (respects the process's affinity mask).
pub fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| (0..num_cpus()).collect())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Checks (and if possible raises) `RLIMIT_MEMLOCK` for `executors` executors.
pub(crate) fn ensure_memlock(executors: usize, io_memory: usize) -> Result<(), PipelineError> {
    let needed = executors as u64 * (io_memory as u64 + RING_OVERHEAD);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; the resource id is a valid constant.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(()); // cannot tell; glommio will report a real problem itself
    }
    let unlimited = limit.rlim_cur == libc::RLIM_INFINITY;
    if unlimited || (limit.rlim_cur >= needed && limit.rlim_cur >= GLOMMIO_MIN_MEMLOCK) {
        return Ok(());
    }
    let want = needed.max(GLOMMIO_MIN_MEMLOCK);
    if limit.rlim_max == libc::RLIM_INFINITY || limit.rlim_max >= want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard
        // limit is always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            return Ok(());
        }
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && limit.rlim_cur >= GLOMMIO_MIN_MEMLOCK {
        return Ok(()); // CAP_IPC_LOCK: registered memory is not charged to the limit
    }
    Err(PipelineError::MemLockLimit {
        limit_kib: limit.rlim_cur / 1024,
        needed_kib: want / 1024,
        executors,
    })
}

/// Registers the process for private expedited `membarrier(2)`, once.
///
/// glommio 0.9.0 issues that barrier every time an executor goes to sleep and registers for
/// it lazily, the first time; the registration waits for an RCU grace period, about 10 ms on
/// this kernel (seen with `strace -T`: `membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
/// <0.0104>`). Paid on a running partition, that stall landed on every record in flight (the
/// delay workload's p99.9 of 9-15 ms). Registering up front, before any executor starts,
/// moves it out of the run; the kernel answers glommio's own registration later at once. On a
/// kernel without the call this fails harmlessly and glommio picks its fallback as before.
pub(crate) fn register_membarrier() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
        // SAFETY: membarrier(2) takes two integers and touches no memory of this process;
        // registering is idempotent.
        let _ = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0 as libc::c_int,
            )
        };
    });
}

/// The executor builder for one partition.
pub(crate) fn builder(
    partition: usize,
    core: Option<usize>,
    settings: &ExecutorSettings,
) -> LocalExecutorBuilder {
    register_membarrier();
    let placement = match (settings.pin, core) {
        (true, Some(cpu)) => Placement::Fixed(cpu),
        _ => Placement::Unbound,
    };
    let mut b = LocalExecutorBuilder::new(placement)
        .name(&format!("ringwait-p{partition}"))
        .io_memory(settings.io_memory);
    if let Some(spin) = settings.spin_before_park {
        b = b.spin_before_park(spin);
    }
    b
}

/// Turns a glommio start-up error into a typed pipeline error.
pub(crate) fn start_error(partition: usize, e: glommio::GlommioError<()>) -> PipelineError {
    let text = e.to_string();
    if text.contains("memlock") || text.contains("MemLock") {
        return PipelineError::MemLockLimit {
            limit_kib: 0,
            needed_kib: GLOMMIO_MIN_MEMLOCK / 1024,
            executors: 1,
        };
    }
    PipelineError::Executor {
        partition,
        message: text,
    }
}

/// Period of [`keep_awake`]'s timer.
pub const KEEP_AWAKE_PERIOD: Duration = Duration::from_millis(1);

/// Works around a glommio 0.9.0 scheduler bug: when the preemption flag is already set as the
/// executor loop starts running its task queues, `run_task_queues` reports "nothing ran" and
/// the executor parks even though tasks are runnable; it then sleeps until some unrelated
/// I/O completion or timer arrives. Under CPU contention this was measured to stall a
/// partition for 2 to 10 seconds (seen with `strace` as one `io_uring_enter(GETEVENTS)`
/// blocking that long while replies sat unread in the socket). A timer that fires every
/// [`KEEP_AWAKE_PERIOD`] bounds such a stall to one period. The task ends with the executor.
///
/// Call it once on every executor that runs ringwait work; the runtime does so for its
/// partitions and the built-in server does for its own executor.
pub fn keep_awake() {
    glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(KEEP_AWAKE_PERIOD).await;
        }
    })
    .detach();
}
