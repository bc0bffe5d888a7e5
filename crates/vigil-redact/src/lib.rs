//! Secrets in command lines, replaced at the source.
//!
//! What it is: the sensor's redaction of what a process was started with,
//! before a record is evaluated, spooled or sent. A secret is replaced by
//! `[REDACTED]` and everything around it is kept — the option's name, the
//! user of a URL, the scheme of a token — so an analyst still sees what ran
//! and rules still match on the shape (`--password=[REDACTED]`). Each
//! replacement is counted by the name of the rule that made it; the secret
//! itself is never returned, logged or counted.
//!
//! Default rules ([`Redactor::default`]): `--password=`-style options and the
//! same options followed by their value in the next argument; `-pSECRET` of
//! the MySQL family and `sshpass -p`; `curl`/`wget` `-u user:pass`;
//! credentials in URLs (`scheme://user:pass@`); bearer and token headers;
//! AWS access key ids and secret keys, GitHub, Slack and Google API tokens;
//! private-key blocks; `NAME=value` assignments whose name says password,
//! secret, token or key. Configured rules add regular expressions whose
//! `secret` group (or whole match) is replaced.
//!
//! What it is not: a detector of every secret there is, or a reader of
//! files or environments (the sensor never reads either). It does no I/O.

use regex::bytes::Regex;
use std::borrow::Cow;

/// What a secret becomes.
pub const MASK: &[u8] = b"[REDACTED]";

/// How much of one argument or text the rules look at (bounded work per
/// record; the sensor captures less of a command line than this).
const MAX_SCAN: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction rule `{name}`: {reason}")]
    BadRule { name: String, reason: String },
}

/// A rule over one argument (or a whole text).
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    re: Regex,
}

/// Options whose value is a secret (lowercase, without dashes).
const SECRET_OPTIONS: &str = r"password|passwd|pass|pwd|passphrase|secret|token|auth[-_]?token|access[-_]?token|api[-_]?key|apikey|access[-_]?key|secret[-_]?key|client[-_]?secret|private[-_]?key";

/// Programs whose `-p` takes the password attached (`-pSECRET`).
const MYSQL_FAMILY: [&str; 7] = [
    "mysql",
    "mysqldump",
    "mysqladmin",
    "mysqlimport",
    "mariadb",
    "mariadb-dump",
    "mariadb-admin",
];

/// How many secrets each rule replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactions(Vec<(String, u32)>);

impl Redactions {
    fn add(&mut self, rule: &str) {
        match self.0.iter_mut().find(|(n, _)| n == rule) {
            Some((_, c)) => *c = c.saturating_add(1),
            None => self.0.push((rule.to_owned(), 1)),
        }
    }

    /// (rule name, secrets replaced), in the order first seen.
    pub fn counts(&self) -> &[(String, u32)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, c)| u64::from(*c)).sum()
    }
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Rules matched inside every argument (and command line text).
    inline: Vec<Rule>,
    /// An argument that is a secret option's name alone: the next is its value.
    option_alone: Regex,
}

fn rule(name: &str, pattern: &str) -> Result<Rule, RedactError> {
    // Bounded: a configured pattern cannot make the sensor build a huge automaton.
    let re = regex::bytes::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| RedactError::BadRule {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Rule {
        name: name.to_owned(),
        re,
    })
}

impl Default for Redactor {
    fn default() -> Self {
        // The built-in patterns are fixed text: they compile.
        #[allow(clippy::expect_used)]
        Redactor::with_rules(&[]).expect("built-in redaction rules compile")
    }
}

