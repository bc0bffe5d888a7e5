//! Where Linux keeps what runs by itself — the analogue of the registry keys
//! Windows persistence uses. A write under one of these paths is tagged with
//! its kind, so analysts and rules can ask for persistence changes directly.

/// Directories (prefix, at a component boundary) and their kind.
const DIRS: &[(&str, &str)] = &[
    ("/etc/cron.d", "cron"),
    ("/etc/cron.hourly", "cron"),
    ("/etc/cron.daily", "cron"),
    ("/etc/cron.weekly", "cron"),
    ("/etc/cron.monthly", "cron"),
    ("/var/spool/cron/atjobs", "at"),
    ("/var/spool/cron", "cron"),
    ("/var/spool/at", "at"),
    ("/etc/systemd", "systemd"),
    ("/usr/lib/systemd/system", "systemd"),
    ("/usr/lib/systemd/user", "systemd"),
    ("/lib/systemd/system", "systemd"),
    ("/lib/systemd/user", "systemd"),
    ("/run/systemd/system", "systemd"),
    ("/usr/lib/systemd/system-generators", "systemd"),
    ("/etc/profile.d", "shell_profile"),
    ("/etc/zsh", "shell_profile"),
    ("/etc/ld.so.conf.d", "ld_preload"),
    ("/etc/sudoers.d", "sudoers"),
    ("/etc/modprobe.d", "kernel_module"),
    ("/etc/modules-load.d", "kernel_module"),
    ("/usr/lib/modprobe.d", "kernel_module"),
    ("/lib/modprobe.d", "kernel_module"),
    ("/usr/lib/modules-load.d", "kernel_module"),
    ("/etc/udev/rules.d", "udev"),
    ("/usr/lib/udev/rules.d", "udev"),
    ("/lib/udev/rules.d", "udev"),
    ("/etc/init.d", "init"),
    ("/etc/init", "init"),
    ("/etc/rc0.d", "init"),
    ("/etc/rc1.d", "init"),
    ("/etc/rc2.d", "init"),
    ("/etc/rc3.d", "init"),
    ("/etc/rc4.d", "init"),
    ("/etc/rc5.d", "init"),
    ("/etc/rc6.d", "init"),
    ("/etc/rcS.d", "init"),
    ("/etc/xdg/autostart", "xdg_autostart"),
    ("/etc/pam.d", "pam"),
    ("/etc/security", "pam"),
    ("/usr/lib/x86_64-linux-gnu/security", "pam"),
    ("/lib/x86_64-linux-gnu/security", "pam"),
    ("/usr/lib/security", "pam"),
    ("/lib/security", "pam"),
    ("/etc/update-motd.d", "motd"),
    ("/etc/apt/apt.conf.d", "package_manager"),
];

/// Single files and their kind.
const FILES: &[(&str, &str)] = &[
    ("/etc/crontab", "cron"),
    ("/etc/anacrontab", "cron"),
    ("/etc/profile", "shell_profile"),
    ("/etc/bash.bashrc", "shell_profile"),
    ("/etc/bashrc", "shell_profile"),
    ("/etc/environment", "shell_profile"),
    ("/etc/ld.so.preload", "ld_preload"),
    ("/etc/ld.so.conf", "ld_preload"),
    ("/etc/sudoers", "sudoers"),
    ("/etc/modules", "kernel_module"),
    ("/etc/rc.local", "init"),
    ("/etc/passwd", "accounts"),
    ("/etc/shadow", "accounts"),
    ("/etc/group", "accounts"),
    ("/etc/gshadow", "accounts"),
    ("/etc/ssh/sshd_config", "ssh_config"),
];

/// Per-user files: the path ends with one of these (under any home directory).
const HOME_SUFFIXES: &[(&str, &str)] = &[
    ("/.ssh/authorized_keys", "ssh_authorized_keys"),
    ("/.ssh/authorized_keys2", "ssh_authorized_keys"),
    ("/.bashrc", "shell_profile"),
    ("/.bash_profile", "shell_profile"),
    ("/.bash_login", "shell_profile"),
    ("/.bash_logout", "shell_profile"),
    ("/.profile", "shell_profile"),
    ("/.zshrc", "shell_profile"),
    ("/.zprofile", "shell_profile"),
    ("/.zshenv", "shell_profile"),
    ("/.zlogin", "shell_profile"),
    ("/.config/fish/config.fish", "shell_profile"),
];

