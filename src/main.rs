//! The `stark-sweep` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let env_file = stark_sweep::env_file::named_env_file(std::env::args_os());
    let dotenv_error = stark_sweep::env_file::load_dotenv(env_file.as_deref());
    let args: Vec<_> = std::env::args_os().collect();
    match stark_sweep::cli::Cli::try_parse_from(&args) {
        Ok(cli) => stark_sweep::cmd::run(cli, dotenv_error),
        Err(err) => match stark_sweep::cli::env_value_error(&err, &args) {
            Some(line) => stark_sweep::cmd::config_error(dotenv_error, &line),
            None => err.exit(),
        },
    }
}
