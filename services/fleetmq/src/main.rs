//! The `fleetmq` binary: parse the command line, run, and turn any failure into
//! one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = fleetmq::cli::Cli::parse();
    match fleetmq::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, no backtrace: the message says what to fix.
            eprintln!("fleetmq: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
