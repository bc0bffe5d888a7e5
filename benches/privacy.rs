//! What privacy on the device costs per exec: secrets redacted in argv
//! (vigil-redact, the default rules, then with two tenant patterns added) and
//! pseudonyms (vigil-pseudonym: the user name, home-directory segments of
//! every argument, the command line and the working directory), as the
//! sensor's enrich and pipeline apply them to each ProcessStart.
//!
//! `cargo bench --bench privacy` (env: PRIVACY_BENCH_EXECS, default 200000;
//! PRIVACY_BENCH_RUNS, default 5).
//!
//! Inputs like a fleet's: command lines of common tools with paths in home
//! directories, URLs, hashes and file names made of fresh random values (no
//! two alike, so nothing is helped by a cache), 2% carrying a secret. Each
//! figure is the median of the runs (min in brackets), one thread.

use std::time::Instant;
use vigil_pseudonym::Pseudonymizer;
use vigil_redact::Redactor;

mod support;

use support::events::Rng;

const USERS: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];

/// One exec: argv, the user, the working directory.
fn exec(r: &mut Rng) -> (Vec<Vec<u8>>, String, String) {
    let user = r.pick(&USERS).to_owned();
    let home = format!("/home/{user}");
    let f = r.hex(8);
    let argv: Vec<String> = match r.next() % 12 {
        0 => vec!["ls".into(), "-la".into(), format!("{home}/src/{f}")],
        1 => vec!["cat".into(), format!("{home}/notes/{f}.md")],
        2 => vec![
            "grep".into(),
            "-rn".into(),
            format!("TODO-{f}"),
            format!("{home}/work"),
        ],
        3 => vec![
            "python3".into(),
            format!("{home}/bin/job_{f}.py"),
            "--verbose".into(),
        ],
        4 => vec![
            "curl".into(),
            "-sSL".into(),
            format!("https://cdn.example.com/pkg/{f}/release.tar.gz"),
            "-o".into(),
            format!("/tmp/{f}.tgz"),
        ],
        5 => vec![
            "git".into(),
            "-C".into(),
            format!("{home}/repo"),
            "commit".into(),
            "-m".into(),
            format!("fix {f}"),
        ],
        6 => vec![
            "ssh".into(),
            "-p".into(),
            "2222".into(),
            format!("deploy@10.0.{}.{}", r.next() % 255, r.next() % 255),
        ],
        7 => vec![
            "docker".into(),
            "run".into(),
            "--rm".into(),
            format!("registry.example.com/app:{f}"),
        ],
        8 => vec!["sha256sum".into(), format!("{home}/Downloads/{f}.iso")],
        9 => vec!["/usr/lib/systemd/systemd-journald".into()],
        10 => vec![
            "sh".into(),
            "-c".into(),
            format!("cd {home}/build && make -j2 TARGET={f}"),
        ],
        _ => vec!["vim".into(), format!("{home}/.config/{f}.toml")],
    };
    let mut argv: Vec<Vec<u8>> = argv.into_iter().map(String::into_bytes).collect();
    // 2% carry a secret, in one of the forms the defaults know.
    if r.next().is_multiple_of(50) {
        let secret = r.hex(16);
        argv.push(match r.next() % 4 {
            0 => format!("--password={secret}").into_bytes(),
            1 => format!("https://svc:{secret}@db.internal/x").into_bytes(),
            2 => format!("Authorization: Bearer {secret}").into_bytes(),
            _ => format!("API_TOKEN={secret}").into_bytes(),
        });
    }
    (argv, user, home)
}

fn command_line(argv: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&argv.join(&b' ')).into_owned()
}

fn main() {
    let n = support::env_or("PRIVACY_BENCH_EXECS", 200_000) as usize;
    let runs = support::env_or("PRIVACY_BENCH_RUNS", 5) as usize;
    let mut rng = Rng::new(0x5eed_cafe);
    let execs: Vec<_> = (0..n).map(|_| exec(&mut rng)).collect();
    let defaults = Redactor::default();
    let tenant = Redactor::with_rules(&[
        ("ticket".into(), r"TKT-(?P<secret>[0-9]{6})".into()),
        (
            "internal_key".into(),
            r"\bik_(?P<secret>[A-Za-z0-9]{24})\b".into(),
        ),
    ])
    .unwrap_or_default();
    let p = Pseudonymizer::new([7u8; 32]);

    type Step<'a> = Box<dyn Fn(&mut Vec<Vec<u8>>, &str, &str) -> usize + 'a>;
    let steps: Vec<(&str, Step)> = vec![
        (
            "redaction, default rules",
            Box::new(|argv: &mut Vec<Vec<u8>>, _: &str, _: &str| {
                defaults.argv(argv).total() as usize
            }),
        ),
        (
            "redaction, defaults + 2 tenant patterns",
            Box::new(|argv: &mut Vec<Vec<u8>>, _: &str, _: &str| {
                tenant.argv(argv).total() as usize
            }),
        ),
        (
            "pseudonyms (user, argv, command line, cwd)",
            Box::new(|argv: &mut Vec<Vec<u8>>, user: &str, home: &str| {
                let mut changed = usize::from(p.user(user, Some(1000)).len() > 4);
                for a in argv.iter_mut() {
                    if let std::borrow::Cow::Owned(b) = p.home_segments(a) {
                        *a = b;
                        changed += 1;
                    }
                }
                changed += p.home_segments_str(&command_line(argv)).len() / 1024;
                changed + p.home_segments_str(home).len() / 1024
            }),
        ),
        (
            "command line only (the sensor builds it anyway)",
            Box::new(|argv: &mut Vec<Vec<u8>>, _: &str, _: &str| command_line(argv).len() / 1024),
        ),
    ];
    println!("{n} execs, {runs} runs, one thread; ns per exec, median [min]");
    for (name, step) in &steps {
        let mut per: Vec<f64> = Vec::with_capacity(runs);
        let mut hits = 0;
        for _ in 0..runs {
            let mut work: Vec<(Vec<Vec<u8>>, &str, &str)> = execs
                .iter()
                .map(|(a, u, h)| (a.clone(), u.as_str(), h.as_str()))
                .collect();
            let t = Instant::now();
            hits = 0;
            for (argv, user, home) in &mut work {
                hits += step(argv, user, home);
            }
            per.push(t.elapsed().as_nanos() as f64 / n as f64);
            std::hint::black_box(&work);
        }
        per.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.0} ns [{:.0}] | {:.2} M execs/s | {hits} changes |",
            per[per.len() / 2],
            per[0],
            1e3 / per[per.len() / 2]
        );
    }
}
