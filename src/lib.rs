//! bookferry: move large ebook collections into the server or folder where they will live —
//! fast, resumably and auditably. The binary (`main.rs`) parses the command line and calls
//! `commands`; everything else is a library so tests and benchmarks can reach it.

pub mod arg_form;
mod arrows;
pub mod calibre;
pub mod cli;
pub mod commands;
pub mod exit;
pub mod failure;
pub mod fault_hook;
pub mod fd_limit;
pub mod filter;
pub mod hash;
pub mod invocation;
pub mod logging;
pub mod path_text;
pub use bookferry_metadata as metadata;
pub mod pipeline;
pub mod skip_reason;
mod sorted;
pub mod source;
pub mod state;
pub mod target;
pub mod tuning;
