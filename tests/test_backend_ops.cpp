// The backend op table (tests/backend_ops/op_table.h) run on every backend, as ggml's test-backend-ops:
//   BackendOps.Cpu_<op>   the CPU backend against the plain-loop double reference, on the cases whose
//                         reference is cheap (Case::cpu_check; SDRT_BACKEND_OPS_ALL=1 runs every case);
//   BackendOps.Cuda_<op>  the CUDA backend (fp16, NHWC) against the CPU backend (fp32) on every case, on the
//                         same fp16-exact inputs; skipped without a GPU. A shape the CUDA backend refuses
//                         (sdrt::Error kUnsupported) is reported and counted, not failed.
// Every comparison is NMSE = Σ(got − ref)² / Σ ref² against the case's tolerance; each test prints one line
// per op with its worst NMSE. bench/bench_ops times the same cases.
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend_ops/op_table.h"
#include "sdrt/error.h"

#if SDRT_HAVE_CUDA
#include "cuda_test_util.h"
#endif

namespace sdrt::backend_ops {
namespace {

struct Worst {
  double nmse = 0.0;
  std::string name = "-";
  void track(double e, const std::string& case_name) {
    if (e >= nmse) nmse = e, name = case_name;
  }
};

void check_cpu(const std::string& op_name) {
  const Op* op = find_op(op_name);
  ASSERT_NE(op, nullptr) << op_name << " is not in the op table";
  int ran = 0;
  Worst worst;
  for (const auto& c : op->cases) {
    if (!c->cpu_check()) continue;
    SCOPED_TRACE(op_name + "/" + c->name());
    const Inputs in = c->make_inputs(case_seed(op_name, c->name()));
    const std::vector<double> ref = c->reference(in);
    auto run = c->prepare_cpu(in);
    run->launch();
    const double e = nmse(run->output(), ref);
    EXPECT_LE(e, c->tolerance().cpu) << "cpu " << op_name << "/" << c->name();
    worst.track(e, c->name());
    ++ran;
  }
  EXPECT_GT(ran, 0) << "no case of " << op_name << " is small enough for the CPU check";
  std::printf("[ backend_ops ] cpu  %-18s %2d of %2zu cases, worst NMSE %.3g (%s)\n", op_name.c_str(), ran,
              op->cases.size(), worst.nmse, worst.name.c_str());
}

#if SDRT_HAVE_CUDA
void check_cuda(const std::string& op_name) {
  const Op* op = find_op(op_name);
  ASSERT_NE(op, nullptr) << op_name << " is not in the op table";
  cuda::Context& ctx = sdrt::testing::cuda::context();
  int ran = 0, unsupported = 0;
  Worst worst;
  for (const auto& c : op->cases) {
    SCOPED_TRACE(op_name + "/" + c->name());
    const Inputs in = c->make_inputs(case_seed(op_name, c->name()));
    auto cpu_run = c->prepare_cpu(in);
    cpu_run->launch();
    const std::vector<float> ref = cpu_run->output();
    cpu_run.reset();
    std::vector<float> got;
    try {
      auto run = c->prepare_cuda(ctx, in);
      run->launch();
      got = run->output();
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kUnsupported) {
        ADD_FAILURE() << "cuda " << op_name << "/" << c->name() << " threw: " << e.what();
        continue;
      }
      std::printf("[ backend_ops ] cuda %s/%s unsupported: %s\n", op_name.c_str(), c->name().c_str(),
                  e.what());
      ++unsupported;
      continue;
    }
    const double e = nmse(got, ref);
    EXPECT_LE(e, c->tolerance().cuda) << "cuda " << op_name << "/" << c->name();
    worst.track(e, c->name());
    ++ran;
  }
  std::printf("[ backend_ops ] cuda %-18s %2d of %2zu cases (%d unsupported), worst NMSE %.3g (%s)\n",
              op_name.c_str(), ran, op->cases.size(), unsupported, worst.nmse, worst.name.c_str());
}
#endif

// One CPU and one CUDA test per op; kOps must list every op of the table (checked below).
const char* const kOps[] = {"conv2d",
                            "linear",
                            "group_norm",
                            "layer_norm",
                            "attention",
                            "geglu",
                            "gelu",
                            "quick_gelu",
                            "silu",
                            "add",
                            "upsample_nearest",
                            "concat_channels",
                            "timestep_embedding",
                            "guidance_combine"};

#if SDRT_HAVE_CUDA
#define SDRT_CUDA_OP_TEST(op)   \
  TEST(BackendOps, Cuda_##op) { \
    SDRT_REQUIRE_CUDA();        \
    check_cuda(#op);            \
  }
#else
#define SDRT_CUDA_OP_TEST(op)                         \
  TEST(BackendOps, Cuda_##op) {                       \
    GTEST_SKIP() << "built without the CUDA backend"; \
  }
#endif

#define SDRT_OP_TESTS(op)      \
  TEST(BackendOps, Cpu_##op) { \
    check_cpu(#op);            \
  }                            \
  SDRT_CUDA_OP_TEST(op)

SDRT_OP_TESTS(conv2d)
SDRT_OP_TESTS(linear)
SDRT_OP_TESTS(group_norm)
SDRT_OP_TESTS(layer_norm)
SDRT_OP_TESTS(attention)
SDRT_OP_TESTS(geglu)
SDRT_OP_TESTS(gelu)
SDRT_OP_TESTS(quick_gelu)
SDRT_OP_TESTS(silu)
SDRT_OP_TESTS(add)
SDRT_OP_TESTS(upsample_nearest)
SDRT_OP_TESTS(concat_channels)
SDRT_OP_TESTS(timestep_embedding)
SDRT_OP_TESTS(guidance_combine)

TEST(BackendOps, TableListsEveryTestedOpOnce) {
  std::vector<std::string> table;
  for (const Op& op : op_table()) {
    table.push_back(op.name);
    EXPECT_FALSE(op.cases.empty()) << op.name;
    for (size_t i = 0; i < op.cases.size(); ++i)
      for (size_t j = i + 1; j < op.cases.size(); ++j)
        EXPECT_NE(op.cases[i]->name(), op.cases[j]->name()) << op.name << ": case names must be unique";
  }
  EXPECT_EQ(table, std::vector<std::string>(std::begin(kOps), std::end(kOps)));
}

// The comparison must be able to fail: a 1e-4 relative error on every output exceeds the matmul tolerance,
// and a dropped bias is far outside it.
TEST(BackendOps, Cpu_ToleranceCatchesErrors) {
  const Op* op = find_op("conv2d");
  ASSERT_NE(op, nullptr);
  for (const auto& c : op->cases) {
    if (!c->cpu_check() || c->name() != "tiny_c32_8x8_residual") continue;
    const Inputs in = c->make_inputs(case_seed(op->name, c->name()));
    const std::vector<double> ref = c->reference(in);
    auto run = c->prepare_cpu(in);
    run->launch();
    std::vector<float> got = run->output();
    ASSERT_LE(nmse(got, ref), c->tolerance().cpu);
    for (auto& v : got) v *= 1.0f + 1e-4f;
    EXPECT_GT(nmse(got, ref), c->tolerance().cpu);
    Inputs no_bias = in;
    for (auto& b : no_bias[2]) b = 0.0f;
    auto run2 = c->prepare_cpu(no_bias);
    run2->launch();
    EXPECT_GT(nmse(run2->output(), ref), 1e-3);
    return;
  }
  FAIL() << "case conv2d/tiny_c32_8x8_residual not found";
}

}  // namespace
}  // namespace sdrt::backend_ops
