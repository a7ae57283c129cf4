// --perf mode of the backend op table (tests/backend_ops/op_table.h, the same cases the BackendOps tests
// check): for every case on one backend, the median time of one execution after warm-up, and the rates
//   GB/s     = Cost::bytes / time: the minimal traffic, every input read once and every output written once,
//              in the backend's element type (fp16 on CUDA, fp32 on the CPU; norm parameters and the guidance
//              output are fp32 on both);
//   TFLOP/s  = Cost::flop / time, a multiply-add counted as 2: conv2d 2·B·OH·OW·out·in·k², linear
//              2·rows·in·out, attention 4·B·heads·head_dim·(query-key pairs; the lower triangle when causal);
//              "-" for norms, elementwise and data movement.
// CUDA times come from CUDA events around each launch on the context's stream (nothing else queued), CPU
// times from steady_clock around each synchronous call.
//
//   bench_ops [--backend cuda|cpu] [--op NAME]... [--case TEXT] [--min-ms 100] [--max-reps 200] [--check]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "backend_ops/op_table.h"
#include "sdrt/error.h"

#if SDRT_HAVE_CUDA
#include <cuda_runtime.h>

#include "backends/cuda/check.h"
#include "backends/cuda/context.h"
#endif

namespace {

using sdrt::backend_ops::Backend;
using sdrt::backend_ops::Case;

struct Options {
  std::string backend = "cuda";
  std::vector<std::string> ops;
  std::string case_filter;
  double min_ms = 100.0;  // keep timing a case until this much time is spent...
  int max_reps = 200;     // ...or this many executions have been timed
  int warmup = 3;         // untimed executions first (planning, autotuning, caches)
  bool check = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Microseconds of each timed execution of `run`.
std::vector<double> time_cpu(sdrt::backend_ops::Run& run, const Options& o) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < o.warmup; ++i) run.launch();
  std::vector<double> us;
  const auto begin = Clock::now();
  while (
      static_cast<int>(us.size()) < o.max_reps &&
      (us.size() < 3 || std::chrono::duration<double, std::milli>(Clock::now() - begin).count() < o.min_ms)) {
    const auto t0 = Clock::now();
    run.launch();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return us;
}

#if SDRT_HAVE_CUDA
std::vector<double> time_cuda(sdrt::cuda::Context& ctx, sdrt::backend_ops::Run& run, const Options& o) {
  using sdrt::cuda::check;
  for (int i = 0; i < o.warmup; ++i) run.launch();
  ctx.synchronize();
  // One event pair per execution, in batches of 10 so the queue never runs dry waiting for the host.
  std::vector<double> us;
  double spent_ms = 0;
  cudaEvent_t ev[20];
  for (auto& e : ev) check(cudaEventCreate(&e), "cudaEventCreate");
  while (static_cast<int>(us.size()) < o.max_reps && (us.size() < 3 || spent_ms < o.min_ms)) {
    for (int i = 0; i < 10; ++i) {
      check(cudaEventRecord(ev[2 * i], ctx.stream()), "cudaEventRecord");
      run.launch();
      check(cudaEventRecord(ev[2 * i + 1], ctx.stream()), "cudaEventRecord");
    }
    check(cudaEventSynchronize(ev[19]), "cudaEventSynchronize");
    for (int i = 0; i < 10; ++i) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]), "cudaEventElapsedTime");
      us.push_back(1000.0 * ms);
      spent_ms += ms;
    }
  }
  for (auto& e : ev) cudaEventDestroy(e);
  return us;
}
#endif

bool selected(const Options& o, const std::string& op, const std::string& case_name) {
  if (!o.ops.empty() && std::find(o.ops.begin(), o.ops.end(), op) == o.ops.end()) return false;
  return o.case_filter.empty() || case_name.find(o.case_filter) != std::string::npos;
}

