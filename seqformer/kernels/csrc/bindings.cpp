// Python binding of the multi-scale deformable attention kernels: one entry per direction, routed by device.
//
// Every argument is checked here (rank, sizes against each other, dtype, device, contiguity) and a failed check
// names the argument with the expected and the actual value, so a kernel never sees a malformed call.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "ms_deform_attn.h"

namespace {

void check_common(const at::Tensor& t, const char* name, const at::Tensor& value) {
  TORCH_CHECK(t.device() == value.device(), "ms_deform_attn: ", name, " must be on the value's device ",
              value.device(), ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "ms_deform_attn: ", name, " must be contiguous (call .contiguous()), got strides ",
              t.strides(), " for shape ", t.sizes());
}

void check_float(const at::Tensor& t, const char* name, const at::Tensor& value) {
  check_common(t, name, value);
  TORCH_CHECK(t.scalar_type() == value.scalar_type(), "ms_deform_attn: ", name, " must have the value's dtype ",
              value.scalar_type(), ", got ", t.scalar_type());
}

void check_sizes(const at::Tensor& t, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, "ms_deform_attn: ", name, " must have shape ", expected, ", got ", t.sizes());
}

void check_arguments(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                     const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be 4-D [N, S, M, D], got shape ", value.sizes());
  TORCH_CHECK(value.scalar_type() == at::kDouble || value.scalar_type() == at::kFloat ||
                  value.scalar_type() == at::kBFloat16 || value.scalar_type() == at::kHalf,
              "ms_deform_attn: value must be float64, float32, bfloat16 or float16, got ", value.scalar_type());
  check_common(value, "value", value);
  TORCH_CHECK(sampling_locations.dim() == 6,
              "ms_deform_attn: sampling_locations must be 6-D [N, Lq, M, L, P, 2], got shape ",
              sampling_locations.sizes());
  const int64_t N = value.size(0), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_locations.size(1), L = sampling_locations.size(3), P = sampling_locations.size(4);
  check_sizes(spatial_shapes, "spatial_shapes", {L, 2});
  check_sizes(level_start_index, "level_start_index", {L});
  check_sizes(sampling_locations, "sampling_locations", {N, Lq, M, L, P, 2});
  check_sizes(attention_weights, "attention_weights", {N, Lq, M, L, P});
  TORCH_CHECK(D > 0, "ms_deform_attn: value must have at least one channel per head, got shape ", value.sizes());
  const auto check_index = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.scalar_type() == at::kLong, "ms_deform_attn: ", name, " must be int64, got ", t.scalar_type());
    check_common(t, name, value);
  };
  check_index(spatial_shapes, "spatial_shapes");
  check_index(level_start_index, "level_start_index");
  check_float(sampling_locations, "sampling_locations", value);
  check_float(attention_weights, "attention_weights", value);
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights);
#else
    TORCH_CHECK(false, "ms_deform_attn: this build of the extension has no CUDA kernels (built CPU-only); "
                       "rebuild with `python -m seqformer.kernels.build --cuda`");
#endif
  }
  TORCH_CHECK(value.is_cpu(), "ms_deform_attn: value must be on a CPU or CUDA device, got ", value.device());
  TORCH_CHECK(value.scalar_type() != at::kHalf,
              "ms_deform_attn: the CPU kernel supports float64, float32 and bfloat16, got float16");
  return ms_deform_attn_cpu_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const at::Tensor& grad_output) {
  check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_float(grad_output, "grad_output", value);
  check_sizes(grad_output, "grad_output", {value.size(0), sampling_locations.size(1), value.size(2) * value.size(3)});
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_backward(value, spatial_shapes, level_start_index, sampling_locations,
                                        attention_weights, grad_output);
#else
    TORCH_CHECK(false, "ms_deform_attn: this build of the extension has no CUDA kernels (built CPU-only); "
                       "rebuild with `python -m seqformer.kernels.build --cuda`");
#endif
  }
  TORCH_CHECK(value.is_cpu(), "ms_deform_attn: value must be on a CPU or CUDA device, got ", value.device());
  TORCH_CHECK(value.scalar_type() != at::kHalf,
              "ms_deform_attn: the CPU kernel supports float64, float32 and bfloat16, got float16");
  return ms_deform_attn_cpu_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                     grad_output);
}

bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-scale deformable attention kernels (SeqFormer)";
  m.def("forward", &forward, "forward: value, spatial_shapes, level_start_index, sampling_locations, "
                             "attention_weights -> output [N, Lq, M*D]");
  m.def("backward", &backward, "backward: ..., grad_output -> [grad_value, grad_sampling_locations, "
                               "grad_attention_weights]");
  m.def("has_cuda", &has_cuda, "whether this build contains the CUDA kernels");
}
