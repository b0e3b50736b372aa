//! The command-line shell: parse arguments, run, turn errors into one line
//! and an exit code. The work is in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if let Err(e) = keras2safetensors::cancel::stop_on_signals() {
        eprintln!("warning: Ctrl-C will not clean up: {e}");
    }
    match cli::run(args) {
        Ok(cli::Outcome::Success) => ExitCode::SUCCESS,
        Ok(cli::Outcome::Mismatch) => ExitCode::from(1),
        // A reader that stops early (`| head`) is not an error of ours.
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        // Stopped by Ctrl-C: the shell's convention for SIGINT.
        Err(e) if keras2safetensors::cancel::requested() => {
            eprintln!("error: {}", keras2safetensors::cancel::blame(e));
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
