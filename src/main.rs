//! The `stark-sweep` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let dotenv_error = stark_sweep::config::load_dotenv();
    let cli = stark_sweep::cli::Cli::parse();
    stark_sweep::cmd::run(cli, dotenv_error)
}
