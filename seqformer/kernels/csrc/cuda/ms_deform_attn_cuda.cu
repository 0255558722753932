// CUDA kernels of multi-scale deformable attention (forward and backward) for float64, float32, float16, bfloat16.
//
// Axis letters as in ms_deform_attn.h: N batch, S value length, M heads, D channels per head, Lq queries,
// L levels, P points.
//
// Half and bfloat16 arithmetic runs in float (at::opmath_type); in backward grad_value is accumulated in a float
// buffer and rounded once at the end, so the scatter (atomicAdd from every sample touching a value row) does not
// lose low-order bits in 16-bit atomics. The sampling geometry is the one shared with the CPU kernel (bilinear.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../bilinear.h"
#include "../ms_deform_attn.h"

namespace msda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 16;  // the kernels use grid-stride loops beyond this

int64_t blocks_for(int64_t work) { return std::min<int64_t>((work + kThreads - 1) / kThreads, kMaxBlocks); }

struct Sizes {
  int64_t S, M, D, Lq, L, P;
};

// One thread per output element (n, q, m, d): adjacent threads read adjacent channels of the same value rows.
template <typename scalar_t>
__global__ void forward_kernel(int64_t total, Sizes sz, const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                               const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                               scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = sz.M * sz.D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t d = i % sz.D;
    const int64_t qm = i / sz.D;  // (n * Lq + q) * M + m
    const int64_t m = qm % sz.M;
    const int64_t n = qm / sz.M / sz.Lq;
    const scalar_t* loc_q = loc + qm * sz.L * sz.P * 2;
    const scalar_t* attn_q = attn + qm * sz.L * sz.P;
    const scalar_t* value_n = value + n * sz.S * row + m * sz.D + d;
    acc_t acc = 0;
    for (int64_t l = 0; l < sz.L; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const scalar_t* value_l = value_n + starts[l] * row;
      for (int64_t p = 0; p < sz.P; ++p) {
        const int64_t lp = l * sz.P + p;
        Corners<acc_t> c;
        if (!bilinear_corners<acc_t>(static_cast<acc_t>(loc_q[2 * lp]), static_cast<acc_t>(loc_q[2 * lp + 1]), h, w,
                                     c)) {
          continue;
        }
        acc_t sample = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (c.valid[k]) sample += c.weight[k] * static_cast<acc_t>(value_l[c.offset[k] * row]);
        }
        acc += static_cast<acc_t>(attn_q[lp]) * sample;
      }
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

// One warp per (n, q, m): its lanes take the channels d = lane, lane + 32, ... so that the reads of value rows and
// the scatter into grad_value are coalesced (adjacent lanes, adjacent channels). For each sample (l, p) the lanes
// accumulate their part of the four corner dot products <grad_out, value corner>, a warp shuffle sums them, and lane
// 0 writes the location and weight gradients. grad_value rows are shared between samples of different queries, so
// the scatter uses atomics.
constexpr int kWarp = 32;

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t>
__global__ void backward_kernel(int64_t total_qm, Sizes sz, const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                                const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                                const scalar_t* __restrict__ grad_out, at::opmath_type<scalar_t>* grad_value,
                                scalar_t* __restrict__ grad_loc, scalar_t* __restrict__ grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = sz.M * sz.D;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_grid = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  // The loop bound is the same for every lane of a warp, so whole warps stay converged for the shuffles.
  for (int64_t qm = blockIdx.x * static_cast<int64_t>(blockDim.x / kWarp) + threadIdx.x / kWarp; qm < total_qm;
       qm += warps_per_grid) {
    const int64_t m = qm % sz.M;
    const int64_t n = qm / sz.M / sz.Lq;
    const scalar_t* g = grad_out + qm * sz.D;
    for (int64_t l = 0; l < sz.L; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const int64_t base = n * sz.S * row + starts[l] * row + m * sz.D;
      for (int64_t p = 0; p < sz.P; ++p) {
        const int64_t i = qm * sz.L * sz.P + l * sz.P + p;  // sample index
        Corners<acc_t> c;
        if (!bilinear_corners<acc_t>(static_cast<acc_t>(loc[2 * i]), static_cast<acc_t>(loc[2 * i + 1]), h, w, c)) {
          if (lane == 0) {
            grad_attn[i] = static_cast<scalar_t>(0);
            grad_loc[2 * i] = static_cast<scalar_t>(0);
            grad_loc[2 * i + 1] = static_cast<scalar_t>(0);
          }
          continue;
        }
        const acc_t a = static_cast<acc_t>(attn[i]);
        acc_t dots[4] = {0, 0, 0, 0};
        for (int64_t d = lane; d < sz.D; d += kWarp) {
          const acc_t gd = static_cast<acc_t>(g[d]);
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (!c.valid[k]) continue;
            const int64_t index = base + c.offset[k] * row + d;
            dots[k] += gd * static_cast<acc_t>(value[index]);
            gpuAtomicAdd(grad_value + index, a * c.weight[k] * gd);
          }
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) dots[k] = warp_sum(dots[k]);
        if (lane == 0) {
          acc_t d_x, d_y;
          bilinear_coordinate_grads(c, dots, d_x, d_y);
          grad_attn[i] = static_cast<scalar_t>(c.weight[0] * dots[0] + c.weight[1] * dots[1] + c.weight[2] * dots[2] +
                                               c.weight[3] * dots[3]);
          grad_loc[2 * i] = static_cast<scalar_t>(a * static_cast<acc_t>(w) * d_x);
          grad_loc[2 * i + 1] = static_cast<scalar_t>(a * static_cast<acc_t>(h) * d_y);
        }
      }
    }
  }
}

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return Sizes{value.size(1), value.size(2), value.size(3), sampling_locations.size(1), sampling_locations.size(3),
               sampling_locations.size(4)};
}

}  // namespace
}  // namespace msda

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights) {
  const c10::cuda::CUDAGuard guard(value.device());
  const msda::Sizes sz = msda::sizes_of(value, sampling_locations);
  at::Tensor out = at::empty({value.size(0), sz.Lq, sz.M * sz.D}, value.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
    msda::forward_kernel<scalar_t><<<msda::blocks_for(total), msda::kThreads, 0, stream>>>(
        total, sz, value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
        level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
        attention_weights.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_locations,
                                                     const at::Tensor& attention_weights,
                                                     const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard guard(value.device());
  const msda::Sizes sz = msda::sizes_of(value, sampling_locations);
  at::Tensor grad_loc = at::empty_like(sampling_locations);
  at::Tensor grad_attn = at::empty_like(attention_weights);
  const bool low_precision = value.scalar_type() == at::kHalf || value.scalar_type() == at::kBFloat16;
  at::Tensor grad_value_acc = at::zeros_like(value, value.options().dtype(low_precision ? at::kFloat : value.scalar_type()));
  const int64_t total_qm = value.size(0) * sz.Lq * sz.M;
  if (attention_weights.numel() > 0 && value.numel() > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      msda::backward_kernel<scalar_t><<<msda::blocks_for(total_qm * msda::kWarp), msda::kThreads, 0, stream>>>(
          total_qm, sz, value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
          attention_weights.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(), grad_value_acc.data_ptr<acc_t>(),
          grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  } else {
    grad_loc.zero_();
    grad_attn.zero_();
  }
  return {low_precision ? grad_value_acc.to(value.scalar_type()) : grad_value_acc, grad_loc, grad_attn};
}
