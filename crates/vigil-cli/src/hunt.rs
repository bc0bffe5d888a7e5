//! `vigil hunt ...`: search a tenant's stored records, walk a process
//! tree, see where a file was seen, and watch records as they are stored
//! (the Hunt service; admin, analyst and read-only tokens).

use crate::client::{Api, rpc};
use crate::display::{Table, print, rfc3339, row_line, time_json, time_or_dash};
use crate::{records, tree};
use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;
use tokio_stream::StreamExt;
use vigil_proto::v1::{
    FieldCondition, FilePrevalenceRequest, FilePrevalenceResponse, GetProcessTreeRequest, MatchOp,
    SearchEventsRequest, StoredRecord,
};

#[derive(Subcommand)]
pub enum HuntCommand {
    /// Stored records that match, oldest first per device, printed as they arrive.
    Search {
        #[command(flatten)]
        filters: Filters,
        /// Only records observed from T on: RFC 3339 (2026-12-07T10:00:00Z) or back from now (90s, 15m, 2h, 7d).
        #[arg(long, value_name = "T", value_parser = parse_time_arg)]
        since: Option<i64>,
        /// Only records observed up to T (written as for --since).
        #[arg(long, value_name = "T", value_parser = parse_time_arg)]
        until: Option<i64>,
        /// Stop after N records.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// A process with its ancestors and children, and the events of each.
    ProcessTree {
        /// Process GUID (as `hunt search` prints it).
        guid: String,
        /// Events of each process, at most (the server's default: 200).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=5000))]
        max_events: Option<u32>,
    },
    /// Which devices saw a file, by hash (SHA-256 or BLAKE3, hex) or absolute path.
    Prevalence {
        #[arg(value_name = "SHA256|BLAKE3|PATH")]
        hash_or_path: String,
    },
    /// Records as they are stored, matching the filters; Ctrl-C stops.
    Watch {
        #[command(flatten)]
        filters: Filters,
    },
}

/// What `search` and `watch` both filter on.
#[derive(clap::Args)]
pub struct Filters {
    /// Only this device's records.
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Only records of this kind.
    #[arg(long, value_name = "KIND", value_parser = clap::builder::PossibleValuesParser::new(records::KINDS))]
    kind: Option<String>,
    /// FIELD=VALUE (equals), FIELD^=PREFIX (starts with), FIELD*=TEXT (contains, any case); all must hold.
    /// FIELD is a Sigma field (Image, CommandLine, TargetFilename, DestinationIp, …) or ProcessGuid,
    /// ParentProcessGuid, sha256, blake3, DeviceId.
    #[arg(value_name = "CONDITION", value_parser = parse_condition)]
    conditions: Vec<FieldCondition>,
}

impl Filters {
    fn request(self) -> SearchEventsRequest {
        SearchEventsRequest {
            device_id: self.device.unwrap_or_default(),
            kind: self.kind.unwrap_or_default(),
            conditions: self.conditions,
            ..Default::default()
        }
    }
}

/// A condition as written on the command line: the field is what comes
/// before the first `=` (so values may hold `=`), and a `^` or `*` ending
/// it chooses the match.
pub fn parse_condition(arg: &str) -> Result<FieldCondition, String> {
    let Some((field, value)) = arg.split_once('=') else {
        return Err(format!(
            "`{arg}` has no `=`: write FIELD=VALUE, FIELD^=PREFIX or FIELD*=TEXT"
        ));
    };
    let (field, op) = if let Some(f) = field.strip_suffix('^') {
        (f, MatchOp::Prefix)
    } else if let Some(f) = field.strip_suffix('*') {
        (f, MatchOp::Contains)
    } else {
        (field, MatchOp::Equals)
    };
    if field.trim().is_empty() {
        return Err(format!("`{arg}` names no field before `=`"));
    }
    Ok(FieldCondition {
        field: field.to_owned(),
        op: op as i32,
        value: value.to_owned(),
    })
}

fn parse_time_arg(s: &str) -> Result<i64, String> {
    crate::display::parse_time(s, crate::display::now_ns()).map_err(|e| format!("{e:#}"))
}

/// A hash as lowercase hex (64 digits: SHA-256 or BLAKE3, the server tells
/// which), or an absolute path as given.
pub fn hash_or_path(s: &str) -> Result<String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        bail!("`{s}` is neither a hash (64 hex digits: SHA-256 or BLAKE3) nor an absolute path")
    }
}

