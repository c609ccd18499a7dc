//! Rendering a conversation into the model's prompt with its own Jinja chat template.

use std::path::Path;

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;

use crate::tokenizer::{Tokenizer, TokenizerError};

/// Used when the GGUF has no `tokenizer.chat_template`: Meta's Llama 3 format.
pub const LLAMA3_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>\
{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.to_string(), content: content.to_string() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template: {0}")]
    Render(String),
    #[error("chat template file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Where a [`ChatTemplate`]'s source came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateSource {
    File,
    Model,
    BuiltInLlama3,
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemplateSource::File => "the --chat-template file",
            TemplateSource::Model => "the model's own chat template",
            TemplateSource::BuiltInLlama3 => "the built-in Llama 3 chat template (the model has none)",
        })
    }
}

/// minijinja instructions a render may run: a conversation of thousands of messages takes a
/// fraction of this; a template that loops without end runs out.
const RENDER_FUEL: u64 = 2_000_000;

/// Rendered text beyond this is refused: more than any model's context holds (128k tokens are
/// about 0.5 MB of text).
const MAX_RENDERED_BYTES: usize = 8 << 20;

/// The render's output, refusing to grow past [`MAX_RENDERED_BYTES`].
struct BoundedOutput(Vec<u8>);

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            self.0.resize(MAX_RENDERED_BYTES, 0);
            return Err(std::io::Error::other("rendered text too long"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A model's chat template with the special-token texts it is rendered with.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    pub origin: TemplateSource,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// `override_file` if given, else the model's own (`embedded`: a GGUF's
    /// `tokenizer.chat_template`, a checkpoint's `chat_template.jinja`), else Llama 3's.
    pub fn for_model(
        embedded: Option<&str>,
        tokenizer: &Tokenizer,
        override_file: Option<&Path>,
    ) -> Result<Self, TemplateError> {
        let (source, origin) = match (override_file, embedded) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| TemplateError::Read { path: path.display().to_string(), source })?;
                (text, TemplateSource::File)
            }
            (None, Some(text)) => (text.to_string(), TemplateSource::Model),
            (None, _) => (LLAMA3_TEMPLATE.to_string(), TemplateSource::BuiltInLlama3),
        };
        let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or_default();
        let bos_token = token_text(tokenizer.bos_id());
        let eos_token = token_text(tokenizer.eos_id().or(tokenizer.end_of_generation_ids().first().copied()));
        let template = Self { source, origin, bos_token, eos_token };
        // A template that does not parse is reported now, not at the first message.
        template.render(&[], false)?;
        Ok(template)
    }

    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Self {
        Self {
            source: source.to_string(),
            origin: TemplateSource::File,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        }
    }

    /// The conversation as text, ending with the assistant's turn opened when
    /// `add_generation_prompt`. Templates call `raise_exception` for conversations they reject.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TemplateError> {
        let mut env = Environment::new();
        // As transformers (and llama-cpp-python) render chat templates: a block tag's own line
        // break and indentation are not output.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // HF templates are written for Python's jinja2: `.strip()`, `.startswith()` and friends.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        // Llama 3.1+ templates print today's date in the system prompt, as transformers does.
        env.add_function("strftime_now", |format: String| -> Result<String, minijinja::Error> {
            use std::fmt::Write;
            let mut out = String::new();
            write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: bad format `{format}`"))
            })?;
            Ok(out)
        });
        // A template is code from the model file: bound its work and its output, so that a
        // hostile one fails with an error instead of hanging or filling memory.
        env.set_fuel(Some(RENDER_FUEL));
        let render_err = |e: minijinja::Error| TemplateError::Render(format!("{e:#}"));
        env.add_template("chat", &self.source).map_err(render_err)?;
        let tmpl = env.get_template("chat").map_err(render_err)?;
        let (bos_token, eos_token) = (&self.bos_token, &self.eos_token);
        let mut out = BoundedOutput(Vec::new());
        let ctx = context! { messages, bos_token, eos_token, add_generation_prompt };
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => String::from_utf8(out.0).map_err(|_| TemplateError::Render("rendered text is not UTF-8".into())),
            Err(_) if out.0.len() >= MAX_RENDERED_BYTES => Err(TemplateError::Render(format!(
                "the rendered conversation passed {MAX_RENDERED_BYTES} bytes, more than any context holds"
            ))),
            Err(e) => Err(render_err(e)),
        }
    }

    /// Renders and tokenizes, parsing special-token text as llama.cpp does for chat prompts.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TemplateError> {
        let rendered = self.render(messages, add_generation_prompt)?;
        let mut ids = tokenizer.encode(&rendered, true)?;
        // Templates that write `{{ bos_token }}` themselves would otherwise get a second BOS.
        if let (Some(bos), [first, second, ..]) = (tokenizer.bos_id(), ids.as_slice())
            && *first == bos
            && *second == bos
        {
            ids.remove(0);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_fallback_renders_the_header_format() {
        let t = ChatTemplate::new(LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>");
        let out = t.render(&[Message::new("user", " hi ")], true).unwrap();
        assert_eq!(
            out,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let err = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").render(&[], true).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }

    #[test]
    fn strftime_now_formats_today() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "");
        let year: i32 = t.render(&[], true).unwrap().parse().unwrap();
        assert!((2024..3000).contains(&year), "{year}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0]['content'].strip().upper() }}", "", "");
        assert_eq!(t.render(&[Message::new("user", "  hi ")], true).unwrap(), "HI");
    }

    /// A hostile template fails with an error, neither hanging nor filling memory.
    #[test]
    fn renders_are_bounded() {
        let endless = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";
        let err = ChatTemplate::new(endless, "", "").render(&[], true).unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
        let huge = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}";
        let err = ChatTemplate::new(huge, "", "").render(&[], true).unwrap_err().to_string();
        assert!(err.contains("passed 8388608 bytes"), "{err}");
        // A long ordinary conversation stays well inside both limits.
        let many: Vec<Message> = (0..2000).map(|i| Message::new("user", &format!("message {i}"))).collect();
        let t = ChatTemplate::new(LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>");
        assert!(t.render(&many, true).unwrap().contains("message 1999"));
    }
}
