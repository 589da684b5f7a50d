//! `tug-bench`: tug measured against plain git on real servers on 127.0.0.1. Run it through
//! `bench/write-path.sh`, which builds it in release mode and prepares the fixtures.

mod fixture;
mod servers;
mod stats;
mod worktree;
mod write_path;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tug-bench",
    about = "Benchmarks of tug's write path against plain git"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Floor (bare git push), naive pipeline and tug's land per image bump, plus the edit
    /// engine's rate, over smart HTTP on loopback.
    WritePath {
        /// Directory holding the pristine fixtures (`<name>.git`, made by bench/make-fixture.sh).
        #[arg(long)]
        fixtures: PathBuf,
        /// Fixtures to run, smallest first (the large/small ratio compares the last with the first).
        #[arg(long, value_delimiter = ',', default_value = "small,large")]
        sizes: Vec<String>,
        /// Measured requests per scenario and fixture.
        #[arg(long, default_value_t = 30)]
        requests: usize,
        /// Seconds the edit engine runs.
        #[arg(long, default_value_t = 2.0)]
        edit_seconds: f64,
        /// Write per-request timings as TSV files here.
        #[arg(long)]
        raw: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::WritePath {
            fixtures,
            sizes,
            requests,
            edit_seconds,
            raw,
        } => {
            let config = write_path::Config {
                fixtures_dir: fixtures,
                fixtures: sizes,
                requests,
                edit_duration: Duration::try_from_secs_f64(edit_seconds)?,
                raw_dir: raw,
            };
            let report = write_path::run(&config)?;
            print!("{}", report.render());
        }
    }
    Ok(())
}
