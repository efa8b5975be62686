//! Failures the node must not outlive: it stops the process (abort, so a
//! supervisor restarts it and recovery runs) rather than keep serving in a
//! state it cannot vouch for.
//!
//! * A poisoned engine (a failed fsync, a panic in the log-sync thread, a
//!   failed object-store write): what is acknowledged as durable can no
//!   longer be promised. Recovery on restart replays the log.
//! * A panic on the replication thread is handled the same way by the mesh
//!   (`meridian_replication::mesh`): a node that acknowledges writes it
//!   cannot replicate would break `quorum`/`all` promises silently.

/// Logs `reason` and aborts the process.
pub fn stop_the_node(reason: &str) -> ! {
    tracing::error!(
        reason,
        "fatal: stopping the node so that a supervisor restarts it"
    );
    eprintln!("fatal: {reason}; stopping the node (restart it: recovery replays the log)");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    const CHILD: &str = "MERIDIAN_FATAL_TEST_CHILD";

    /// Runs this test binary again, only `test`, as the child.
    fn child(test: &str) -> std::process::Output {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap()
    }

    #[test]
    fn a_poisoned_engine_stops_the_process() {
        if std::env::var_os(CHILD).is_some() {
            let _ = crate::translate::engine_error(meridian_engine::Error::Poisoned(
                "a failed fsync".into(),
            ));
            // Returning means the node would keep serving.
            std::process::exit(0);
        }
        let out = child("fatal::tests::a_poisoned_engine_stops_the_process");
        assert_eq!(
            out.status.signal(),
            Some(6),
            "not aborted: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("fatal: a failed fsync"), "{stderr}");
    }
}
