//! `hf-mount-nfs`: serve a Hub repo or bucket over NFSv3 on loopback and mount
//! it with the system's NFS client (or only serve it with `--serve-only`).

use clap::Parser;
use hf_mount::config::NfsArgs;

#[derive(Parser)]
#[command(
    name = "hf-mount-nfs",
    version,
    about = "Mount a Hugging Face Hub repo or bucket over NFSv3 (a server on loopback, mounted with the system's NFS client)"
)]
struct Cli {
    #[command(flatten)]
    nfs: NfsArgs,
}

fn main() {
    let cli = Cli::parse();
    hf_mount::cli::init_logging();
    if let Err(e) = hf_mount::cli::run_nfs(cli.nfs) {
        eprintln!("hf-mount-nfs: {e:#}");
        std::process::exit(1);
    }
}
