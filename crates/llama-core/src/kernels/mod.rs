//! The fast-path seam: every operation a framework may do faster goes through [`Kernels`]
//! ([`seam`]); [`composed`] holds each operation's plain composition of Burn tensor ops, and
//! [`Composed`] ([`dense`]) is the provider made of them alone, the reference the others are
//! tested against. A binary picks the provider; the model is written once against the trait.

pub mod composed;
pub mod dense;
pub mod seam;

pub use dense::{Composed, DenseWeight};
pub use seam::*;
