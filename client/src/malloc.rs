//! glibc malloc settings for the C++ runtimes.
//!
//! Rust code allocates with mimalloc (the global allocator), but ONNX Runtime and
//! libtorch are C++ libraries and allocate with glibc's malloc. Two of its defaults
//! made a serving process's resident memory climb under load with versions
//! deployed and deleted (`scripts/soak`, see the README's soak section):
//! - an arena per thread, up to eight per core: every inference thread gets one, and
//!   each keeps the free memory of the sessions that ran on it;
//! - a dynamic mmap threshold: once a large block (a model's weights) is freed, blocks
//!   up to that size stop being mmapped and come from the arenas, where freeing
//!   them does not return memory to the system.
//!
//! So the server caps the arenas at two and fixes the threshold at 256 KiB (which
//! turns the dynamic adjustment off). An operator who tunes malloc with
//! `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES` keeps their
//! settings.

/// Arenas for all threads together.
pub const ARENA_MAX: i32 = 2;
/// Blocks of this size and more are mmapped, and unmapped when freed.
pub const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Whether the environment already tunes glibc's malloc.
pub fn tuned_by_environment(vars: impl IntoIterator<Item = (String, String)>) -> bool {
    vars.into_iter().any(|(k, v)| {
        k.starts_with("MALLOC_") || (k == "GLIBC_TUNABLES" && v.split(':').any(|t| t.starts_with("glibc.malloc.")))
    })
}

/// Apply the settings, before the runtimes start their threads. Returns what was
/// done, for the log.
pub fn tune() -> &'static str {
    if tuned_by_environment(std::env::vars()) {
        return "glibc malloc: settings from the environment";
    }
    if apply() { "glibc malloc: at most 2 arenas, mmap threshold 256 KiB" } else { "glibc malloc: not tuned" }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn apply() -> bool {
    // SAFETY: mallopt only changes glibc's allocator parameters; it takes plain
    // integers and is safe to call at any time (glibc takes the arena lock).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) == 1 && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_operators_settings_are_kept() {
        assert!(tuned_by_environment(vars(&[("MALLOC_ARENA_MAX", "4")])));
        assert!(tuned_by_environment(vars(&[("GLIBC_TUNABLES", "glibc.pthread.rseq=0:glibc.malloc.arena_max=8")])));
        assert!(!tuned_by_environment(vars(&[("GLIBC_TUNABLES", "glibc.pthread.rseq=0"), ("PATH", "/bin")])));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_settings() {
        assert!(apply());
    }
}
