//! Resolves a browser's `*.local` ICE host name with a multicast DNS query (RFC 6762):
//!
//!   mdns_resolve NAME [TIMEOUT_SECS]
//!
//! Prints each address on its own line and exits 0, or exits 1 when nobody answered within
//! the timeout (default 5 s). Used by tests/e2e/mdns-chromium.sh against Chromium's
//! responder.

#[path = "support/mdns_io.rs"]
mod mdns_io;

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprintln!("usage: mdns_resolve NAME [TIMEOUT_SECS]");
        return ExitCode::from(2);
    };
    let timeout = match args.get(1).map(|s| s.parse::<u64>()) {
        None => Duration::from_secs(5),
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => {
            eprintln!("mdns_resolve: TIMEOUT_SECS must be a whole number of seconds");
            return ExitCode::from(2);
        }
    };
    match mdns_io::resolve(name, timeout) {
        Ok(found) if !found.is_empty() => {
            for ip in found {
                println!("{ip}");
            }
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("mdns_resolve: no answer for {name} within {timeout:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("mdns_resolve: {e}");
            ExitCode::FAILURE
        }
    }
}