pub async fn run(api: &Api, cmd: HuntCommand, json: bool) -> Result<()> {
    match cmd {
        HuntCommand::Search {
            filters,
            since,
            until,
            limit,
        } => {
            if let (Some(s), Some(u)) = (since, until)
                && s >= u
            {
                bail!(
                    "--since {} is not before --until {}",
                    rfc3339(s),
                    rfc3339(u)
                );
            }
            let req = SearchEventsRequest {
                since_unix_ns: since.unwrap_or(0),
                until_unix_ns: until.unwrap_or(0),
                limit: limit.unwrap_or(0),
                ..filters.request()
            };
            search(api, req, json).await
        }
        HuntCommand::ProcessTree { guid, max_events } => {
            let t = api
                .hunt()
                .get_process_tree(GetProcessTreeRequest {
                    guid,
                    max_events: max_events.unwrap_or(0),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                out!("{}", tree::to_json(&t));
            } else {
                print(&tree::lines(&t, usize::MAX))?;
            }
            Ok(())
        }
        HuntCommand::Prevalence { hash_or_path: s } => {
            let r = api
                .hunt()
                .file_prevalence(FilePrevalenceRequest {
                    hash_or_path: hash_or_path(&s)?,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if r.devices.is_empty() {
                eprintln!("seen on no device");
            } else if json {
                for v in prevalence_json(&r) {
                    out!("{v}");
                }
            } else {
                out!(
                    "matched as {}, on {} device(s)",
                    crate::display::clean(&r.matched_as),
                    r.devices.len()
                );
                print(&prevalence_table(&r).lines())?;
            }
            Ok(())
        }
        HuntCommand::Watch { filters } => watch(api, filters.request(), json).await,
    }
}

/// Prints records: JSON lines, or table rows under one header.
struct Printer {
    json: bool,
    headed: bool,
    printed: u64,
}

impl Printer {
    fn new(json: bool) -> Printer {
        Printer {
            json,
            headed: false,
            printed: 0,
        }
    }

    fn header(&mut self) -> Result<()> {
        if !self.json && !self.headed {
            let header = records::HEADER.map(str::to_owned);
            out!("{}", row_line(&records::WIDTHS, &header));
            self.headed = true;
        }
        Ok(())
    }

    fn record(&mut self, s: &StoredRecord) -> Result<()> {
        if self.json {
            let r = s.record.clone().unwrap_or_default();
            out!("{}", records::to_json(&s.device_id, &s.hostname, &r));
        } else {
            self.header()?;
            out!("{}", row_line(&records::WIDTHS, &records::row(s)));
        }
        self.printed += 1;
        Ok(())
    }
}

/// Prints each page as it arrives (nothing is buffered), and stops after
/// `limit` records even if the server sent more.
async fn search(api: &Api, req: SearchEventsRequest, json: bool) -> Result<()> {
    let limit = u64::from(req.limit);
    let mut pages = api
        .hunt()
        .search_events(req)
        .await
        .map_err(rpc)?
        .into_inner();
    let mut p = Printer::new(json);
    let mut chunks = 0;
    'pages: while let Some(page) = pages.next().await {
        let page = page.map_err(rpc)?;
        chunks = page.chunks_scanned;
        for s in &page.records {
            if limit > 0 && p.printed >= limit {
                break 'pages;
            }
            p.record(s)?;
        }
    }
    if !json {
        match p.printed {
            0 => eprintln!("no records matched ({chunks} chunks scanned)"),
            1 => eprintln!("1 record matched ({chunks} chunks scanned)"),
            n => eprintln!("{n} records matched ({chunks} chunks scanned)"),
        }
    }
    Ok(())
}

async fn watch(api: &Api, req: SearchEventsRequest, json: bool) -> Result<()> {
    let mut records = api
        .hunt()
        .watch_events(req)
        .await
        .map_err(rpc)?
        .into_inner();
    let mut p = Printer::new(json);
    // The header at once: a watch may stay quiet for a long time.
    p.header()?;
    while let Some(s) = records.next().await {
        p.record(&s.map_err(rpc)?)?;
    }
    Ok(())
}

pub fn prevalence_table(r: &FilePrevalenceResponse) -> Table {
    let mut t = Table::new(&["device", "hostname", "first seen", "last seen", "count"]);
    for d in &r.devices {
        t.row(vec![
            d.device_id.clone(),
            crate::display::or_dash(&d.hostname),
            time_or_dash(d.first_seen_unix_ns),
            time_or_dash(d.last_seen_unix_ns),
            d.count.to_string(),
        ]);
    }
    t
}

/// One object per device.
pub fn prevalence_json(r: &FilePrevalenceResponse) -> Vec<serde_json::Value> {
    r.devices
        .iter()
        .map(|d| {
            json!({
                "matched_as": r.matched_as,
                "device_id": d.device_id,
                "hostname": d.hostname,
                "first_seen": time_json(d.first_seen_unix_ns),
                "first_seen_unix_ns": d.first_seen_unix_ns,
                "last_seen": time_json(d.last_seen_unix_ns),
                "last_seen_unix_ns": d.last_seen_unix_ns,
                "count": d.count,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::v1::DeviceSighting;

    fn cond(field: &str, op: MatchOp, value: &str) -> FieldCondition {
        FieldCondition {
            field: field.into(),
            op: op as i32,
            value: value.into(),
        }
    }

    #[test]
    fn conditions_of_every_op() {
        assert_eq!(
            parse_condition("Image=/usr/bin/cat").unwrap(),
            cond("Image", MatchOp::Equals, "/usr/bin/cat")
        );
        assert_eq!(
            parse_condition("Image^=/tmp/").unwrap(),
            cond("Image", MatchOp::Prefix, "/tmp/")
        );
        assert_eq!(
            parse_condition("CommandLine*=base64 -d").unwrap(),
            cond("CommandLine", MatchOp::Contains, "base64 -d")
        );
    }

    #[test]
    fn values_may_hold_equals_signs_and_op_characters() {
        assert_eq!(
            parse_condition("CommandLine*=--opt=a=b").unwrap(),
            cond("CommandLine", MatchOp::Contains, "--opt=a=b")
        );
        assert_eq!(
            parse_condition("CommandLine=x^=y").unwrap(),
            cond("CommandLine", MatchOp::Equals, "x^=y")
        );
        assert_eq!(
            parse_condition("CommandLine==").unwrap(),
            cond("CommandLine", MatchOp::Equals, "=")
        );
        // An empty value is the server's to judge (an empty field value).
        assert_eq!(
            parse_condition("User=").unwrap(),
            cond("User", MatchOp::Equals, "")
        );
    }

    #[test]
    fn bad_conditions_name_the_argument() {
        for bad in ["Image", "", "^=x", "*=x", "=x", " =x"] {
            let e = parse_condition(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(parse_condition("Image").unwrap_err().contains("no `=`"));
        assert!(parse_condition("^=x").unwrap_err().contains("no field"));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        hunt: HuntCommand,
    }

    fn parse(args: &[&str]) -> Result<HuntCommand, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("hunt").chain(args.iter().copied())).map(|c| c.hunt)
    }

    #[test]
    fn search_arguments_make_the_request() {
        let HuntCommand::Search {
            filters,
            since,
            until,
            limit,
        } = parse(&[
            "search",
            "--device",
            "dev1",
            "--kind",
            "file",
            "--since",
            "2023-11-14T22:13:20Z",
            "TargetFilename^=/etc/",
            "Image*=cat",
            "--limit",
            "5",
        ])
        .unwrap()
        else {
            panic!("search")
        };
        assert_eq!(since, Some(1_700_000_000_000_000_000));
        assert_eq!((until, limit), (None, Some(5)));
        let r = filters.request();
        assert_eq!((r.device_id.as_str(), r.kind.as_str()), ("dev1", "file"));
        assert_eq!(
            r.conditions,
            [
                cond("TargetFilename", MatchOp::Prefix, "/etc/"),
                cond("Image", MatchOp::Contains, "cat")
            ]
        );
    }

    #[test]
    fn a_bad_kind_lists_the_kinds() {
        let e = parse(&["search", "--kind", "proc"])
            .err()
            .unwrap()
            .to_string();
        for k in records::KINDS {
            assert!(e.contains(k), "{e}");
        }
        let e = parse(&["watch", "Image"]).err().unwrap().to_string();
        assert!(e.contains("CONDITION") && e.contains("no `=`"), "{e}");
        let e = parse(&["search", "--since", "5w"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--since") && e.contains("unit"), "{e}");
        // Watch takes no time bounds.
        assert!(parse(&["watch", "--since", "5m"]).is_err());
    }

    #[test]
    fn hashes_are_lowercased_and_paths_must_be_absolute() {
        let h = "AB".repeat(32);
        assert_eq!(hash_or_path(&h).unwrap(), "ab".repeat(32));
        assert_eq!(hash_or_path("/usr/bin/x").unwrap(), "/usr/bin/x");
        assert!(hash_or_path("usr/bin/x").is_err());
        assert!(hash_or_path(&"a".repeat(63)).is_err());
        assert!(hash_or_path(&"g".repeat(64)).is_err());
    }

    #[test]
    fn prevalence_rows_and_lines() {
        let r = FilePrevalenceResponse {
            matched_as: "sha256".into(),
            devices: vec![DeviceSighting {
                device_id: "dev1".into(),
                hostname: String::new(),
                first_seen_unix_ns: 1_700_000_000_000_000_000,
                last_seen_unix_ns: 0,
                count: 3,
            }],
        };
        assert_eq!(
            prevalence_table(&r).rows()[0],
            ["dev1", "-", "2023-11-14T22:13:20Z", "-", "3"]
        );
        let v = &prevalence_json(&r)[0];
        assert_eq!(v["matched_as"], "sha256");
        assert_eq!(v["first_seen"], "2023-11-14T22:13:20Z");
        assert_eq!(v["last_seen"], serde_json::Value::Null);
        assert_eq!(v["count"], 3);
    }
}
