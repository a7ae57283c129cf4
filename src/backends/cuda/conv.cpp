// 2-D convolutions through cuDNN's graph API (the C++ front end), NHWC fp16 with fp32 accumulation.
//
// Each distinct convolution shape gets one cuDNN graph, built once and cached. We first ask for the whole
// epilogue fused — conv → +bias → +residual — because that saves a full read and write of the output, and
// step down (conv → +bias, then the bare conv) when cuDNN has no engine for the fused form, finishing the
// rest with our own elementwise kernel. With a residual, the fully fused graph runs on a runtime-compiled
// engine; SDRT_CONV_TIMING=1 also builds cuDNN's precompiled conv → +bias followed by our residual add, times
// both on first use and keeps the faster (on an H100 the fused form won on every SD 1.5 shape, and a choice
// by timing can differ from run to run, changing the image a seed draws — so it is off by default). The
// engine within a graph is cuDNN's first heuristic pick, or, with SDRT_CUDNN_AUTOTUNE=1, the fastest of all
// engines timed on the real buffers (slow to plan).
#include "backends/cuda/conv.cuh"

#include <cuda_runtime.h>

#include <cudnn_frontend.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "backends/cuda/check.h"
#include "backends/cuda/context.h"

namespace sdrt::cuda {
namespace fe = cudnn_frontend;

namespace {

enum class Fusion { kBiasResidual, kBias, kNone };

struct ConvKey {
  cudnnHandle_t handle;
  int64_t batch, h, w, in, out, kernel, stride, pt, pb, pl, pr;
  bool bias, residual;
  auto tie() const {
    return std::tie(handle, batch, h, w, in, out, kernel, stride, pt, pb, pl, pr, bias, residual);
  }
  bool operator<(const ConvKey& o) const { return tie() < o.tie(); }
};

struct ConvPlan {
  std::shared_ptr<fe::graph::Graph> graph;
  std::shared_ptr<fe::graph::Tensor_attributes> x, w, b, z, y;
  Fusion fusion = Fusion::kNone;
  int64_t workspace = 0;
  int64_t out_h = 0, out_w = 0;
};

std::mutex g_mutex;
std::map<ConvKey, std::unique_ptr<ConvPlan>> g_plans;

bool ok(const fe::error_t& e) {
  return e.is_good();
}

// NHWC tensors described with cuDNN's NCHW dimension order and NHWC strides.
std::vector<int64_t> nhwc_strides(int64_t c, int64_t h, int64_t w) {
  return {h * w * c, 1, w * c, c};
}

std::unique_ptr<ConvPlan> try_build(const ConvKey& key, Fusion fusion, std::string& why) {
  auto plan = std::make_unique<ConvPlan>();
  plan->fusion = fusion;
  plan->out_h = conv_out_size(key.h, key.kernel, key.stride, key.pt, key.pb);
  plan->out_w = conv_out_size(key.w, key.kernel, key.stride, key.pl, key.pr);
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  plan->x = g->tensor(fe::graph::Tensor_attributes()
                          .set_name("x")
                          .set_dim({key.batch, key.in, key.h, key.w})
                          .set_stride(nhwc_strides(key.in, key.h, key.w)));
  plan->w = g->tensor(fe::graph::Tensor_attributes()
                          .set_name("w")
                          .set_dim({key.out, key.in, key.kernel, key.kernel})
                          .set_stride(nhwc_strides(key.in, key.kernel, key.kernel)));
  auto conv = fe::graph::Conv_fprop_attributes()
                  .set_pre_padding({key.pt, key.pl})
                  .set_post_padding({key.pb, key.pr})
                  .set_stride({key.stride, key.stride})
                  .set_dilation({1, 1});
  auto y = g->conv_fprop(plan->x, plan->w, conv);
  const bool fuse_bias = key.bias && fusion != Fusion::kNone;
  const bool fuse_residual = key.residual && fusion == Fusion::kBiasResidual;
  if (fuse_bias) {
    plan->b = g->tensor(fe::graph::Tensor_attributes()
                            .set_name("bias")
                            .set_dim({1, key.out, 1, 1})
                            .set_stride({key.out, 1, key.out, key.out}));
    y = g->pointwise(y, plan->b, fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::ADD));
  }
  if (fuse_residual) {
    plan->z = g->tensor(fe::graph::Tensor_attributes()
                            .set_name("residual")
                            .set_dim({key.batch, key.out, plan->out_h, plan->out_w})
                            .set_stride(nhwc_strides(key.out, plan->out_h, plan->out_w)));
    y = g->pointwise(y, plan->z, fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::ADD));
  }
  y->set_output(true).set_data_type(fe::DataType_t::HALF);
  y->set_dim({key.batch, key.out, plan->out_h, plan->out_w})
      .set_stride(nhwc_strides(key.out, plan->out_h, plan->out_w));
  plan->y = y;
  const bool autotune =
      std::getenv("SDRT_CUDNN_AUTOTUNE") && std::string(std::getenv("SDRT_CUDNN_AUTOTUNE")) == "1";
  fe::error_t e = g->validate();
  if (ok(e)) e = g->build_operation_graph(key.handle);
  if (ok(e)) e = g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
  if (ok(e)) e = g->check_support(key.handle);
  if (ok(e))
    e = g->build_plans(key.handle,
                       autotune ? fe::BuildPlanPolicy_t::ALL : fe::BuildPlanPolicy_t::HEURISTICS_CHOICE);
  if (ok(e)) e = g->get_workspace_size(plan->workspace);
  if (!ok(e)) {
    why = e.get_message();
    return nullptr;
  }
  plan->graph = std::move(g);
  return plan;
}

