//! The `tern` binary: parses the command line and hands over to [`tern::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    tern::cli::main(tern::cli::Cli::parse())
}
