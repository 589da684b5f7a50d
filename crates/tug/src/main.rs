//! The `tug` binary: flag parsing and wiring. Everything with logic lives in the library crates.

mod cli;
mod client;
mod cmd_apply;
mod cmd_artifact;
mod cmd_deploy;
mod cmd_edit;
mod cmd_release;
mod cmd_server;
mod localfs;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            output::error(&e);
            ExitCode::from(1)
        }
    }
}

fn run(args: cli::Cli) -> anyhow::Result<ExitCode> {
    match args.command {
        cli::Command::Edit(cmd) => cmd_edit::run(cmd),
        cli::Command::Apply(cmd) => cmd_apply::run(cmd),
        cli::Command::Server { config } => cmd_server::run(&config),
        cli::Command::Quickstart { dir, http } => cmd_server::quickstart(&dir, http),
        cli::Command::Deploy(cmd) => Ok(cmd_deploy::run(cmd)),
        cli::Command::Artifact(cmd) => cmd_artifact::run(cmd).map(|()| ExitCode::SUCCESS),
        cli::Command::Release(args) => cmd_release::release(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Promote(args) => cmd_release::promote(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Rollback(args) => cmd_release::rollback(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Unpin(args) => cmd_release::unpin(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Status(args) => cmd_release::status(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Describe(cmd) => cmd_release::describe(&cmd).map(|()| ExitCode::SUCCESS),
        cli::Command::Policy(args) => cmd_release::policy(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Reindex(args) => cmd_release::reindex(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Completion { shell } => {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "tug", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
