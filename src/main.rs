//! `hf-mount`: mount Hugging Face Hub repos and buckets as local folders.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults < config file < environment < flags), token redacted.
    Show(MountArgs),
}

fn run() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    hf_mount::cli::init_logging();
    let cli = Cli::from_arg_matches(&matches)?;
    let (_, sub) = matches.subcommand().expect("a subcommand is required");
    match cli.command {
        Command::Fuse(mut args) => {
            hf_mount::config_file::apply(&mut args, sub)?;
            hf_mount::cli::run_fuse(args)
        }
        Command::Nfs(mut args) => {
            hf_mount::config_file::apply_nfs(&mut args, sub)?;
            hf_mount::cli::run_nfs(args)
        }
        Command::Config(ConfigCommand::Show(mut args)) => {
            let (_, show) = sub.subcommand().expect("config has a subcommand");
            hf_mount::config_file::apply(&mut args, show)?;
            print!("{}", hf_mount::config_file::show(&args));
            Ok(())
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("hf-mount: {e:#}");
        std::process::exit(1);
    }
}
