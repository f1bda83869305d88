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
    /// Mount in the background (NFS by default, `--fuse` for FUSE); returns once the mount is
    /// ready, or prints the mount's error and fails. Logs: $HF_MOUNT_HOME/logs (default ~/.hf-mount).
    Start(StartArgs),
    /// List background mounts (pid, state, backend, uptime, source, mountpoint); dead ones are marked.
    Status,
    /// Unmount a background mount (waiting for pending work, bounded) and remove its record.
    Stop {
        /// The mountpoint given to `start`.
        mountpoint: std::path::PathBuf,
    },
    /// Wait until everything written on a mount is committed to the Hub: exits 0 once it is,
    /// or names what failed and exits 1. Without MOUNTPOINT, every background mount.
    Sync {
        /// A mounted directory (foreground or background mount).
        mountpoint: Option<std::path::PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(clap::Args)]
struct StartArgs {
    /// Mount over FUSE instead of NFS.
    #[arg(long)]
    fuse: bool,
    #[command(flatten)]
    nfs: NfsArgs,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults < config file < environment < flags), token redacted.
    Show(MountArgs),
}

fn run() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let (_, sub) = matches.subcommand().expect("a subcommand is required");
    let sub = sub.clone();
    let sub = &sub;
    match cli.command {
        Command::Fuse(mut args) => {
            hf_mount::config_file::apply(&mut args, sub)?;
            let _telemetry = hf_mount::telemetry::init(&args.telemetry())?;
            hf_mount::cli::run_fuse(args)
        }
        Command::Nfs(mut args) => {
            hf_mount::config_file::apply_nfs(&mut args, sub)?;
            let _telemetry = hf_mount::telemetry::init(&args.mount.telemetry())?;
            hf_mount::cli::run_nfs(args)
        }
        Command::Start(mut start) => {
            hf_mount::cli::init_logging();
            hf_mount::config_file::apply_nfs(&mut start.nfs, sub)?;
            let m = &start.nfs.mount;
            let source = m.parse_source()?;
            let mountpoint = hf_mount::cli::mountpoint(m)?;
            let backend = if start.fuse { "fuse" } else { "nfs" };
            // The child gets the same arguments (it reads the same config file), minus --fuse.
            let forwarded: Vec<String> =
                std::env::args().skip_while(|a| a != "start").skip(1).filter(|a| a != "--fuse").collect();
            let r = hf_mount::daemon::start(backend, &forwarded, &source.to_string(), m.revision.clone(), &mountpoint)?;
            println!(
                "{} mounted at {} ({}, pid {}, log {})",
                r.source,
                r.mountpoint.display(),
                r.backend,
                r.pid,
                r.log.display()
            );
            Ok(())
        }
        Command::Status => {
            hf_mount::cli::init_logging();
            print!("{}", hf_mount::daemon::status_text());
            Ok(())
        }
        Command::Stop { mountpoint } => {
            hf_mount::cli::init_logging();
            hf_mount::daemon::stop(&mountpoint)?;
            println!("unmounted {}", mountpoint.display());
            Ok(())
        }
        Command::Sync { mountpoint, timeout_secs } => {
            hf_mount::cli::init_logging();
            let targets = match mountpoint {
                Some(m) => vec![m],
                None => hf_mount::control::mounts_with_sockets(),
            };
            let timeout = std::time::Duration::from_secs(timeout_secs);
            let mut failed = 0;
            for m in &targets {
                let a = hf_mount::control::ask(m, hf_mount::control::Request::Sync, timeout)?;
                if a.ok {
                    println!("{}: everything committed ({})", m.display(), a.source);
                    continue;
                }
                failed += 1;
                if let Some(e) = &a.error {
                    eprintln!("{}: {e}", m.display());
                }
                for (path, why) in &a.failed {
                    eprintln!("{}: {path}: not committed: {why}", m.display());
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} mount(s) could not commit everything");
            }
            Ok(())
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
