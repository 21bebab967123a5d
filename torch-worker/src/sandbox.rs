//! The sandbox of a process that runs uploaded code (today `zoo-torch-worker`).
//!
//! The worker confines itself with the kernel's own mechanisms before it opens the
//! model, in this order:
//! 1. it checks that it is still single-threaded (so every later thread inherits
//!    what follows), closes every inherited file descriptor but its socket and
//!    its two log pipes, and sets resource limits: address space (memory),
//!    `RLIMIT_FSIZE` 0 (no file can grow), open files, no core dumps;
//! 2. it becomes non-dumpable (no ptrace by the same user, no core) and, where the
//!    kernel allows unprivileged namespaces, moves into a fresh user and network
//!    namespace (no network interface but a down loopback);
//! 3. `PR_SET_NO_NEW_PRIVS`, then a Landlock ruleset: read-only access to the
//!    libraries it needs and to the one model file, write access nowhere, no
//!    signals or abstract sockets outside its domain, no TCP;
//! 4. a seccomp filter that allows the system calls libtorch inference needs and
//!    refuses everything else with `EPERM`: no sockets, no `execve`, no new
//!    processes (only threads), no `ptrace`, `mount`, namespaces, keyrings, BPF,
//!    module loading or `io_uring`.
//!
//! What was enforced is reported back (`Report`); the server refuses to serve
//! TorchScript when a required protection is missing, unless the operator opts
//! out with a setting whose name says it is unsafe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How strictly the sandbox is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every protection must be in force, or the model is not loaded.
    Required,
    /// Apply what the kernel offers and serve anyway (unsafe).
    UnsafeBestEffort,
    /// No sandbox at all (unsafe; for measuring its cost).
    UnsafeOff,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Required => "required",
            Mode::UnsafeBestEffort => "unsafe-best-effort",
            Mode::UnsafeOff => "unsafe-off",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "required" => Mode::Required,
            "unsafe-best-effort" => Mode::UnsafeBestEffort,
            "unsafe-off" => Mode::UnsafeOff,
            _ => return None,
        })
    }
}

/// What a confined worker may touch, sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// Directory trees readable (and executable: shared libraries).
    pub read_dirs: Vec<PathBuf>,
    /// Single files readable (the model).
    pub read_files: Vec<PathBuf>,
    /// Address-space limit in bytes (0: none).
    pub memory_bytes: u64,
    /// Most open file descriptors.
    pub open_files: u64,
}

impl Policy {
    /// The system library directories and files a dynamically linked program
    /// (libtorch, libstdc++, libgomp) reads after it started.
    pub fn system_read_dirs() -> Vec<PathBuf> {
        ["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/sys/devices/system/cpu"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    }

    /// Single system files a worker reads: the loader's cache, CPU information.
    pub fn system_read_files() -> Vec<PathBuf> {
        ["/etc/ld.so.cache", "/proc/cpuinfo", "/dev/null", "/dev/urandom"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect()
    }
}

/// Which protections are in force in a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The mode the worker ran with.
    pub mode: String,
    /// The Landlock ABI used (0: none) and whether every requested right is enforced.
    pub landlock_abi: u32,
    pub landlock_full: bool,
    /// The seccomp filter is installed.
    pub seccomp: bool,
    /// A fresh network namespace (and the user namespace it needs).
    pub network_namespace: bool,
    pub no_new_privs: bool,
    /// Address space, file size 0, open files, no core dumps.
    pub rlimits: bool,
    /// Not dumpable: no core, no ptrace by the same user.
    pub non_dumpable: bool,
    /// Inherited descriptors closed before the model was opened.
    pub closed_fds: u32,
    /// Protections that were asked for and are missing.
    pub missing: Vec<String>,
}

impl Report {
    /// Every protection is in force.
    pub fn enforced(&self) -> bool {
        self.missing.is_empty() && self.seccomp && self.landlock_abi > 0
    }

