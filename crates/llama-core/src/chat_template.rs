//! Rendering a conversation into the model's prompt with its own Jinja chat template.

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;

/// Used when the GGUF has no `tokenizer.chat_template`: Meta's Llama 3 format.
pub const LLAMA3_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>\
{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

#[derive(Debug, Clone, Serialize)]
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
#[error("chat template: {0}")]
pub struct TemplateError(String);

/// Renders `messages` with `template`, ending with the assistant's turn opened when
/// `add_generation_prompt`. Templates call `raise_exception` for conversations they reject.
pub fn render(
    template: &str,
    messages: &[Message],
    bos_token: &str,
    eos_token: &str,
    add_generation_prompt: bool,
) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    // HF templates are written for Python's jinja2: `.strip()`, `.startswith()` and friends.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| TemplateError(e.to_string()))?;
    let tmpl = env.get_template("chat").map_err(|e| TemplateError(e.to_string()))?;
    tmpl.render(context! { messages, bos_token, eos_token, add_generation_prompt })
        .map_err(|e| TemplateError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_fallback_renders_the_header_format() {
        let out = render(LLAMA3_TEMPLATE, &[Message::new("user", " hi ")], "<|begin_of_text|>", "", true).unwrap();
        assert_eq!(
            out,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let err = render("{{ raise_exception('no system role') }}", &[], "", "", true).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }
}
