// Internal: the concrete schedulers' factories, each taking a config already resolved against its diffusers
// class's defaults (see make_scheduler in scheduler_config.cpp).
#pragma once

#include <limits>
#include <memory>
#include <optional>

#include "schedulers/schedule_math.h"
#include "schedulers/scheduler.h"

namespace sdrt::schedulers::detail {

// PNDMScheduler.__init__ arguments.
struct PndmOptions {
  BetaSchedule betas;
  bool skip_prk_steps = false;
  bool set_alpha_to_one = false;
  PredictionType prediction_type = PredictionType::kEpsilon;
  TimestepSpacing timestep_spacing = TimestepSpacing::kLeading;
  int steps_offset = 0;
};

// DDIMScheduler.__init__ arguments (eta is always 0).
struct DdimOptions {
  BetaSchedule betas;
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;
  int steps_offset = 0;
  PredictionType prediction_type = PredictionType::kEpsilon;
  TimestepSpacing timestep_spacing = TimestepSpacing::kLeading;
};

// EulerDiscreteScheduler / EulerAncestralDiscreteScheduler.__init__ arguments.
struct EulerOptions {
  BetaSchedule betas;
  PredictionType prediction_type = PredictionType::kEpsilon;
  TimestepSpacing timestep_spacing = TimestepSpacing::kLinspace;
  int steps_offset = 0;
  bool use_karras_sigmas = false;
  std::optional<double> sigma_min;
  std::optional<double> sigma_max;
  bool final_sigma_min = false;  // final_sigmas_type "sigma_min" (Euler only) instead of "zero"
};

// DPMSolverMultistepScheduler.__init__ arguments (algorithm_type dpmsolver++).
struct DpmSolverOptions {
  BetaSchedule betas;
  int solver_order = 2;
  PredictionType prediction_type = PredictionType::kEpsilon;
  bool heun = false;  // solver_type "heun" instead of "midpoint"
  bool lower_order_final = true;
  bool euler_at_final = false;
  bool use_karras_sigmas = false;
  std::optional<double> sigma_min;
  std::optional<double> sigma_max;
  bool final_sigma_min = false;  // final_sigmas_type "sigma_min" instead of "zero"
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
  TimestepSpacing timestep_spacing = TimestepSpacing::kLinspace;
  int steps_offset = 0;
};

std::unique_ptr<Scheduler> make_pndm(const PndmOptions& options);
std::unique_ptr<Scheduler> make_ddim(const DdimOptions& options);
std::unique_ptr<Scheduler> make_euler(const EulerOptions& options);
std::unique_ptr<Scheduler> make_euler_ancestral(const EulerOptions& options);
std::unique_ptr<Scheduler> make_dpm_solver(const DpmSolverOptions& options);

}  // namespace sdrt::schedulers::detail
