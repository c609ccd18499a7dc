//! Checks that a framework binary is right, shared by every binary's integration tests (and by
//! `cargo xtask compare`): greedy output against the committed llama.cpp reference, and clean
//! errors on bad input.

pub mod chat;
mod checks;
mod harness;
pub mod hf;
pub mod serve;

pub use checks::*;
pub use harness::*;

/// The integration tests every framework binary runs, written once: a binary's
/// `tests/conformance.rs` calls this with its package name, then adds its own kernel checks.
#[macro_export]
macro_rules! binary_conformance_tests {
    ($bin:literal) => {
        const BIN: &str = env!(concat!("CARGO_BIN_EXE_", $bin));

        fn scratch(name: &str) -> std::path::PathBuf {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", $bin))
        }

        #[test]
        fn greedy_output_matches_llama_cpp() {
            $crate::conformance::check_against_llamacpp(BIN, &[]);
        }

        #[test]
        fn bad_input_is_a_clear_error() {
            $crate::conformance::check_bad_inputs(BIN, &scratch("bad-input"));
        }

        #[test]
        fn benchmark_mode_reports_every_figure() {
            $crate::conformance::check_benchmark_json(BIN);
        }

        #[test]
        fn synthetic_llama_3_model_loads_and_generates() {
            $crate::conformance::check_synthetic_model(BIN, &scratch("synthetic"));
        }

        #[test]
        fn half_precision_still_counts() {
            $crate::conformance::check_half_precision(BIN);
        }

        #[test]
        fn chat_remembers_earlier_turns_and_reuses_the_cache() {
            $crate::conformance::chat::check_chat_session(BIN);
        }

        #[test]
        fn chat_with_the_same_seed_repeats_its_reply() {
            $crate::conformance::chat::check_seeded_chat_repeats(BIN);
        }

        #[test]
        fn chat_drops_old_turns_when_the_context_is_full() {
            $crate::conformance::chat::check_context_overflow(BIN);
        }

        #[test]
        fn ctrl_c_stops_the_reply_not_the_chat() {
            $crate::conformance::chat::check_ctrl_c_stops_only_the_reply(BIN);
        }

        #[test]
        fn hugging_face_directories_give_llama_cpp_s_and_transformers_ids() {
            $crate::conformance::hf::check_hf_directories(BIN);
        }

        #[test]
        fn bad_hugging_face_directories_are_clear_errors() {
            $crate::conformance::hf::check_bad_directories(BIN, &scratch("bad-hf"));
        }

        #[test]
        fn server_answers_the_openai_client_as_the_cli_does() {
            $crate::conformance::serve::check_openai_client(BIN, &scratch("serve"));
        }

        #[test]
        fn server_refuses_past_a_full_queue() {
            $crate::conformance::serve::check_full_queue(BIN);
        }

        #[test]
        fn server_wants_its_api_key() {
            $crate::conformance::serve::check_api_key(BIN);
        }

        #[test]
        fn web_chat_streams_and_remembers_in_a_browser() {
            $crate::conformance::serve::check_web_chat(BIN, &scratch("web-chat"));
        }
    };
}