    /// One line for logs and reasons: what is in force, what is missing.
    pub fn summary(&self) -> String {
        if self.mode == Mode::UnsafeOff.as_str() {
            return "no sandbox (unsafe-off)".into();
        }
        let mut on = Vec::new();
        if self.landlock_abi > 0 {
            on.push(format!(
                "Landlock ABI {}{}",
                self.landlock_abi,
                if self.landlock_full { "" } else { " (partial)" }
            ));
        }
        if self.seccomp {
            on.push("seccomp".into());
        }
        if self.network_namespace {
            on.push("network namespace".into());
        }
        if self.no_new_privs {
            on.push("no_new_privs".into());
        }
        if self.rlimits {
            on.push("rlimits".into());
        }
        if self.non_dumpable {
            on.push("not dumpable".into());
        }
        let mut s = on.join(", ");
        if !self.missing.is_empty() {
            s.push_str(&format!("; missing: {}", self.missing.join(", ")));
        }
        s
    }
}

/// Errors from confining a process.
pub type SandboxResult<T> = Result<T, String>;

#[cfg(target_os = "linux")]
pub use linux::apply;

#[cfg(not(target_os = "linux"))]
pub fn apply(policy: &Policy, _keep: &[std::os::fd::RawFd]) -> SandboxResult<Report> {
    let report = Report {
        mode: policy.mode.as_str().into(),
        missing: vec!["a Linux kernel (Landlock, seccomp)".into()],
        ..Default::default()
    };
    match policy.mode {
        Mode::Required => Err("the sandbox needs Linux (Landlock and seccomp)".into()),
        _ => Ok(report),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeMap;

    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, PathBeneath, PathFd, Ruleset,
        RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
    };
    use rustix::process::{Resource, Rlimit, setrlimit};
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
        TargetArch,
    };

    use std::os::fd::RawFd;

    use super::{Mode, Policy, Report, SandboxResult};

    /// The Landlock ABI whose rights this code handles (and was tested with).
    const LANDLOCK_ABI: ABI = ABI::V7;

    /// Confine the calling process; descriptors above stderr are closed but those
    /// in `keep` (the socket to the server). In `Required` mode any missing
    /// protection is an error (the caller must then not run the model).
    pub fn apply(policy: &Policy, keep: &[RawFd]) -> SandboxResult<Report> {
        let mut report = Report { mode: policy.mode.as_str().into(), ..Default::default() };
        if policy.mode == Mode::UnsafeOff {
            report.missing.push("everything (sandbox off)".into());
            return Ok(report);
        }
        let required = policy.mode == Mode::Required;
        let missing = |what: String, report: &mut Report| -> SandboxResult<()> {
            if required {
                return Err(format!("the sandbox cannot be applied: {what}"));
            }
            report.missing.push(what);
            Ok(())
        };

        // 1. One thread, no inherited descriptors, resource limits.
        let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
        if threads != 1 {
            missing(format!("the process has {threads} threads before confinement (it must have one)"), &mut report)?;
        }
        report.closed_fds = close_inherited_fds(keep);
        match set_limits(policy) {
            Ok(()) => report.rlimits = true,
            Err(e) => missing(format!("resource limits ({e})"), &mut report)?,
        }

        // 2. Not dumpable; new user + network namespaces where the kernel allows.
        match rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
            Ok(()) => report.non_dumpable = true,
            Err(e) => missing(format!("PR_SET_DUMPABLE ({e})"), &mut report)?,
        }
        match new_network_namespace() {
            Ok(()) => report.network_namespace = true,
            Err(e) => missing(format!("a network namespace ({e})"), &mut report)?,
        }

        // 3. no_new_privs and Landlock.
        match rustix::thread::set_no_new_privs(true) {
            Ok(()) => report.no_new_privs = true,
            Err(e) => missing(format!("PR_SET_NO_NEW_PRIVS ({e})"), &mut report)?,
        }
        match landlock_rules(policy) {
            Ok((abi, full)) if abi > 0 => {
                report.landlock_abi = abi;
                report.landlock_full = full;
            }
            Ok(_) => missing("Landlock (not supported or not enabled by this kernel)".into(), &mut report)?,
            Err(e) => missing(format!("Landlock ({e})"), &mut report)?,
        }

