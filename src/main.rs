//! The `forkring` binary: the command line with the registry's jobs.

fn main() {
    forkring::cli::main(forkring::jobs::ALL)
}
