//! Embeds Vigil's own rule pack (`rules/` at the repository root) so a sensor
//! started without `--rules` still detects: `src/builtin.rs` loads it.

use std::io::Write;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml")
            && !p.to_string_lossy().ends_with(".tests.yml")
        {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let rules = manifest.join("../../rules");
    println!("cargo:rerun-if-changed={}", rules.display());
    let mut files = Vec::new();
    collect(&rules, &mut files);
    files.sort();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("builtin_rules.rs");
    let mut f = std::fs::File::create(&out).expect("OUT_DIR is writable");
    writeln!(f, "pub(crate) static RULES: &[(&str, &str)] = &[").expect("write");
    for p in &files {
        println!("cargo:rerun-if-changed={}", p.display());
        let name = p.strip_prefix(&rules).unwrap_or(p).display().to_string();
        writeln!(
            f,
            "    ({name:?}, include_str!({:?})),",
            p.display().to_string()
        )
        .expect("write");
    }
    writeln!(f, "];").expect("write");
}
