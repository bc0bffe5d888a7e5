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

mod alerts;
mod profile;
mod rules;
mod up;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil EDR: analysts, admins and rule authors"
)]
struct Cli {
    /// Analyst profile (endpoint, CA, API token); `vigil up` writes one to <data-dir>/analyst.toml.
    #[arg(long, global = true, env = "VIGIL_PROFILE")]
    profile: Option<PathBuf>,
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
    /// Tools for rule authors.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
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
        /// At most this many alerts.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one alert.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print alerts as they are raised.
    Watch {
        #[arg(long)]
        json: bool,
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

fn profile(cli: &Option<PathBuf>) -> Result<profile::Profile> {
    let path = cli
        .as_ref()
        .context("--profile FILE is required (vigil up writes <data-dir>/analyst.toml)")?;
    profile::Profile::load(path)
}

#[tokio::main]
async fn main() -> Result<()> {
    match run().await {
        // The reader of our output went away (`vigil rules match … | head`).
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
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
            .await
        }
        Command::Alerts { command } => {
            let p = profile(&cli.profile)?;
            match command {
                AlertsCommand::List {
                    json,
                    severity,
                    rule,
                    device,
                    limit,
                } => {
                    let min_severity = severity
                        .as_deref()
                        .map(alerts::parse_severity)
                        .transpose()?;
                    alerts::list(
                        &p,
                        alerts::ListArgs {
                            json,
                            min_severity,
                            rule_id: rule,
                            device,
                            limit,
                        },
                    )
                    .await
                }
                AlertsCommand::Show { id, json } => alerts::show(&p, &id, json).await,
                AlertsCommand::Watch { json, severity } => {
                    let min = severity
                        .as_deref()
                        .map(alerts::parse_severity)
                        .transpose()?;
                    alerts::watch(&p, json, min).await
                }
            }
        }
        Command::Rules { command } => match command {
            RulesCommand::Check { paths, json } => {
                if !rules::check(&paths, json)? {
                    std::process::exit(1);
                }
                Ok(())
            }
            RulesCommand::Match(i) => rules::matches(&i.paths, &i.events, i.logsource.as_deref()),
            RulesCommand::Test { paths } => {
                if !rules::test(&paths)? {
                    std::process::exit(1);
                }
                Ok(())
            }
            RulesCommand::Bundle { paths, output } => {
                if !rules::bundle(&paths, &output)? {
                    std::process::exit(1);
                }
                Ok(())
            }
            RulesCommand::Bench(i) => rules::bench(&i.paths, &i.events, i.logsource.as_deref()),
        },
    }
}
