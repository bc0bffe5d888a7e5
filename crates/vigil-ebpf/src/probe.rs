//! Loading the BPF object, attaching its programs, and reading its ring buffer
//! and loss counters (aya: a pure-Rust loader, so no C library is linked).

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use std::os::fd::AsFd;
use std::time::Duration;

/// The compiled programs; `bpf/build.sh` rebuilds it byte for byte from `bpf/vigil.bpf.c`.
static OBJECT: &[u8] = include_bytes!("../bpf/vigil.bpf.o");

/// Where the kernel publishes its own type information (needed for CO-RE).
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

// x86_64 syscall numbers the programs decide on (bpf/vigil.bpf.c has the same list).
const FILE_SYSCALLS: &[u32] = &[
    1, 2, 3, 18, 20, 82, 84, 85, 87, 90, 91, 92, 93, 94, 257, 260, 263, 264, 268, 296, 316, 328,
    437, 452,
];
const NET_SYSCALLS: &[u32] = &[42, 43, 49, 288];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "the kernel publishes no BTF ({KERNEL_BTF} is missing): CO-RE programs cannot be relocated"
    )]
    NoBtf,
    #[error("reading kernel BTF: {0}")]
    Btf(String),
    #[error("loading the BPF object: {0}")]
    Load(String),
    #[error("program {program} ({tracepoint}): {error}")]
    Program {
        program: &'static str,
        tracepoint: &'static str,
        error: String,
    },
    #[error("BPF map {map}: {error}")]
    Map { map: &'static str, error: String },
    #[error("polling the ring buffer: {0}")]
    Poll(std::io::Error),
    #[error("eBPF collection is built for x86_64 only")]
    Arch,
    #[error(
        "missing privileges: loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, or root)"
    )]
    Privilege,
}

impl ProbeError {
    /// Whether the error means "this process lacks a privilege" (CAP_BPF, CAP_PERFMON).
    pub fn is_permission(&self) -> bool {
        if matches!(self, ProbeError::Privilege) {
            return true;
        }
        let text = self.to_string();
        text.contains("EPERM")
            || text.contains("Operation not permitted")
            || text.contains("EACCES")
            || text.contains("Permission denied")
    }
}

/// Whether this process holds what loading tracing programs takes: CAP_BPF with
/// CAP_PERFMON, or CAP_SYS_ADMIN (from /proc/self/status; unknown counts as yes,
/// and the kernel decides).
fn may_load_bpf() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Some(eff) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
    else {
        return true;
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// What to collect and how much room the ring buffer has.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ring-buffer size in bytes; rounded up to a power of two of at least a page.
    pub ring_bytes: u32,
    pub files: bool,
    pub network: bool,
    /// A process whose file and network activity is never reported (the sensor itself).
    pub self_tgid: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ring_bytes: 4 << 20,
            files: true,
            network: true,
            self_tgid: std::process::id(),
        }
    }
}

/// Records made and records the ring buffer had no room for, per source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub process: (u64, u64),
    pub file: (u64, u64),
    pub network: (u64, u64),
}

/// Loaded and attached programs with their ring buffer. Dropping it detaches them.
pub struct Probe {
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    /// Keeps programs and links alive.
    _ebpf: Ebpf,
    /// "tracepoint: program" of what is attached, for the operator.
    pub attached: Vec<String>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

fn program(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    tracepoint: &'static str,
) -> Result<(), ProbeError> {
    let err = |error: String| ProbeError::Program {
        program: name,
        tracepoint,
        error,
    };
    let p: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| err("not in the object".into()))?
        .try_into()
        .map_err(|e| err(format!("{e}")))?;
    p.load(tracepoint, btf).map_err(|e| err(format!("{e:#}")))?;
    p.attach().map_err(|e| err(format!("{e:#}")))?;
    Ok(())
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |e| ProbeError::Map {
        map,
        error: e.to_string(),
    }
}

