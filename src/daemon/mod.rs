//! The daemon shell: CLI, startup order, systemd notifications, signals, logging,
//! the data-directory lock. Owns process-level concerns only; call handling lives
//! in `sip`, `media`, `call` and friends.

pub mod cli;
pub mod lock;
pub mod logging;
pub mod notify;
pub mod run;

use clap::{CommandFactory, Parser};

use crate::config;
use crate::webhook::key;
use cli::{Cli, Command};

/// Entry point of the `sipbridge` binary; returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run::run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Keygen { out, force } => match key::generate_to(&out, force) {
            Ok(k) => {
                eprintln!("wrote {} (mode 0600); webhook public key (base64):", out.display());
                println!("{}", key::public_key_base64(&k));
                0
            }
            Err(e) => {
                eprintln!("sipbridge keygen: {e}");
                if !force && out.exists() {
                    eprintln!("(the file exists; add --force to replace it)");
                }
                1
            }
        },
        Command::Pubkey { key: path } => match key::load_signing_key(&path) {
            Ok(k) => {
                println!("{}", key::public_key_base64(&k));
                0
            }
            Err(e) => {
                eprintln!("sipbridge pubkey: {e}");
                1
            }
        },
        Command::Webhooks { action, config: path } => match config::load(&path) {
            Ok(loaded) => match action {
                cli::WebhooksAction::Status => crate::webhook::cli::status(&loaded.config),
                cli::WebhooksAction::RetryDead => crate::webhook::cli::retry_dead(&loaded.config),
            },
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Command::Version => {
            println!("sipbridge {} ({}-{})", env!("CARGO_PKG_VERSION"), std::env::consts::ARCH, std::env::consts::OS);
            0
        }
        Command::Manpage { out } => {
            // sipbridge(8), and sipbridge-<subcommand>(8) for every page it refers to.
            let cmd = Cli::command();
            let mut pages = vec![("sipbridge.8".to_string(), cmd.clone())];
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = format!("sipbridge-{}", sub.get_name());
                pages.push((format!("{name}.8"), sub.clone().name(name.clone())));
            }
            for (file, page) in pages {
                let mut buf = Vec::new();
                let path = out.join(file);
                if let Err(e) =
                    clap_mangen::Man::new(page).section("8").render(&mut buf).and_then(|_| std::fs::write(&path, buf))
                {
                    eprintln!("cannot write {}: {e}", path.display());
                    return 1;
                }
            }
            0
        }
    }
}

fn check_config(path: &std::path::Path) -> i32 {
    match config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: OK", path.display());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            let n = e.problems.len();
            eprintln!("{}: {n} error{}", path.display(), if n == 1 { "" } else { "s" });
            run::EXIT_CONFIG
        }
    }
}
