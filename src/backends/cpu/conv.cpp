#include "backends/cpu/conv.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "sdrt/error.h"

namespace sdrt::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

// Measured on the 2-core AVX2 dev box (oneDNN 2.6.3): the direct JIT kernel wants blocked nChw8c activations
// and OIhw8i8o weights and beats the im2col + GEMM kernel that plain NCHW gets by 5-60% once the output plane
// is large. With few output pixels and big weights (SD's 1280-channel convolutions at 8x8 and 16x16) the two
// kernels tie, and the GEMM kernel reads the caller's OIHW weights directly, so nothing needs to be reordered
// or cached.
constexpr int64_t kBlockedMinOutputPixels = 1024;  // batch · out_h · out_w
constexpr size_t kBlockedAlwaysWeightBytes = 16u
                                             << 20;  // small weights: cheap to cache, use the faster kernel
// Reordered weights kept at most, least recently used dropped first. SD 1.5 needs ~500 MB for the UNet at
// 512x512 and ~200 MB for the VAE decoder (~330 MB more with the encoder).
constexpr size_t kWeightCacheBytes = size_t{3} << 29;  // 1.5 GiB

// Everything that selects a primitive.
struct PlanKey {
  int64_t batch, in_channels, height, width, out_channels, kernel, stride, pad_top, pad_bottom, pad_left,
      pad_right;
  bool has_bias;
  auto operator<=>(const PlanKey&) const = default;
};

struct Plan {
  dnnl::convolution_forward conv;
  memory::desc src_user, weights_user, bias_user, dst_user;  // plain NCHW / OIHW / X
  memory::desc src_md, weights_md, dst_md;                   // what the kernel runs on
  dnnl::reorder src_in, dst_out, weights_in;                 // empty when the layouts agree
  bool reorder_src = false, reorder_dst = false, reorder_weights = false;
};

// A weight tensor already in the kernel's layout, tagged with a sample of the values it came from so that a
// different tensor allocated at the same address later is not mistaken for it.
struct CachedWeights {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  size_t bytes = 0;
  uint64_t fingerprint = 0;
  std::list<std::pair<const float*, PlanKey>>::iterator lru;
};

float* aligned_floats(size_t bytes) {
  void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 64) + 63) / 64 * 64);
  if (!p) throw Error(ErrorKind::kInternal, fmt::format("conv2d: cannot allocate {} bytes", bytes));
  return static_cast<float*>(p);
}

// A sample of the weights, hashed (FNV-1a over the bit patterns): 128 evenly spaced runs of one cache line
// each. Any real change of a layer's weights (another tensor at a reused address, a merged LoRA) changes
// nearly every value, and whole cache lines keep the check to ~128 memory accesses.
uint64_t fingerprint(const float* w, int64_t n) {
  constexpr int64_t kRuns = 128, kRun = 16;
  uint64_t h = 1469598103934665603ull;
  const auto mix = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, w + i, sizeof bits);
      h = (h ^ bits) * 1099511628211ull;
    }
  };
  if (n <= kRuns * kRun) {
    mix(0, n);
  } else {
    for (int64_t r = 0; r < kRuns; ++r) {
      const int64_t begin = r * (n - kRun) / (kRuns - 1);
      mix(begin, begin + kRun);
    }
  }
  return h;
}

class ConvRuntime {
 public:
  // Never destroyed: oneDNN's own globals may be gone by the time static destructors run, and freeing the
  // cached weights at exit is wasted work.
  static ConvRuntime& instance() {
    static ConvRuntime* runtime = new ConvRuntime;
    return *runtime;
  }

