//! `--prompt TEXT`: generate one reply (or, with `--raw`, one continuation), print it and exit.

use std::io::IsTerminal;

use anyhow::bail;
use serde_json::json;

use crate::cli::Args;
use crate::framework::Framework;
use crate::setup::{self, ModelFile};
use crate::terminal;
use llama_core::chat_template::Message;
use llama_core::generation::{self, GenerationParams};
use llama_core::kernels::Kernels;
use llama_core::sampling::Sampler;

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
    let (device, dtype, device_info) = setup::prepare_device(fw, args)?;
    let (model, load_s) = setup::timed_load::<F>(&device, || setup::load_model(fw, &file, &device))?;
    tracing::info!("loaded {} in {load_s:.2}s, {} prompt tokens", file.path.display(), prompt.len());

    let seed = args.seed.unwrap_or_else(setup::fresh_seed);
    let mut sampler = Sampler::new(args.sampling(), seed);
    let params = GenerationParams {
        ignore_eos: args.ignore_eos,
        record_top_logits: if args.json { args.top_logits } else { 0 },
        decode: model.decode_step(args.compile),
        pipeline: !args.no_pipeline,
        ..GenerationParams::new(args.max_tokens)
    };
    let mut cache = model.new_cache(file.context);
    let generation =
        generation::generate(&model, &mut cache, Some(&file.tokenizer), &prompt, &params, &mut sampler, |piece| {
            if !args.json {
                terminal::print_streamed(piece);
            }
        })?;
    fw.cleanup(&device);

    let t = &generation.timings;
    let prefill_tok_s = generation::rate(prompt.len(), t.prefill_s);
    let decode_tok_s = generation::rate(t.decode_step_s.len(), t.decode_s);
    if args.json {
        let out = json!({
            "framework": fw.name(),
            "stack": fw.stack(),
            "kernels": model.kernels().capabilities(model.device()).name,
            "device": device_info,
            "model": setup::model_info(&file.checkpoint, &file.config),
            "dtype": dtype,
            "seed": seed,
            "sampling": sampler.params(),
            "prompt_tokens": prompt,
            "generated_tokens": generation.generated_tokens,
            "text": generation.text,
            "stop_reason": generation.stop_reason,
            "greedy_pipelined": generation.pipelined,
            "top_logits": generation.top_logits,
            "timings": {
                "load_s": load_s,
                "time_to_first_token_s": t.time_to_first_token_s,
                "prefill_s": t.prefill_s,
                "decode_s": t.decode_s,
                "prefill_tok_s": prefill_tok_s,
                "decode_tok_s": decode_tok_s,
                "decode_step_s": t.decode_step_s,
            },
        });
        println!("{out}");
    } else {
        println!();
        if std::io::stderr().is_terminal() || args.verbose {
            eprintln!(
                "[{} tokens, {:?}; TTFT {:.0} ms, prefill {prefill_tok_s:.1} tok/s, decode {decode_tok_s:.1} tok/s, seed {seed}]",
                generation.generated_tokens.len(),
                generation.stop_reason,
                t.time_to_first_token_s * 1e3,
            );
        }
    }
    Ok(())
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
