// Internal: the schedulers write their step formulas on PlanValues, which record each float32 operation into
// a StepPlan as they are evaluated; the code reads like the per-element loops diffusers' formulas used to be
// written as, and the plan keeps their exact operation order.
//
//   PlanBuilder plan;
//   const PlanValue x = plan.load(step_buffer::kSample), eps = plan.load(step_buffer::kModelOutput);
//   const PlanValue pred = x - sigma * eps;
//   plan.store(x + (x - pred) / sigma * dt, step_buffer::kPrevSample);
//   return plan.finish();
#pragma once

#include <cstdint>
#include <utility>

#include <fmt/format.h>

#include "core/step_plan.h"
#include "sdrt/error.h"

namespace sdrt::schedulers::detail {

class PlanBuilder;

// One register of the plan being built.
struct PlanValue {
  PlanBuilder* builder = nullptr;
  uint8_t reg = 0;
};

class PlanBuilder {
 public:
  PlanValue load(int buffer) {
    StepInstruction in;
    in.op = StepOpcode::kLoad;
    in.buffer = checked_buffer(buffer);
    return emit(in);
  }
  void store(PlanValue value, int buffer) {
    StepInstruction in;
    in.op = StepOpcode::kStore;
    in.a = value.reg;
    in.buffer = checked_buffer(buffer);
    append(in);
    if (buffer == step_buffer::kPrevSample) stored_result_ = true;
  }
  // Every operation writes a fresh register.
  PlanValue emit(StepInstruction in) {
    if (registers_ == kMaxStepRegisters)
      throw Error(ErrorKind::kInternal, "scheduler step plan: out of registers");
    in.dst = static_cast<uint8_t>(registers_++);
    append(in);
    return {this, in.dst};
  }
  void set_needs_noise() { plan_.needs_noise = true; }
  StepPlan finish() {
    if (!stored_result_) throw Error(ErrorKind::kInternal, "scheduler step plan stores no result");
    return std::move(plan_);
  }

 private:
  static uint8_t checked_buffer(int buffer) {
    if (buffer < 0 || buffer >= kMaxStepBuffers)
      throw Error(ErrorKind::kInternal, fmt::format("scheduler step plan: buffer {} out of range", buffer));
    return static_cast<uint8_t>(buffer);
  }
  void append(const StepInstruction& in) {
    if (plan_.program.size() == static_cast<size_t>(kMaxStepInstructions))
      throw Error(ErrorKind::kInternal, "scheduler step plan: too many instructions");
    plan_.program.push_back(in);
  }

  StepPlan plan_;
  int registers_ = 0;
  bool stored_result_ = false;
};

namespace plan_ops {

inline PlanValue scalar_op(StepOpcode op, PlanValue v, float scalar) {
  StepInstruction in;
  in.op = op;
  in.a = v.reg;
  in.scalar = scalar;
  return v.builder->emit(in);
}
inline PlanValue binary_op(StepOpcode op, PlanValue a, PlanValue b) {
  StepInstruction in;
  in.op = op;
  in.a = a.reg;
  in.b = b.reg;
  return a.builder->emit(in);
}

}  // namespace plan_ops

inline PlanValue operator*(PlanValue v, float scalar) {
  return plan_ops::scalar_op(StepOpcode::kMulScalar, v, scalar);
}
inline PlanValue operator*(float scalar, PlanValue v) {
  return plan_ops::scalar_op(StepOpcode::kMulScalar, v, scalar);
}
inline PlanValue operator/(PlanValue v, float divisor) {
  return plan_ops::scalar_op(StepOpcode::kDivScalar, v, divisor);
}
inline PlanValue operator+(PlanValue a, PlanValue b) {
  return plan_ops::binary_op(StepOpcode::kAdd, a, b);
}
inline PlanValue operator-(PlanValue a, PlanValue b) {
  return plan_ops::binary_op(StepOpcode::kSub, a, b);
}
// Clamped to [-range, range].
inline PlanValue clamp(PlanValue v, float range) {
  return plan_ops::scalar_op(StepOpcode::kClamp, v, range);
}

}  // namespace sdrt::schedulers::detail
