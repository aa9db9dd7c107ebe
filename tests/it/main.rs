//! bookferry's integration tests: one test binary, the real `bookferry` binary run as a
//! subprocess on real files in temp folders, a real SQLite state DB, real kills.

mod util;

/// The upload-protocol test server (also used by the benchmarks).
#[path = "../support/protocol_server.rs"]
mod protocol_server;

mod bad_input;
mod calibre_columns;
mod calibre_fidelity;
mod calibre_server;
mod calibre_source;
mod calibre_target;
mod cli_forms;
mod covers;
mod digests;
mod durability;
mod engine;
mod faults;
mod filters;
mod forget;
mod hostile_server;
mod http;
mod kill;
mod layouts;
mod logs;
mod names;
mod report;
mod report_html;
mod rescan;
mod retry;
mod safety;
mod shell_docs;
mod sidecars;
mod signals;
mod state_db;
mod terminal;
mod tls;
mod verify;
mod verify_calibre;
mod vfat;
