//! Compiles proto/ with protox (pure Rust): a fresh machine needs no system protoc.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "vigil/v1/records.proto",
        "vigil/v1/ingest.proto",
        "vigil/v1/alerts.proto",
        "vigil/v1/admin.proto",
        "vigil/v1/rules.proto",
        "vigil/v1/hunt.proto",
        "vigil/v1/privacy.proto",
        "vigil/v1/transfer.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("vigil_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Records of a raw batch stay slices of the received message.
        .bytes(".vigil.v1.RawRecordBatch.records")
        .compile_fds(fds)?;
    // The Ingest service once more, with Stream's batches as RawRecordBatch
    // (same service, same wire format); every message is the one generated above.
    // The server reads batches so, and sensors send their spooled bytes so.
    let raw = out.join("raw");
    std::fs::create_dir_all(&raw)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".vigil.v1", "crate::v1")
        .extern_path(".vigil.v1.RecordBatch", "crate::v1::RawRecordBatch")
        .out_dir(&raw)
        .compile_fds(protox::compile(["vigil/v1/ingest.proto"], [&root])?)?;
    Ok(())
}
