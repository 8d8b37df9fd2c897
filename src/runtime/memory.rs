//! Giving freed heap pages back to the kernel.
//!
//! glibc's allocator keeps the pages of freed memory resident unless they
//! sit at the very top of a heap. Building the scanning engine allocates
//! and frees about 20 MiB (Hyperscan's compiler, then each rule's checks),
//! and a burst of sessions (a connection storm, thousands of idle clients
//! leaving) frees as much again in the middle of the workers' arenas: all
//! of it stayed resident for the life of the process, as much as half of
//! an idle gateway's RSS. `malloc_trim(0)` returns every whole free page of
//! every arena (`madvise(MADV_DONTNEED)`); it is called once the engine is
//! built, before any worker runs, and then by the housekeeping thread when
//! the process has been quiet (under [`QUIET_SHARE`] of a core over the
//! last [`TRIM_EVERY`]).
//!
//! Why only when quiet: a trim takes each arena's lock in turn while it
//! hands that arena's free pages back, and a worker that allocates from
//! the arena meanwhile waits. Giving back 18 MiB took 6.9 ms here, which a
//! busy gateway would see in its tail latency; under load freed memory is
//! soon reused anyway. A trim that gives back 8 MiB or more says so in the
//! log, with its time.

use std::time::Duration;

/// How often the housekeeping thread looks whether to give pages back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);
/// Share of one core the process may have used since the last look and
/// still count as quiet.
pub const QUIET_SHARE: f64 = 0.05;

/// Whether `cpu` used over `elapsed` is quiet (see [`QUIET_SHARE`]).
pub fn quiet(cpu: Duration, elapsed: Duration) -> bool {
    cpu.as_secs_f64() <= elapsed.as_secs_f64() * QUIET_SHARE
}

/// CPU time (user and system) this process has used; `None` when the
/// kernel does not say.
pub fn process_cpu() -> Option<Duration> {
    // SAFETY: getrusage writes the struct it is given, which we own.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return None;
        }
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.clamp(0, 999_999) as u32) * 1000);
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// The housekeeping thread's trims: every [`TRIM_EVERY`], when quiet.
pub struct QuietTrims {
    at: std::time::Instant,
    cpu: Option<Duration>,
}

impl QuietTrims {
    pub fn new() -> QuietTrims {
        QuietTrims {
            at: std::time::Instant::now(),
            cpu: process_cpu(),
        }
    }

    /// Called often; trims when [`TRIM_EVERY`] has passed and the process
    /// was quiet over it.
    pub fn tick(&mut self) {
        let elapsed = self.at.elapsed();
        if elapsed < TRIM_EVERY {
            return;
        }
        // Not knowing how busy the process was is not being quiet.
        if let (Some(now), Some(then)) = (process_cpu(), self.cpu) {
            if quiet(now.saturating_sub(then), elapsed) {
                release_free_pages_and_say();
            }
        }
        self.at = std::time::Instant::now();
        self.cpu = process_cpu();
    }
}

/// Returns the whole free pages of every allocator arena to the kernel.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under
    // their locks; it takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident anonymous memory of this process in KiB (`RssAnon`), where
/// the kernel says.
pub fn rss_anon_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// [`release_free_pages`], and a log line when it gave back 8 MiB or more.
pub fn release_free_pages_and_say() {
    let before = rss_anon_kib();
    let t = std::time::Instant::now();
    release_free_pages();
    let took = t.elapsed();
    if let (Some(before), Some(after)) = (before, rss_anon_kib()) {
        let given = before.saturating_sub(after);
        if given >= 8 << 10 {
            tracing::info!(
                given_back_kib = given,
                rss_anon_kib = after,
                took_us = took.as_micros() as u64,
                "freed heap pages given back to the kernel"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_anon() -> u64 {
        rss_anon_kib().expect("RssAnon in /proc/self/status")
    }

    #[test]
    fn only_a_quiet_process_trims() {
        let ten = Duration::from_secs(10);
        assert!(quiet(Duration::ZERO, ten));
        assert!(quiet(Duration::from_millis(500), ten));
        assert!(!quiet(Duration::from_millis(501), ten));
        assert!(!quiet(Duration::from_secs(15), ten), "two busy cores");
        // The process's CPU time moves forward as it works.
        let before = process_cpu().expect("getrusage");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while process_cpu().expect("getrusage") <= before + Duration::from_millis(20) {
            assert!(t.elapsed() < Duration::from_secs(30), "CPU time did not move");
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        std::hint::black_box(x);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_in_the_middle_of_the_heap_goes_back() {
        // Many small blocks (below glibc's mmap threshold, so in a heap),
        // written so their pages are resident; all but the last freed, so
        // the free space is not at the heap's top and a plain free keeps it.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 16 << 10]).collect();
        let keep = blocks.pop().unwrap();
        let before = rss_anon();
        drop(blocks);
        release_free_pages();
        let after = rss_anon();
        std::hint::black_box(&keep);
        // 64 MiB were freed; other tests' threads allocate meanwhile, so
        // only most of it is asked back.
        assert!(
            before.saturating_sub(after) > 32 << 10,
            "RssAnon {before} KiB -> {after} KiB after freeing 64 MiB"
        );
    }
}
