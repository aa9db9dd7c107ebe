//! `bookferry completions SHELL` and `bookferry man`: the shell completion script and the man
//! page, both made from the same clap definition as `--help`, so they never drift from it.

use super::{CmdResult, Internal, UsageError};
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::exit;
use clap::CommandFactory;

pub fn completions(args: &CompletionsArgs) -> CmdResult {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "bookferry", &mut std::io::stdout());
    Ok(exit::OK)
}

/// The man page of `bookferry`, or of one subcommand (`bookferry-run(1)`, as git and cargo
/// split theirs).
pub fn man(args: &ManArgs) -> CmdResult {
    let mut root = Cli::command();
    // Built, so that each subcommand carries the global options (--state, -v…) too.
    root.build();
    let page = match &args.subcommand {
        None => root,
        Some(name) => {
            let Some(sub) = root.find_subcommand(name) else {
                return Err(UsageError::NoSuchSubcommand(name.clone()).into());
            };
            let name = format!("bookferry-{}", sub.get_name());
            sub.clone().name(name)
        }
    };
    clap_mangen::Man::new(page)
        .render(&mut std::io::stdout().lock())
        .map_err(Internal::Output)?;
    Ok(exit::OK)
}
