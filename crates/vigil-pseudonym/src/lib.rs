//! Keyed pseudonyms for the identifying values of records: user names, host
//! names and the home-directory segment of paths (`/home/alice/…` →
//! `/home/pnu-…/…`), replaced on the device when a tenant's policy asks.
//!
//! A pseudonym is the kind's prefix and the first 80 bits of
//! HMAC-SHA-256(tenant key, kind NUL value) in lowercase base32: the same value
//! gives the same pseudonym on every device of a tenant (analysts can still
//! group and correlate), and nothing links it to the pseudonym another tenant's
//! key gives. Re-identification needs the key and a guess: [`Pseudonymizer::
//! reidentify`] says which of the candidate values a pseudonym stands for.
//!
//! A user name is one person's only for human accounts: names of system
//! accounts (uid below 1000 or above 60000, as `login.defs` sets them) stay,
//! so rules about `root` or `www-data` keep matching.
//!
//! What this crate is not: it does no I/O, holds no key store, and does not
//! find names in free text beyond home-directory paths.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::borrow::Cow;
use zeroize::Zeroizing;

/// What a pseudonym stands for. The tags are part of every pseudonym: never change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A user name, also as a home-directory segment.
    User,
    /// A host name.
    Host,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Host => "host",
        }
    }

    /// The prefix of this kind's pseudonyms.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::User => "pnu-",
            Kind::Host => "pnh-",
        }
    }

    /// The kind a pseudonym is of, when `s` has the form of one.
    pub fn of_pseudonym(s: &str) -> Option<Kind> {
        [Kind::User, Kind::Host].into_iter().find(|k| {
            s.strip_prefix(k.prefix()).is_some_and(|rest| {
                rest.len() == DIGITS && rest.bytes().all(|b| BASE32.contains(&b))
            })
        })
    }
}

const DIGITS: usize = 16;
const BASE32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The range of human accounts' uids (`login.defs`: UID_MIN, UID_MAX).
pub const HUMAN_UIDS: std::ops::RangeInclusive<u32> = 1000..=60000;

/// Where home directories are: the segment after one of these is a user's.
const HOMES: [&[u8]; 2] = [b"/home/", b"/var/home/"];

/// Makes a tenant's pseudonyms.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer { key: <hidden> }")
    }
}