        // 4. seccomp, last: the calls above are not allowed after it.
        match install_seccomp() {
            Ok(()) => report.seccomp = true,
            Err(e) => missing(format!("seccomp ({e})"), &mut report)?,
        }
        Ok(report)
    }

    /// Close every descriptor above stderr but those in `keep`.
    #[allow(unsafe_code)]
    fn close_inherited_fds(keep: &[RawFd]) -> u32 {
        // Listed first, closed after: the listing's own descriptor is gone by then.
        let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default();
        let mut closed = 0;
        for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
            // SAFETY: the descriptor was inherited from the server (this process
            // opened nothing but the ones in `keep`, which stay), so nothing in this
            // process owns it and closing it leaves no dangling owner.
            if unsafe { libc::close(fd) } == 0 {
                closed += 1;
            }
        }
        closed
    }

    fn set_limits(policy: &Policy) -> rustix::io::Result<()> {
        let limit = |n: u64| Rlimit { current: Some(n), maximum: Some(n) };
        if policy.memory_bytes > 0 {
            setrlimit(Resource::As, limit(policy.memory_bytes))?;
        }
        setrlimit(Resource::Fsize, limit(0))?;
        setrlimit(Resource::Core, limit(0))?;
        setrlimit(Resource::Nofile, limit(policy.open_files.max(16)))?;
        Ok(())
    }

    #[allow(unsafe_code)]
    fn new_network_namespace() -> rustix::io::Result<()> {
        use rustix::thread::UnshareFlags;
        // SAFETY: the process is single-threaded (checked above), so no other
        // thread can observe the change; FILES is not unshared.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNET) }
    }

    /// Read-only access to the policy's trees and files, nothing else; returns the
    /// ABI in force (0: none) and whether every right was enforced.
    fn landlock_rules(policy: &Policy) -> Result<(u32, bool), String> {
        let abi = LANDLOCK_ABI;
        let err = |e: landlock::RulesetError| e.to_string();
        let mut created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))
            .map_err(err)?
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(err)?
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(err)?
            .create()
            .map_err(err)?;
        for dir in &policy.read_dirs {
            let fd = PathFd::new(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            created = created.add_rule(PathBeneath::new(fd, AccessFs::from_read(abi))).map_err(err)?;
        }
        for file in &policy.read_files {
            let fd = PathFd::new(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let rights = if file.as_os_str() == "/dev/null" {
                AccessFs::ReadFile | AccessFs::WriteFile
            } else {
                AccessFs::ReadFile.into()
            };
            created = created.add_rule(PathBeneath::new(fd, rights)).map_err(err)?;
        }
        let status = created.no_new_privs(true).restrict_self().map_err(err)?;
        let abi_in_force = match status.landlock {
            LandlockStatus::Available { effective_abi, .. } => effective_abi as u32,
            _ => 0,
        };
        Ok(match status.ruleset {
            RulesetStatus::NotEnforced => (0, false),
            RulesetStatus::PartiallyEnforced => (abi_in_force, false),
            RulesetStatus::FullyEnforced => (abi_in_force, true),
        })
    }

    /// System calls a libtorch CPU inference process makes after it started.
    fn allowed_syscalls() -> Vec<i64> {
        let mut v = vec![
            // memory
            libc::SYS_brk,
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_mprotect,
            libc::SYS_madvise,
            libc::SYS_get_mempolicy,
            libc::SYS_membarrier,
            // threads and time
            libc::SYS_futex,
            libc::SYS_set_robust_list,
            libc::SYS_get_robust_list,
            libc::SYS_rseq,
            libc::SYS_set_tid_address,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_getppid,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_sched_yield,
            libc::SYS_sched_getaffinity,
            libc::SYS_sched_setaffinity,
            libc::SYS_sched_getparam,
            libc::SYS_sched_getscheduler,
            libc::SYS_getcpu,
            libc::SYS_nanosleep,
            libc::SYS_clock_nanosleep,
            libc::SYS_clock_gettime,
            libc::SYS_clock_getres,
            libc::SYS_gettimeofday,
            libc::SYS_getrandom,
            libc::SYS_rt_sigaction,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            // files: Landlock decides which paths open
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_pread64,
            libc::SYS_lseek,
            libc::SYS_close,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_openat,
            libc::SYS_faccessat,
            libc::SYS_faccessat2,
            libc::SYS_readlinkat,
            libc::SYS_getdents64,
            libc::SYS_fcntl,
            libc::SYS_dup,
            libc::SYS_dup3,
            libc::SYS_getcwd,
            libc::SYS_fadvise64,
            // the socket to the server, already open
            libc::SYS_recvfrom,
            libc::SYS_recvmsg,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_shutdown,
            libc::SYS_ppoll,
            // process facts
            libc::SYS_uname,
            libc::SYS_getuid,
            libc::SYS_geteuid,
            libc::SYS_getgid,
            libc::SYS_getegid,
            libc::SYS_getrlimit,
            libc::SYS_prlimit64,
            libc::SYS_sysinfo,
            libc::SYS_getrusage,
            libc::SYS_times,
        ];
        #[cfg(target_arch = "x86_64")]
        v.extend([
            libc::SYS_open,
            libc::SYS_stat,
            libc::SYS_lstat,
            libc::SYS_access,
            libc::SYS_readlink,
            libc::SYS_dup2,
            libc::SYS_poll,
            libc::SYS_arch_prctl,
            libc::SYS_time,
            libc::SYS_getdents,
        ]);
        v
    }

    fn arch() -> Result<TargetArch, String> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(TargetArch::x86_64),
            "aarch64" => Ok(TargetArch::aarch64),
            "riscv64" => Ok(TargetArch::riscv64),
            other => Err(format!("no seccomp filter for {other}")),
        }
    }

    fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
    }

    fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
        SeccompRule::new(conditions).map_err(|e| e.to_string())
    }

    /// The allow-list (everything else: EPERM), with `clone3` answered ENOSYS so that
    /// glibc creates threads with `clone`, whose flags the allow-list can check.
    fn install_seccomp() -> Result<(), String> {
        let arch = arch()?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            allowed_syscalls().into_iter().map(|s| (s, Vec::new())).collect();
        // New threads only: clone must carry CLONE_THREAD (fork and vfork are refused).
        let thread = libc::CLONE_THREAD as u64;
        rules.insert(libc::SYS_clone, vec![rule(vec![cond(0, SeccompCmpOp::MaskedEq(thread), thread)?])?]);
        // Signals to its own threads only.
        let pid = u64::from(std::process::id());
        rules.insert(libc::SYS_tgkill, vec![rule(vec![cond(0, SeccompCmpOp::Eq, pid)?])?]);
        // Terminal queries on its own output, nothing else.
        rules.insert(
            libc::SYS_ioctl,
            vec![
                rule(vec![cond(1, SeccompCmpOp::Eq, libc::TCGETS)?])?,
                rule(vec![cond(1, SeccompCmpOp::Eq, libc::TIOCGWINSZ)?])?,
            ],
        );
        // Naming threads and mappings; reading whether it is dumpable.
        rules.insert(
            libc::SYS_prctl,
            [libc::PR_SET_NAME, libc::PR_GET_NAME, libc::PR_GET_DUMPABLE, 0x5356_4d41 /* PR_SET_VMA */]
                .into_iter()
                .map(|op| rule(vec![cond(0, SeccompCmpOp::Eq, op as u64)?]))
                .collect::<Result<_, _>>()?,
        );
        // clone3 is allowed by the allow-list and answered ENOSYS by a filter of its
        // own (ERRNO takes precedence over ALLOW), installed first: if it could not
        // be, the allow-list is not installed either.
        rules.insert(libc::SYS_clone3, Vec::new());
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(|e| e.to_string())?;
        let clone3: BpfProgram = clone3.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
        let allow = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
            .map_err(|e| e.to_string())?;
        let allow: BpfProgram = allow.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
        seccompiler::apply_filter_all_threads(&clone3).map_err(|e| e.to_string())?;
        seccompiler::apply_filter_all_threads(&allow).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// What a confined process could still do, tried from inside it: each entry is
/// `refused: <why>` or `ALLOWED`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escapes {
    /// Read a file outside the policy (a secret).
    pub read_outside: String,
    /// Create or overwrite a file outside the policy.
    pub write_outside: String,
    /// Open a network socket.
    pub socket: String,
    /// Start another program.
    pub spawn: String,
}

