// One table of backend op cases for every backend, in the spirit of ggml's test-backend-ops.
//
// Each op is declared once (in one of the op_*.cpp files beside this one): its name, its cases (real SD 1.5 /
// SD 2.1 / SDXL / VAE shapes plus tiny and odd ones), a plain-loop double-precision reference, the CPU
// backend call (fp32, NCHW / row-major), the CUDA backend call (fp16, NHWC) with the layout adapters between
// the two, the NMSE tolerances, and the FLOP / byte counts the perf mode reports.
//
// clang-format off
// Ops covered, in table order (op_table() lists them; test_backend_ops.cpp runs them), CPU side | CUDA side:
//   conv2d              cpu::conv2d (+ cpu::add residual)     | cuda::conv2d (cuDNN; fused bias, residual)
//   linear              cpu::linear (+ activate, add)         | cuda::linear (cuBLASLt; bias, GELU, residual)
//   group_norm          cpu::group_norm (+ pre-bias add)      | cuda::launch_group_norm (SiLU, pre-bias)
//   layer_norm          cpu::layer_norm                       | cuda::launch_layer_norm
//   attention           cpu::attention                        | cuda::attention (cuDNN SDPA or fallback)
//   geglu               value * cpu::activate(kGelu)(gate)    | cuda::launch_geglu
//   gelu, quick_gelu    cpu::activate                         | cuda::launch_gelu
//   silu                cpu::activate                         | cuda::launch_silu
//   add                 cpu::add                              | cuda::launch_add
//   upsample_nearest    cpu::upsample_nearest                 | cuda::launch_upsample_nearest(2x)
//   concat_channels     NCHW plane copies (as the CPU models) | cuda::launch_concat_channels
//   timestep_embedding  models::timestep_embedding            | cuda::launch_timestep_embedding
//   guidance_combine    uncond + g*(cond - uncond) (txt2img)  | cuda::launch_guidance_combine
// clang-format on
//
// Checks: the CPU backend against the double reference (only cases whose reference is cheap: see cpu_check),
// the CUDA backend against the CPU backend on the same fp16-exact inputs, both by NMSE = Σ(a − b)² / Σ b².
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sdrt::cuda {
class Context;
}

namespace sdrt::backend_ops {

enum class Backend { kCpu, kCuda };
const char* backend_name(Backend backend);

// A case's tensors in the canonical layout — the CPU backend's: NCHW images, row-major tokens, torch's weight
// layouts — as fp32 values that are exactly representable in fp16, so every backend sees the same inputs.
using Host = std::vector<float>;
using Inputs = std::vector<Host>;

struct Tolerance {
  double cpu = 1e-10;  // NMSE of the CPU backend against the double reference
  double cuda = 1e-6;  // NMSE of the CUDA backend against the CPU backend
};

// Work of one execution, for the perf mode. flop counts a multiply-add as 2 (0 for data movement and norms,
// whose FLOP rate means nothing); bytes is the minimal traffic: every input read once, every output written
// once, in the backend's element type (fp32 on the CPU, fp16 on CUDA; fp32 stays fp32 where the op keeps it).
struct Cost {
  double flop = 0;
  double bytes_cpu = 0;
  double bytes_cuda = 0;
};

// One case prepared on one backend: inputs converted to the backend's layout and memory, output allocated.
class Run {
 public:
  virtual ~Run() = default;
  // One execution. CPU: synchronous. CUDA: enqueued on the context's stream.
  virtual void launch() = 0;
  // The output of the last launch in the canonical layout (CUDA: waits for the stream).
  virtual std::vector<float> output() = 0;
};

class Case {
 public:
  Case(std::string name, Tolerance tol) : name_(std::move(name)), tol_(tol) {}
  virtual ~Case() = default;

  const std::string& name() const { return name_; }
  const Tolerance& tolerance() const { return tol_; }

  // Seeded inputs (the seed is the table's: derived from op and case names).
  virtual Inputs make_inputs(uint32_t seed) const = 0;
  // Plain loops in double precision on the canonical layout.
  virtual std::vector<double> reference(const Inputs& in) const = 0;
  virtual std::unique_ptr<Run> prepare_cpu(const Inputs& in) const = 0;
#if SDRT_HAVE_CUDA
  // Throws sdrt::Error of kind kUnsupported where the CUDA backend refuses the shape (reported, not failed).
  virtual std::unique_ptr<Run> prepare_cuda(cuda::Context& ctx, const Inputs& in) const = 0;
#endif
  virtual Cost cost() const = 0;

  // Whether the CPU check runs this case: its double reference must stay cheap (the 2-core CI machine runs
  // every such case, in release and in an AddressSanitizer build). SDRT_BACKEND_OPS_ALL=1 runs them all.
  bool cpu_check() const;

 private:
  std::string name_;
  Tolerance tol_;
};

struct Op {
  std::string name;
  std::vector<std::shared_ptr<const Case>> cases;
};

// The table, conv2d and linear first.
const std::vector<Op>& op_table();
// The op called `name`, or null.
const Op* find_op(const std::string& name);
// The seed of a case's inputs (FNV-1a of "op/case").
uint32_t case_seed(const std::string& op, const std::string& case_name);

// Σ(got − ref)² / Σ ref² (Σ(got − ref)² when ref is all zero); infinity when got holds a non-finite value
// where ref is finite, or the sizes differ.
double nmse(const std::vector<float>& got, const std::vector<double>& ref);
double nmse(const std::vector<float>& got, const std::vector<float>& ref);

}  // namespace sdrt::backend_ops
