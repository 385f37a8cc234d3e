//! The `dnsfence` command line: parses arguments, calls the library, turns errors into exit codes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dnsfence::catalog::policy::Policy;
use dnsfence::daemon::app::{self, App};

/// An allowlist DNS resolver for Intune-managed kiosk and shared-device networks.
#[derive(Parser)]
#[command(
    name = "dnsfence",
    version,
    about,
    long_about = "An allowlist DNS resolver for Intune-managed kiosk and shared-device networks. \
                  It answers only the names of the endpoint sets a client's view allows, denies every \
                  other name without forwarding it, and puts the addresses it answered into nftables \
                  sets before the answer leaves, so the firewall opens exactly for them.",
    after_long_help = AFTER_HELP,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "\
Files:
  /etc/dnsfence/dnsfence.toml: the config (-c, DNSFENCE_CONFIG)
  /etc/dnsfence/zones.d/: local zone files, loaded after the catalog
  /usr/share/dnsfence/zones/: the Intune endpoint catalog
  /var/log/dnsfence/queries.jsonl: the query log, when configured

Signals (run): SIGHUP reloads the config and zones (a refused reload keeps the old ones and says \
why); SIGTERM and SIGINT stop after in-flight answers. Under systemd (Type=notify) dnsfence reports \
READY, RELOADING, STOPPING and WATCHDOG.

Documentation: /usr/share/doc/dnsfence/README.md";

/// `dnsfence catalog …`.
#[derive(Subcommand)]
enum CatalogCommand {
    /// Per endpoint-set id: the names, networks and ports the source has that the catalog lacks
    /// (+) and those the catalog has that the source lacks (-); ids only the source has, with
    /// everything they would allow; names and subnets of the page's lists no set covers; ids only
    /// the catalog has; entries rejected. With --names and --profile: a pasted vendor list
    /// against a profile. Exit 0: nothing to add (with --names: no difference); 1: the source
    /// adds something (with --names: any difference); 2: error.
    Diff {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write an overlay zone file from a source: names, networks and ports it adds to the
    /// catalog's endpoint sets ([[extend]]), its new ids as endpoint sets (the page's in the
    /// profile of their section, the feed's in profile "feed"), and what the page's lists have
    /// that no set covers. It never removes anything; rejected entries are listed in its comments.
    Pull {
        #[command(flatten)]
        source: SourceArgs,
        /// The overlay to write (atomically), e.g. /etc/dnsfence/zones.d/page.toml. A previous
        /// overlay there is left out of the comparison and replaced.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Which source, and where it comes from.
#[derive(clap::Args)]
struct SourceArgs {
    /// Microsoft's Intune endpoints page (recommended): a saved copy of its Markdown, or its URL
    /// (e.g. https://raw.githubusercontent.com/MicrosoftDocs/memdocs/main/intune/fundamentals/endpoints.md),
    /// fetched through the config's upstream.
    #[arg(
        long,
        required_unless_present_any = ["feed", "names", "autopilot_page"],
        conflicts_with_all = ["feed", "names", "autopilot_page"]
    )]
    page: Option<String>,
    /// Microsoft's Windows Autopilot requirements page: a saved copy of its Markdown, or its URL
    /// (e.g. https://raw.githubusercontent.com/MicrosoftDocs/memdocs/main/autopilot/requirements.md):
    /// the hosts its Networking tab names, per service heading, against the catalog.
    #[arg(long, value_name = "FILE|URL", conflicts_with_all = ["feed", "names"])]
    autopilot_page: Option<String>,
    /// The endpoint web service: a saved feed (the JSON of
    /// /endpoints/<instance>?ServiceAreas=MEM,Common), or its base URL (https://endpoints.office.com, or
    /// a mirror), fetched through the config's upstream.
    #[arg(long)]
    feed: Option<String>,
    /// The service instance, for --feed (Worldwide, USGovDoD, USGovGCCHigh, China).
    #[arg(long, default_value = "Worldwide")]
    instance: String,
    /// For diff only: a vendor's list without a machine-readable form (Apple's, Google's pages),
    /// pasted one host per line (the first word of each line; `#` comments skipped; `-`: standard
    /// input), compared with --profile: what the list adds (+) and what the profile has that the
    /// list lacks (-).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "feed",
        requires = "profile"
    )]
    names: Option<PathBuf>,
    /// The profile --names is compared with.
    #[arg(long, requires = "names")]
    profile: Option<String>,
    /// CA certificates (PEM) for the source's certificate; default: the system trust store.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

