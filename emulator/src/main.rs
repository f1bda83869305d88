//! `hf-hub-emulator`: serve a local Hub, or seed one from folders.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hf_hub_emulator::{Emulator, EmulatorConfig, TokenSpec};

#[derive(Parser)]
#[command(
    name = "hf-hub-emulator",
    version,
    about = "A local Hugging Face Hub (repos, buckets, Xet CAS) for offline use and tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Hub API and the CAS; prints the endpoint URL as the first line on stdout.
    Serve {
        /// Where state, blobs and CAS data live (created if missing; survives restarts).
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Give USER a token: USER:VALUE:read|write. USER owns the namespace USER. Repeatable.
        #[arg(long = "token", value_name = "USER:VALUE:ROLE")]
        tokens: Vec<TokenSpec>,
    },
    /// Create (or add a commit to) a repo or bucket from a local folder. Run it while no server uses DATA_DIR.
    Seed {
        #[arg(long)]
        data_dir: PathBuf,
        /// Make the repo or bucket private (only when it is created).
        #[arg(long)]
        private: bool,
        #[command(subcommand)]
        target: SeedTarget,
    },
}

#[derive(Subcommand)]
enum SeedTarget {
    /// A model, dataset or space: [datasets/|spaces/]owner/name
    Repo { repo: String, folder: PathBuf },
    /// A bucket: ns/name
    Bucket { bucket: String, folder: PathBuf },
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,hf_hub_emulator=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("hf-hub-emulator: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { data_dir, host, port, tokens } => {
            let config = EmulatorConfig { data_dir, host, port, tokens };
            let hub = Emulator::start(config).await?;
            println!("{}", hub.endpoint());
            std::io::stdout().flush()?;
            wait_for_signal().await;
            hub.stop().await;
            Ok(())
        }
        Command::Seed { data_dir, private, target } => {
            let hub = Emulator::start(EmulatorConfig::new(data_dir)).await?;
            let (what, report) = match target {
                SeedTarget::Repo { repo, folder } => (repo.clone(), hub.seed_repo(&repo, &folder, private).await?),
                SeedTarget::Bucket { bucket, folder } => {
                    (bucket.clone(), hub.seed_bucket(&bucket, &folder, private).await?)
                }
            };
            println!(
                "seeded {what}: {} Xet files, {} git blobs, {} bytes{}",
                report.xet_files,
                report.blob_files,
                report.bytes,
                report.commit.map(|c| format!(", commit {c}")).unwrap_or_default()
            );
            hub.stop().await;
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
