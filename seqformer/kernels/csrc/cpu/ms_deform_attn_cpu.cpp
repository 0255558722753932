// Multi-threaded CPU kernels of multi-scale deformable attention (forward and backward).
//
// Axis letters as in ms_deform_attn.h: N batch, S value length, M heads, D channels per head, Lq queries,
// L levels, P points.
//
// Layout facts the kernels are built on: the D channels of one head at one value row are contiguous (value is
// [N, S, M, D]), so every bilinear tap is a contiguous D-vector operation that the compiler vectorises; and the
// value slices of different (n, m) pairs are disjoint, so a backward pass partitioned over (n, m) writes grad_value
// without atomics or per-thread copies (queries are split further, into private buffers, only when there are fewer
// (n, m) pairs than threads).
//
// Portability: the hot loops are compiled twice with GCC target_clones (x86-64-v3 = AVX2 + FMA, and the baseline)
// and the loader picks one at run time, so the shipped flags need no -march=native. Plain -O3, no -ffast-math:
// float64 results must match the reference to allclose's default tolerance.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "../bilinear.h"
#include "../ms_deform_attn.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MSDA_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MSDA_CLONES
#endif
#define MSDA_INLINE inline __attribute__((always_inline))

#if defined(_OPENMP)
#define MSDA_SIMD _Pragma("omp simd")
#else
#define MSDA_SIMD
#endif

namespace msda {
namespace {

// Width of the partial sums of the backward dot products: one AVX2 register of floats.
constexpr int kLanes = 8;

// Raw pointers and sizes of one call; every tensor is contiguous.
template <typename scalar_t, typename acc_t>
struct Problem {
  int64_t N, S, M, D, Lq, L, P;
  const int64_t* shapes;  // [L, 2]
  const int64_t* starts;  // [L]
  const scalar_t* value;  // [N, S, M, D]
  const scalar_t* loc;    // [N, Lq, M, L, P, 2]
  const scalar_t* attn;   // [N, Lq, M, L, P]
  // forward
  scalar_t* out = nullptr;  // [N, Lq, M, D]
  // backward
  const scalar_t* grad_out = nullptr;  // [N, Lq, M, D]
  acc_t* grad_value = nullptr;         // [chunks, N, S, M, D] accumulation buffers (chunk 0 may be the output)
  acc_t* grad_value_rest = nullptr;    // buffers of chunks 1.. when chunk 0 writes the output directly
  scalar_t* grad_loc = nullptr;        // [N, Lq, M, L, P, 2]
  scalar_t* grad_attn = nullptr;       // [N, Lq, M, L, P]
  int64_t heads_per_task = 1;          // backward: a task owns the grad_value of this many heads of one sample
  int64_t chunks = 1;                  // backward: query chunks per (n, head group), each with its own buffer
};

// Forward for the flattened queries nq in [begin, end): out[n, q, m, :] = sum_{l,p} A * bilinear(V_l, loc).
// kD > 0 fixes the channel count at compile time (full unrolling, accumulator in registers); kD == 0 is generic.
template <typename scalar_t, typename acc_t, int kD>
MSDA_INLINE void forward_range(const Problem<scalar_t, acc_t>& pb, int64_t begin, int64_t end) {
  const int64_t D = kD > 0 ? kD : pb.D;
  const int64_t M = pb.M, L = pb.L, P = pb.P, row = pb.M * D;
  std::vector<acc_t> acc_heap(kD > 0 ? 0 : D);
  acc_t acc_stack[kD > 0 ? kD : 1];
  acc_t* __restrict__ acc = kD > 0 ? acc_stack : acc_heap.data();
  // Neighbours outside the map read this zero row with weight zero, so the four taps fuse into one loop.
  const std::vector<scalar_t> zeros(D, scalar_t(0));
  for (int64_t nq = begin; nq < end; ++nq) {
    const scalar_t* value_n = pb.value + (nq / pb.Lq) * pb.S * row;
    for (int64_t m = 0; m < M; ++m) {
      const int64_t qm = nq * M + m;
      const scalar_t* loc = pb.loc + qm * L * P * 2;
      const scalar_t* attn = pb.attn + qm * L * P;
      MSDA_SIMD for (int64_t d = 0; d < D; ++d) acc[d] = acc_t(0);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t h = pb.shapes[2 * l], w = pb.shapes[2 * l + 1];
        const scalar_t* value_l = value_n + pb.starts[l] * row + m * D;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t lp = l * P + p;
          Corners<acc_t> c;
          if (!bilinear_corners<acc_t>(static_cast<acc_t>(loc[2 * lp]), static_cast<acc_t>(loc[2 * lp + 1]), h, w,
                                       c)) {
            continue;
          }
          const acc_t a = static_cast<acc_t>(attn[lp]);
          const scalar_t* v[4];
          acc_t cw[4];
          for (int k = 0; k < 4; ++k) {
            v[k] = c.valid[k] ? value_l + c.offset[k] * row : zeros.data();
            cw[k] = c.valid[k] ? a * c.weight[k] : acc_t(0);
          }
          const scalar_t* __restrict__ v0 = v[0];
          const scalar_t* __restrict__ v1 = v[1];
          const scalar_t* __restrict__ v2 = v[2];
          const scalar_t* __restrict__ v3 = v[3];
          MSDA_SIMD for (int64_t d = 0; d < D; ++d) {
            acc[d] += cw[0] * static_cast<acc_t>(v0[d]) + cw[1] * static_cast<acc_t>(v1[d]) +
                      cw[2] * static_cast<acc_t>(v2[d]) + cw[3] * static_cast<acc_t>(v3[d]);
          }
        }
      }
      scalar_t* __restrict__ out = pb.out + qm * D;
      MSDA_SIMD for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
    }
  }
}

