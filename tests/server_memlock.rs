//! A locked-memory limit below glommio's minimum is a typed, actionable error, not a panic
//! or a warning. (Its own test binary: it lowers the limit of the whole process.)

use ringwait::server::{BuiltinServer, ServerConfig, ServerError};

#[test]
fn a_too_low_memlock_limit_is_reported_as_such() {
    let limit = libc::rlimit {
        rlim_cur: 64 << 10,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with valid pointers to initialized rlimit structs.
    let lowered = unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut old) == 0
            && libc::setrlimit(
                libc::RLIMIT_MEMLOCK,
                &libc::rlimit {
                    rlim_max: old.rlim_max,
                    ..limit
                },
            ) == 0
    };
    assert!(lowered, "could not lower RLIMIT_MEMLOCK for the test");
    let err = BuiltinServer::start(ServerConfig::default()).expect_err("glommio cannot start");
    assert!(
        matches!(err, ServerError::MemLock { limit: 65536, needed } if needed >= 512 << 10),
        "{err:?}"
    );
    assert!(err.to_string().contains("ulimit -l"), "{err}");
}