int run(const Options& o) {
  const Backend backend = o.backend == "cpu" ? Backend::kCpu : Backend::kCuda;
#if SDRT_HAVE_CUDA
  std::unique_ptr<sdrt::cuda::Context> ctx;
  if (backend == Backend::kCuda) {
    if (!sdrt::cuda::device_available()) {
      std::fprintf(stderr, "bench_ops: no usable CUDA device: %s\n",
                   sdrt::cuda::device_description().c_str());
      return 1;
    }
    ctx = std::make_unique<sdrt::cuda::Context>(0);
    std::printf("# device: %s\n", sdrt::cuda::device_description().c_str());
  }
#else
  if (backend == Backend::kCuda) {
    std::fprintf(stderr, "bench_ops: built without the CUDA backend (use --backend cpu)\n");
    return 1;
  }
#endif
  std::printf("# %-18s %-40s %-4s %11s %10s %9s%s\n", "op", "case", "", "us(median)", "GB/s", "TFLOP/s",
              o.check ? "      NMSE" : "");
  for (const auto& op : sdrt::backend_ops::op_table()) {
    for (const auto& c : op.cases) {
      if (!selected(o, op.name, c->name())) continue;
      const auto in = c->make_inputs(sdrt::backend_ops::case_seed(op.name, c->name()));
      std::string note;
      std::vector<double> us;
      double err = -1;
      try {
        if (backend == Backend::kCpu) {
          auto r = c->prepare_cpu(in);
          us = time_cpu(*r, o);
          if (o.check && c->cpu_check()) err = sdrt::backend_ops::nmse(r->output(), c->reference(in));
        } else {
#if SDRT_HAVE_CUDA
          auto r = c->prepare_cuda(*ctx, in);
          if (o.check) {  // before timing: in-place ops change their buffers on every execution
            r->launch();
            auto ref = c->prepare_cpu(in);
            ref->launch();
            err = sdrt::backend_ops::nmse(r->output(), ref->output());
          }
          us = time_cuda(*ctx, *r, o);
#endif
        }
      } catch (const sdrt::Error& e) {
        note = e.what();
      }
      if (!note.empty()) {
        std::printf("  %-18s %-40s %-4s unsupported: %s\n", op.name.c_str(), c->name().c_str(),
                    o.backend.c_str(), note.c_str());
        continue;
      }
      const double t = median(us);
      const auto cost = c->cost();
      const double bytes = backend == Backend::kCpu ? cost.bytes_cpu : cost.bytes_cuda;
      char flops[32] = "        -";
      if (cost.flop > 0) std::snprintf(flops, sizeof flops, "%9.2f", cost.flop / (t * 1e6));
      std::printf("  %-18s %-40s %-4s %11.2f %10.1f %s", op.name.c_str(), c->name().c_str(),
                  o.backend.c_str(), t, bytes / (t * 1e3), flops);
      if (err >= 0) std::printf(" %9.2e", err);
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Times the backend op table's cases (tests/backend_ops) on one backend."};
  bool perf = true;
  app.add_flag("--perf", perf, "time every case (the default and only mode)");
  app.add_option("--backend", o.backend, "cuda or cpu")->check(CLI::IsMember({"cuda", "cpu"}));
  app.add_option("--op", o.ops, "only these ops (repeatable), e.g. --op conv2d --op linear");
  app.add_option("--case", o.case_filter, "only cases whose name contains this text");
  app.add_option("--min-ms", o.min_ms, "time each case for at least this long (ms)");
  app.add_option("--max-reps", o.max_reps, "at most this many timed executions per case");
  app.add_option("--warmup", o.warmup, "untimed executions before timing");
  app.add_flag(
      "--check", o.check,
      "also print the NMSE: cuda against the CPU backend; cpu against the double reference (small cases)");
  CLI11_PARSE(app, argc, argv);
  for (const auto& name : o.ops) {
    if (!sdrt::backend_ops::find_op(name)) {
      std::fprintf(stderr, "bench_ops: no op '%s' in the table\n", name.c_str());
      return 2;
    }
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ops: error: %s\n", e.what());
    return 1;
  }
}
