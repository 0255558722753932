// Multi-scale deformable attention: the one header that declares every kernel entry point.
//
// Axis letters: N batch, S value length (sum of h_l * w_l over levels), M heads, D channels per head,
// Lq queries, L levels, P sampling points per level and head.
//
//   value               [N, S, M, D]          float64 / float32 (CPU also bfloat16 forward; CUDA also half, bfloat16)
//   spatial_shapes      [L, 2] int64          (h_l, w_l)
//   level_start_index   [L] int64             first row of level l in S
//   sampling_locations  [N, Lq, M, L, P, 2]   (x, y) normalised, 0..1 spans the whole level map
//   attention_weights   [N, Lq, M, L, P]
//   output              [N, Lq, M * D]
//
// Every argument must be contiguous, on the same device, and sampling_locations / attention_weights must have the
// value's dtype (the Python autograd Function casts them); bindings.cpp checks all of this and names the argument.
#pragma once

#include <ATen/ATen.h>

#include <vector>

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

// Returns {grad_value, grad_sampling_locations, grad_attention_weights}.
std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_locations,
                                                    const at::Tensor& attention_weights,
                                                    const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights);

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_locations,
                                                     const at::Tensor& attention_weights,
                                                     const at::Tensor& grad_output);
#endif
