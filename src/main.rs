//! The `forkring` binary: parse the command line, run it, map the outcome to
//! an exit code.

use clap::Parser;

fn main() {
    let cli = forkring::cli::Cli::parse();
    if let Err(f) = forkring::cli::dispatch(cli) {
        eprintln!("forkring: error: {}", f.message);
        std::process::exit(f.code);
    }
}
