//! Bringing a step's result to the host: the logits, or only the ids the device picked. A read is
//! also the step's synchronisation point, so the clock cannot stop before the device has
//! finished.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use burn::tensor::backend::{Backend, ExecutionError};
use burn::tensor::{Int, Tensor, TensorData};

/// `[rows, vocab]` logits on the host as f32, row after row.
pub fn logits_to_host<B: Backend>(logits: Tensor<B, 2>) -> Vec<f32> {
    logits.into_data().convert::<f32>().to_vec::<f32>().expect("f32 after convert")
}

/// Each row's largest logit's id, `[rows]`, left on the device (lowest id on ties, as
/// [`crate::sampling::argmax`]: both backends' argmax keep the first).
pub fn argmax_ids<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1, Int> {
    let rows = logits.dims()[0];
    logits.argmax(1).reshape([rows])
}

/// Each row's argmax, picked on the device and read back: for plain greedy decoding on a GPU
/// one id per sequence crosses to the host, not the vocabulary's logits (a 256 KB copy, a
/// conversion and a scan per token on a 128k vocabulary).
pub fn argmax_on_device<B: Backend>(logits: Tensor<B, 2>) -> Vec<u32> {
    ids(argmax_ids(logits).try_into_data())
}

/// A token id on its way to the host. Requesting the read makes the device work through all
/// that is queued before it; the host waits only in [`Self::wait`], after queuing more.
pub enum PendingId {
    Arrived(u32),
    Reading(Pin<Box<dyn Future<Output = Result<TensorData, ExecutionError>>>>),
}

impl PendingId {
    /// Starts reading `id` `[1]`.
    pub fn request<B: Backend>(id: Tensor<B, 1, Int>) -> Self {
        let mut read = Box::pin(id.into_data_async());
        // One poll submits the read (a lazy backend flushes its queue here) without blocking.
        match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(data) => Self::Arrived(ids(data)[0]),
            Poll::Pending => Self::Reading(read),
        }
    }

    pub fn wait(self) -> u32 {
        match self {
            Self::Arrived(id) => id,
            Self::Reading(read) => ids(burn::tensor::try_read_sync(read).expect("a blocking read on this platform"))[0],
        }
    }
}

fn ids(data: Result<TensorData, ExecutionError>) -> Vec<u32> {
    let data = data.unwrap_or_else(|err| panic!("reading token ids back from the device failed: {err:?}"));
    data.iter::<i64>().map(|id| id as u32).collect()
}
