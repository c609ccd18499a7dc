//! The dependencies' floor under our host cost: chains of launches of a kernel that does nothing
//! (`kernels::empty`), recorded exactly as our kernels are, each chain ending with a one-element
//! read, as a decoded token ends with its id. Prints the median time per chain and per launch.
//!
//! cargo run --release -p tinygrad-only --example launch_floor -- [noop|auto] [launches] [rounds]

use std::time::Instant;

use burn::tensor::Tensor;
use tinygrad_only::{Wgpu, kernels::empty::empty_op, noop};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = match args.first().map(String::as_str).unwrap_or("noop") {
        "noop" => noop::create()?.0,
        "auto" => burn_wgpu::WgpuDevice::default(),
        other => anyhow::bail!("unknown device `{other}`: noop or auto"),
    };
    let launches: usize = args.get(1).map_or(Ok(100), |s| s.parse())?.max(1);
    let rounds: usize = args.get(2).map_or(Ok(200), |s| s.parse())?;
    let chain = |n: usize| {
        let start = Instant::now();
        let mut x = Tensor::<Wgpu, 1>::zeros([64], &device);
        for _ in 0..n {
            x = empty_op(x);
        }
        let _ = x.narrow(0, 0, 1).into_data();
        start.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..20 {
        chain(launches); // warm-up: pipelines compiled, memory pooled
    }
    let mut read_only: Vec<f64> = (0..rounds).map(|_| chain(0)).collect();
    let mut with_launches: Vec<f64> = (0..rounds).map(|_| chain(launches)).collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (read, full) = (median(&mut read_only), median(&mut with_launches));
    println!(
        "read alone: {read:.3} ms; {launches} empty launches + read: {full:.3} ms; per launch {:.1} us (median of {rounds})",
        (full - read) * 1e3 / launches as f64
    );
    Ok(())
}
