//! llama-app: what every framework binary shares around llama-core's model.
//!
//! A binary implements [`framework::Framework`] (its backend, its fast-path provider, and how
//! it opens a device from the flags) and calls [`run::main`]. Module graph, one way only:
//! [`cli`] (the flags) ← [`framework`] (what a backend is and opens to) ← [`setup`] (open the
//! file, open the device, load) ← the modes [`one_shot`], [`interactive`], [`benchmark`] (with
//! [`metrics`]) and [`serve`] ← [`run`] (parse, pick a mode).

pub mod benchmark;
pub mod cli;
pub mod framework;
pub mod interactive;
pub mod metrics;
pub mod one_shot;
pub mod run;
pub mod serve;
pub mod setup;
mod terminal;
