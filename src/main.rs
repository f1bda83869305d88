//! `hf-mount`: mount Hugging Face Hub repos and buckets as local folders.

use clap::{Parser, Subcommand};
use hf_mount::config::MountArgs;

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
}

fn main() {
    let cli = Cli::parse();
    hf_mount::cli::init_logging();
    let result = match cli.command {
        Command::Fuse(args) => hf_mount::cli::run_fuse(args),
    };
    if let Err(e) = result {
        eprintln!("hf-mount: {e:#}");
        std::process::exit(1);
    }
}
