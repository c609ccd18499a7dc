//! The interactive chat: one message a line, each reply streamed as it is generated.
//!
//! On a terminal there is a line editor with history and a `> ` prompt; from a pipe, each line
//! is a turn and stdout carries nothing but the replies (one per line group), so scripts can
//! drive it. Ctrl-C stops the reply being generated; Ctrl-D or `/exit` quits.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::cli::Args;
use crate::framework::Framework;
use crate::setup;
use crate::terminal;
use burn::tensor::backend::Backend;
use llama_core::chat::{ChatError, ChatSession, ChatSettings, TurnStats};
use llama_core::kernels::Kernels;
use llama_core::sampling::Sampler;
use llama_core::scheduler::Scheduler;
use llama_core::sequence::FinishReason;

const HELP: &str = "/reset forgets the conversation, /stats shows the last reply's speed, /exit or Ctrl-D quits; \
Ctrl-C stops a reply";

pub fn run<F: Framework>(fw: &F, args: &Args) -> anyhow::Result<()> {
    let file = setup::open_model_file(args)?;
    let template = setup::chat_template(args, &file)?;
    let mut opened = setup::open_backend(fw, args)?;
    let (model, load_s) = setup::load(&opened, &file)?;
    let interactive = std::io::stdin().is_terminal();
    let interrupt = install_ctrl_c_handler()?;
    let seed = args.seed.unwrap_or_else(setup::fresh_seed);
    let settings = ChatSettings {
        template,
        system: args.system.clone(),
        sampler: Sampler::new(args.sampling(), seed),
        max_tokens: args.max_tokens,
        ignore_eos: args.ignore_eos,
    };
    let runner = opened.take_runner();
    let scheduler = Scheduler::new(&model, Some(&file.tokenizer), runner, args.single_slot(file.context));
    let mut chat = ChatSession::new(scheduler, &file.tokenizer, settings);
    if interactive || args.verbose {
        eprintln!(
            "{} · {} · {} · {:?}\n{} loaded in {load_s:.1} s; {}-token context; seed {seed}; {}\n{HELP}",
            fw.name(),
            fw.stack(),
            opened.description,
            opened.dtype,
            file.path.display(),
            file.context,
            chat.template_origin(),
        );
    }
    converse(&mut chat, &mut Input::new(interactive), &interrupt)?;
    setup::finish(&opened);
    Ok(())
}

/// Reads lines until the end of input or `/exit`: commands, or messages to reply to.
fn converse<B: Backend, K: Kernels<B>>(
    chat: &mut ChatSession<'_, B, K>,
    input: &mut Input,
    interrupt: &Interrupt,
) -> anyhow::Result<()> {
    let mut last: Option<TurnStats> = None;
    let mut turn = 0;
    while let Some(line) = input.read_line()? {
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                chat.reset();
                eprintln!("[conversation cleared]");
            }
            "/stats" => match &last {
                Some(s) => eprintln!("{}", stats_detail(s, chat.cached_tokens(), chat.context())),
                None => eprintln!("[no reply yet]"),
            },
            "/help" => eprintln!("{HELP}"),
            _ if line.starts_with('/') && !line.contains(' ') => eprintln!("[unknown command {line}] {HELP}"),
            message => {
                interrupt.start_reply();
                let result = chat.reply(message, terminal::print_streamed, &|| interrupt.requested());
                interrupt.end_reply();
                match result {
                    Ok(stats) => {
                        println!();
                        turn += 1;
                        eprintln!("{}", stats_line(turn, &stats, chat.context()));
                        last = Some(stats);
                    }
                    Err(e @ ChatError::TooLong { .. }) => eprintln!("[{e}]"),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// The line after each reply: what was computed and how fast.
fn stats_line(turn: usize, s: &TurnStats, context: usize) -> String {
    let mut line = format!(
        "[turn {turn}: prefilled {} new prompt tokens ({} reused from the cache), {} tokens generated; TTFT {:.0} ms, {:.1} tok/s",
        s.prefilled_tokens,
        s.reused_tokens,
        s.generated_tokens,
        s.time_to_first_token_s * 1e3,
        s.decode_tok_s
    );
    match s.finish_reason {
        FinishReason::EndOfGeneration | FinishReason::StopString => {}
        FinishReason::MaxTokens => line.push_str("; stopped at --max-tokens"),
        FinishReason::Cancelled => line.push_str("; interrupted"),
        FinishReason::ContextFull => line.push_str(&format!(
            "; the {context}-token context is full, so the reply was cut: /reset starts over, or the oldest turns will be dropped"
        )),
    }
    if s.dropped_turns > 0 {
        line.push_str(&format!("; dropped the {} oldest messages to fit the context", s.dropped_turns));
    }
    line.push(']');
    line
}

fn stats_detail(s: &TurnStats, cached: usize, context: usize) -> String {
    format!(
        "last reply: {} tokens, time to first token {:.0} ms, prefill {:.1} tok/s ({} new of {} prompt tokens), decode {:.2} tok/s, stop: {:?}\ncontext: {cached} of {context} tokens in the cache",
        s.generated_tokens,
        s.time_to_first_token_s * 1e3,
        s.prefill_tok_s,
        s.prefilled_tokens,
        s.prompt_tokens,
        s.decode_tok_s,
        s.finish_reason,
    )
}

/// Ctrl-C while a reply is generated asks it to stop; at any other time it ends the program (a
/// terminal's line editor reads Ctrl-C itself and never gets here).
struct Interrupt {
    requested: Arc<AtomicBool>,
    replying: Arc<AtomicBool>,
}

impl Interrupt {
    fn start_reply(&self) {
        self.requested.store(false, Ordering::SeqCst);
        self.replying.store(true, Ordering::SeqCst);
    }

    fn end_reply(&self) {
        self.replying.store(false, Ordering::SeqCst);
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }
}

fn install_ctrl_c_handler() -> anyhow::Result<Interrupt> {
    let interrupt = Interrupt { requested: Arc::default(), replying: Arc::default() };
    let (requested, replying) = (interrupt.requested.clone(), interrupt.replying.clone());
    ctrlc::set_handler(move || {
        if replying.load(Ordering::SeqCst) {
            requested.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;
    Ok(interrupt)
}

/// Lines from a terminal (edited, with history) or from a pipe (as they come).
enum Input {
    Terminal(Box<rustyline::DefaultEditor>),
    Pipe(std::io::StdinLock<'static>),
}

impl Input {
    fn new(interactive: bool) -> Self {
        if interactive && let Ok(editor) = rustyline::DefaultEditor::new() {
            return Input::Terminal(Box::new(editor));
        }
        Input::Pipe(std::io::stdin().lock())
    }

    /// The next line; `None` at end of input (Ctrl-D).
    fn read_line(&mut self) -> anyhow::Result<Option<String>> {
        match self {
            Input::Terminal(editor) => match editor.readline("> ") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Ok(Some(line))
                }
                // Ctrl-C at the prompt clears the line, as in a shell.
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Some(String::new())),
                Err(rustyline::error::ReadlineError::Eof) => Ok(None),
                Err(e) => Err(e).context("reading from the terminal"),
            },
            Input::Pipe(stdin) => {
                let mut line = String::new();
                let n = stdin.read_line(&mut line).context("reading standard input")?;
                Ok((n > 0).then_some(line))
            }
        }
    }
}