// Backward for tasks [begin, end); a task is one (n, m, query chunk). For every sample it computes the four dot
// products g_k = <grad_out, V(corner k)> in one pass over D and, in the same pass, scatters A * w_k * grad_out into
// the task's own grad_value rows. grad_attention = sum_k w_k g_k, grad_location from the weights' derivatives.
template <typename scalar_t, typename acc_t, int kD>
MSDA_INLINE void backward_range(const Problem<scalar_t, acc_t>& pb, int64_t begin, int64_t end) {
  const int64_t D = kD > 0 ? kD : pb.D;
  const int64_t M = pb.M, L = pb.L, P = pb.P, Lq = pb.Lq, row = pb.M * D;
  const int64_t slice = pb.N * pb.S * row;  // one grad_value buffer
  const std::vector<scalar_t> zeros(D, scalar_t(0));
  std::vector<acc_t> scratch(4 * D);  // write target of neighbours outside the map (never read)
  const int64_t groups = M / pb.heads_per_task;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t chunk = task % pb.chunks, ng = task / pb.chunks;
    const int64_t n = ng / groups, m_begin = (ng % groups) * pb.heads_per_task, m_end = m_begin + pb.heads_per_task;
    const int64_t q_begin = Lq * chunk / pb.chunks, q_end = Lq * (chunk + 1) / pb.chunks;
    acc_t* grad_value_buf = chunk == 0 || pb.grad_value_rest == nullptr
                                ? pb.grad_value + chunk * slice
                                : pb.grad_value_rest + (chunk - 1) * slice;
    const scalar_t* value_n = pb.value + n * pb.S * row;
    acc_t* grad_value_n = grad_value_buf + n * pb.S * row;
    for (int64_t q = q_begin; q < q_end; ++q) {
     for (int64_t m = m_begin; m < m_end; ++m) {
      const int64_t qm = (n * Lq + q) * M + m;
      const scalar_t* __restrict__ g = pb.grad_out + qm * D;
      const scalar_t* loc = pb.loc + qm * L * P * 2;
      const scalar_t* attn = pb.attn + qm * L * P;
      scalar_t* grad_loc = pb.grad_loc + qm * L * P * 2;
      scalar_t* grad_attn = pb.grad_attn + qm * L * P;
      for (int64_t l = 0; l < L; ++l) {
        const int64_t h = pb.shapes[2 * l], w = pb.shapes[2 * l + 1];
        const int64_t base = pb.starts[l] * row + m * D;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t lp = l * P + p;
          Corners<acc_t> c;
          if (!bilinear_corners<acc_t>(static_cast<acc_t>(loc[2 * lp]), static_cast<acc_t>(loc[2 * lp + 1]), h, w,
                                       c)) {
            grad_attn[lp] = scalar_t(0);
            grad_loc[2 * lp] = scalar_t(0);
            grad_loc[2 * lp + 1] = scalar_t(0);
            continue;
          }
          const acc_t a = static_cast<acc_t>(attn[lp]);
          const scalar_t* v[4];
          acc_t* gv[4];
          acc_t cw[4];
          for (int k = 0; k < 4; ++k) {
            v[k] = c.valid[k] ? value_n + base + c.offset[k] * row : zeros.data();
            gv[k] = c.valid[k] ? grad_value_n + base + c.offset[k] * row : scratch.data() + k * D;
            cw[k] = c.valid[k] ? a * c.weight[k] : acc_t(0);
          }
          const scalar_t* __restrict__ v0 = v[0];
          const scalar_t* __restrict__ v1 = v[1];
          const scalar_t* __restrict__ v2 = v[2];
          const scalar_t* __restrict__ v3 = v[3];
          acc_t* __restrict__ gv0 = gv[0];
          acc_t* __restrict__ gv1 = gv[1];
          acc_t* __restrict__ gv2 = gv[2];
          acc_t* __restrict__ gv3 = gv[3];
          const acc_t cw0 = cw[0], cw1 = cw[1], cw2 = cw[2], cw3 = cw[3];
          // The four dot products are kept as kLanes partial sums each, updated element-wise (vectorised without
          // reassociating anything) and summed at the end; a plain scalar reduction would not vectorise at -O3.
          acc_t lane0[kLanes] = {}, lane1[kLanes] = {}, lane2[kLanes] = {}, lane3[kLanes] = {};
          int64_t d = 0;
          for (; d + kLanes <= D; d += kLanes) {
            MSDA_SIMD for (int j = 0; j < kLanes; ++j) {
              const acc_t gd = static_cast<acc_t>(g[d + j]);
              lane0[j] += gd * static_cast<acc_t>(v0[d + j]);
              lane1[j] += gd * static_cast<acc_t>(v1[d + j]);
              lane2[j] += gd * static_cast<acc_t>(v2[d + j]);
              lane3[j] += gd * static_cast<acc_t>(v3[d + j]);
              gv0[d + j] += cw0 * gd;
              gv1[d + j] += cw1 * gd;
              gv2[d + j] += cw2 * gd;
              gv3[d + j] += cw3 * gd;
            }
          }
          acc_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          for (; d < D; ++d) {
            const acc_t gd = static_cast<acc_t>(g[d]);
            s0 += gd * static_cast<acc_t>(v0[d]);
            s1 += gd * static_cast<acc_t>(v1[d]);
            s2 += gd * static_cast<acc_t>(v2[d]);
            s3 += gd * static_cast<acc_t>(v3[d]);
            gv0[d] += cw0 * gd;
            gv1[d] += cw1 * gd;
            gv2[d] += cw2 * gd;
            gv3[d] += cw3 * gd;
          }
          for (int j = 0; j < kLanes; ++j) {
            s0 += lane0[j];
            s1 += lane1[j];
            s2 += lane2[j];
            s3 += lane3[j];
          }
          const acc_t dots[4] = {s0, s1, s2, s3};
          acc_t d_x, d_y;
          bilinear_coordinate_grads(c, dots, d_x, d_y);
          // Outside neighbours read zeros, so their dot is 0 and the formulas need no validity test.
          grad_attn[lp] = static_cast<scalar_t>(c.weight[0] * s0 + c.weight[1] * s1 + c.weight[2] * s2 +
                                                c.weight[3] * s3);
          grad_loc[2 * lp] = static_cast<scalar_t>(a * static_cast<acc_t>(w) * d_x);
          grad_loc[2 * lp + 1] = static_cast<scalar_t>(a * static_cast<acc_t>(h) * d_y);
        }
      }
     }
    }
  }
}

