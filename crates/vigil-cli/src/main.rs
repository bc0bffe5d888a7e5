//! `vigil`: the command line for analysts, admins and rule authors.

/// Writes a line to standard output, as `println!` does, but returns the
/// error instead of panicking: `vigil … | head` closes the pipe early, and
/// that ends the command quietly (see `main`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)?
    }};
}

mod access;
mod alerts;
mod audit;
mod client;
mod devices;
mod display;
mod hunt;
mod import;
mod privacy;
mod profile;
mod publish;
mod records;
mod role;
mod rules;
mod settings;
mod tenant;
mod tokens;
mod tree;
mod up;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil EDR: analysts, admins and rule authors"
)]
struct Cli {
    /// Profile (endpoint, CA, API token, optional role); `vigil up` writes one to <data-dir>/analyst.toml.
    #[arg(long, global = true, env = "VIGIL_PROFILE", display_order = 100)]
    profile: Option<PathBuf>,
    /// Tenant to act in, for an operator under an approved access grant (sent as `x-vigil-tenant`).
    #[arg(
        long,
        global = true,
        env = "VIGIL_TENANT",
        value_name = "ID",
        display_order = 100
    )]
    tenant: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run server, local tenant and this machine's sensor together, printing alerts.
    Up {
        /// Where the store, certificates, sensor spool and analyst profile live.
        #[arg(long, default_value = "vigil-data")]
        data_dir: PathBuf,
        /// Address for the server (loopback by default).
        #[arg(long, default_value = "127.0.0.1:4443")]
        listen: std::net::SocketAddr,
        /// Rule files or directories for the sensor.
        #[arg(long, default_value = "rules")]
        rules: Vec<PathBuf>,
        /// Print alerts as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Alerts of the profile's tenant.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Investigate stored records: search, process trees, file prevalence, live records (admin, analyst, read-only).
    Hunt {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: hunt::HuntCommand,
    },
    /// Tools for rule authors.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// The deployment's tenants (operator).
    Tenant {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// Operator access to a tenant's data: request (operator), approve, deny, revoke (tenant admin).
    Access {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: access::AccessCommand,
    },
    /// Key rotation: the master key (operator), the tenant's data key (tenant admin).
    Keys {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: settings::KeysCommand,
    },
    /// The tenant's privacy: the policy its sensors follow, data held per
    /// level, re-identification of pseudonyms (tenant admin; show: auditors too).
    Privacy {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: privacy::PrivacyCommand,
    },
    /// The tenant's settings (tenant admin).
    Settings {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: settings::SettingsCommand,
    },
    /// Tokens sensors enroll with (tenant admin).
    EnrollToken {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: tokens::EnrollTokenCommand,
    },
    /// API tokens for people and scripts (tenant admin).
    Token {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// The tenant's devices (list, show: admin, analyst, read-only; revoke: tenant admin).
    Device {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: devices::DeviceCommand,
    },
    /// The audit trail (auditors and admins: their tenant's; the operator: the deployment's).
    Audit {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Import a bundle `vigil-sensor export` wrote on a device without a connection (tenant admin).
    Import {
        #[command(flatten)]
        out: Output,
        /// The bundle file.
        file: PathBuf,
        /// Store it even when it starts above the first record the server lacks
        /// for its device (those records are then never stored).
        #[arg(long)]
        allow_gap: bool,
    },
}

/// Output form of the governance commands.
#[derive(clap::Args)]
struct Output {
    /// Print JSON instead of a table: one object, or for lists one object per line.
    #[arg(long, global = true, display_order = 99)]
    json: bool,
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// List alerts, newest first.
    List {
        /// One JSON object per alert per line.
        #[arg(long)]
        json: bool,
        /// Only alerts at or above this severity.
        #[arg(long)]
        severity: Option<String>,
        /// Only alerts of this rule id.
        #[arg(long)]
        rule: Option<String>,
        /// Only alerts of this device id.
        #[arg(long)]
        device: Option<String>,
        /// Only alerts assigned to this name.
        #[arg(long)]
        assignee: Option<String>,
        /// At most this many alerts.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one alert.
    Show {
        /// Alert id (as `alerts list` prints it).
        id: String,
        /// One JSON object, with the detection's description and matched sequences.
        #[arg(long)]
        json: bool,
    },
    /// Change an alert's status or assignee, or add a comment (admin, analyst).
    Update {
        /// Alert id (as `alerts list` prints it).
        id: String,
        /// new, in-progress, resolved, false-positive.
        #[arg(long)]
        status: Option<String>,
        /// Assign the alert to this name.
        #[arg(long, conflicts_with = "unassign")]
        assign: Option<String>,
        /// Remove the assignee.
        #[arg(long)]
        unassign: bool,
        /// Add a comment (at most 4000 characters).
        #[arg(long)]
        comment: Option<String>,
        /// The alert as stored after the change, as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print alerts as they are raised, and again when repeats grow one.
    Watch {
        /// One JSON object per alert per line.
        #[arg(long)]
        json: bool,
        /// Only alerts at or above this severity.
        #[arg(long)]
        severity: Option<String>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate rules and say how many the Linux sensor can feed; exit status 1 if any was rejected.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// One JSON object: {"loaded": N, "rejected": [{path, line, id, reason}], "coverage": {rules, fed, not_fed, reasons}}.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate rules (and correlations) over events; one JSON line per match.
    Match(EventInput),
    /// Run the tests that come with rules (NAME.tests.yml beside NAME.yml).
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Compile rules once into a bundle (.vrb) that sensors load without YAML.
    Bundle {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Where to write the bundle (conventionally NAME.vrb).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Measure single-thread evaluation speed over events.
    Bench(EventInput),
    /// The tenant's published rule sets, which its sensors run.
    #[command(flatten)]
    Published(publish::PublishCommand),
}

/// Rules and the events to run them over.
#[derive(clap::Args)]
struct EventInput {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// JSONL events: Vigil's form ({"logsource", "time", "event"}) or, with --logsource, flat Sigma fields.
    #[arg(long)]
    events: PathBuf,
    /// PRODUCT/CATEGORY of flat events.
    #[arg(long)]
    logsource: Option<String>,
}

fn profile(path: &Option<PathBuf>) -> Result<profile::LoadedProfile> {
    let path = path
        .as_ref()
        .context("--profile FILE is required (vigil up writes <data-dir>/analyst.toml)")?;
    profile::load(path)
}

/// Where the server commands go: the profile, and `--tenant` if given.
struct Target {
    profile: Option<PathBuf>,
    tenant: Option<String>,
}

/// Loads the profile and connects, with `x-vigil-tenant` only when `--tenant` was given.
async fn connect(t: &Target) -> Result<(client::Api, profile::LoadedProfile)> {
    let p = profile(&t.profile)?;
    let tenant = t.tenant.as_deref().filter(|t| !t.is_empty());
    Ok((client::Api::connect(&p.profile, tenant).await?, p))
}

fn status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        // The reader of our output went away (`vigil rules match … | head`).
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        // One line, causes joined by `: `; a refused call reads
        // `error: permission denied: <the server's message>`.
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let target = Target {
        profile: cli.profile,
        tenant: cli.tenant,
    };
    match cli.command {
        Command::Up {
            data_dir,
            listen,
            rules,
            json,
        } => {
            up::run(up::UpArgs {
                data_dir,
                listen,
                rules,
                json,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts { command } => {
            let (api, _) = connect(&target).await?;
            match command {
                AlertsCommand::List {
                    json,
                    severity,
                    rule,
                    device,
                    assignee,
                    limit,
                } => {
                    let min_severity = severity
                        .as_deref()
                        .map(alerts::parse_severity)
                        .transpose()?;
                    alerts::list(
                        &api,
                        alerts::ListArgs {
                            json,
                            min_severity,
                            rule_id: rule,
                            device,
                            assignee,
                            limit,
                        },
                    )
                    .await?;
                }
                AlertsCommand::Show { id, json } => alerts::show(&api, &id, json).await?,
                AlertsCommand::Update {
                    id,
                    status,
                    assign,
                    unassign,
                    comment,
                    json,
                } => {
                    let args = alerts::UpdateArgs {
                        status,
                        assign,
                        unassign,
                        comment,
                    };
                    alerts::update(&api, &id, args, json).await?;
                }
                AlertsCommand::Watch { json, severity } => {
                    let min = severity
                        .as_deref()
                        .map(alerts::parse_severity)
                        .transpose()?;
                    alerts::watch(&api, json, min).await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Hunt { out, command } => {
            hunt::run(&connect(&target).await?.0, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant { out, command } => {
            tenant::run(&connect(&target).await?.0, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Access { out, command } => {
            let (api, p) = connect(&target).await?;
            access::run(&api, p.role, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { out, command } => {
            settings::keys(&connect(&target).await?.0, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Privacy { out, command } => {
            privacy::run(&connect(&target).await?.0, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Settings { out, command } => {
            settings::settings(&connect(&target).await?.0, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::EnrollToken { out, command } => {
            tokens::enroll_token(&connect(&target).await?.0, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { out, command } => {
            tokens::token(&connect(&target).await?.0, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Device { out, command } => {
            devices::run(&connect(&target).await?.0, command, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { out, command } => {
            let ok = audit::run(&connect(&target).await?.0, command, out.json).await?;
            Ok(status(ok))
        }
        Command::Import {
            out,
            file,
            allow_gap,
        } => {
            import::run(&connect(&target).await?.0, &file, allow_gap, out.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules { command } => match command {
            RulesCommand::Check { paths, json } => Ok(status(rules::check(&paths, json)?)),
            RulesCommand::Match(i) => {
                rules::matches(&i.paths, &i.events, i.logsource.as_deref())?;
                Ok(ExitCode::SUCCESS)
            }
            RulesCommand::Test { paths } => Ok(status(rules::test(&paths)?)),
            RulesCommand::Bundle { paths, output } => Ok(status(rules::bundle(&paths, &output)?)),
            RulesCommand::Published(c) => {
                publish::run(&connect(&target).await?.0, c).await?;
                Ok(ExitCode::SUCCESS)
            }
            RulesCommand::Bench(i) => {
                rules::bench(&i.paths, &i.events, i.logsource.as_deref())?;
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vigil").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_and_tenant_go_before_or_after_the_subcommand() {
        for args in [
            &["--tenant", "t1", "tenant", "list", "--json"][..],
            &["tenant", "--json", "list", "--tenant", "t1"],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.tenant.as_deref(), Some("t1"));
            let Command::Tenant { out, .. } = cli.command else {
                panic!("tenant")
            };
            assert!(out.json);
        }
    }

    #[test]
    fn token_roles_are_the_tenant_roles() {
        let cli = parse(&["token", "create", "--role", "read-only", "--name", "n"]).unwrap();
        let Command::Token {
            command: tokens::TokenCommand::Create { role, .. },
            ..
        } = cli.command
        else {
            panic!("token create")
        };
        assert_eq!(role, role::TenantRole::ReadOnly);
        assert!(parse(&["token", "create", "--role", "operator", "--name", "n"]).is_err());
    }

    #[test]
    fn deleting_a_tenant_needs_its_name() {
        assert!(parse(&["tenant", "delete", "t1"]).is_err());
        assert!(parse(&["tenant", "delete", "t1", "--confirm", "Acme"]).is_ok());
    }

    #[test]
    fn audit_list_filters() {
        let cli = parse(&[
            "audit",
            "list",
            "--after",
            "9",
            "--limit",
            "5",
            "--refused",
            "--actor",
            "jane",
        ])
        .unwrap();
        let Command::Audit {
            command:
                audit::AuditCommand::List {
                    after,
                    limit,
                    refused,
                    actor,
                    method,
                },
            ..
        } = cli.command
        else {
            panic!("audit list")
        };
        assert_eq!((after, limit, refused), (9, Some(5), true));
        assert_eq!(actor.as_deref(), Some("jane"));
        assert_eq!(method, None);
    }
}
