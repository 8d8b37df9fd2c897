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
//! built and every [`TRIM_EVERY`] by the housekeeping thread.
//!
//! A trim walks the free lists of each arena under its lock: on a heap of
//! a few hundred MiB that is well under a millisecond, and a worker that
//! allocates meanwhile waits that long at most. A page given back costs a
//! fault when it is used again, which at this period is noise.

use std::time::Duration;

/// How often the housekeeping thread gives free pages back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Returns the whole free pages of every allocator arena to the kernel.
/// Bytes given back are not reported by glibc; callers that want a figure
/// read RSS before and after.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under
    // their locks; it takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident anonymous memory of this process, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn freed_memory_in_the_middle_of_the_heap_goes_back() {
        // Many small blocks (below glibc's mmap threshold, so in a heap),
        // written so their pages are resident; all but the last freed, so
        // the free space is not at the heap's top and a plain free keeps it.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 16 << 10]).collect();
        let keep = blocks.pop().unwrap();
        let before = rss_anon_kib();
        drop(blocks);
        release_free_pages();
        let after = rss_anon_kib();
        std::hint::black_box(&keep);
        // 64 MiB were freed; other tests' threads allocate meanwhile, so
        // only most of it is asked back.
        assert!(
            before.saturating_sub(after) > 32 << 10,
            "RssAnon {before} KiB -> {after} KiB after freeing 64 MiB"
        );
    }
}
