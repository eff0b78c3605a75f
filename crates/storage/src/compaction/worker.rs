//! Compaction's thread: merges run at the lowest CPU priority, off the async workers.

use crate::error::StorageError;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on the compaction thread, which runs at the lowest CPU priority. Compaction
/// only tidies rows that are already durable and queryable, so under load it should take
/// the cores ingest and queries leave idle, not compete with them. One long-lived thread
/// (not one per job) so its allocations stay in one heap.
pub(crate) async fn at_low_priority<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    static WORKER: std::sync::OnceLock<Result<std::sync::mpsc::Sender<Job>, String>> =
        std::sync::OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("meterbase-compact".into())
            .spawn(move || {
                lower_this_threads_priority();
                for job in rx {
                    // A panicking job drops its reply sender; the caller sees the error.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map(|_| tx)
            .map_err(|e| format!("cannot start the compaction thread: {e}"))
    });
    let worker = worker.as_ref().map_err(|e| StorageError::TaskFailed {
        task: "compaction",
        reason: e.clone(),
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    worker
        .send(Box::new(move || {
            let _ = tx.send(work());
        }))
        .map_err(|_| StorageError::TaskFailed {
            task: "compaction",
            reason: "the compaction thread stopped".into(),
        })?;
    rx.await.map_err(|_| StorageError::TaskFailed {
        task: "compaction",
        reason: "a merge panicked".into(),
    })
}

#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // SAFETY: plain syscall on integer arguments. Under Linux the nice value belongs to a
    // thread, so this lowers only the compaction thread. Failure just leaves it at normal
    // priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}
