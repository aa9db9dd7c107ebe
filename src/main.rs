//! The binary: parse the command line, set up logging, run the command, print its error once
//! and exit with its code (see `exit.rs`).

use bookferry::cli::{Cli, Command, GlobalArgs};
use bookferry::commands;
use bookferry::exit;
use clap::Parser;
use std::io::IsTerminal;
use std::sync::Mutex;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::NOTHING_DONE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    bookferry::invocation::remember(
        std::env::args_os().next().as_deref(),
        cli.global.state.as_deref(),
    );
    if let Err(e) = init_logging(&cli.global) {
        eprintln!("bookferry: {e}");
        std::process::exit(exit::NOTHING_DONE);
    }
    let result = match &cli.command {
        Command::Scan(a) => commands::scan::command(&cli.global, a),
        Command::Run(a) => commands::run::command(&cli.global, a),
        Command::Status(a) => commands::status::command(&cli.global, a),
        Command::RetryFailed(a) => commands::retry_failed::command(&cli.global, a),
        Command::Report(a) => commands::report::command(&cli.global, a),
        Command::Verify(a) => commands::verify::command(&cli.global, a),
        Command::Forget(a) => commands::forget::command(&cli.global, a),
        Command::Completions(a) => commands::shell_docs::completions(a),
        Command::Man(a) => commands::shell_docs::man(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("bookferry: error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}

/// `--log-file` cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("--log-file {}: {source}", .path.display())]
struct LogFileError {
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

fn init_logging(g: &GlobalArgs) -> Result<(), LogFileError> {
    let level = match (g.quiet, g.verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let module_filter = tracing_subscriber::filter::filter_fn(|m| {
        m.target().starts_with("bookferry") || *m.level() <= tracing::Level::WARN
    });
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .with_level(true)
        .with_filter(level)
        .with_filter(module_filter.clone());
    let file = match &g.log_file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogFileError {
                    path: path.clone(),
                    source,
                })?;
            Some(
                fmt::layer()
                    .with_writer(Mutex::new(f))
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(LevelFilter::DEBUG)
                    .with_filter(module_filter),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .init();
    Ok(())
}
