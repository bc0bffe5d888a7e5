//! `vigil rules publish | versions | rollback`: the tenant's published rule
//! sets (Rules service). Publishing sends the rule files' text; the server
//! compiles them and refuses the set, naming each rejected rule's file and
//! line, when any does not load.

use crate::client::{Api, rpc};
use crate::display::{Table, print, time_json, time_or_dash};
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use vigil_proto::v1::{
    ListRuleVersionsRequest, PublishRulesRequest, RollbackRulesRequest, RuleFile, RuleSetInfo,
    rules_client::RulesClient,
};

/// Longest rule file read (bytes), as the rule engine allows.
const MAX_FILE: u64 = 4 << 20;
/// Directory walks stop this deep.
const MAX_DEPTH: usize = 32;

#[derive(Subcommand)]
pub enum PublishCommand {
    /// Publish rule files (or directories of them) as the tenant's next rule set version.
    Publish {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The tenant's published versions.
    Versions {
        #[arg(long)]
        json: bool,
    },
    /// Make an older version current again (as a new version).
    Rollback {
        version: u64,
        #[arg(long)]
        json: bool,
    },
}

fn collect(p: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
    if meta.is_dir() {
        anyhow::ensure!(depth < MAX_DEPTH, "{}: too deep", p.display());
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            collect(&e, depth + 1, out)?;
        }
    } else {
        let name = p.to_string_lossy();
        let rule = (name.ends_with(".yml") || name.ends_with(".yaml"))
            && !name.ends_with(".tests.yml")
            && !name.ends_with(".tests.yaml");
        if rule || depth == 0 {
            anyhow::ensure!(
                meta.len() <= MAX_FILE,
                "{}: larger than {MAX_FILE} bytes",
                p.display()
            );
            out.push(p.to_owned());
        }
    }
    Ok(())
}

pub fn read_files(paths: &[PathBuf]) -> Result<Vec<RuleFile>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, 0, &mut files)?;
    }
    files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            Ok(RuleFile {
                path: f.display().to_string(),
                text,
            })
        })
        .collect()
}

fn info_json(v: &RuleSetInfo) -> Value {
    json!({
        "version": v.version,
        "current": v.current,
        "published": time_json(v.published_unix_ns),
        "author": v.author,
        "files": v.files,
        "rules": v.rules,
        "bytes": v.bytes,
        "copied_from": v.copied_from,
    })
}

pub async fn run(api: &Api, cmd: PublishCommand) -> Result<()> {
    let mut client = RulesClient::new(api.authed())
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    match cmd {
        PublishCommand::Publish {
            paths,
            json: as_json,
        } => {
            let files = read_files(&paths)?;
            let r = client
                .publish_rules(PublishRulesRequest { files })
                .await
                .map_err(rpc)?
                .into_inner();
            let v = r.published.unwrap_or_default();
            if as_json {
                out!("{}", info_json(&v));
            } else {
                out!(
                    "published version {} ({} rules from {} files)",
                    v.version,
                    v.rules,
                    v.files
                );
            }
        }
        PublishCommand::Versions { json: as_json } => {
            let r = client
                .list_rule_versions(ListRuleVersionsRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if as_json {
                for v in &r.versions {
                    out!("{}", info_json(v));
                }
            } else if r.versions.is_empty() {
                eprintln!("no rule set published");
            } else {
                let mut t =
                    Table::new(&["version", "current", "published", "author", "rules", "from"]);
                for v in &r.versions {
                    t.row(vec![
                        v.version.to_string(),
                        if v.current { "*".into() } else { String::new() },
                        time_or_dash(v.published_unix_ns),
                        v.author.clone(),
                        v.rules.to_string(),
                        if v.copied_from == 0 {
                            "-".into()
                        } else {
                            v.copied_from.to_string()
                        },
                    ]);
                }
                print(&t.lines())?;
            }
        }
        PublishCommand::Rollback {
            version,
            json: as_json,
        } => {
            let v = client
                .rollback_rules(RollbackRulesRequest { version })
                .await
                .map_err(rpc)?
                .into_inner();
            if as_json {
                out!("{}", info_json(&v));
            } else {
                out!(
                    "version {} is current (the rules of version {version})",
                    v.version
                );
            }
        }
    }
    Ok(())
}