impl Pseudonymizer {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(key),
        }
    }

    /// The pseudonym of `value` as a `kind`. A value that already is a
    /// pseudonym is returned as it is (so replacing twice changes nothing).
    pub fn pseudonym(&self, kind: Kind, value: &[u8]) -> String {
        if let Ok(s) = std::str::from_utf8(value)
            && Kind::of_pseudonym(s).is_some()
        {
            return s.to_owned();
        }
        // HMAC takes a key of any length: new_from_slice cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.key.as_ref()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(kind.tag().as_bytes());
        mac.update(&[0]);
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(kind.prefix().len() + DIGITS);
        out.push_str(kind.prefix());
        out.push_str(
            &data_encoding::BASE32_NOPAD
                .encode(&digest[..10])
                .to_ascii_lowercase(),
        );
        out
    }

    /// A user name: its pseudonym for a human account; a system account's
    /// name (by `uid`, when known) and the empty name unchanged.
    pub fn user<'a>(&self, name: &'a str, uid: Option<u32>) -> Cow<'a, str> {
        if name.is_empty() || uid.is_some_and(|u| !HUMAN_UIDS.contains(&u)) || name == "root" {
            return Cow::Borrowed(name);
        }
        Cow::Owned(self.pseudonym(Kind::User, name.as_bytes()))
    }

    pub fn host<'a>(&self, name: &'a str) -> Cow<'a, str> {
        if name.is_empty() {
            return Cow::Borrowed(name);
        }
        Cow::Owned(self.pseudonym(Kind::Host, name.as_bytes()))
    }

    /// A path (or any text holding paths, such as a command line) with the
    /// segment after every home directory (`/home/`, `/var/home/`) replaced by
    /// the user's pseudonym. A home directory counts only where a path can
    /// start: at the beginning, or after a space, quote, `=`, `:` or `,`.
    pub fn home_segments<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut i = 0;
        while i < text.len() {
            let starts = i == 0
                || matches!(
                    text[i - 1],
                    b' ' | b'\t' | b'"' | b'\'' | b'=' | b':' | b','
                );
            let home = if starts {
                HOMES.iter().find(|h| text[i..].starts_with(h))
            } else {
                None
            };
            let Some(home) = home else {
                i += 1;
                continue;
            };
            let seg_start = i + home.len();
            let seg_len = text[seg_start..]
                .iter()
                .position(|b| {
                    matches!(
                        b,
                        b'/' | b' ' | b'\t' | b'"' | b'\'' | b':' | b',' | b';' | 0
                    )
                })
                .unwrap_or(text.len() - seg_start);
            if seg_len == 0 {
                i = seg_start;
                continue;
            }
            let seg = &text[seg_start..seg_start + seg_len];
            let o = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 16));
            o.extend_from_slice(&text[copied..seg_start]);
            o.extend_from_slice(self.pseudonym(Kind::User, seg).as_bytes());
            copied = seg_start + seg_len;
            i = copied;
        }
        match out {
            None => Cow::Borrowed(text),
            Some(mut o) => {
                o.extend_from_slice(&text[copied..]);
                Cow::Owned(o)
            }
        }
    }

    /// [`Self::home_segments`] of a string (valid UTF-8 stays valid: only
    /// whole segments between ASCII delimiters are replaced).
    pub fn home_segments_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.home_segments(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
        }
    }

    /// Which of `candidates` the pseudonym stands for, if any. `None` also
    /// when `pseudonym` does not have the form of one.
    pub fn reidentify<'c>(
        &self,
        pseudonym: &str,
        candidates: impl IntoIterator<Item = &'c str>,
    ) -> Option<&'c str> {
        let kind = Kind::of_pseudonym(pseudonym)?;
        candidates
            .into_iter()
            .find(|c| self.pseudonym(kind, c.as_bytes()) == pseudonym)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn p(k: u8) -> Pseudonymizer {
        Pseudonymizer::new([k; 32])
    }

    #[test]
    fn stable_within_a_key_and_different_across_keys() {
        let a = p(1).user("alice", Some(1000)).into_owned();
        assert_eq!(a, p(1).user("alice", Some(1001)));
        assert_ne!(a, p(2).user("alice", Some(1000)));
        assert_ne!(a, p(1).user("bob", Some(1000)));
        assert_eq!(Kind::of_pseudonym(&a), Some(Kind::User));
        // A user and a host of the same name are different pseudonyms.
        assert_ne!(a[4..], p(1).host("alice")[4..]);
        assert_eq!(Kind::of_pseudonym(&p(1).host("web-01")), Some(Kind::Host));
        // Replacing twice changes nothing.
        assert_eq!(p(1).user(&a, Some(1000)), a);
    }

    #[test]
    fn system_accounts_and_empty_names_stay() {
        for (name, uid) in [
            ("root", Some(0)),
            ("www-data", Some(33)),
            ("nobody", Some(65534)),
            ("root", None),
            ("", Some(1000)),
        ] {
            assert_eq!(p(1).user(name, uid), name);
        }
        assert_ne!(p(1).user("alice", None), "alice");
    }

    #[test]
    fn home_segments_in_paths_and_command_lines() {
        let k = p(3);
        let alice = k.pseudonym(Kind::User, b"alice");
        let bob = k.pseudonym(Kind::User, b"bob");
        for (input, want) in [
            (
                "/home/alice/.ssh/id_rsa".to_owned(),
                format!("/home/{alice}/.ssh/id_rsa"),
            ),
            ("/home/alice".to_owned(), format!("/home/{alice}")),
            (
                "/var/home/alice/x".to_owned(),
                format!("/var/home/{alice}/x"),
            ),
            (
                "cp /home/alice/a '/home/bob/b c' --to=/home/bob:/home/alice".to_owned(),
                format!("cp /home/{alice}/a '/home/{bob}/b c' --to=/home/{bob}:/home/{alice}"),
            ),
            // Not a home directory: inside another path, or no segment.
            (
                "/opt/app/home/alice".to_owned(),
                "/opt/app/home/alice".to_owned(),
            ),
            ("/home/".to_owned(), "/home/".to_owned()),
            ("/usr/bin/ls -l".to_owned(), "/usr/bin/ls -l".to_owned()),
        ] {
            assert_eq!(k.home_segments_str(&input), want, "{input}");
        }
        // Bytes that are not UTF-8 are kept around the replaced segment.
        let got = k.home_segments(b"/home/al\xffice/\xfe");
        let seg = k.pseudonym(Kind::User, b"al\xffice");
        assert_eq!(
            got.as_ref(),
            [b"/home/".as_ref(), seg.as_bytes(), b"/\xfe"].concat()
        );
    }

    #[test]
    fn reidentify_finds_the_candidate_only_under_the_same_key() {
        let a = p(1).user("alice", None).into_owned();
        let h = p(1).host("db-7").into_owned();
        assert_eq!(p(1).reidentify(&a, ["bob", "alice"]), Some("alice"));
        assert_eq!(p(1).reidentify(&h, ["alice", "db-7"]), Some("db-7"));
        assert_eq!(p(2).reidentify(&a, ["bob", "alice"]), None);
        assert_eq!(p(1).reidentify("alice", ["alice"]), None);
    }

    proptest! {
        #[test]
        fn home_segments_never_panics_and_keeps_what_is_not_a_segment(text in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = p(9);
            let out = k.home_segments(&text);
            if !text.windows(6).any(|w| w == b"/home/") {
                prop_assert_eq!(out.as_ref(), text.as_slice());
            }
            // Replacing again changes nothing.
            let again = k.home_segments(&out).into_owned();
            prop_assert_eq!(again, out.into_owned());
        }
    }
}
