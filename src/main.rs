//! The `cairn` binary: parses flags, runs one command, maps errors to exit codes.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::signals::install();
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cairn: {}{}", cli::render_error(&err), cli::hint(&err));
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
