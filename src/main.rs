//! The `contrastgeo` binary: parses the command line and hands over to `contrastgeo::cli`.

use std::process::ExitCode;

use clap::Parser;
use contrastgeo::cli::{embed, eval, train, Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "contrastgeo=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Index(args) => contrastgeo::cli::index::run(args),
        Command::Locate(args) => contrastgeo::cli::locate::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Serve(args) => contrastgeo::cli::serve::run(args),
    };
    match outcome {
        Ok(0) => ExitCode::SUCCESS,
        Ok(rejected) => {
            eprintln!("{rejected} input line(s) were rejected (see above)");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
