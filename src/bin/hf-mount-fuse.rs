//! `hf-mount-fuse`: mount a Hub repo or bucket over FUSE, in the foreground.

use clap::Parser;
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
    let cli = Cli::parse();
    hf_mount::cli::init_logging();
    if let Err(e) = hf_mount::cli::run_fuse(cli.mount) {
        eprintln!("hf-mount-fuse: {e:#}");
        std::process::exit(1);
    }
}