  void run(const float* x, const float* w, const float* bias, float* y, const Conv2dShape& s) {
    const std::lock_guard lock(mutex_);
    const PlanKey key = key_of(s, bias != nullptr);
    const Plan& plan = plan_for(key, s);

    memory src_user(plan.src_user, engine_, const_cast<float*>(x));
    memory dst_user(plan.dst_user, engine_, y);
    memory src = src_user, dst = dst_user;
    if (plan.reorder_src) {
      src = memory(plan.src_md, engine_, scratch(src_scratch_, src_scratch_bytes_, plan.src_md.get_size()));
      plan.src_in.execute(stream_, src_user, src);
    }
    if (plan.reorder_dst)
      dst = memory(plan.dst_md, engine_, scratch(dst_scratch_, dst_scratch_bytes_, plan.dst_md.get_size()));
    memory weights = plan.reorder_weights ? memory(plan.weights_md, engine_, cached_weights(plan, key, w))
                                          : memory(plan.weights_user, engine_, const_cast<float*>(w));

    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory(plan.bias_user, engine_, const_cast<float*>(bias)));
    plan.conv.execute(stream_, args);
    if (plan.reorder_dst) plan.dst_out.execute(stream_, dst, dst_user);
    stream_.wait();
  }

 private:
  ConvRuntime() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  static PlanKey key_of(const Conv2dShape& s, bool has_bias) {
    return {s.batch,  s.in_channels, s.height,     s.width,    s.out_channels, s.kernel,
            s.stride, s.pad_top,     s.pad_bottom, s.pad_left, s.pad_right,    has_bias};
  }

  const Plan& plan_for(const PlanKey& key, const Conv2dShape& s) {
    const bool has_bias = key.has_bias;
    if (auto it = plans_.find(key); it != plans_.end()) return it->second;

    const int64_t oh = s.out_height(), ow = s.out_width();
    const size_t weight_bytes = static_cast<size_t>(s.out_channels * s.in_channels * s.kernel * s.kernel) * 4;
    const bool blocked =
        s.batch * oh * ow >= kBlockedMinOutputPixels || weight_bytes <= kBlockedAlwaysWeightBytes;

    const memory::dims src_dims = {s.batch, s.in_channels, s.height, s.width};
    const memory::dims weight_dims = {s.out_channels, s.in_channels, s.kernel, s.kernel};
    const memory::dims dst_dims = {s.batch, s.out_channels, oh, ow};
    // torch drops input rows the stride never reaches; oneDNN wants the right/bottom padding that is used.
    const int64_t pad_bottom = (oh - 1) * s.stride + s.kernel - s.height - s.pad_top;
    const int64_t pad_right = (ow - 1) * s.stride + s.kernel - s.width - s.pad_left;

    Plan p;
    p.src_user = memory::desc(src_dims, memory::data_type::f32, Tag::nchw);
    p.weights_user = memory::desc(weight_dims, memory::data_type::f32, Tag::oihw);
    p.bias_user = memory::desc({s.out_channels}, memory::data_type::f32, Tag::x);
    p.dst_user = memory::desc(dst_dims, memory::data_type::f32, Tag::nchw);
    const auto pick = [&](const memory::dims& d, Tag plain) {
      return memory::desc(d, memory::data_type::f32, blocked ? Tag::any : plain);
    };
    const memory::desc src_any = pick(src_dims, Tag::nchw), weights_any = pick(weight_dims, Tag::oihw),
                       dst_any = pick(dst_dims, Tag::nchw);
    try {
      const memory::dims strides = {s.stride, s.stride}, pad_l = {s.pad_top, s.pad_left},
                         pad_r = {pad_bottom, pad_right};
      const auto desc =
          has_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                     dnnl::algorithm::convolution_direct, src_any,
                                                     weights_any, p.bias_user, dst_any, strides, pad_l, pad_r)
                   : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                     dnnl::algorithm::convolution_direct, src_any,
                                                     weights_any, dst_any, strides, pad_l, pad_r);
      const dnnl::convolution_forward::primitive_desc pd(desc, engine_);
      p.conv = dnnl::convolution_forward(pd);
      p.src_md = pd.src_desc();
      p.weights_md = pd.weights_desc();
      p.dst_md = pd.dst_desc();
      p.reorder_src = p.src_md != p.src_user;
      p.reorder_dst = p.dst_md != p.dst_user;
      p.reorder_weights = p.weights_md != p.weights_user;
      if (p.reorder_src)
        p.src_in = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, p.src_user, engine_, p.src_md));
      if (p.reorder_dst)
        p.dst_out = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, p.dst_md, engine_, p.dst_user));
      if (p.reorder_weights)
        p.weights_in =
            dnnl::reorder(dnnl::reorder::primitive_desc(engine_, p.weights_user, engine_, p.weights_md));
    } catch (const dnnl::error& e) {
      throw Error(
          ErrorKind::kInternal,
          fmt::format("conv2d: oneDNN rejected [{}, {}, {}, {}] -> {} kernel {} stride {}: {}", s.batch,
                      s.in_channels, s.height, s.width, s.out_channels, s.kernel, s.stride, e.what()));
    }
    return plans_.emplace(key, std::move(p)).first->second;
  }

  // The weights in the kernel's layout, reordered on first use and then kept (LRU beyond kWeightCacheBytes).
  float* cached_weights(const Plan& plan, const PlanKey& key, const float* w) {
    const int64_t n = key.out_channels * key.in_channels * key.kernel * key.kernel;
    const uint64_t fp = fingerprint(w, n);
    const auto id = std::make_pair(w, key);
    auto it = weights_.find(id);
    if (it != weights_.end() && it->second.fingerprint == fp) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return it->second.data.get();
    }
    if (it != weights_.end()) drop(it);

    CachedWeights c;
    c.bytes = plan.weights_md.get_size();
    c.data.reset(aligned_floats(c.bytes));
    c.fingerprint = fp;
    memory src(plan.weights_user, engine_, const_cast<float*>(w));
    memory dst(plan.weights_md, engine_, c.data.get());
    plan.weights_in.execute(stream_, src, dst);
    stream_.wait();
    while (!lru_.empty() && cached_bytes_ + c.bytes > kWeightCacheBytes) drop(weights_.find(lru_.back()));
    lru_.push_front(id);
    c.lru = lru_.begin();
    cached_bytes_ += c.bytes;
    return weights_.emplace(id, std::move(c)).first->second.data.get();
  }

  void drop(std::map<std::pair<const float*, PlanKey>, CachedWeights>::iterator it) {
    cached_bytes_ -= it->second.bytes;
    lru_.erase(it->second.lru);
    weights_.erase(it);
  }

  // Blocked activations live in buffers that grow to the largest convolution seen and are then reused: fresh
  // pages for every call would cost more than the reorders themselves.
  static float* scratch(std::unique_ptr<float, decltype(&std::free)>& buf, size_t& have, size_t need) {
    if (need > have) {
      buf.reset();
      buf.reset(aligned_floats(need));
      have = need;
    }
    return buf.get();
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::mutex mutex_;
  std::map<PlanKey, Plan> plans_;
  std::map<std::pair<const float*, PlanKey>, CachedWeights> weights_;
  std::list<std::pair<const float*, PlanKey>> lru_;  // most recently used first
  size_t cached_bytes_ = 0;
  std::unique_ptr<float, decltype(&std::free)> src_scratch_{nullptr, &std::free},
      dst_scratch_{nullptr, &std::free};
  size_t src_scratch_bytes_ = 0, dst_scratch_bytes_ = 0;
};

