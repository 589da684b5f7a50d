//! `tug-bench`: tug measured against plain git on real servers on 127.0.0.1. Run it through
//! `bench/write-path.sh`, which builds it in release mode and prepares the fixtures.

mod fixture;
mod load;
mod releases;
mod replicas;
mod server;
mod servers;
mod stats;
mod targets;
mod throughput;
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
    /// Concurrent writers on one branch: naive git pipelines against a real `tug server`
    /// (1, 8, 64 clients), plus one request at a time against a bare push.
    Server {
        /// Directory holding the pristine fixtures.
        #[arg(long)]
        fixtures: PathBuf,
        #[arg(long, default_value = "large")]
        fixture: String,
        /// The `tug` binary; default `$CARGO_TARGET_DIR/release/tug`.
        #[arg(long)]
        tug: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        naive_writers: usize,
        #[arg(long, default_value_t = 5)]
        naive_updates: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 20)]
        requests_per_client: usize,
        #[arg(long, default_value_t = 30)]
        idle_requests: usize,
        /// `limits.batch_max` of the server.
        #[arg(long, default_value_t = 256)]
        batch_max: u32,
        /// Offered rates (requests/s) of the open-loop runs at the largest client count.
        #[arg(long, value_delimiter = ',', default_value = "250,500,1000")]
        open_rates: Vec<f64>,
        /// How long each open-loop run offers requests.
        #[arg(long, default_value_t = 4.0)]
        open_seconds: f64,
        /// Copy the server's log here.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Several replicas on PostgreSQL: SQLite against PostgreSQL on one branch, one replica
    /// against three across many branches, and a chaos run that kills the hot branch's writer.
    Replicas {
        #[arg(long)]
        fixtures: PathBuf,
        #[arg(long, default_value = "large")]
        fixture: String,
        /// The `tug` binary; default `$CARGO_TARGET_DIR/release/tug`.
        #[arg(long)]
        tug: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Requests of each many-branch run.
        #[arg(long, default_value_t = 1280)]
        requests: usize,
        /// Requests of each one-branch store run (half per round). Tens of batches per round,
        /// so the partial batches when the clients start and stop do not weigh on the ratio.
        #[arg(long, default_value_t = 5120)]
        store_requests: usize,
        /// Branches of the many-branch runs (0 skips them).
        #[arg(long, default_value_t = 100)]
        branches: usize,
        /// Requests of the chaos run (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        chaos_requests: usize,
        #[arg(long, default_value_t = 64)]
        chaos_clients: usize,
        /// Seconds between two kills of the hot branch's writer.
        #[arg(long, default_value_t = 10.0)]
        kill_every: f64,
        /// How often the person of the chaos run pushes to the hot branch, in ms (0: nobody).
        #[arg(long, default_value_t = 100)]
        human_every_ms: u64,
    },
    /// Commits landed per second by a `tug server` (closed loops, open loops, overload) beside the
    /// floor: one bare `git push` of B prepared commits, with ratios and targets.
    Throughput {
        /// Directory holding the pristine fixtures.
        #[arg(long)]
        fixtures: PathBuf,
        #[arg(long, default_value = "large")]
        fixture: String,
        /// The `tug` binary; default `$CARGO_TARGET_DIR/release/tug`.
        #[arg(long)]
        tug: Option<PathBuf>,
        /// Commits per floor push.
        #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
        floor_batches: Vec<usize>,
        /// Floor pushes per batch size; the median is reported.
        #[arg(long, default_value_t = 3)]
        floor_repeat: usize,
        /// Closed-loop client counts; the largest one's rate is the capacity.
        #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 20)]
        requests_per_client: usize,
        /// `limits.batch_max` of the server.
        #[arg(long, default_value_t = 256)]
        batch_max: u32,
        /// `limits.max_waiting_streams` of the server (default: the server's own).
        #[arg(long)]
        max_waiting_streams: Option<u32>,
        /// Offered rates (requests/s) of the open-loop runs.
        #[arg(long, value_delimiter = ',', default_value = "250,500,1000")]
        open_rates: Vec<f64>,
        /// How long each open-loop run offers requests.
        #[arg(long, default_value_t = 10.0)]
        open_seconds: f64,
        /// The overload run offers this many times the capacity.
        #[arg(long, default_value_t = 4.0)]
        overload_factor: f64,
        /// How long the overload run offers requests (0 skips it).
        #[arg(long, default_value_t = 60.0)]
        overload_seconds: f64,
        /// Requests of the sustained run (64 closed-loop clients; its first and last tenth are
        /// compared); 0 skips it.
        #[arg(long, default_value_t = 0)]
        sustained_requests: usize,
        /// Copy the server's log here.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Hold every push (floor and tug) this long in the remote's `pre-receive` hook: a git
        /// server farther away than loopback.
        #[arg(long, default_value_t = 0)]
        remote_delay_ms: u64,
        /// When the remote repacks: between rows only (a hosted server's scheduled
        /// housekeeping), or also during rows (`receive-pack`'s default `gc --auto`). In the
        /// sustained run the first also repacks geometrically every 50 pushes, at the lowest CPU
        /// priority.
        #[arg(long, value_enum, default_value = "between-rows")]
        remote_gc: throughput::RemoteGc,
    },
    /// `GET /api/v1/status/{service}` with every service of the fixture in three environments,
    /// and a promotion from request to push against a bare `git push`.
    Releases {
        #[arg(long)]
        fixtures: PathBuf,
        #[arg(long, default_value = "large")]
        fixture: String,
        /// The `tug` binary; default `$CARGO_TARGET_DIR/release/tug`.
        #[arg(long)]
        tug: Option<PathBuf>,
        #[arg(long, default_value_t = 200)]
        status_calls: usize,
        #[arg(long, default_value_t = 20)]
        promotions: usize,
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
        Command::Server {
            fixtures,
            fixture,
            tug,
            naive_writers,
            naive_updates,
            clients,
            requests_per_client,
            idle_requests,
            batch_max,
            open_rates,
            open_seconds,
            log,
        } => {
            let config = server::Config {
                fixtures_dir: fixtures,
                fixture,
                tug: tug.unwrap_or_else(server::default_tug_binary),
                naive_writers,
                naive_updates_per_writer: naive_updates,
                clients,
                requests_per_client,
                idle_requests,
                batch_max,
                open_rates,
                open_seconds,
                log_copy: log,
            };
            let report = server::run(&config)?;
            print!("{}", report.render());
        }
        Command::Replicas {
            fixtures,
            fixture,
            tug,
            clients,
            requests,
            store_requests,
            branches,
            chaos_requests,
            chaos_clients,
            kill_every,
            human_every_ms,
        } => {
            let config = replicas::Config {
                fixtures_dir: fixtures,
                fixture,
                tug: tug.unwrap_or_else(server::default_tug_binary),
                clients,
                requests,
                store_requests,
                branches,
                chaos_requests,
                chaos_clients: chaos_clients.max(1),
                kill_every: Duration::try_from_secs_f64(kill_every)?,
                human_every: (human_every_ms > 0).then(|| Duration::from_millis(human_every_ms)),
            };
            let report = replicas::run(&config)?;
            print!("{}", report.render());
        }
        Command::Throughput {
            fixtures,
            fixture,
            tug,
            floor_batches,
            floor_repeat,
            clients,
            requests_per_client,
            batch_max,
            max_waiting_streams,
            open_rates,
            open_seconds,
            overload_factor,
            overload_seconds,
            sustained_requests,
            log,
            remote_delay_ms,
            remote_gc,
        } => {
            let config = throughput::Config {
                fixtures_dir: fixtures,
                fixture,
                tug: tug.unwrap_or_else(server::default_tug_binary),
                floor_batches,
                floor_repeat,
                clients,
                requests_per_client,
                batch_max,
                max_waiting_streams,
                open_rates,
                open_seconds,
                overload_factor,
                overload_seconds,
                sustained_requests,
                log_copy: log,
                remote_delay: Duration::from_millis(remote_delay_ms),
                remote_gc,
            };
            let report = throughput::run(&config)?;
            print!("{}", report.render());
        }
        Command::Releases {
            fixtures,
            fixture,
            tug,
            status_calls,
            promotions,
        } => {
            let config = releases::Config {
                fixtures_dir: fixtures,
                fixture,
                tug: tug.unwrap_or_else(server::default_tug_binary),
                status_calls,
                promotions,
            };
            let report = releases::run(&config)?;
            print!("{}", report.render());
        }
    }
    Ok(())
}
