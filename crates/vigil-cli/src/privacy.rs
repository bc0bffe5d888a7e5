//! `vigil privacy ...`: the tenant's privacy policy for its sensors, what it
//! holds of each data level, and re-identification of pseudonyms (tenant admin;
//! `show` also for auditors).

use crate::client::{Api, rpc};
use crate::display::{fields, print};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;
use vigil_proto::v1::{
    DataLevel, GetPrivacyRequest, PrivacyInfo, RedactionPattern, ReidentifyRequest,
    SetPrivacyPolicyRequest,
};

#[derive(Subcommand)]
pub enum PrivacyCommand {
    /// The policy sensors follow and how much the tenant holds of each data level.
    Show,
    /// Replace the policy; connected sensors apply it at once.
    Set {
        /// Sensors send optional data (their own diagnostics).
        #[arg(long, value_name = "on|off")]
        optional_data: OnOff,
        /// Sensors replace user names, host names and home directories by pseudonyms.
        #[arg(long, value_name = "on|off")]
        pseudonymize: OnOff,
        /// A redaction pattern added to the sensors' defaults: NAME=REGEX, the
        /// regex with a group named `secret` (repeatable).
        #[arg(long = "redact", value_name = "NAME=REGEX")]
        redact: Vec<String>,
    },
    /// Which of the candidate identities each pseudonym stands for (audited).
    Reidentify {
        /// Pseudonyms as records show them (`pnu-…`, `pnh-…`).
        #[arg(required = true)]
        pseudonyms: Vec<String>,
        /// A candidate identity (repeatable).
        #[arg(long = "candidate", value_name = "NAME")]
        candidates: Vec<String>,
        /// A file of candidate identities, one per line (a directory export).
        #[arg(long, value_name = "FILE")]
        candidates_file: Option<PathBuf>,
        /// Why: kept in the tenant's audit trail.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

fn pattern(s: &str) -> Result<RedactionPattern> {
    let Some((name, regex)) = s.split_once('=') else {
        bail!("--redact: expected NAME=REGEX, got `{s}`");
    };
    Ok(RedactionPattern {
        name: name.to_owned(),
        regex: regex.to_owned(),
    })
}

pub async fn run(api: &Api, cmd: PrivacyCommand, json: bool) -> Result<()> {
    let mut client = api.privacy();
    match cmd {
        PrivacyCommand::Show => {
            let info = client
                .get_privacy(GetPrivacyRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            show(&info, json)
        }
        PrivacyCommand::Set {
            optional_data,
            pseudonymize,
            redact,
        } => {
            let redact = redact.iter().map(|s| pattern(s)).collect::<Result<_>>()?;
            let info = client
                .set_privacy_policy(SetPrivacyPolicyRequest {
                    optional_data: matches!(optional_data, OnOff::On),
                    pseudonymize: matches!(pseudonymize, OnOff::On),
                    redact,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            show(&info, json)
        }
        PrivacyCommand::Reidentify {
            pseudonyms,
            mut candidates,
            candidates_file,
            reason,
        } => {
            if let Some(f) = candidates_file {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading --candidates-file {}", f.display()))?;
                candidates.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
            }
            let r = client
                .reidentify(ReidentifyRequest {
                    pseudonyms,
                    candidates,
                    reason,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                let v: Vec<Value> = r
                    .results
                    .iter()
                    .map(|x| json!({"pseudonym": x.pseudonym, "identity": x.identity, "kind": x.kind}))
                    .collect();
                out!("{}", Value::Array(v));
            } else {
                for x in &r.results {
                    let who = if x.kind.is_empty() {
                        "not a pseudonym".to_owned()
                    } else if x.identity.is_empty() {
                        format!("{}: none of the candidates", x.kind)
                    } else {
                        format!("{} {}", x.kind, x.identity)
                    };
                    out!("{}  {who}", x.pseudonym);
                }
            }
            Ok(())
        }
    }
}

fn level_name(level: i32) -> &'static str {
    match DataLevel::try_from(level) {
        Ok(DataLevel::Required) => "required",
        Ok(DataLevel::Optional) => "optional",
        _ => "unspecified",
    }
}

pub fn show_json(info: &PrivacyInfo) -> Value {
    let p = info.policy.clone().unwrap_or_default();
    json!({
        "policy": {
            "version": p.version,
            "optional_data": p.optional_data,
            "pseudonymize": p.pseudonymize,
            "redact": p.redact.iter().map(|r| json!({"name": r.name, "regex": r.regex})).collect::<Vec<_>>(),
        },
        "held": info.held.iter().map(|h| json!({
            "level": level_name(h.level), "records": h.records, "bytes": h.bytes,
        })).collect::<Vec<_>>(),
    })
}

pub fn show_fields(info: &PrivacyInfo) -> Vec<(&'static str, String)> {
    let p = info.policy.clone().unwrap_or_default();
    let on = |b: bool| if b { "on" } else { "off" }.to_owned();
    let mut out = vec![
        ("Policy version", p.version.to_string()),
        ("Optional data", on(p.optional_data)),
        ("Pseudonyms", on(p.pseudonymize)),
        (
            "Redaction",
            if p.redact.is_empty() {
                "defaults".to_owned()
            } else {
                format!(
                    "defaults + {}",
                    p.redact
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        ),
    ];
    for h in &info.held {
        let label = match DataLevel::try_from(h.level) {
            Ok(DataLevel::Optional) => "Held, optional",
            _ => "Held, required",
        };
        out.push((
            label,
            format!(
                "{} records, {}",
                h.records,
                crate::display::human_bytes(h.bytes)
            ),
        ));
    }
    out
}

fn show(info: &PrivacyInfo, json: bool) -> Result<()> {
    if json {
        out!("{}", show_json(info));
        Ok(())
    } else {
        print(&fields(&show_fields(info)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::v1::{LevelHeld, SensorPolicy};

    #[test]
    fn show_names_the_policy_and_both_levels() {
        let info = PrivacyInfo {
            policy: Some(SensorPolicy {
                version: 2,
                optional_data: false,
                pseudonymize: true,
                redact: vec![pattern("ticket=TKT-(?P<secret>[0-9]+)").unwrap()],
            }),
            held: vec![
                LevelHeld {
                    level: DataLevel::Required as i32,
                    records: 10,
                    bytes: 900,
                },
                LevelHeld {
                    level: DataLevel::Optional as i32,
                    records: 0,
                    bytes: 0,
                },
            ],
        };
        let f = show_fields(&info);
        assert!(f.contains(&("Pseudonyms", "on".into())));
        assert!(f.contains(&("Optional data", "off".into())));
        assert!(f.contains(&("Redaction", "defaults + ticket".into())));
        assert!(f.contains(&("Held, required", "10 records, 900 B".into())));
        let j = show_json(&info);
        assert_eq!(j["held"][1]["level"], "optional");
        assert_eq!(j["policy"]["redact"][0]["regex"], "TKT-(?P<secret>[0-9]+)");
        assert!(pattern("no-equals").is_err());
    }
}
