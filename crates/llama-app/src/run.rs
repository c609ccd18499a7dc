//! The entry point every binary calls: parse the flags, start logging, pick the mode.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::Args;
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
            eprintln!("{}: error: {e:#}", framework.name());
            ExitCode::FAILURE
        }
    }
}

/// `--serve` serves HTTP, `--benchmark` measures, `--prompt` answers once, and anything else
/// opens a chat.
fn run<F: Framework>(fw: &F, args: Args) -> anyhow::Result<()> {
    fw.check_args(&args)?;
    fw.set_quantize(args.quantize)?;
    if let Some(addr) = &args.serve {
        crate::serve::run(fw, &args, addr)
    } else if args.benchmark {
        crate::benchmark::run(fw, &args)
    } else if let Some(prompt) = &args.prompt {
        crate::one_shot::run(fw, &args, prompt)
    } else {
        crate::interactive::run(fw, &args)
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
