//! The `contrastgeo` binary: parses the command line and hands over to `contrastgeo::cli`.
//!
//! Exit codes (documented in the README): 0 success; 1 a run-time error (a missing model, an unreadable
//! file, a refused store); 2 a usage error (an unknown or out-of-range flag, before any work starts);
//! 3 the command finished but rejected some input lines (each reported on stderr with its line number).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use contrastgeo::cli::{self, Cli, Command, EXIT_REJECTED_LINES, EXIT_USAGE};

fn main() -> ExitCode {
    // Colour only for a person at a terminal: `locate 2> log.txt` gets plain text.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "contrastgeo=info".into()),
        )
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    tracing::info!(
        home = %contrastgeo::home::DataHome::resolve().describe(),
        "data home"
    );
    let outcome = match &cli.command {
        Command::Embed(args) => cli::embed::run(args),
        Command::Index(args) => cli::index::run(args),
        Command::Locate(args) => cli::locate::run(args),
        Command::Train(args) => cli::train::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Ingest(args) => cli::ingest::run(args),
        Command::Model(args) => cli::ingest::run_model(args),
    };
    match outcome {
        Ok(0) => ExitCode::SUCCESS,
        Ok(rejected) => {
            eprintln!("{rejected} input line(s) were rejected (see above)");
            ExitCode::from(EXIT_REJECTED_LINES)
        }
        Err(err) if err.is::<cli::UsageError>() => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
