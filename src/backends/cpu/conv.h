// 2-D convolution on the CPU, NCHW fp32, through oneDNN (threaded, AVX-512 where the CPU has it).
//
// oneDNN primitives are expensive to create, so each distinct shape's primitive is created once and cached.
#pragma once

#include <cstdint>

namespace sdrt::cpu {

struct Conv2dShape {
  int64_t batch = 1;
  int64_t in_channels = 0, height = 0, width = 0;  // input [batch, in_channels, height, width]
  int64_t out_channels = 0;                        // weight [out_channels, in_channels, kernel, kernel]
  int64_t kernel = 3;
  int64_t stride = 1;
  // Zero padding per side; torch's Conv2d(padding=p) is p on all four. The VAE encoder's downsampler pads
  // (0, 1, 0, 1) — right and bottom only.
  int64_t pad_top = 1, pad_bottom = 1, pad_left = 1, pad_right = 1;

  int64_t out_height() const { return (height + pad_top + pad_bottom - kernel) / stride + 1; }
  int64_t out_width() const { return (width + pad_left + pad_right - kernel) / stride + 1; }
};

// y [batch, out_channels, out_height, out_width] = conv(x, w) + bias   (bias may be null)
void conv2d(const float* x, const float* w, const float* bias, float* y, const Conv2dShape& shape);

// The same result computed with a plain loop nest; the oracle for conv2d's tests.
void conv2d_reference(const float* x, const float* w, const float* bias, float* y, const Conv2dShape& shape);

}  // namespace sdrt::cpu