impl Redactor {
    /// The default rules and `extra` (name, regular expression): a match's
    /// `secret` group, or the whole match without one, is replaced.
    pub fn with_rules(extra: &[(String, String)]) -> Result<Redactor, RedactError> {
        let mut inline = vec![
            rule(
                "option_value",
                &format!(r"(?i)^--?(?:{SECRET_OPTIONS})[=:](?P<secret>(?s-u:.)+)$"),
            )?,
            rule(
                "url_credentials",
                r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@]*:(?P<secret>[^/\s@]+)@",
            )?,
            rule(
                "aws_access_key_id",
                r"\b(?P<secret>(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16})\b",
            )?,
            rule(
                "aws_secret_access_key",
                r"(?i)aws_secret_access_key\s*[=:]\s*(?P<secret>[A-Za-z0-9/+=]{40})",
            )?,
            rule(
                "github_token",
                r"\b(?P<secret>(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}))",
            )?,
            rule("slack_token", r"\b(?P<secret>xox[abprs]-[A-Za-z0-9-]{10,})")?,
            rule("google_api_key", r"\b(?P<secret>AIza[0-9A-Za-z_-]{35})")?,
            rule(
                "bearer_token",
                r"(?i)\b(?:bearer|token|basic)\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
            )?,
            rule(
                "private_key",
                r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----(?P<secret>.*?)(?:-----END [A-Z ]*PRIVATE KEY-----|\z)",
            )?,
            rule(
                "secret_assignment",
                r"(?i)\b[A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY)[A-Z0-9_]*=(?P<secret>[^\s'\x22;&|]+)",
            )?,
        ];
        for (name, pattern) in extra {
            let bad = |reason: &str| RedactError::BadRule {
                name: name.clone(),
                reason: reason.to_owned(),
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(bad("a name is 1 to 64 letters, digits, `_`, `-` or `.`"));
            }
            if name == "option_next" || inline.iter().any(|r| &r.name == name) {
                return Err(bad("the name is taken (a default rule or an earlier one)"));
            }
            let r = rule(name, pattern)?;
            // A pattern that matches nothing at all would mask between every character.
            if r.re.is_match(b"") {
                return Err(bad("the pattern matches the empty string"));
            }
            inline.push(r);
        }
        let option_alone = Regex::new(&format!(r"(?i)^--?(?:{SECRET_OPTIONS})$")).map_err(|e| {
            RedactError::BadRule {
                name: "option_next".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(Redactor {
            inline,
            option_alone,
        })
    }

    /// Redacts a process's arguments in place (`argv[0]` is the program);
    /// returns what it replaced.
    pub fn argv(&self, argv: &mut [Vec<u8>]) -> Redactions {
        let mut done = Redactions::default();
        let program = argv
            .first()
            .map(|a| {
                let base = a.rsplit(|b| *b == b'/').next().unwrap_or(a);
                String::from_utf8_lossy(base).into_owned()
            })
            .unwrap_or_default();
        let mysql = MYSQL_FAMILY.contains(&program.as_str());
        let mut next_is_secret: Option<&'static str> = None;
        for (i, arg) in argv.iter_mut().enumerate() {
            if let Some(why) = next_is_secret.take() {
                if why == "user_password" {
                    // `-u user:pass`: the user stays.
                    if let Some(colon) = arg.iter().position(|b| *b == b':') {
                        arg.truncate(colon + 1);
                        arg.extend_from_slice(MASK);
                        done.add(why);
                    }
                } else {
                    *arg = MASK.to_vec();
                    done.add(why);
                }
                continue;
            }
            if i == 0 {
                continue;
            }
            if self.option_alone.is_match(arg) {
                next_is_secret = Some("option_next");
                continue;
            }
            if (program == "sshpass" && arg.as_slice() == b"-p")
                || (mysql && arg.as_slice() == b"--password")
            {
                next_is_secret = Some("option_next");
                continue;
            }
            if (program == "curl" || program == "wget")
                && matches!(arg.as_slice(), b"-u" | b"--user" | b"--proxy-user")
            {
                next_is_secret = Some("user_password");
                continue;
            }
            if (mysql || program == "sshpass") && arg.len() > 2 && arg.starts_with(b"-p") {
                arg.truncate(2);
                arg.extend_from_slice(MASK);
                done.add("p_attached");
                continue;
            }
            if let Cow::Owned(new) = self.apply(arg, &mut done) {
                *arg = new;
            }
        }
        done
    }

    /// Redacts free text (a command line not split into arguments, a shell
    /// script given with `-c`).
    pub fn text<'a>(&self, text: &'a [u8]) -> (Cow<'a, [u8]>, Redactions) {
        let mut done = Redactions::default();
        let out = self.apply(text, &mut done);
        (out, done)
    }

    /// Every inline rule over `input`, in order.
    fn apply<'a>(&self, input: &'a [u8], done: &mut Redactions) -> Cow<'a, [u8]> {
        let mut cur: Cow<'a, [u8]> = Cow::Borrowed(input);
        for r in &self.inline {
            let scan = &cur[..cur.len().min(MAX_SCAN)];
            if !r.re.is_match(scan) {
                continue;
            }
            let mut out = Vec::with_capacity(cur.len());
            let mut last = 0;
            for caps in r.re.captures_iter(scan) {
                let Some(m) = caps.name("secret").or_else(|| caps.get(0)) else {
                    continue;
                };
                // Already masked by an earlier rule: not a second secret.
                if m.start() < last || m.is_empty() || &scan[m.range()] == MASK {
                    continue;
                }
                out.extend_from_slice(&cur[last..m.start()]);
                out.extend_from_slice(MASK);
                last = m.end();
                done.add(&r.name);
            }
            out.extend_from_slice(&cur[last..]);
            cur = Cow::Owned(out);
        }
        cur
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn red(v: &[&str]) -> (Vec<String>, Redactions) {
        let mut a = args(v);
        let done = Redactor::default().argv(&mut a);
        (
            a.into_iter()
                .map(|x| String::from_utf8(x).unwrap())
                .collect(),
            done,
        )
    }

