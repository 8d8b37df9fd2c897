//! The `gatehouse` command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "A database gateway for AI agents")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve with a configuration file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file without serving.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Scans a file (or stdin with `-`) for secrets and prints findings as JSON lines.
    Scan {
        /// The input; `-` or nothing for stdin.
        file: Option<PathBuf>,
        /// Rules file (default: the rules built into the binary, or the
        /// configuration's with --config).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Use the scanning settings of this configuration.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Tokens: `gatehouse token hash` prints the stored form of a token read from stdin.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Reads a token on stdin and prints its `sha256:` form for `token_hash`.
    Hash,
}

fn init_logs(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve { config } => {
            let cfg = match gatehouse::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            init_logs(&cfg.log.format, &cfg.log.level);
            gatehouse::runtime::serve(config, cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { config } => match gatehouse::config::Config::load(&config) {
            Ok(cfg) => match gatehouse::proxy::pg::State::build(cfg) {
                Ok(s) => {
                    println!(
                        "{}: ok ({} targets, {} identities)",
                        config.display(),
                        s.targets.len(),
                        s.config.identities.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    Ok(ExitCode::from(1))
                }
            },
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Cmd::Scan { file, rules, config } => {
            let engine = match (&config, &rules) {
                (Some(c), _) => {
                    let mut cfg = gatehouse::config::Config::load(c)?;
                    if rules.is_some() {
                        cfg.scan.rules_file = rules.clone();
                    }
                    gatehouse::proxy::pg::state::build_engine(&cfg).map_err(|e| anyhow::anyhow!(e))?
                }
                (None, r) => {
                    let rules =
                        gatehouse::scan::assemble(r.as_deref(), &[], Vec::new()).map_err(|e| anyhow::anyhow!(e))?;
                    gatehouse::scan::Engine::new(&rules, [0; 32])?
                }
            };
            let input: Box<dyn Read> = match file.as_deref() {
                None => Box::new(std::io::stdin().lock()),
                Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
                Some(p) => Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?),
            };
            let n = gatehouse::scan::report::scan_stream(&engine, input, &mut std::io::stdout().lock())?;
            eprintln!("{n} findings");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Token { cmd: TokenCmd::Hash } => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the token from stdin")?;
            let t = s.trim_end_matches(['\n', '\r']);
            if t.is_empty() {
                anyhow::bail!("no token on stdin");
            }
            println!("{}", gatehouse::identity::hash_token(t.as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::from(1)
        }
    }
}
