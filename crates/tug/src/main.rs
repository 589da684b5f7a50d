//! The `tug` binary: flag parsing and wiring. Everything with logic lives in the library crates.

mod cli;
mod client;
mod cmd_apply;
mod cmd_artifact;
mod cmd_audit;
mod cmd_deploy;
mod cmd_edit;
mod cmd_release;
mod cmd_server;
mod exit;
mod localfs;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::OutputFormat;

// jemalloc rather than glibc's malloc: a server under load spends a sixth less CPU per request
// (most of its allocations are short-lived buffers freed on another thread), at the same memory.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return usage_error(&e),
    };
    let format = args.command.output_format();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            let (status, code, reported) = exit::classify(&e);
            output::error(&e);
            if format == OutputFormat::Json && !reported {
                output::json_error(&code, &e);
            }
            ExitCode::from(status)
        }
    }
}

/// Help and version go to stdout (status 0); a usage error to stderr (status 2), and as a JSON
/// error on stdout when the arguments asked for JSON.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => {
            if cli::asks_for_json(std::env::args()) {
                let text = e.render().to_string();
                // The error without clap's usage lines and hints, on one line.
                let head = text.split("\n\n").next().unwrap_or("invalid arguments");
                let message = head
                    .trim_start_matches("error: ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                output::json_error("invalid_argument", &anyhow::anyhow!("{message}"));
            }
            ExitCode::from(exit::USAGE)
        }
    }
}

fn run(args: cli::Cli) -> anyhow::Result<ExitCode> {
    match args.command {
        cli::Command::Edit(cmd) => cmd_edit::run(cmd),
        cli::Command::Apply(cmd) => cmd_apply::run(cmd),
        cli::Command::Server { config, check } => cmd_server::run(&config, check),
        cli::Command::Quickstart { dir, http } => cmd_server::quickstart(dir.as_deref(), http),
        cli::Command::Deploy(cmd) => cmd_deploy::run(*cmd),
        cli::Command::Artifact(cmd) => cmd_artifact::run(cmd).map(|()| ExitCode::SUCCESS),
        cli::Command::Release(args) => cmd_release::release(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Promote(args) => cmd_release::promote(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Rollback(args) => cmd_release::rollback(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Unpin(args) => cmd_release::unpin(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Status(args) => cmd_release::status(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Describe(cmd) => cmd_release::describe(&cmd).map(|()| ExitCode::SUCCESS),
        cli::Command::Policy(args) => cmd_release::policy(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Reindex(args) => cmd_release::reindex(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Audit(args) => cmd_audit::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Completion { shell } => {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            // Generated into memory, then written ignoring a closed stdout (`| head -1`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tug", &mut script);
            output::bytes(&script);
            Ok(ExitCode::SUCCESS)
        }
    }
}
