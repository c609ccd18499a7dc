//! llama-app: what every framework binary shares around llama-core's model.
//!
//! A binary implements [`Framework`] (its backend, its fast-path provider, how it reads
//! `--device`) and calls [`run::main`]. Module graph, one way only: [`cli`] (the flags) and
//! [`framework`] (what a backend is and can do) ← [`setup`] (open the file, prepare the device,
//! load) ← the modes [`one_shot`], [`interactive`], [`benchmark`] and [`serve`] ← [`run`] (parse, pick a
//! mode).

pub mod benchmark;
pub mod cli;
pub mod framework;
pub mod interactive;
pub mod one_shot;
pub mod run;
pub mod serve;
pub mod setup;
mod terminal;

pub use framework::{Framework, HostWork};
pub use run::main;
