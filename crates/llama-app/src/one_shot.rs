//! `--prompt TEXT`: generate one reply (or, with `--raw`, one continuation), print it and exit.

use std::io::IsTerminal;

use anyhow::bail;
use serde_json::json;

use crate::cli::Args;
use crate::framework::{Framework, FrameworkLlama, Opened};
use crate::setup::{self, ModelFile};
use crate::terminal;
use llama_core::chat_template::Message;
use llama_core::kernels::Kernels;
use llama_core::sampling::Sampler;
use llama_core::scheduler::Scheduler;
use llama_core::sequence::{Finished, Request, rate};

pub fn run<F: Framework>(fw: &F, args: &Args, prompt_text: &str) -> anyhow::Result<()> {
    let file = setup::open_model_file(args)?;
    let prompt = encode_prompt(args, prompt_text, &file)?;
    if prompt.is_empty() {
        bail!("the prompt is empty after tokenization; give some text");
    }
    if prompt.len() > file.context {
        bail!(
            "the prompt is {} tokens, longer than the context of {} tokens (raise --ctx-size, up to {})",
            prompt.len(),
            file.context,
            file.config.context_length
        );
    }
    let mut opened = setup::open_backend(fw, args)?;
    let (model, load_s) = setup::load(&opened, &file)?;
    tracing::info!("loaded {} in {load_s:.2}s, {} prompt tokens", file.path.display(), prompt.len());

    let seed = args.seed.unwrap_or_else(setup::fresh_seed);
    let request = Request {
        ignore_eos: args.ignore_eos,
        record_top_logits: if args.json { args.top_logits } else { 0 },
        ..Request::new(prompt.clone(), args.max_tokens, Sampler::new(args.sampling(), seed))
    };
    let runner = opened.take_runner();
    let mut scheduler = Scheduler::new(&model, Some(&file.tokenizer), runner, args.single_slot(file.context));
    let on_text = |piece: &str| {
        if !args.json {
            terminal::print_streamed(piece);
        }
    };
    let finished = scheduler.generate(request, on_text, &|| false)?;
    setup::finish(&opened);
    let run = Run { fw, args, file: &file, opened: &opened, model: &model, load_s, seed };
    run.report(&prompt, &finished);
    Ok(())
}

/// What a one-shot run reports besides its reply.
struct Run<'a, F: Framework> {
    fw: &'a F,
    args: &'a Args,
    file: &'a ModelFile,
    opened: &'a Opened<F>,
    model: &'a FrameworkLlama<F>,
    load_s: f64,
    seed: u64,
}

impl<F: Framework> Run<'_, F> {
    /// `--json`'s object on stdout, else a line of figures on stderr (on a terminal or with
    /// `--verbose`).
    fn report(&self, prompt: &[u32], finished: &Finished) {
        let t = &finished.timings;
        let prefill_tok_s = rate(prompt.len() - finished.reused_tokens, t.prefill_s);
        let decode_tok_s = rate(t.decode_step_s.len(), t.decode_s);
        if !self.args.json {
            println!();
            if std::io::stderr().is_terminal() || self.args.verbose {
                eprintln!(
                    "[{} tokens, {:?}; TTFT {:.0} ms, prefill {prefill_tok_s:.1} tok/s, decode {decode_tok_s:.1} tok/s, seed {}]",
                    finished.tokens.len(),
                    finished.reason,
                    t.time_to_first_token_s * 1e3,
                    self.seed,
                );
            }
            return;
        }
        let out = json!({
            "framework": self.fw.name(),
            "stack": self.fw.stack(),
            "kernels": self.model.kernels().capabilities(self.model.device()).name,
            "device": self.opened.description,
            "model": setup::model_info(&self.file.checkpoint, &self.file.config),
            "dtype": self.opened.dtype,
            "seed": self.seed,
            "sampling": self.args.sampling(),
            "prompt_tokens": prompt,
            "generated_tokens": finished.tokens,
            "text": finished.text,
            "finish_reason": finished.reason,
            "greedy_pipelined": finished.pipelined,
            "top_logits": finished.top_logits,
            "timings": {
                "load_s": self.load_s,
                "time_to_first_token_s": t.time_to_first_token_s,
                "prefill_s": t.prefill_s,
                "decode_s": t.decode_s,
                "prefill_tok_s": prefill_tok_s,
                "decode_tok_s": decode_tok_s,
                "decode_step_s": t.decode_step_s,
            },
        });
        println!("{out}");
    }
}

/// `--raw`: the text as is. Otherwise the chat template around one user message (after
/// `--system`). Special-token text is parsed in both, as llama.cpp does for prompts.
fn encode_prompt(args: &Args, text: &str, file: &ModelFile) -> anyhow::Result<Vec<u32>> {
    if args.raw {
        return Ok(file.tokenizer.encode(text, true)?);
    }
    let template = setup::chat_template(args, file)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new("system", system));
    }
    messages.push(Message::new("user", text));
    Ok(template.encode(&file.tokenizer, &messages, true)?)
}
