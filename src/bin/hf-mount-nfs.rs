//! `hf-mount-nfs`: serve a Hub repo or bucket over NFSv3 on loopback and mount
//! it with the system's NFS client (or only serve it with `--serve-only`).

use clap::{CommandFactory, FromArgMatches, Parser};
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
    let matches = Cli::command().get_matches();
    let result = Cli::from_arg_matches(&matches).map_err(anyhow::Error::from).and_then(|cli| {
        let mut args = cli.nfs;
        hf_mount::config_file::apply_nfs(&mut args, &matches)?;
        let _telemetry = hf_mount::telemetry::init(&args.mount.telemetry())?;
        hf_mount::cli::run_nfs(args)
    });
    if let Err(e) = result {
        eprintln!("hf-mount-nfs: {e:#}");
        std::process::exit(1);
    }
}