impl Probe {
    /// Loads the object, configures it and attaches the programs `opts` asks for.
    pub fn load(opts: &Options) -> Result<Probe, ProbeError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(ProbeError::Arch);
        }
        if !std::path::Path::new(KERNEL_BTF).exists() {
            return Err(ProbeError::NoBtf);
        }
        // Without them the kernel refuses the first map with a bare EPERM; say what is missing.
        if !may_load_bpf() {
            return Err(ProbeError::Privilege);
        }
        let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Btf(e.to_string()))?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| ProbeError::Load(format!("possible CPUs: {e}")))?
            .try_into()
            .unwrap_or(u32::MAX);
        let ring = opts.ring_bytes.clamp(4096, 1 << 30).next_power_of_two();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries("events", ring)
            .map_max_entries("scratch_map", cpus)
            .load(OBJECT)
            .map_err(|e| ProbeError::Load(format!("{e:#}")))?;

        {
            let mut config: Array<_, [u32; 4]> =
                Array::try_from(ebpf.map_mut("vg_config_map").ok_or_else(|| {
                    map_err("vg_config_map")(aya::maps::MapError::InvalidName {
                        name: "vg_config_map".into(),
                    })
                })?)
                .map_err(map_err("vg_config_map"))?;
            config
                .set(
                    0,
                    [
                        opts.self_tgid,
                        u32::from(opts.files),
                        u32::from(opts.network),
                        0,
                    ],
                    0,
                )
                .map_err(map_err("vg_config_map"))?;
        }
        {
            let mut interest: Array<_, u8> =
                Array::try_from(ebpf.map_mut("interest").ok_or_else(|| {
                    map_err("interest")(aya::maps::MapError::InvalidName {
                        name: "interest".into(),
                    })
                })?)
                .map_err(map_err("interest"))?;
            let mut set = |nrs: &[u32]| -> Result<(), ProbeError> {
                for &nr in nrs {
                    interest.set(nr, 1u8, 0).map_err(map_err("interest"))?;
                }
                Ok(())
            };
            if opts.files {
                set(FILE_SYSCALLS)?;
            }
            if opts.network {
                set(NET_SYSCALLS)?;
            }
        }

        let mut attached = Vec::new();
        let mut attach = |ebpf: &mut Ebpf, name: &'static str, tp: &'static str| {
            program(ebpf, &btf, name, tp)?;
            attached.push(format!("tp_btf/{tp}"));
            Ok::<(), ProbeError>(())
        };
        attach(&mut ebpf, "vg_exec", "sched_process_exec")?;
        attach(&mut ebpf, "vg_fork", "sched_process_fork")?;
        attach(&mut ebpf, "vg_exit", "sched_process_exit")?;
        if opts.network {
            attach(&mut ebpf, "vg_sock_state", "inet_sock_set_state")?;
        }
        if opts.files || opts.network {
            attach(&mut ebpf, "vg_sys_enter", "sys_enter")?;
            attach(&mut ebpf, "vg_sys_exit", "sys_exit")?;
        }

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(ProbeError::Map {
                map: name,
                error: "not in the object".into(),
            })
        };
        let ring = RingBuf::try_from(take(&mut ebpf, "events")?).map_err(map_err("events"))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, "counters")?).map_err(map_err("counters"))?;
        Ok(Probe {
            ring,
            counters,
            _ebpf: ebpf,
            attached,
        })
    }

    /// Waits up to `timeout` for records, then hands every queued one to `f`
    /// (raw bytes: decode them with [`crate::decode`]). Returns how many.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, ProbeError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        if n > 0 {
            return Ok(n);
        }
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.ring.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(ProbeError::Poll(e.into())),
        }
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        Ok(n)
    }

    /// Totals over all CPUs since load.
    pub fn counters(&self) -> Result<Counters, ProbeError> {
        let get = |i: u32| -> Result<u64, ProbeError> {
            Ok(self
                .counters
                .get(&i, 0)
                .map_err(map_err("counters"))?
                .iter()
                .fold(0u64, |a, v| a.wrapping_add(*v)))
        };
        Ok(Counters {
            process: (get(0)?, get(1)?),
            file: (get(2)?, get(3)?),
            network: (get(4)?, get(5)?),
        })
    }
}
