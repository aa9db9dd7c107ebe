//! The binary: parse the command line, set up logging (`logging.rs`), run the command, print its error once
//! and exit with its code (see `exit.rs`).

use bookferry::cli::{Cli, Command};
use bookferry::commands;
use bookferry::exit;
use clap::Parser;

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
    if let Err(e) = bookferry::logging::init(&cli.global) {
        eprintln!("bookferry: {e}");
        std::process::exit(exit::NOTHING_DONE);
    }
    // Room for the staged files a run holds open (`fd_limit`).
    bookferry::fd_limit::raise();
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