    const SECRET: &str = "Hunter2-s3cr3t-MARKER";

    #[test]
    fn options_keep_their_name_and_lose_their_value() {
        for (argv, want) in [
            (
                vec!["tool", "--password=S"],
                vec!["tool", "--password=[REDACTED]"],
            ),
            (
                vec!["tool", "--api-key=S", "x"],
                vec!["tool", "--api-key=[REDACTED]", "x"],
            ),
            (vec!["tool", "-token:S"], vec!["tool", "-token:[REDACTED]"]),
            (
                vec!["tool", "--password", "S", "next"],
                vec!["tool", "--password", "[REDACTED]", "next"],
            ),
            (
                vec!["tool", "--client-secret", "S"],
                vec!["tool", "--client-secret", "[REDACTED]"],
            ),
            (
                vec!["/usr/bin/mysql", "-uroot", "-pS", "db"],
                vec!["/usr/bin/mysql", "-uroot", "-p[REDACTED]", "db"],
            ),
            (
                vec!["sshpass", "-p", "S", "ssh", "host"],
                vec!["sshpass", "-p", "[REDACTED]", "ssh", "host"],
            ),
            (
                vec!["curl", "-u", "alice:S", "https://x"],
                vec!["curl", "-u", "alice:[REDACTED]", "https://x"],
            ),
        ] {
            let argv: Vec<String> = argv.iter().map(|a| a.replace('S', SECRET)).collect();
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let (got, done) = red(&argv);
            assert_eq!(got, want, "{argv:?}");
            assert_eq!(done.total(), 1, "{argv:?}");
            assert!(!got.concat().contains("MARKER"));
        }
    }

