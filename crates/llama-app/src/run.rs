//! The entry point every binary calls: parse the flags, start logging, pick the mode.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Args, Mode};
use crate::framework::Framework;

/// Parses the command line, runs, and turns any error into a message and exit code 1.
pub fn main<F: Framework>(framework: F) -> ExitCode {
    let command = Args::command().name(framework.name()).bin_name(framework.name());
    let args = match Args::from_arg_matches(&command.get_matches()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    init_tracing(&framework, args.verbose);
    match run(&framework, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: error: {}", framework.name(), error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error: cause: its cause: …`, each cause said once. Many error types print their source in
/// their own message as well as returning it from `source()` (std's io errors through thiserror's
/// `{source}`, anyhow's contexts do not), so a cause whose text ends the message so far is left
/// out rather than repeated.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.ends_with(&text) {
            out = format!("{out}: {text}");
        }
    }
    out
}

/// The mode the flags pick ([`Args::mode`]).
fn run<F: Framework>(fw: &F, args: Args) -> anyhow::Result<()> {
    match args.mode() {
        Mode::Serve(addr) => crate::serve::run(fw, &args, addr),
        Mode::Benchmark => crate::benchmark::run(fw, &args),
        Mode::OneShot(prompt) => crate::one_shot::run(fw, &args, prompt),
        Mode::Chat => crate::interactive::run(fw, &args),
    }
}

/// Logs to stderr (`RUST_LOG`, else info with `--verbose`, else warnings), beside the
/// framework's own layer. wgpu's API calls are spans at info level when a framework counts them
/// (tinygrad-only's `host_work`): the default filter keeps them out of the log, where each would
/// cost a span record.
fn init_tracing<F: Framework>(framework: &F, verbose: bool) {
    use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};
    let level = if verbose { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},wgpu_core=warn,wgpu_hal=warn,naga=warn"))
    });
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    tracing_subscriber::registry().with(framework.tracing_layer()).with(log).init();
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    /// An error that prints its source and also returns it, as thiserror's `{source}` does.
    #[derive(Debug)]
    struct Open {
        source: std::io::Error,
    }

    impl std::fmt::Display for Open {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot open model file m.gguf: {}", self.source)
        }
    }

    impl std::error::Error for Open {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let doubled = anyhow::Error::new(Open { source: io() });
        assert_eq!(error_chain(&doubled), "cannot open model file m.gguf: No such file or directory (os error 2)");
        let contexts = anyhow::Error::new(io()).context("reading config.json").context("loading the model");
        assert_eq!(
            error_chain(&contexts),
            "loading the model: reading config.json: No such file or directory (os error 2)"
        );
    }
}