/// Per-user directories: the path contains one of these.
const HOME_DIRS: &[(&str, &str)] = &[
    ("/.config/autostart/", "xdg_autostart"),
    ("/.config/systemd/user/", "systemd"),
];

/// Where to watch for persistence changes when no kernel source reports file
/// events: every persistence directory, the directories of the single files,
/// and each home directory (its dotfiles, `.ssh`, `.config/autostart`,
/// `.config/systemd/user`). Only existing directories are returned.
pub fn watch_roots() -> Vec<(std::path::PathBuf, bool)> {
    use std::path::PathBuf;
    let mut roots: Vec<(PathBuf, bool)> =
        DIRS.iter().map(|(d, _)| (PathBuf::from(d), true)).collect();
    for (f, _) in FILES {
        if let Some(parent) = std::path::Path::new(f).parent() {
            roots.push((parent.to_owned(), false));
        }
    }
    let mut homes = vec![PathBuf::from("/root")];
    if let Ok(entries) = std::fs::read_dir("/home") {
        homes.extend(entries.flatten().map(|e| e.path()));
    }
    for h in homes {
        roots.push((h.clone(), false));
        for sub in [
            ".ssh",
            ".config/autostart",
            ".config/systemd/user",
            ".config/fish",
        ] {
            roots.push((h.join(sub), true));
        }
    }
    roots.sort();
    roots.dedup_by(|a, b| a.0 == b.0);
    roots.retain(|(p, _)| p.is_dir());
    roots
}

fn under(path: &[u8], dir: &str) -> bool {
    let d = dir.as_bytes();
    path.len() > d.len() && path.starts_with(d) && path[d.len()] == b'/'
}

/// The persistence kind of an absolute path, if it is one.
pub fn classify(path: &[u8]) -> Option<&'static str> {
    if let Some((_, k)) = FILES.iter().find(|(f, _)| path == f.as_bytes()) {
        return Some(k);
    }
    if let Some((_, k)) = DIRS.iter().find(|(d, _)| under(path, d)) {
        return Some(k);
    }
    if let Some((_, k)) = HOME_SUFFIXES
        .iter()
        .find(|(s, _)| path.ends_with(s.as_bytes()))
    {
        return Some(k);
    }
    HOME_DIRS
        .iter()
        .find(|(d, _)| path.windows(d.len()).any(|w| w == d.as_bytes()))
        .map(|(_, k)| *k)
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn persistence_locations_are_tagged() {
        for (p, k) in [
            ("/etc/cron.d/backdoor", "cron"),
            ("/var/spool/cron/crontabs/root", "cron"),
            ("/etc/systemd/system/evil.service", "systemd"),
            ("/home/ann/.config/systemd/user/x.service", "systemd"),
            ("/root/.bashrc", "shell_profile"),
            ("/home/bob/.ssh/authorized_keys", "ssh_authorized_keys"),
            ("/etc/ld.so.preload", "ld_preload"),
            ("/etc/sudoers.d/90-x", "sudoers"),
            ("/etc/modprobe.d/x.conf", "kernel_module"),
            ("/etc/udev/rules.d/99-x.rules", "udev"),
            ("/etc/init.d/x", "init"),
            ("/var/spool/cron/atjobs/a0001", "at"),
            ("/home/ann/.config/autostart/x.desktop", "xdg_autostart"),
            ("/etc/pam.d/sshd", "pam"),
        ] {
            assert_eq!(classify(p.as_bytes()), Some(k), "{p}");
        }
        for p in [
            "/etc/cron.dx",
            "/tmp/x",
            "/etc/systemdx/y",
            "/home/a/bashrc",
            "/etc/cron.d",
        ] {
            assert_eq!(classify(p.as_bytes()), None, "{p}");
        }
    }
}