    #[test]
    fn secrets_inside_arguments_and_text_are_found() {
        let r = Redactor::default();
        for (text, rule) in [
            (
                "git clone https://bob:Hunter2-s3cr3t@example.com/r.git",
                "url_credentials",
            ),
            (
                "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def'",
                "bearer_token",
            ),
            (
                "aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE",
                "aws_access_key_id",
            ),
            (
                "export aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key",
            ),
            (
                "gh auth login --with-token ghp_0123456789abcdefghijABCDEFGHIJ012345",
                "github_token",
            ),
            ("notify xoxb-1234567890-abcdefghij", "slack_token"),
            (
                "fetch AIzaSyA-1234567890abcdefghijklmnopqrstu",
                "google_api_key",
            ),
            (
                "echo '-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----'",
                "private_key",
            ),
            ("sh -c 'DB_PASSWORD=Hunter2 ./migrate'", "secret_assignment"),
        ] {
            let (out, done) = r.text(text.as_bytes());
            let out = String::from_utf8(out.into_owned()).unwrap();
            assert!(out.contains("[REDACTED]"), "{text} → {out}");
            assert_eq!(done.counts()[0].0, rule, "{text}");
            for secret in [
                "Hunter2",
                "eyJhbG",
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrX",
                "ghp_0123",
                "xoxb-1234",
                "AIzaSyA",
                "MIIEow",
            ] {
                assert!(!out.contains(secret), "{text} → {out}");
            }
        }
        // What stays: the user of a URL, the option, the scheme word.
        let (out, _) = r.text(b"https://bob:pw123456@host/x");
        assert_eq!(out.as_ref(), b"https://bob:[REDACTED]@host/x");
        let (out, _) = r.text(b"Authorization: Bearer abcdefgh12345");
        assert_eq!(out.as_ref(), b"Authorization: Bearer [REDACTED]");
    }

    #[test]
    fn ordinary_command_lines_are_left_alone() {
        let r = Redactor::default();
        for text in [
            "ls -la /etc",
            "cat /etc/shadow",
            "passwd alice",
            "tool --password-file=/etc/app/pw",
            "ssh -p 2222 host",
            "psql -h db -U app",
            "https://example.com/path?x=1",
            "grep -r token src/",
            "mysql -h db -u root -p",
        ] {
            let (out, done) = r.text(text.as_bytes());
            assert!(matches!(out, Cow::Borrowed(_)), "{text}");
            assert!(done.is_empty(), "{text}: {done:?}");
        }
        // `-p` alone (a prompt) and `ssh -p PORT` are not secrets.
        let (got, done) = red(&["mysql", "-u", "root", "-p"]);
        assert_eq!(got, ["mysql", "-u", "root", "-p"]);
        assert!(done.is_empty());
        let (got, _) = red(&["ssh", "-p", "2222", "host"]);
        assert_eq!(got, ["ssh", "-p", "2222", "host"]);
    }

    #[test]
    fn configured_rules_add_to_the_defaults_and_bad_ones_are_refused() {
        let r = Redactor::with_rules(&[("ticket".into(), r"TICKET-(?P<secret>[0-9]{6})".into())])
            .unwrap();
        let (out, done) = r.text(b"deploy TICKET-123456 now");
        assert_eq!(out.as_ref(), b"deploy TICKET-[REDACTED] now");
        assert_eq!(done.counts(), &[("ticket".to_string(), 1)]);
        let e = Redactor::with_rules(&[("broken".into(), "(".into())]).unwrap_err();
        assert!(e.to_string().contains("`broken`"), "{e}");
    }

    #[test]
    fn any_bytes_are_taken_without_panic() {
        let r = Redactor::default();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let len = (x % 300) as usize;
            let mut arg = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias toward the characters the rules look for.
                const ALPHABET: &[u8] = b"-=:@/ pP\xffAKIAtokenBearer";
                arg.push(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
            }
            let mut argv = vec![b"mysql".to_vec(), arg.clone(), b"-p".to_vec(), arg];
            let done = r.argv(&mut argv);
            let (_, more) = r.text(&argv.concat());
            assert!(done.total() + more.total() < 10_000);
        }
    }

    #[test]
    fn non_utf8_and_huge_arguments_are_handled() {
        let mut a = vec![b"tool".to_vec(), b"--password=\xff\xfe secret".to_vec()];
        let done = Redactor::default().argv(&mut a);
        assert_eq!(a[1], b"--password=[REDACTED]");
        assert_eq!(done.total(), 1);
        let mut big = b"x".repeat(1 << 20);
        big.extend_from_slice(b" https://u:p@h");
        let (out, done) = Redactor::default().text(&big);
        // Past the scanned bound nothing is looked at (bounded work).
        assert!(done.is_empty());
        assert_eq!(out.len(), big.len());
    }
}
