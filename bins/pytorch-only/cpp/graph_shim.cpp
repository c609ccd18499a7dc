// A CUDA graph of libtorch work, for pytorch-only's `--compile` (feature `cuda-graph`): the small
// C ABI over at::cuda::CUDAGraph that tch does not wrap. Built by build.rs against the headers of
// the libtorch that torch-sys links, so the graph and the tensors share one caching allocator.
//
// Capture runs on a stream from libtorch's pool (CUDA cannot capture the legacy default stream);
// replay runs on the current stream, where the caller's tensor copies are queued before it and
// the logits readback after it.

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <exception>
#include <optional>
#include <string>

namespace {

thread_local std::string last_error;

struct Graph {
  at::cuda::CUDAGraph graph;
  // c10's device-generic guard, not CUDAStreamGuard: its inline CUDA implementation would call
  // the CUDA runtime from this object file, and only libtorch's own libraries link that.
  std::optional<c10::StreamGuard> capture_stream;
};

template <typename F>
int guarded(F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}

}  // namespace

extern "C" {

// The message of the last failed call on this thread.
const char* lbb_cuda_graph_last_error() { return last_error.c_str(); }

// Starts capturing on `device`: libtorch work queued from now until lbb_cuda_graph_end is
// recorded, not run. Returns null on failure.
void* lbb_cuda_graph_begin(int device) {
  Graph* graph = nullptr;
  int failed = guarded([&] {
    c10::cuda::device_synchronize();
    graph = new Graph();
    graph->capture_stream.emplace(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device)));
    graph->graph.capture_begin();
  });
  if (failed != 0) {
    delete graph;
    return nullptr;
  }
  return graph;
}

// Ends the capture and instantiates the graph; the current stream is the caller's again.
int lbb_cuda_graph_end(void* handle) {
  auto* graph = static_cast<Graph*>(handle);
  int failed = guarded([&] { graph->graph.capture_end(); });
  graph->capture_stream.reset();
  return failed;
}

// Queues one run of the captured work on the current stream.
int lbb_cuda_graph_replay(void* handle) {
  return guarded([&] { static_cast<Graph*>(handle)->graph.replay(); });
}

void lbb_cuda_graph_free(void* handle) { delete static_cast<Graph*>(handle); }

// Bytes libtorch's caching allocator holds on `device` (what torch.cuda.memory_reserved says),
// or -1 on failure.
long long lbb_cuda_memory_reserved(int device) {
  long long bytes = -1;
  guarded([&] {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    bytes = stats.reserved_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current;
  });
  return bytes;
}

}  // extern "C"
