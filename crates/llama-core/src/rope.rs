//! Rotary position embedding.
//!
//! llama.cpp's GGUF converter permutes Q and K weights so that RoPE rotates adjacent pairs
//! `(x[2i], x[2i+1])` ("interleaved"). We undo that permutation once at load
//! ([`half_split_row_order`]) and rotate `(x[i], x[i + d/2])` instead: attention scores only
//! depend on `q·k`, which is unchanged when both get the same permutation, and the half-split form
//! is two contiguous slices — cheaper on every framework than strided pairs.

use std::sync::OnceLock;

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Rotation frequency of each pair `i`: `theta^(-2i/d) / factor[i]`. Llama 3.1+ ships the
/// per-pair factors as `rope_freqs.weight` (its long-context frequency scaling, precomputed).
pub fn inverse_frequencies(head_dim: usize, theta: f32, freq_factors: Option<&[f32]>) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let base = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let factor = freq_factors.map_or(1.0, |f| f[i] as f64);
            (base / factor) as f32
        })
        .collect()
}

/// For one `[heads * head_dim, in]` Q or K weight: `order[new_row] = old_row`, taking each head's
/// rows from interleaved-pair order to half-split order.
pub fn half_split_row_order(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    (0..heads * head_dim)
        .map(|row| {
            let (head, j) = (row / head_dim, row % head_dim);
            let old = if j < half { 2 * j } else { 2 * (j - half) + 1 };
            head * head_dim + old
        })
        .collect()
}

/// cos/sin of every position's angles, `[positions, head_dim / 2]`, uploaded once.
pub struct RopeTables<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    full_width: OnceLock<(Tensor<B, 2>, Tensor<B, 2>)>,
}

impl<B: Backend> RopeTables<B> {
    pub fn new(inv_freq: &[f32], positions: usize, device: &B::Device) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for pos in 0..positions {
            for &f in inv_freq {
                // f32 angle like llama.cpp, so positions agree with it to the last bit of theta.
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [positions, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [positions, half]), device),
            full_width: OnceLock::new(),
        }
    }

    /// The same angles as whole rows, `(cos, cos)` and `(−sin, sin)`, `[positions, head_dim]`,
    /// built on first use: RoPE is then `x·cos + (x₂, x₁)·sin`, three whole-row operations (one
    /// `roll`, one product, one fused multiply-add), for providers that pay per operation more
    /// than per element (libtorch on a CPU, where the half-split form takes seven).
    pub fn full_width(&self) -> (&Tensor<B, 2>, &Tensor<B, 2>) {
        let (cos, sin) = self.full_width.get_or_init(|| {
            let (cos, sin) = (self.cos.clone(), self.sin.clone());
            (Tensor::cat(vec![cos.clone(), cos], 1), Tensor::cat(vec![sin.clone().neg(), sin], 1))
        });
        (cos, sin)
    }

    /// The whole `[positions, head_dim / 2]` cos and sin tables.
    pub fn tables(&self) -> (&Tensor<B, 2>, &Tensor<B, 2>) {
        (&self.cos, &self.sin)
    }

    /// `(cos, sin)` rows for positions `start .. start + len`.
    pub fn range(&self, start: usize, len: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let half = self.cos.dims()[1];
        let rows = start..start + len;
        (self.cos.clone().slice([rows.clone(), 0..half]), self.sin.clone().slice([rows, 0..half]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_order_undoes_the_gguf_interleave() {
        // head_dim 4: GGUF rows (p0a, p0b, p1a, p1b) become (p0a, p1a, p0b, p1b) per head.
        assert_eq!(half_split_row_order(2, 4), vec![0, 2, 1, 3, 4, 6, 5, 7]);
    }

    /// Rotating GGUF's adjacent pairs of the stored rows gives the same numbers, permuted, as
    /// rotating half-split pairs of the reordered rows: the load-time trick is exact.
    #[test]
    fn half_split_on_reordered_rows_equals_interleaved_on_stored_rows() {
        let head_dim = 8;
        let stored: Vec<f64> = (0..head_dim).map(|i| (i as f64 * 1.3).sin()).collect();
        let inv_freq = inverse_frequencies(head_dim, 10_000.0, None);
        let pos = 7.0f64;
        let mut interleaved = stored.clone();
        for (i, &f) in inv_freq.iter().enumerate() {
            let (c, s) = ((pos * f as f64).cos(), (pos * f as f64).sin());
            let (a, b) = (stored[2 * i], stored[2 * i + 1]);
            interleaved[2 * i] = a * c - b * s;
            interleaved[2 * i + 1] = b * c + a * s;
        }
        let order = half_split_row_order(1, head_dim);
        let reordered: Vec<f64> = order.iter().map(|&r| stored[r]).collect();
        let half = head_dim / 2;
        let mut half_split = reordered.clone();
        for (i, &f) in inv_freq.iter().enumerate() {
            let (c, s) = ((pos * f as f64).cos(), (pos * f as f64).sin());
            let (a, b) = (reordered[i], reordered[i + half]);
            half_split[i] = a * c - b * s;
            half_split[i + half] = b * c + a * s;
        }
        for (new_row, &old_row) in order.iter().enumerate() {
            assert!((half_split[new_row] - interleaved[old_row]).abs() < 1e-12);
        }
    }

    #[test]
    fn frequencies_follow_theta_and_factors() {
        let f = inverse_frequencies(4, 10_000.0, None);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.01).abs() < 1e-9);
        let scaled = inverse_frequencies(4, 10_000.0, Some(&[1.0, 8.0]));
        assert!((scaled[1] - 0.01 / 8.0).abs() < 1e-9);
    }
}
