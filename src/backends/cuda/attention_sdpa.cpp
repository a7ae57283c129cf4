// cuDNN fused flash attention (SDPA forward, inference) through the cuDNN front end's graph API.
//
// Our activations are [batch, seq, heads·head_dim] rows with a row stride (q/k/v may be column slices of one
// fused projection). cuDNN's SDPA wants 4-D [B, H, S, D] tensors, and any strides will do, so each operand is
// described in place as dims [B, H, S, D] with strides [S·stride, D, stride, 1] — no transposes. I/O is fp16,
// softmax and accumulation fp32. The causal (CLIP) mask is the top-left-aligned diagonal band with right
// bound 0: key j is masked for query i when j > i, as in torch's is_causal. A graph that cuDNN cannot build
// for the running GPU / cuDNN version is reported as "not supported" (the caller falls back), never thrown.
#include "backends/cuda/attention_sdpa.h"

#include <fmt/format.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <cudnn_frontend.h>
#pragma GCC diagnostic pop

#include <unordered_map>

#include "backends/cuda/check.h"

namespace sdrt::cuda::detail {

namespace fe = cudnn_frontend;

namespace {

constexpr fe::graph::Tensor_attributes::uid_t kQ = 1, kK = 2, kV = 3, kO = 4;

std::string describe(const fe::error_t& status) {
  return fmt::format("cuDNN front end error {}: {}", static_cast<int>(status.code), status.err_msg);
}

}  // namespace

class SdpaPlan {
 public:
  std::shared_ptr<fe::graph::Graph> graph;
  int64_t workspace = 0;
};

std::shared_ptr<SdpaPlan> build_sdpa_plan(cudnnHandle_t handle, const AttentionShape& s,
                                          std::string* why_not) {
  auto fail = [&](const std::string& stage, const fe::error_t& status) -> std::shared_ptr<SdpaPlan> {
    if (why_not) *why_not = fmt::format("{}: {}", stage, describe(status));
    return nullptr;
  };
  if (cudnnGetVersion() < 90000) {
    if (why_not) *why_not = fmt::format("cuDNN {} is older than 9.0", cudnnGetVersion());
    return nullptr;
  }

  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);

  const int64_t B = s.batch, H = s.heads, Sq = s.seq_q, Skv = s.seq_kv, D = s.head_dim;
  auto operand = [&](const char* name, fe::graph::Tensor_attributes::uid_t uid, int64_t seq, int64_t stride) {
    return fe::graph::Tensor_attributes()
        .set_name(name)
        .set_uid(uid)
        .set_data_type(fe::DataType_t::HALF)
        .set_dim({B, H, seq, D})
        .set_stride({seq * stride, D, stride, 1});
  };
  auto Q = graph->tensor(operand("Q", kQ, Sq, s.q_stride));
  auto K = graph->tensor(operand("K", kK, Skv, s.k_stride));
  auto V = graph->tensor(operand("V", kV, Skv, s.v_stride));

  auto options = fe::graph::SDPA_attributes()
                     .set_name("sdrt_attention")
                     .set_generate_stats(false)
                     .set_attn_scale(s.scale);
  if (s.causal) {
    options.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT).set_diagonal_band_right_bound(0);
  }
  auto outputs = graph->sdpa(Q, K, V, options);
  auto O = outputs[0];
  O->set_output(true)
      .set_uid(kO)
      .set_data_type(fe::DataType_t::HALF)
      .set_dim({B, H, Sq, D})
      .set_stride({Sq * s.out_stride, D, s.out_stride, 1});

  if (auto st = graph->validate(); st.is_bad()) return fail("validate", st);
  if (auto st = graph->build_operation_graph(handle); st.is_bad()) return fail("build_operation_graph", st);
  if (auto st = graph->create_execution_plans({fe::HeurMode_t::A}); st.is_bad())
    return fail("create_execution_plans", st);
  if (auto st = graph->check_support(); st.is_bad()) return fail("check_support", st);
  if (auto st = graph->build_plans(fe::BuildPlanPolicy_t::HEURISTICS_CHOICE); st.is_bad())
    return fail("build_plans", st);

  auto plan = std::make_shared<SdpaPlan>();
  if (auto st = graph->get_workspace_size(plan->workspace); st.is_bad())
    throw_cuda_error("cuDNN SDPA get_workspace_size", describe(st));
  plan->graph = std::move(graph);
  return plan;
}

std::string describe(const AttentionShape& s) {
  return fmt::format(
      "batch {} heads {} seq_q {} seq_kv {} head_dim {} strides q/k/v/out {}/{}/{}/{} scale {}{}", s.batch,
      s.heads, s.seq_q, s.seq_kv, s.head_dim, s.q_stride, s.k_stride, s.v_stride, s.out_stride, s.scale,
      s.causal ? " causal" : "");
}

int64_t sdpa_workspace_size(const SdpaPlan& plan) {
  return plan.workspace;
}

void run_sdpa_plan(const SdpaPlan& plan, cudnnHandle_t handle, const __half* q, const __half* k,
                   const __half* v, __half* out, void* workspace) {
  std::unordered_map<fe::graph::Tensor_attributes::uid_t, void*> pack = {
      {kQ, const_cast<__half*>(q)}, {kK, const_cast<__half*>(k)}, {kV, const_cast<__half*>(v)}, {kO, out}};
  if (auto st = plan.graph->execute(handle, pack, workspace); st.is_bad())
    throw_cuda_error("cuDNN SDPA execute", describe(st));
}

}  // namespace sdrt::cuda::detail
