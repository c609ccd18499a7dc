//! `--prompt TEXT`: generate one reply (or, with `--raw`, one continuation), print it and exit.

use std::io::IsTerminal;

use anyhow::bail;
use serde_json::json;

use crate::chat_template::{ChatTemplate, Message};
use crate::cli::Args;
use crate::framework::{self, Framework, ModelFile};
use crate::generation::{self, GenerationParams};
use crate::kernels::Kernels;
use crate::sampling::Sampler;

pub fn run<F: Framework>(fw: &F, args: &Args, prompt_text: &str) -> anyhow::Result<()> {
    let file = framework::open_model_file(fw, args)?;
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
    let (device, dtype, device_info) = framework::prepare_device(fw, args)?;
    let (model, load_s) =
        framework::timed_load::<F>(&device, || fw.load_model(&file.gguf, file.config.clone(), file.context, &device))?;
    tracing::info!("loaded {} in {load_s:.2}s, {} prompt tokens", file.path.display(), prompt.len());

    let seed = args.seed.unwrap_or_else(framework::fresh_seed);
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
                framework::print_streamed(piece);
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
            "kernels": model.kernels().name(),
            "device": device_info,
            "model": fw.model_info(&file.gguf, &file.config),
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
    let template = ChatTemplate::for_model(&file.gguf, &file.tokenizer, args.chat_template.as_deref())?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new("system", system));
    }
    messages.push(Message::new("user", text));
    Ok(template.encode(&file.tokenizer, &messages, true)?)
}
