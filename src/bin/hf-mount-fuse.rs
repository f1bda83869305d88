//! `hf-mount-fuse`: mount a Hub repo or bucket over FUSE, in the foreground.

use clap::{CommandFactory, FromArgMatches, Parser};
use hf_mount::config::MountArgs;

#[derive(Parser)]
#[command(
    name = "hf-mount-fuse",
    version,
    about = "Mount a Hugging Face Hub repo or bucket as a local folder over FUSE (foreground; Ctrl-C or umount to stop)"
)]
struct Cli {
    #[command(flatten)]
    mount: MountArgs,
}

fn main() {
    let matches = Cli::command().get_matches();
    let result = Cli::from_arg_matches(&matches).map_err(anyhow::Error::from).and_then(|cli| {
        let mut args = cli.mount;
        hf_mount::config_file::apply(&mut args, &matches)?;
        let _telemetry = hf_mount::telemetry::init(&args.telemetry())?;
        hf_mount::cli::run_fuse(args)
    });
    if let Err(e) = result {
        eprintln!("hf-mount-fuse: {e:#}");
        std::process::exit(1);
    }
}
