// Shared schedule arithmetic of the schedulers: betas, cumulative alphas, sigmas, timestep spacing and Karras
// sigmas, each computed in the precision, and with the rounding, of the numpy/torch call diffusers makes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "sdrt/tensor.h"

namespace sdrt::schedulers::detail {

// ---- numpy / torch primitives -----------------------------------------------------------------------------

// torch.linspace(start, end, n, dtype=torch.float32) on the CPU.
std::vector<float> torch_linspace_f32(double start, double end, int64_t n);
// np.linspace(start, stop, n) (float64).
std::vector<double> np_linspace(double start, double stop, int64_t n);
// np.arange(start, stop, step) with a float step (float64).
std::vector<double> np_arange(double start, double stop, double step);
// np.round / Python's round(): halves go to the even neighbour.
double np_round(double x);
// np.log on a float32 array, as numpy's AVX2-FMA3 / AVX-512F kernel computes it (not correctly rounded).
float np_log_f32(float x);
// np.interp(x, np.arange(len(fp)), fp) with fp float32 and the result in float64.
double np_interp_index(double x, std::span<const float> fp);

// ---- noise schedule ---------------------------------------------------------------------------------------

struct BetaSchedule {
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::vector<double> trained_betas;
  bool rescale_betas_zero_snr = false;
};

// The float32 `self.betas` of a diffusers scheduler's __init__ (rescale_zero_terminal_snr applied when
// asked).
std::vector<float> make_betas(const BetaSchedule& schedule);
// torch.cumprod(1.0 - betas, dim=0) in float32 (torch accumulates in double).
std::vector<float> alphas_cumprod_of(const std::vector<float>& betas);
// ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 in float32, indexed by training timestep.
std::vector<float> train_sigmas(const std::vector<float>& alphas_cumprod);
// Karras et al. (2022) sigmas: _convert_to_karras (rho = 7, float64).
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n);
// _sigma_to_t: the fractional training timestep whose log-sigma matches, by linear interpolation.
double sigma_to_t(double sigma, std::span<const float> log_sigmas);

// ---- float32 tensor helpers -------------------------------------------------------------------------------

// A float32 copy of `t` (converting F16/BF16), as diffusers' `.to(torch.float32)`.
Tensor to_f32(const Tensor& t);
// Converts the float32 result back to `like`'s dtype, as diffusers' `.to(model_output.dtype)`.
Tensor cast_like(Tensor result, const Tensor& like);
// Throws kInvalidArgument unless the two tensors have the same shape.
void check_same_shape(const Tensor& a, const Tensor& b, const char* what);
// Throws kInvalidArgument unless step_index < count.
void check_step_index(size_t step_index, size_t count, const char* scheduler);

}  // namespace sdrt::schedulers::detail