impl SourceArgs {
    /// The source, parsed, and where it came from.
    fn read(
        &self,
        config: &dnsfence::config::Config,
    ) -> anyhow::Result<(
        dnsfence::catalog::source::Source,
        dnsfence::catalog::source::Provenance,
    )> {
        use dnsfence::catalog::source::read::{Location, read};
        let location = match (&self.page, &self.feed) {
            (Some(p), _) => Location::Page(p.clone()),
            (None, None) if self.autopilot_page.is_some() => {
                Location::AutopilotPage(self.autopilot_page.clone().unwrap_or_default())
            }
            (None, Some(f)) => Location::Feed {
                at: f.clone(),
                instance: self.instance.clone(),
            },
            (None, None) => anyhow::bail!(
                "give --page, --autopilot-page or --feed (--names compares a list with a \
                 profile: diff only)"
            ),
        };
        Ok(read(&location, config, self.ca_file.as_deref())?)
    }
}

/// What the printed firewall rules do with refused traffic.
#[derive(clap::Args)]
struct RuleArgs {
    /// Log refused packets, at most 10 a second per view (prefix "dnsfence VIEW drop: ").
    #[arg(long)]
    log: bool,
    /// Reject (TCP reset, ICMP administratively prohibited) instead of dropping, so that
    /// devices fail at once instead of waiting for their timeouts.
    #[arg(long)]
    reject: bool,
}

impl RuleArgs {
    fn options(&self) -> dnsfence::fence::nft::RulesetOptions {
        dnsfence::fence::nft::RulesetOptions {
            log: self.log,
            reject: self.reject,
        }
    }
}

