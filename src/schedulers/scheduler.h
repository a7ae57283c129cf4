// Noise schedulers, each reproducing its diffusers namesake for the same scheduler_config.json.
//
//   auto s = make_scheduler(SchedulerKind::kEulerAncestral,
//                           SchedulerConfig::from_json_file(".../scheduler_config.json"));
//   s->set_timesteps(20);
//   latents *= s->init_noise_sigma();
//   for (size_t i = 0; i < s->timesteps().size(); ++i) {
//     Tensor in = s->scale_model_input(latents, i);
//     Tensor eps = unet(in, s->timesteps()[i], ...);
//     latents = s->step(eps, i, latents, rng);
//   }
//
// Each step is a StepPlan (core/step_plan.h) that step() runs on the host; a device runs the same
// plans on its own buffers through model_input_divisor, state_buffer_count and plan_step (see CudaEngine).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/step_plan.h"
#include "schedulers/torch_rng.h"
#include "sdrt/tensor.h"

namespace sdrt::schedulers {

enum class PredictionType { kEpsilon, kVPrediction, kSample };
enum class TimestepSpacing { kLeading, kTrailing, kLinspace };
enum class SchedulerKind { kPndm, kDdim, kEuler, kEulerAncestral, kDpmSolverMultistep };

// The settings of scheduler_config.json. Fields absent from the file take the defaults of the diffusers class
// named by "_class_name" (or of `kind` when converting, see make_scheduler).
struct SchedulerConfig {
  std::string class_name;  // "PNDMScheduler", "DDIMScheduler", ...
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::vector<double> trained_betas;     // overrides the schedule when non-empty
  std::optional<PredictionType> prediction_type;
  std::optional<TimestepSpacing> timestep_spacing;
  int steps_offset = 0;
  std::optional<bool> set_alpha_to_one;
  std::optional<bool> skip_prk_steps;
  std::optional<bool> clip_sample;
  std::optional<double> clip_sample_range;
  std::optional<bool> use_karras_sigmas;
  std::optional<bool> rescale_betas_zero_snr;
  std::optional<bool> thresholding;  // dynamic thresholding: recognised, not supported
  // EulerDiscreteScheduler / DPMSolverMultistepScheduler.
  std::optional<double> sigma_min;
  std::optional<double> sigma_max;
  std::optional<std::string> final_sigmas_type;   // zero | sigma_min
  std::optional<std::string> interpolation_type;  // Euler: linear (log_linear unsupported)
  std::optional<std::string> timestep_type;       // Euler: discrete (continuous unsupported)
  std::optional<bool> use_exponential_sigmas;     // recognised, not supported
  std::optional<bool> use_beta_sigmas;            // recognised, not supported
  // DPMSolverMultistepScheduler.
  std::optional<int> solver_order;
  std::optional<std::string> algorithm_type;  // dpmsolver++ (others unsupported)
  std::optional<std::string> solver_type;     // midpoint | heun
  std::optional<bool> lower_order_final;
  std::optional<bool> euler_at_final;
  std::optional<double> lambda_min_clipped;  // JSON -Infinity is accepted
  std::optional<std::string> variance_type;  // recognised, not supported
  std::optional<bool> use_lu_lambdas;        // recognised, not supported
  std::optional<bool> use_flow_sigmas;       // recognised, not supported

  static SchedulerConfig from_json_file(const std::filesystem::path& path);
  // The same from JSON text; `what` names its origin in error messages.
  static SchedulerConfig from_json_text(const std::string& text, const std::string& what);
};

// Parses "pndm", "ddim", "euler", "euler_a", "dpmpp_2m"; throws sdrt::Error (kInvalidArgument) otherwise.
SchedulerKind parse_scheduler_name(const std::string& name);
// The kind named by a config's "_class_name"; throws (kUnsupported) naming the class when sdrt lacks it.
SchedulerKind scheduler_kind_of(const SchedulerConfig& config);
// AUTOMATIC1111's sampler name for PNG metadata ("Euler a", "DPM++ 2M Karras", "PNDM", "DDIM", "Euler").
std::string sampler_display_name(SchedulerKind kind, bool karras);

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual void set_timesteps(int num_inference_steps) = 0;
  // The timestep passed to the UNet at each step (integer-valued for PNDM/DDIM/DPM++, may be fractional for
  // Euler with linspace spacing or Karras sigmas).
  virtual const std::vector<double>& timesteps() const = 0;
  virtual float init_noise_sigma() const = 0;
  // "PNDM", "DDIM", "Euler", "Euler a", "DPM++" (error messages).
  virtual const char* name() const = 0;
  // The noise levels of the schedule (timesteps().size() + 1 values) for sigma-based schedulers (Euler, Euler
  // a, DPM-Solver), as diffusers' `scheduler.sigmas`; empty for PNDM and DDIM.
  virtual const std::vector<float>& sigmas() const;

  // ---- the step as a plan (the host's step() and a device's loop share these) ----
  // The UNet input of step `step_index` is sample / model_input_divisor(step_index): sqrt(sigma² + 1) for the
  // Euler family, 1 for the others. (A device may multiply by the reciprocal as it rounds the input to fp16.)
  virtual float model_input_divisor(size_t step_index) const = 0;
  // How many state buffers (step_buffer::state(0 .. count - 1)) the plans use; their contents carry the
  // scheduler's history from step to step and belong to whoever executes the plans.
  virtual int state_buffer_count() const = 0;
  // Plans step `step_index` and advances the scheduler's runner state past it (multistep schedulers require
  // one call per step, in order, after set_timesteps). Throws kInvalidArgument for an out-of-range or
  // out-of-order step.
  virtual StepPlan plan_step(size_t step_index) = 0;
  // Starts the loop at step `index` with no history (diffusers' set_begin_index: an SDXL refiner taking over
  // at denoising_start). Stateless schedulers need nothing; PNDM cannot (kUnsupported).
  virtual void set_begin_index(size_t index) { (void)index; }

  // ---- host execution ----
  // Returns the UNet input for step `step_index` (a copy; sample is [batch, C, H, W]).
  Tensor scale_model_input(const Tensor& sample, size_t step_index) const;
  // One denoising step: returns the previous (less noisy) sample. `rng` is used by ancestral schedulers only
  // and drawn from exactly as diffusers draws from its generator. The state buffers live in this object, so
  // one scheduler is stepped either here or by a device, not both.
  Tensor step(const Tensor& model_output, size_t step_index, const Tensor& sample, TorchGenerator& rng);

 private:
  std::vector<std::vector<float>> host_state_;
};

// Builds `kind` from a model's scheduler config the way diffusers' OtherScheduler.from_config(config) does:
// shared settings (betas, prediction type, timestep spacing, steps offset, ...) carry over; settings the
// target class does not have are ignored; settings it has that the config lacks take the target's defaults.
// `karras` turns on Karras sigmas (Euler, Euler a, DPM++ 2M).
std::unique_ptr<Scheduler> make_scheduler(SchedulerKind kind, const SchedulerConfig& config,
                                          bool karras = false);

}  // namespace sdrt::schedulers