int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}
int64_t ceil_div(int64_t a, int64_t b) {
  return -floor_div(-a, b);
}

void check_shape(const Conv2dShape& s) {
  const bool ok = s.batch >= 0 && s.in_channels > 0 && s.height > 0 && s.width > 0 && s.out_channels > 0 &&
                  s.kernel > 0 && s.stride > 0 && s.pad_top >= 0 && s.pad_bottom >= 0 && s.pad_left >= 0 &&
                  s.pad_right >= 0 && s.height + s.pad_top + s.pad_bottom >= s.kernel &&
                  s.width + s.pad_left + s.pad_right >= s.kernel;
  if (!ok)
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("conv2d: invalid shape [{}, {}, {}, {}] -> {} kernel {} stride {} pad ({}, {}, {}, {})",
                    s.batch, s.in_channels, s.height, s.width, s.out_channels, s.kernel, s.stride, s.pad_left,
                    s.pad_right, s.pad_top, s.pad_bottom));
}

}  // namespace

void conv2d(const float* x, const float* w, const float* bias, float* y, const Conv2dShape& shape) {
  check_shape(shape);
  if (shape.batch == 0) return;
  try {
    ConvRuntime::instance().run(x, w, bias, y, shape);
  } catch (const dnnl::error& e) {
    throw Error(ErrorKind::kInternal, fmt::format("conv2d: oneDNN failed: {}", e.what()));
  }
}

void conv2d_reference(const float* x, const float* w, const float* bias, float* y, const Conv2dShape& s) {
  check_shape(s);
  const int64_t oh = s.out_height(), ow = s.out_width(), k = s.kernel;
  // One output plane at a time: y[n, o] = bias[o] + Σ_{c, kh, kw} w[o, c, kh, kw] · x[n, c, shifted window].
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t o = 0; o < s.out_channels; ++o) {
      float* yp = y + (n * s.out_channels + o) * oh * ow;
      std::fill(yp, yp + oh * ow, bias ? bias[o] : 0.0f);
      for (int64_t c = 0; c < s.in_channels; ++c) {
        const float* xp = x + (n * s.in_channels + c) * s.height * s.width;
        const float* wp = w + (o * s.in_channels + c) * k * k;
        for (int64_t kh = 0; kh < k; ++kh) {
          for (int64_t kw = 0; kw < k; ++kw) {
            const float wv = wp[kh * k + kw];
            // Output columns whose input column j · stride + kw - pad_left lies inside the image.
            const int64_t j0 = std::max<int64_t>(0, ceil_div(s.pad_left - kw, s.stride));
            const int64_t j1 = std::min<int64_t>(ow, floor_div(s.width - 1 - kw + s.pad_left, s.stride) + 1);
            for (int64_t i = 0; i < oh; ++i) {
              const int64_t ih = i * s.stride + kh - s.pad_top;
              if (ih < 0 || ih >= s.height) continue;
              const float* xr = xp + ih * s.width;
              float* yr = yp + i * ow;
              const int64_t off = kw - s.pad_left;
              if (s.stride == 1) {
                for (int64_t j = j0; j < j1; ++j) yr[j] += wv * xr[j + off];
              } else {
                for (int64_t j = j0; j < j1; ++j) yr[j] += wv * xr[j * s.stride + off];
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace sdrt::cpu
