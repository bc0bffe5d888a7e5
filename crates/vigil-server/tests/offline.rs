//! The offline administration commands, as an admin runs them on a stopped
//! server: they use the same store code as the services, and since they
//! bypass the API, they write their own audit entries — a token minted with
//! access to the server's files still shows in the tenant's audit log.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn run(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil-server"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn offline_commands_are_audited_in_the_tenants_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = ok(&run(&config, &["operator-token", "--name", "bootstrap"]));
    assert!(out.trim().starts_with("vgl_api_"));
    let out = ok(&run(&config, &["tenant-create", "Acme", "--id", "acme"]));
    assert!(out.contains("tenant_id acme"));
    assert!(out.contains("admin_token vgl_api_"));
    ok(&run(
        &config,
        &["api-token", "acme", "--name", "mallory", "--role", "admin"],
    ));
    ok(&run(&config, &["enrollment-token", "acme", "--hours", "1"]));
    let log =
        std::fs::read_to_string(dir.path().join("data/store/tenants/acme/audit.log")).unwrap();
    assert!(log.contains("offline/TenantCreate"));
    assert!(
        log.contains("offline/ApiToken") && log.contains("mallory"),
        "{log}"
    );
    assert!(log.contains("offline/EnrollmentToken"));
    let out = ok(&run(&config, &["audit-verify", "--tenant", "acme"]));
    assert!(out.contains("audit log OK: 3 entries"), "{out}");
    let out = ok(&run(&config, &["audit-verify"]));
    assert!(out.contains("audit log OK: 4 entries"), "{out}");
    // A wrong role is refused, naming it.
    let o = run(
        &config,
        &["api-token", "acme", "--name", "x", "--role", "root"],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown role `root`"));
}
