//! `ringgate-backend`: the demo/test backend (`--port 3001 --zone zone_1`).
//!
//! Answers every request with JSON naming its zone and port, the method, the path, the
//! body length and an FNV-1a 64 digest of the body; see `ringgate::demo` for the query
//! parameters that shape responses.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;

/// Demo backend: shows which zone/port served a request.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Port to listen on (0 picks one and prints it).
    #[arg(long, default_value_t = 3001)]
    port: u16,
    /// Zone name reported in responses.
    #[arg(long, default_value = "zone_1")]
    zone: String,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let cli = Cli::parse();
    match ringgate::demo::spawn(SocketAddr::new(cli.host, cli.port), &cli.zone, cli.threads) {
        Ok(addr) => {
            println!("ringgate-backend zone {} listening on {addr}", cli.zone);
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!(
                "ringgate-backend: cannot listen on {}:{}: {e}",
                cli.host, cli.port
            );
            std::process::exit(1);
        }
    }
}
