//! On a CPU Vulkan driver (lavapipe), the threads that feed the driver get the lowest scheduling
//! priority, so the cores go to the driver's shader threads.
//!
//! Work reaches the driver through a chain of threads: ours records operations, burn-fusion's
//! stream thread (`DSU-…`, cubecl's "upstream" device thread) turns them into launches, and
//! cubecl's server thread (`DSD-…`) hands those to wgpu. lavapipe runs the shaders inside
//! `vkQueueSubmit`, so the server thread blocks there while a batch runs; the queues behind it
//! fill, and cubecl's producers then spin-wait for a free slot before they yield. On a GPU that
//! costs nothing the GPU needs. On a CPU driver the two spinning threads take cores from the
//! shader threads, which then get under half the CPU.
//!
//! Nice 19 on the two spinning threads leaves them the CPU the shaders do not want, and decode
//! is faster for it (docs/benchmarks/2026-11-28-cpu-feeder-priority.md has the profile and the
//! paired rounds).
//! The server thread keeps its priority: it sleeps while it waits, and its work is on the path.

use std::io;

/// The lowest priority an unprivileged process may set (`nice -n 19`).
const LOWEST_NICE: i32 = 19;

/// Name prefix cubecl gives its upstream device threads (burn-fusion's stream).
const STREAM_THREAD_PREFIX: &str = "DSU-";

/// Lowers the calling thread (the one that records the model's operations; threads it starts
/// later inherit this) and burn-fusion's stream threads to nice 19. Returns how many stream
/// threads it found: they exist once the device has run an operation.
#[cfg(target_os = "linux")]
pub fn yield_cores_to_driver() -> io::Result<usize> {
    use std::fs;

    // SAFETY: gettid has no preconditions.
    let mut threads = vec![unsafe { libc::gettid() }];
    for entry in fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        // A thread may exit between the listing and the read: skip it.
        let Ok(name) = fs::read_to_string(entry.path().join("comm")) else { continue };
        if name.starts_with(STREAM_THREAD_PREFIX)
            && let Ok(tid) = entry.file_name().to_string_lossy().parse()
        {
            threads.push(tid);
        }
    }
    for &tid in &threads {
        // SAFETY: setpriority only reads its arguments; a tid of ours names one thread on Linux.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, LOWEST_NICE) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(threads.len() - 1)
}

/// Elsewhere thread priorities are left as they are.
#[cfg(not(target_os = "linux"))]
pub fn yield_cores_to_driver() -> io::Result<usize> {
    Ok(0)
}