/// The config file every command reads.
#[derive(clap::Args)]
struct ConfigArg {
    /// Config file.
    #[arg(
        short = 'c',
        long = "config",
        env = "DNSFENCE_CONFIG",
        default_value = "/etc/dnsfence/dnsfence.toml"
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS (and HTTP) on the configured addresses until SIGTERM or SIGINT; SIGHUP reloads
    /// the config and zones.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Load the config and zones, print what they hold, exit 1 on the first error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a complete nftables ruleset for the configured views: the table and sets dnsfence
    /// fills, and per view a forward chain that drops what dnsfence did not answer.
    NftRules {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Print iptables and ip6tables rules (iptables-restore input) for the configured views, the
    /// counterpart of nft-rules for gateways that filter with iptables and `backend = "ipset"`.
    IptablesRules {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        rules: RuleArgs,
        /// Only the IPv4 (4, for iptables-restore) or IPv6 (6, for ip6tables-restore) rules.
        #[arg(long, value_parser = ["4", "6"])]
        family: Option<String>,
    },
    /// Turn denied and would-be-denied names into a ranked proposal for a local zone file: per
    /// registrable domain, the names, queries and clients, and a ready [[endpoint_set]] block.
    Suggest {
        /// Config file (its views, and its [http] listen when no log is given).
        #[command(flatten)]
        config: ConfigArg,
        /// Only this view.
        #[arg(long)]
        view: Option<String>,
        /// A query log (JSON lines) to read; without it, the running instance's /v1/denied.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Compare the catalog with Microsoft's Intune endpoints page or its endpoint web service
    /// (ServiceAreas=MEM,Common), or turn either into an overlay zone file.
    Catalog {
        #[command(subcommand)]
        action: CatalogCommand,
    },
    /// Ask the running instance for /healthz (or, with --ready, /readyz) on its [http] listen
    /// address and print the answer: exit 0 on 200, 1 otherwise. For a container's HEALTHCHECK
    /// or an exec probe, where there is no curl.
    Health {
        #[command(flatten)]
        config: ConfigArg,
        /// /readyz: the fence, the catalog and an upstream ready, not only the process alive.
        #[arg(long)]
        ready: bool,
    },
    /// Write the man pages and shell completions (bash, zsh, fish) into a directory: for packaging.
    #[command(hide = true)]
    Assets {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
    /// For each view and each device family it selects, whether each stage of a device's life
    /// (setup, enrollment, check-in, push, apps, updates, certificates, diagnostics, remote help)
    /// gets through, with the names it denies and the endpoint sets and documents they come
    /// from. Exit 0 when every family of the views shown is ready, 1 otherwise.
    Readiness {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this view.
        #[arg(long)]
        view: Option<String>,
        /// Print JSON (what /v1/readiness serves) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Say whether a name would be answered, for which view, and which endpoint set allows it;
    /// or, with --names, the verdict of every name of a list (exit 1 when any is denied).
    Explain {
        /// The name to look up (`*.x` is tried one label below x).
        #[arg(required_unless_present = "names", conflicts_with = "names")]
        name: Option<String>,
        /// A file of names, one a line (`-`: standard input; `#` comments and blank lines
        /// skipped; `*.x` tried one label below x; URLs stand for their host): one line per name
        /// and the count of allowed and denied; exit 0 when all are allowed, 1 otherwise.
        #[arg(long, value_name = "FILE")]
        names: Option<PathBuf>,
        /// Client address; without it every view is explained.
        #[arg(long)]
        client: Option<IpAddr>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config.path),
        Command::Check { config } => check(config.path),
        Command::NftRules { config, rules } => nft_rules(config.path, rules.options()),
        Command::IptablesRules {
            config,
            rules,
            family,
        } => iptables_rules(
            config.path,
            rules.options(),
            family.map(|f| if f == "4" { 4 } else { 6 }),
        ),
        Command::Suggest { config, view, log } => suggest(config.path, view, log),
        Command::Health { config, ready } => health(config.path, ready),
        Command::Assets { dir } => assets(&dir),
        Command::Catalog {
            action:
                CatalogCommand::Diff {
                    source,
                    config,
                    json,
                },
        } => catalog_diff(config.path, &source, json),
        Command::Catalog {
            action:
                CatalogCommand::Pull {
                    source,
                    out,
                    config,
                },
        } => catalog_pull(config.path, &source, &out),
        Command::Readiness { config, view, json } => readiness(config.path, view, json),
        Command::Explain {
            name,
            names,
            client,
            config,
        } => match names {
            Some(list) => explain_list(config.path, &list, client),
            None => explain(config.path, name.as_deref().unwrap_or_default(), client),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // The error types already name file, line and cause; the chain would repeat them.
            eprintln!("dnsfence: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> anyhow::Result<ExitCode> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // hickory-server logs every request at info; the query log does that job.
                .unwrap_or_else(|_| "info,hickory_resolver=warn,hickory_net=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: the journal and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd stderr goes to the journal, which stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logs.without_time().init();
    } else {
        logs.init();
    }
    // Before any thread: the programs the fence runs (nft, ipset) get its two capabilities.
    match dnsfence::daemon::caps::share_with_children() {
        Ok(raised) if !raised.is_empty() => {
            tracing::info!(?raised, "capabilities made ambient for nft and ipset");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "capabilities not passed on to nft and ipset"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let config = dnsfence::config::Config::load(&path)?;
        if config.upstream.from_resolv_conf {
            tracing::info!(servers = ?config.upstream.servers, "no upstream configured: using /etc/resolv.conf");
        }
        let app = App::build(config).await?;
        let bound = app.bind().await?;
        let (tx, rx) = dnsfence::daemon::signal::channel();
        tokio::spawn(dnsfence::daemon::signal::forward_os_signals(tx));
        app.run(bound, rx).await?;
        Ok(ExitCode::SUCCESS)
    });
    // run() returned within shutdown_timeout_ms; a blocking task still going (a catalog fetch
    // from a server that trickles) is not waited for: the process exits.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// Man pages (dnsfence.1, one dnsfence-COMMAND.1 per command) and completions, from the clap
/// definitions above: they cannot drift from `--help`.
fn assets(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let write = |name: String, page: clap::Command| -> anyhow::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(dir.join(name), out)?;
        Ok(())
    };
    write("dnsfence.1".into(), cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // A one-shot command: leaking the page names is the simplest way to give clap a 'static.
        let name: &'static str = Box::leak(format!("dnsfence-{}", sub.get_name()).into_boxed_str());
        let page = sub.clone().name(name).version(env!("CARGO_PKG_VERSION"));
        write(format!("{name}.1"), page)?;
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, "dnsfence.bash"),
        (clap_complete::Shell::Zsh, "_dnsfence"),
        (clap_complete::Shell::Fish, "dnsfence.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "dnsfence", &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    println!("{}: man pages and completions written", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn readiness(path: PathBuf, view: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let (_, policy) = app::load(&path)?;
    if let Some(v) = &view
        && policy.view(v).is_none()
    {
        anyhow::bail!("{}: no view named '{v}'", path.display());
    }
    let report = dnsfence::catalog::readiness::report(&policy, view.as_deref());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check(path: PathBuf) -> anyhow::Result<ExitCode> {
    let (config, policy) = app::load(&path)?;
    // What `run` would refuse at start, refused here with the same words.
    dnsfence::daemon::preflight::check(&config)?;
    print!("{}", dnsfence::cli::check::report(&config, &policy));
    Ok(ExitCode::SUCCESS)
}

fn suggest(path: PathBuf, view: Option<String>, log: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use dnsfence::cli::suggest;
    let config = dnsfence::config::Config::load(&path)?;
    if let Some(v) = &view
        && !config.views.iter().any(|c| &c.name == v)
    {
        anyhow::bail!("{}: no view named '{v}'", path.display());
    }
    let (seen, source) = match &log {
        Some(file) => (
            suggest::read_log(file, view.as_deref())?,
            file.display().to_string(),
        ),
        None => {
            let Some(addr) = config.http.listen else {
                anyhow::bail!(
                    "{}: [http] is off, so there is no running instance to ask: give --log FILE",
                    path.display()
                );
            };
            let mut seen = Vec::new();
            for v in &config.views {
                if view.as_ref().is_none_or(|want| want == &v.name) {
                    seen.extend(suggest::from_http(addr, &v.name)?);
                }
            }
            (seen, format!("http://{addr}/v1/denied"))
        }
    };
    let source = match &view {
        Some(v) => format!("{source} (view {v})"),
        None => source,
    };
    print!("{}", suggest::render(&suggest::rank(&seen), &source));
    Ok(ExitCode::SUCCESS)
}

fn health(path: PathBuf, ready: bool) -> anyhow::Result<ExitCode> {
    let config = dnsfence::config::Config::load(&path)?;
    let Some(mut addr) = config.http.listen else {
        anyhow::bail!("{}: [http] is off: nothing to ask", path.display());
    };
    // A wildcard listener is reached on loopback, where the probe runs.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/{}", if ready { "readyz" } else { "healthz" });
    let fetcher = dnsfence::catalog::source::fetch::Fetcher::new(
        None,
        None,
        std::time::Duration::from_secs(3),
    )
    .map_err(anyhow::Error::msg)?;
    match fetcher.get(&url) {
        Ok(body) => {
            print!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("dnsfence: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn nft_rules(
    path: PathBuf,
    options: dnsfence::fence::nft::RulesetOptions,
) -> anyhow::Result<ExitCode> {
    let (config, policy) = app::load(&path)?;
    let plans = dnsfence::fence::ViewPlan::for_views(&config, &policy);
    print!(
        "{}",
        dnsfence::fence::nft::ruleset(&plans, &config.server.listen, options)
    );
    Ok(ExitCode::SUCCESS)
}

/// `catalog diff`: exit 0 when the source adds nothing, 1 when it does, 2 on error (as diff(1)).
fn catalog_diff(path: PathBuf, source: &SourceArgs, json: bool) -> anyhow::Result<ExitCode> {
    let run = || -> anyhow::Result<bool> {
        let (config, policy) = app::load(&path)?;
        if let (Some(list), Some(profile)) = (&source.names, &source.profile) {
            let text = if list == std::path::Path::new("-") {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(list)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", list.display()))?
            };
            let diff = dnsfence::cli::explain::names_diff(&policy.catalog, profile, &text)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&diff)?);
            } else {
                print!("{}", diff.text(&list.display().to_string()));
            }
            return Ok(diff.differs());
        }
        let (source, _) = source.read(&config)?;
        let diff = dnsfence::catalog::source::diff(&policy.catalog, &source);
        if json {
            println!("{}", serde_json::to_string_pretty(&diff)?);
        } else {
            print!("{}", diff.text());
        }
        Ok(diff.adds())
    };
    match run() {
        Ok(adds) => Ok(ExitCode::from(u8::from(adds))),
        Err(e) => {
            eprintln!("dnsfence: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

fn catalog_pull(
    path: PathBuf,
    source: &SourceArgs,
    out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let config = dnsfence::config::Config::load(&path)?;
    let catalog = dnsfence::catalog::zones::Catalog::load_dirs_except(&config.zones.dirs, out)?;
    let (source, from) = source.read(&config)?;
    let overlay = dnsfence::catalog::source::overlay(&catalog, &source, &from);
    dnsfence::catalog::source::write_atomically(out, &overlay)
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    let diff = dnsfence::catalog::source::diff(&catalog, &source);
    println!(
        "{}: {} endpoint sets extended, {} new, {} lists beyond the catalog, {} entries rejected",
        out.display(),
        diff.changed.iter().filter(|d| d.adds()).count(),
        diff.new.len(),
        diff.uncovered.len(),
        diff.rejected.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn iptables_rules(
    path: PathBuf,
    options: dnsfence::fence::nft::RulesetOptions,
    family: Option<u8>,
) -> anyhow::Result<ExitCode> {
    let (config, policy) = app::load(&path)?;
    if config.fence.backend != dnsfence::config::FenceBackend::Ipset {
        eprintln!(
            "note: {} has [fence] backend = {:?}; these rules match the ipset sets of backend = \"ipset\"",
            path.display(),
            config.fence.backend
        );
    }
    let plans = dnsfence::fence::ViewPlan::for_views(&config, &policy);
    print!(
        "{}",
        dnsfence::fence::ipset::iptables_rules(&plans, &config.server.listen, options, family)
    );
    Ok(ExitCode::SUCCESS)
}

/// The views `explain` looks at: the client's, or every one. `None`: the client is in no view.
fn explain_views(
    policy: &Policy,
    client: Option<IpAddr>,
) -> Option<Vec<&dnsfence::catalog::policy::View>> {
    match client {
        Some(ip) => policy.view_for(ip).map(|v| vec![v]),
        None => Some(policy.views.iter().collect()),
    }
}

fn explain(path: PathBuf, name: &str, client: Option<IpAddr>) -> anyhow::Result<ExitCode> {
    let (_, policy) = app::load(&path)?;
    let asked = match dnsfence::cli::explain::asked(name) {
        Ok(a) => a,
        Err(reason) => {
            eprintln!("dnsfence: '{name}' is not a valid name: {reason}");
            return Ok(ExitCode::from(2));
        }
    };
    let Some(views) = explain_views(&policy, client) else {
        println!(
            "client {}: in no view: every query is REFUSED (EDE 18 Prohibited)",
            client.map(|c| c.to_string()).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    };
    for view in views {
        print!(
            "{}",
            dnsfence::cli::explain::describe(&policy, view, &asked)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `explain --names FILE`: exit 0 when every name is allowed, 1 when any is denied or invalid.
fn explain_list(
    path: PathBuf,
    list: &std::path::Path,
    client: Option<IpAddr>,
) -> anyhow::Result<ExitCode> {
    let (_, policy) = app::load(&path)?;
    let text = if list == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(list).map_err(|e| anyhow::anyhow!("{}: {e}", list.display()))?
    };
    let Some(views) = explain_views(&policy, client) else {
        println!(
            "client {}: in no view: every query is REFUSED (EDE 18 Prohibited)",
            client.map(|c| c.to_string()).unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    };
    let report = dnsfence::cli::explain::list(&policy, &views, &text);
    print!("{}", report.text);
    println!("{}", report.summary());
    Ok(if report.all_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
