//! The `stark-sweep` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let env_file = stark_sweep::config::named_env_file(std::env::args_os());
    let dotenv_error = stark_sweep::config::load_dotenv(env_file.as_deref());
    let cli = stark_sweep::cli::Cli::parse();
    stark_sweep::cmd::run(cli, dotenv_error)
}