#define MSDA_DISPATCH_D(D_VALUE, ...)  \
  switch (D_VALUE) {                   \
    case 32: {                         \
      constexpr int kD = 32;           \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    case 64: {                         \
      constexpr int kD = 64;           \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    default: {                         \
      constexpr int kD = 0;            \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
  }

// One cloned entry point per dtype: target_clones needs plain (non-template) functions.
#define MSDA_DEFINE_ENTRY_POINTS(SCALAR, ACC, SUFFIX)                                                       \
  MSDA_CLONES void forward_##SUFFIX(const Problem<SCALAR, ACC>& pb, int64_t begin, int64_t end) {           \
    MSDA_DISPATCH_D(pb.D, (forward_range<SCALAR, ACC, kD>(pb, begin, end)))                                 \
  }                                                                                                         \
  MSDA_CLONES void backward_##SUFFIX(const Problem<SCALAR, ACC>& pb, int64_t begin, int64_t end) {          \
    MSDA_DISPATCH_D(pb.D, (backward_range<SCALAR, ACC, kD>(pb, begin, end)))                                \
  }                                                                                                         \
  MSDA_INLINE void forward_entry(const Problem<SCALAR, ACC>& pb, int64_t b, int64_t e) { forward_##SUFFIX(pb, b, e); } \
  MSDA_INLINE void backward_entry(const Problem<SCALAR, ACC>& pb, int64_t b, int64_t e) {                   \
    backward_##SUFFIX(pb, b, e);                                                                            \
  }

MSDA_DEFINE_ENTRY_POINTS(double, double, f64)
MSDA_DEFINE_ENTRY_POINTS(float, float, f32)
MSDA_DEFINE_ENTRY_POINTS(c10::BFloat16, float, bf16)

// Backward work split: a task is (sample n, group of heads, query chunk) and owns grad_value[n, :, group, :] of its
// chunk's buffer, so no two threads write the same memory. Big head groups keep a query's samples together (all
// heads of a value row share cache sets; one head alone, with its 1 KiB row stride, would use an eighth of them),
// so the largest group that still gives every thread equal work wins. Query chunks (one extra value-sized buffer
// each, summed at the end) are used only when the samples times heads cannot occupy the threads.
std::pair<int64_t, int64_t> plan_backward(int64_t N, int64_t M, int64_t Lq, int64_t threads) {
  if (threads <= 1) return {M, 1};
  for (int64_t group = M; group >= 1; --group) {
    if (M % group != 0) continue;
    const int64_t tasks = N * (M / group);
    if (tasks >= threads && (tasks % threads == 0 || tasks >= 4 * threads)) return {group, 1};
  }
  const int64_t pairs = N * M;
  if (pairs >= threads) return {1, 1};
  return {1, std::min<int64_t>((threads + pairs - 1) / pairs, std::max<int64_t>(Lq, 1))};
}

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Fills the sizes and the shared pointers; also checks that every level fits inside S, so that a bad
// spatial_shapes / level_start_index pair cannot make the kernel read out of bounds.
template <typename scalar_t>
Problem<scalar_t, acc_of<scalar_t>> make_problem(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                 const at::Tensor& level_start_index,
                                                 const at::Tensor& sampling_locations,
                                                 const at::Tensor& attention_weights) {
  Problem<scalar_t, acc_of<scalar_t>> pb;
  pb.N = value.size(0);
  pb.S = value.size(1);
  pb.M = value.size(2);
  pb.D = value.size(3);
  pb.Lq = sampling_locations.size(1);
  pb.L = sampling_locations.size(3);
  pb.P = sampling_locations.size(4);
  pb.shapes = spatial_shapes.data_ptr<int64_t>();
  pb.starts = level_start_index.data_ptr<int64_t>();
  for (int64_t l = 0; l < pb.L; ++l) {
    const int64_t h = pb.shapes[2 * l], w = pb.shapes[2 * l + 1], start = pb.starts[l];
    TORCH_CHECK(h > 0 && w > 0 && start >= 0 && start + h * w <= pb.S, "ms_deform_attn: level ", l, " (h=", h,
                ", w=", w, ", level_start_index=", start, ") does not fit in value of length S=", pb.S);
  }
  pb.value = value.data_ptr<scalar_t>();
  pb.loc = sampling_locations.data_ptr<scalar_t>();
  pb.attn = attention_weights.data_ptr<scalar_t>();
  return pb;
}

}  // namespace
}  // namespace msda

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  const int64_t N = value.size(0), M = value.size(2), D = value.size(3), Lq = sampling_locations.size(1);
  at::Tensor out = at::empty({N, Lq, M * D}, value.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    auto pb = msda::make_problem<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                                           attention_weights);
    pb.out = out.data_ptr<scalar_t>();
    // ~16 queries per grain keeps scheduling overhead negligible next to M * L * P samples per query.
    at::parallel_for(0, N * Lq, 16, [&](int64_t begin, int64_t end) { msda::forward_entry(pb, begin, end); });
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_locations,
                                                    const at::Tensor& attention_weights,
                                                    const at::Tensor& grad_output) {
  const int64_t N = value.size(0), M = value.size(2), Lq = sampling_locations.size(1);
  at::Tensor grad_value = at::zeros_like(value);
  at::Tensor grad_loc = at::empty_like(sampling_locations);
  at::Tensor grad_attn = at::empty_like(attention_weights);
  if (grad_loc.numel() == 0 || value.numel() == 0) {
    return {grad_value, grad_loc.zero_(), grad_attn.zero_()};
  }
  const auto [heads_per_task, chunks] = msda::plan_backward(N, M, Lq, at::get_num_threads());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    using acc_t = msda::acc_of<scalar_t>;
    auto pb = msda::make_problem<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                                           attention_weights);
    const at::Tensor grad_out = grad_output.contiguous();
    pb.grad_out = grad_out.data_ptr<scalar_t>();
    pb.grad_loc = grad_loc.data_ptr<scalar_t>();
    pb.grad_attn = grad_attn.data_ptr<scalar_t>();
    pb.chunks = chunks;
    pb.heads_per_task = heads_per_task;
    constexpr bool direct = std::is_same_v<scalar_t, acc_t>;
    const auto acc_dtype = direct ? value.scalar_type() : at::kFloat;
    at::Tensor buffers;  // accumulation buffers other than grad_value itself
    if constexpr (direct) {
      pb.grad_value = reinterpret_cast<acc_t*>(grad_value.data_ptr<scalar_t>());
      if (chunks > 1) {
        buffers = at::zeros({chunks - 1, value.numel()}, value.options().dtype(acc_dtype));
        pb.grad_value_rest = buffers.data_ptr<acc_t>();
      }
    } else {
      buffers = at::zeros({chunks, value.numel()}, value.options().dtype(acc_dtype));
      pb.grad_value = buffers.data_ptr<acc_t>();
    }
    at::parallel_for(0, N * (M / heads_per_task) * chunks, 1, [&](int64_t begin, int64_t end) { msda::backward_entry(pb, begin, end); });
    if (buffers.defined()) {
      if constexpr (direct) {
        grad_value.view({-1}).add_(buffers.sum(0));
      } else {
        grad_value.view({-1}).copy_(buffers.sum(0));
      }
    }
  });
  return {grad_value, grad_loc, grad_attn};
}
