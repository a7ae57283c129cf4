// The op table's registry and the helpers its op files share (see op_table.h for the list of ops).
#include "backend_ops/op_table.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>

#include "backend_ops/op_util.h"

#if SDRT_HAVE_CUDA
#include <cuda_fp16.h>
#endif

namespace sdrt::backend_ops {

const char* backend_name(Backend backend) {
  return backend == Backend::kCpu ? "cpu" : "cuda";
}

const std::vector<Op>& op_table() {
  static const std::vector<Op> table = {
      conv2d_op(),
      linear_op(),
      group_norm_op(),
      layer_norm_op(),
      attention_op(),
      geglu_op(),
      gelu_op(),
      quick_gelu_op(),
      silu_op(),
      add_op(),
      upsample_nearest_op(),
      concat_channels_op(),
      timestep_embedding_op(),
      guidance_combine_op(),
  };
  return table;
}

const Op* find_op(const std::string& name) {
  for (const Op& op : op_table())
    if (op.name == name) return &op;
  return nullptr;
}

uint32_t case_seed(const std::string& op, const std::string& case_name) {
  uint32_t h = 2166136261u;
  for (const char c : op + "/" + case_name) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  return h;
}

// A double reference in plain loops costs about 1 ns per multiply-add in release builds and a few times that
// under AddressSanitizer; these bounds keep the whole CPU check in a few seconds.
bool Case::cpu_check() const {
  static const bool all = [] {
    const char* v = std::getenv("SDRT_BACKEND_OPS_ALL");
    return v && std::string(v) == "1";
  }();
  if (all) return true;
  const Cost c = cost();
  return c.flop <= 6e7 && c.bytes_cpu <= 24e6;
}

namespace {

template <typename T>
double nmse_impl(const std::vector<float>& got, const std::vector<T>& ref) {
  if (got.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = static_cast<double>(ref[i]);
    if (!std::isfinite(got[i]) && std::isfinite(r)) return std::numeric_limits<double>::infinity();
    const double e = static_cast<double>(got[i]) - r;
    err += e * e;
    norm += r * r;
  }
  return norm > 0.0 ? err / norm : err;
}

class FnRun : public Run {
 public:
  FnRun(std::function<void()> launch, std::function<std::vector<float>()> output)
      : launch_(std::move(launch)), output_(std::move(output)) {}
  void launch() override { launch_(); }
  std::vector<float> output() override { return output_(); }

 private:
  std::function<void()> launch_;
  std::function<std::vector<float>()> output_;
};

}  // namespace

double nmse(const std::vector<float>& got, const std::vector<double>& ref) {
  return nmse_impl(got, ref);
}
double nmse(const std::vector<float>& got, const std::vector<float>& ref) {
  return nmse_impl(got, ref);
}

std::unique_ptr<Run> make_run(std::function<void()> launch, std::function<std::vector<float>()> output) {
  return std::make_unique<FnRun>(std::move(launch), std::move(output));
}

float round_to_f16(float x) {
  if (!std::isfinite(x)) return x;
  const float a = std::fabs(x);
  if (a >= 65520.0f) return std::copysign(std::numeric_limits<float>::infinity(), x);  // past 65504 + ulp/2
  if (a < 6.103515625e-05f) {
    // Subnormal fp16: multiples of 2^-24; nearbyint rounds half to even in the default rounding mode.
    return std::nearbyint(x * 16777216.0f) / 16777216.0f;
  }
  // Normal: keep 10 of the 23 mantissa bits, rounding to nearest even on the bit pattern.
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x0FFFu + ((bits >> 13) & 1u);
  bits &= ~0x1FFFu;
  float y;
  std::memcpy(&y, &bits, sizeof y);
  return y;
}

Host random_normal(size_t n, uint32_t seed, float scale, float offset) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Host v(n);
  for (auto& x : v) x = round_to_f16(offset + scale * normal(rng));
  return v;
}

Host random_uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(lo, hi);
  Host v(n);
  for (auto& x : v) x = round_to_f16(uniform(rng));
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

Host nchw_to_nhwc(const Host& x, int64_t batch, int64_t channels, int64_t spatial) {
  Host y(x.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t s = 0; s < spatial; ++s)
        y[(b * spatial + s) * channels + c] = x[(b * channels + c) * spatial + s];
  return y;
}

Host nhwc_to_nchw(const Host& x, int64_t batch, int64_t channels, int64_t spatial) {
  Host y(x.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < spatial; ++s)
      for (int64_t c = 0; c < channels; ++c)
        y[(b * channels + c) * spatial + s] = x[(b * spatial + s) * channels + c];
  return y;
}

#if SDRT_HAVE_CUDA

cuda::DeviceBuffer upload_f16(cuda::Context& ctx, const Host& host) {
  std::vector<__half> h(host.size());
  for (size_t i = 0; i < host.size(); ++i) h[i] = __float2half_rn(host[i]);
  cuda::DeviceBuffer buf(std::max<size_t>(h.size(), 1) * sizeof(__half));
  if (!h.empty()) cuda::upload(ctx, buf.data(), h.data(), h.size() * sizeof(__half));
  return buf;
}

cuda::DeviceBuffer upload_f32(cuda::Context& ctx, const Host& host) {
  cuda::DeviceBuffer buf(std::max<size_t>(host.size(), 1) * sizeof(float));
  if (!host.empty()) cuda::upload(ctx, buf.data(), host.data(), host.size() * sizeof(float));
  return buf;
}

std::vector<float> download_f16(cuda::Context& ctx, const cuda::DeviceBuffer& buf, size_t n) {
  std::vector<__half> h(n);
  if (n) cuda::download(ctx, h.data(), buf.data(), n * sizeof(__half));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = __half2float(h[i]);
  return v;
}

std::vector<float> download_f32(cuda::Context& ctx, const cuda::DeviceBuffer& buf, size_t n) {
  std::vector<float> v(n);
  if (n) cuda::download(ctx, v.data(), buf.data(), n * sizeof(float));
  return v;
}

#endif  // SDRT_HAVE_CUDA

}  // namespace sdrt::backend_ops
