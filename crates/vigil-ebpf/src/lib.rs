//! Vigil's eBPF collector.
//!
//! What it is: CO-RE BPF programs written in C (`bpf/vigil.bpf.c`, compiled
//! object `bpf/vigil.bpf.o` committed beside it and rebuilt byte for byte in
//! CI), the loader that attaches them ([`Probe`], aya: pure Rust), and the
//! decoder of their ring-buffer records ([`decode()`]). It sees process exec
//! (argv, exe, cwd, credentials, tty, cgroup), fork and exit; file create,
//! modify, close-after-write, delete, rename, chmod and chown; TCP connects,
//! accepts and listeners, UDP connects and binds.
//!
//! What it is not: no enrichment (process tree, GUIDs, user names, hashes),
//! no policy (exclusions, persistence tags) and no threads of its own — the
//! sensor does that. Only BTF tracepoints (`tp_btf`) are used: they need
//! neither tracefs nor kprobes, and they are what kernels that refuse fentry
//! and LSM programs still allow.

pub mod decode;
mod probe;

pub use decode::{DecodeError, Exec, File, FileOp, KernelEvent, Net, NetDir, Task, decode};
pub use probe::{Counters, KERNEL_BTF, Options, Probe, ProbeError};
