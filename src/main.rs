//! `hf-mount`: mount Hugging Face Hub repos and buckets as local folders.

use clap::{Parser, Subcommand};
use hf_mount::config::{MountArgs, NfsArgs};

#[derive(Parser)]
#[command(name = "hf-mount", version, about = "Mount Hugging Face Hub repos and buckets as local folders")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount over FUSE in the foreground (same as `hf-mount-fuse`).
    Fuse(MountArgs),
    /// Serve over NFSv3 and mount it in the foreground (same as `hf-mount-nfs`).
    Nfs(NfsArgs),
}

fn main() {
    let cli = Cli::parse();
    hf_mount::cli::init_logging();
    let result = match cli.command {
        Command::Fuse(args) => hf_mount::cli::run_fuse(args),
        Command::Nfs(args) => hf_mount::cli::run_nfs(args),
    };
    if let Err(e) = result {
        eprintln!("hf-mount: {e:#}");
        std::process::exit(1);
    }
}