using VariantPack = std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*>;

VariantPack variant_pack(const ConvPlan& plan, const ConvArgs& a) {
  VariantPack pack = {
      {plan.x, const_cast<__half*>(a.x)}, {plan.w, const_cast<__half*>(a.weight)}, {plan.y, a.y}};
  if (plan.b) pack[plan.b] = const_cast<__half*>(a.bias);
  if (plan.z) pack[plan.z] = const_cast<__half*>(a.residual);
  return pack;
}

// One convolution with `plan`, and whatever part of the epilogue the plan does not fuse.
void run_plan(Context& ctx, const ConvPlan& plan, const ConvArgs& a, VariantPack& pack) {
  void* workspace = plan.workspace ? ctx.workspace(static_cast<size_t>(plan.workspace)) : nullptr;
  fe::error_t e = plan.graph->execute(ctx.cudnn(), pack, workspace);
  if (!ok(e)) throw_cuda_error("cuDNN convolution", e.get_message());
  const bool need_bias = a.bias && plan.fusion == Fusion::kNone;
  const bool need_residual = a.residual && plan.fusion != Fusion::kBiasResidual;
  if (need_bias || need_residual) {
    launch_add_bias_residual(a.y, need_bias ? a.bias : nullptr, need_residual ? a.residual : nullptr,
                             a.batch * plan.out_h * plan.out_w, a.out, ctx.stream());
  }
}

// Median milliseconds of `plan` on these buffers (3 runs after one warm-up).
float time_plan(Context& ctx, const ConvPlan& plan, const ConvArgs& a) {
  VariantPack pack = variant_pack(plan, a);
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  float times[3];
  run_plan(ctx, plan, a, pack);
  for (float& t : times) {
    check(cudaEventRecord(start, ctx.stream()), "cudaEventRecord");
    run_plan(ctx, plan, a, pack);
    check(cudaEventRecord(stop, ctx.stream()), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    check(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times, times + 3);
  return times[1];
}

bool timing_enabled() {
  const char* v = std::getenv("SDRT_CONV_TIMING");
  return v && std::string(v) == "1";
}

}  // namespace

int64_t conv_out_size(int64_t size, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after) {
  return (size + pad_before + pad_after - kernel) / stride + 1;
}

void conv2d(Context& ctx, const ConvArgs& a) {
  ConvKey key{ctx.cudnn(),
              a.batch,
              a.h,
              a.w,
              a.in,
              a.out,
              a.kernel,
              a.stride,
              a.pad_top,
              a.pad_bottom,
              a.pad_left,
              a.pad_right,
              a.bias != nullptr,
              a.residual != nullptr};
  ConvPlan* plan = nullptr;
  bool first_use = false;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_plans.find(key);
    if (it == g_plans.end()) {
      std::string why;
      std::unique_ptr<ConvPlan> built;
      for (Fusion f : {Fusion::kBiasResidual, Fusion::kBias, Fusion::kNone}) {
        if (f == Fusion::kBiasResidual && !a.residual) continue;
        if (f == Fusion::kBias && !a.bias) continue;
        built = try_build(key, f, why);
        if (built) break;
      }
      if (!built)
        throw Error(ErrorKind::kUnsupported,
                    fmt::format("cuDNN has no engine for a {}x{} convolution {}->{} channels on {}x{} "
                                "(stride {}): {}",
                                a.kernel, a.kernel, a.in, a.out, a.h, a.w, a.stride, why));
      // The residual fused (runtime-compiled engine) or added by our kernel after a precompiled one:
      // whichever is faster on this shape.
      if (built->fusion == Fusion::kBiasResidual && timing_enabled()) {
        std::string unused;
        std::unique_ptr<ConvPlan> unfused = try_build(key, a.bias ? Fusion::kBias : Fusion::kNone, unused);
        if (unfused && time_plan(ctx, *unfused, a) < time_plan(ctx, *built, a)) built = std::move(unfused);
      }
      it = g_plans.emplace(key, std::move(built)).first;
      first_use = true;
    }
    plan = it->second.get();
  }
  VariantPack pack = variant_pack(*plan, a);
  if (first_use && std::getenv("SDRT_CUDNN_AUTOTUNE") &&
      std::string(std::getenv("SDRT_CUDNN_AUTOTUNE")) == "1") {
    // Times every built engine on these buffers and keeps the fastest (outputs are rewritten below).
    int64_t tune_ws = plan->graph->get_autotune_workspace_size();
    void* tune_space = tune_ws ? ctx.workspace(static_cast<size_t>(tune_ws)) : nullptr;
    fe::error_t e = plan->graph->autotune(ctx.cudnn(), pack, tune_space);
    if (!ok(e)) throw_cuda_error("cuDNN autotune", e.get_message());
    if (!ok(plan->graph->get_workspace_size(plan->workspace)))
      throw_cuda_error("cuDNN workspace", "query failed");
  }
  run_plan(ctx, *plan, a, pack);
}

}  // namespace sdrt::cuda
