//! The upload protocol's test server as a program, for benchmarks that drive bookferry from a
//! shell (`bench/scale.sh`): `cargo run --release --example protocol-server -- [--port N]
//! [--store-ms N] [--max-in-flight N] …` (flags: `protocol_server::config_from_args`). It prints
//! `listening on URL` and serves until killed.

#[path = "../tests/support/protocol_server.rs"]
mod protocol_server;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = protocol_server::serve_forever_cli(&args) {
        eprintln!("protocol-server: {e}");
        std::process::exit(2);
    }
}
