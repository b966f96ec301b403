//! Command-line interface (clap derive). Help texts are written for the field
//! technician at the box's console.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// sipbridge: edge SIP gateway. Answers calls from SIP trunks (Telnyx, LiveKit,
/// other carriers), bridges them to voice agents, local rooms or other SIP
/// lines, records them and reports every call to your backend through signed
/// webhooks.
#[derive(Debug, Parser)]
#[command(name = "sipbridge", version, propagate_version = true, max_term_width = 100, disable_help_subcommand = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (this is what the systemd service starts).
    ///
    /// Reads the config file, takes calls until stopped. SIGTERM stops it gently
    /// (calls may finish, up to node.shutdown_grace); SIGHUP re-reads the config
    /// (`systemctl reload sipbridge`) and keeps the old one if the new one has errors.
    Run {
        /// Config file.
        #[arg(short, long, value_name = "PATH", env = "SIPBRIDGE_CONFIG", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Check the config file and list every problem, with its line number.
    ///
    /// Exit status 0 when the config is usable (warnings may still be printed),
    /// 1 when it has errors. Run it after every edit, before restarting the service.
    CheckConfig {
        /// Config file.
        #[arg(short, long, value_name = "PATH", env = "SIPBRIDGE_CONFIG", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Create the Ed25519 key that signs webhooks, and print its public key.
    ///
    /// The key file is written with mode 0600. Give the printed public key
    /// (base64) to your backend: it verifies sipbridge's webhooks with it exactly
    /// as it verifies Telnyx's.
    Keygen {
        /// Where to write the private key (e.g. /etc/sipbridge/webhook.key).
        #[arg(short, long, value_name = "PATH")]
        out: PathBuf,
        /// Replace an existing key file (webhook receivers then need the new public key).
        #[arg(long)]
        force: bool,
    },
    /// Print the public key of an existing signing key file (base64).
    Pubkey {
        /// The private key file written by `sipbridge keygen`.
        #[arg(value_name = "PATH", default_value = "/etc/sipbridge/webhook.key")]
        key: PathBuf,
    },
    /// Webhook delivery: what is pending or dead-lettered, and requeueing.
    Webhooks {
        /// What to do.
        #[command(subcommand)]
        action: WebhooksAction,
        /// Config file.
        #[arg(short, long, value_name = "PATH", env = "SIPBRIDGE_CONFIG", default_value = crate::config::DEFAULT_PATH, global = true)]
        config: PathBuf,
    },
    /// Print the version and the machine architecture it was built for.
    Version,
    /// Write the sipbridge(8) man page (used when building the package).
    #[command(hide = true)]
    Manpage {
        /// Output directory.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

/// `sipbridge webhooks ...`
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// Pending, dead-lettered and delivered counts, and the oldest pending event.
    Status,
    /// Requeue every dead-lettered event for delivery (the daemon picks them up).
    RetryDead,
}
