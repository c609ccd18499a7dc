//! What every task shares: where the workspace is, and running a command that must succeed.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

/// Runs a command with inherited output; a non-zero exit is an error naming the command.
pub fn run_status(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
