//! CPU-heavy request work kept off the async threads.
//!
//! Hashing a body for its signature, parsing it, decoding and hashing a
//! code archive: for a 50 MB upload that is hundreds of milliseconds of
//! CPU. The server's async runtime has few threads (one on a 2-CPU host,
//! `--worker-threads`), and every invoke and every sandbox's Runtime API
//! waits while one of them is busy, so work on a large input runs on the
//! blocking pool instead. Small inputs stay where they are: handing work
//! to another thread costs more than hashing a few KiB.

use stratus_api::LambdaError;

/// Inputs larger than this are handled on the blocking pool.
pub(crate) const OFF_THREAD_BYTES: usize = 256 * 1024;

/// Runs `work` here if `input_len` is small, else on the blocking pool.
pub(crate) async fn cpu_bound<T: Send + 'static>(
    input_len: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LambdaError> {
    if input_len <= OFF_THREAD_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LambdaError::service(format!("a request's blocking task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn large_inputs_run_on_another_thread_small_ones_here() {
        let here = std::thread::current().id();
        let small = cpu_bound(OFF_THREAD_BYTES, || std::thread::current().id())
            .await
            .expect("small");
        assert_eq!(small, here);
        let large = cpu_bound(OFF_THREAD_BYTES + 1, || std::thread::current().id())
            .await
            .expect("large");
        assert_ne!(large, here);
    }

    #[tokio::test]
    async fn a_panicking_task_is_a_service_error() {
        let e = cpu_bound(OFF_THREAD_BYTES + 1, || -> u8 { panic!("boom") })
            .await
            .expect_err("panicked");
        assert_eq!(e.code, stratus_api::ErrorCode::Service, "{e:?}");
    }
}
