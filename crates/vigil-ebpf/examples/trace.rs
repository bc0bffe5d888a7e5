//! `cargo run -p vigil-ebpf --example trace [SECONDS]`: prints what the
//! programs see (as root), then the counters. A tool for BPF work, not a product.
use std::time::{Duration, Instant};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut probe = match vigil_ebpf::Probe::load(&vigil_ebpf::Options::default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot load: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("attached: {:?}", probe.attached);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let r = probe.poll(Duration::from_millis(200), |b| {
            match vigil_ebpf::decode(b) {
                Ok(ev) => println!("{ev:?}"),
                Err(e) => println!("undecodable ({e}): {} bytes", b.len()),
            }
        });
        if let Err(e) = r {
            eprintln!("{e}");
            break;
        }
    }
    eprintln!("{:?}", probe.counters());
}