impl Escapes {
    /// The attempts that succeeded.
    pub fn allowed(&self) -> Vec<&'static str> {
        [
            ("read_outside", &self.read_outside),
            ("write_outside", &self.write_outside),
            ("socket", &self.socket),
            ("spawn", &self.spawn),
        ]
        .into_iter()
        .filter(|(_, outcome)| !outcome.starts_with("refused"))
        .map(|(name, _)| name)
        .collect()
    }
}

/// Try to leave the sandbox: read `secret`, create `write_to`, open a socket and
/// start `/bin/true`.
pub fn try_escapes(secret: &std::path::Path, write_to: &std::path::Path) -> Escapes {
    fn outcome<T>(r: std::io::Result<T>) -> String {
        match r {
            Ok(_) => "ALLOWED".into(),
            Err(e) => format!("refused: {e}"),
        }
    }
    Escapes {
        read_outside: outcome(std::fs::read(secret)),
        write_outside: outcome(std::fs::OpenOptions::new().create(true).append(true).open(write_to)),
        socket: outcome(std::net::UdpSocket::bind("127.0.0.1:0")),
        spawn: outcome(std::process::Command::new("/bin/true").status()),
    }
}

/// What `zoo-torch-worker probe` prints: the protections it could apply, what it
/// could still do inside them, and whether libtorch still works there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub report: Report,
    pub escapes: Escapes,
    /// libtorch ran a small computation inside the sandbox.
    pub libtorch: bool,
    /// Bytes of address space the process used at the end (libtorch loaded).
    pub address_space: u64,
}

/// The process's current address-space size, from `/proc/self/status`.
pub fn address_space() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
