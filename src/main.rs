//! The `nbidle` command: parses arguments and calls the library.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nbidle::config::Config;
use nbidle::logging::{self, LogFormat};
use nbidle::manifests::{self, Manifest};
use nbidle::rules::{self, Format};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "nbidle",
    version,
    about = "Stops idle Jupyter notebooks on Prometheus alerts; starts them again on request."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: `json` (one object per line) or `text`;
    /// wins over $NBIDLE_LOG_FORMAT (default `text`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook, REST API and backend.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file; exits non-zero naming the offending key.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Generate the idle alerting rules; a config is checked as `check`
    /// does (its files are not read), exiting non-zero naming the key.
    Rules {
        /// Without a config, the defaults (idle after 30m) are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "rule-file")]
        format: Format,
        /// Write into this directory instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Describe each rule's signals and thresholds instead.
        #[arg(long)]
        explain: bool,
    },
    /// Generate Prometheus scrape and Alertmanager routing configuration;
    /// a config is checked as for `rules`.
    Manifests {
        #[arg(value_enum)]
        kind: Manifest,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p).with_context(|| format!("invalid config {}", p.display())),
        None => Ok(Config::from_yaml(
            "backend: {kind: local, local: {}}",
            Path::new("."),
        )?),
    }
}

/// The config `rules` and `manifests` generate from: a given one is
/// checked as `nbidle check` does (but for reading the files it names), so
/// nothing is generated from a config `serve` would refuse; the defaults
/// are for the rules alone and have no credentials to check.
fn load_generated(path: Option<&Path>) -> anyhow::Result<Config> {
    let cfg = load(path)?;
    if let Some(p) = path {
        nbidle::run::check_generated(&cfg)
            .with_context(|| format!("invalid config {}", p.display()))?;
    }
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&logging::Settings::from_env(cli.log_format)?)?;
    match cli.command {
        Command::Serve { config } => {
            let cfg = load(Some(&config))?;
            for w in cfg
                .secret_file_warnings()
                .into_iter()
                .chain(cfg.autosave_warnings())
            {
                tracing::warn!("{w}");
            }
            // File writes of state go through the blocking pool; a few
            // threads keep up with 1,000 stops, and each thread costs memory.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(8)
                .build()?;
            rt.block_on(serve_until_signalled(cfg))?;
        }
        Command::Check { config } => {
            let cfg = load(Some(&config))?;
            nbidle::run::check(&cfg).context("invalid config")?;
            // Warnings do not fail the check: the config works as written.
            for w in cfg
                .secret_file_warnings()
                .into_iter()
                .chain(cfg.autosave_warnings())
            {
                eprintln!("warning: {w}");
            }
            println!("{}: ok", config.display());
        }
        Command::Rules {
            config,
            format,
            out,
            explain,
        } => {
            let cfg = load_generated(config.as_deref())?;
            if explain {
                print!("{}", rules::explain(&cfg)?);
            } else {
                let text = rules::render(&cfg, format)?;
                match out {
                    Some(dir) => {
                        std::fs::create_dir_all(&dir)?;
                        let path = dir.join(format.file_name());
                        std::fs::write(&path, text)?;
                        eprintln!("wrote {}", path.display());
                    }
                    None => print!("{text}"),
                }
            }
        }
        Command::Manifests { kind, config } => {
            let cfg = load_generated(config.as_deref())?;
            print!("{}", manifests::render(&cfg, kind)?);
        }
    }
    Ok(())
}

/// Runs `nbidle serve`. The first SIGINT or SIGTERM cancels the shutdown
/// token, and nbidle drains and exits; a second one exits at once.
async fn serve_until_signalled(cfg: Config) -> anyhow::Result<()> {
    // Installed before anything starts, so a signal during start-up is a
    // shutdown too.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = CancellationToken::new();
    let serve = nbidle::run::serve(cfg, shutdown.clone());
    tokio::pin!(serve);
    tokio::select! {
        served = &mut serve => return Ok(served?),
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
    tokio::select! {
        served = serve => Ok(served?),
        _ = term.recv() => exit_now(),
        _ = int.recv() => exit_now(),
    }
}

fn exit_now() -> ! {
    eprintln!("second signal: exiting now");
    std::process::exit(130);
}
