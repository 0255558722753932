// Multi-threaded CPU kernels of multi-scale deformable attention (forward and backward).
//
// Axis letters as in ms_deform_attn.h: N batch, S value length, M heads, D channels per head, Lq queries,
// L levels, P points.
//
// The kernels are bound by memory traffic, not arithmetic, so they are organised around the cache:
// - Work is split over (sample n, head m) pairs. A task copies value[n, :, m, :] (one head's S rows of D channels,
//   1/M of a 1 KiB-strided value row each) into a contiguous per-thread slice, S rows and four zero rows at the
//   end, and walks all its queries over it. A head's slice of SeqFormer's encoder is ~600 KiB, and nearby queries
//   touch a narrow band of it that stays in L2; in the [N, S, M, D] layout the same band is spread over 8x more
//   memory and an eighth of the cache sets.
// - Backward accumulates grad_value of the task's head in a second per-thread slice and writes it to
//   grad_value[n, :, m, :] once at the end: no atomics, no zero-filled output, no per-thread copies of the whole
//   gradient. Queries are split further (into private [N, S, M, D] buffers, summed at the end) only when there are
//   fewer (n, m) pairs than threads.
// - Queries are walked per (n, m), so consecutive queries' locations, weights and outputs are M rows apart; the
//   kernels prefetch them a few queries ahead (the hardware prefetchers stop at page boundaries).
// - Corners outside the map read one of four zero rows after the slice with weight zero, so the four taps of a
//   sample fuse into one branch-free D-channel loop. D = 32 and 64 are compiled with a fixed trip count.
//
// Portability: the hot loops are compiled twice with GCC target_clones (x86-64-v3 = AVX2 + FMA, and the baseline)
// and the loader picks one at run time, so the shipped flags need no -march=native. Plain -O3, no -ffast-math:
// float64 results must match the reference to allclose's default tolerance.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

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
// Rows S .. S + 3 of a slice are zeros: corner k of a sample reads row S + k when it lies outside the map (their
// gradient rows are written but never read), so the four corners of a sample never share a row.
constexpr int64_t kZeroRows = 4;

// A 64-byte aligned scratch array of a worker thread (a D = 32 float row is then two whole cache lines). Buffers of
// up to kKeptScratchBytes are kept by the thread between calls (a thread holds at most two, ~1.2 MiB at SeqFormer's
// encoder shape): a fresh one would be mapped and faulted in page by page on every call, and unmapped afterwards,
// which in a multi-threaded process also makes the kernel flush the other threads' TLBs.
constexpr size_t kKeptScratchBytes = size_t(16) << 20;

class ThreadBuffer {
 public:
  void* reserve(size_t bytes) {
    bytes = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    if (bytes > capacity_) {
      data_.reset();
      data_.reset(std::aligned_alloc(64, bytes));
      TORCH_CHECK(data_ != nullptr, "ms_deform_attn: out of memory for a ", bytes, "-byte scratch buffer");
      capacity_ = bytes;
    }
    return data_.get();
  }
  // Gives the memory back unless it is small enough to keep for the next call.
  void trim() {
    if (capacity_ > kKeptScratchBytes) {
      data_.reset();
      capacity_ = 0;
    }
  }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data_;
  size_t capacity_ = 0;
};

// The two scratch buffers of the calling thread (value slice, gradient slice), trimmed when the scope ends.
template <typename T>
class Scratch {
 public:
  Scratch(int which, int64_t size) : buffer_(buffers()[which]) {
    data_ = static_cast<T*>(buffer_.reserve(static_cast<size_t>(size) * sizeof(T)));
  }
  ~Scratch() { buffer_.trim(); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return data_; }

 private:
  static ThreadBuffer* buffers() {
    thread_local ThreadBuffer kept[2];
    return kept;
  }
  ThreadBuffer& buffer_;
  T* data_;
};

// Asks Linux to back the 2 MiB-aligned interior of a freshly allocated output with transparent huge pages. Large
// outputs (tens of MB at SeqFormer's encoder shape) are often fresh mappings whose every 4 KiB page would fault on
// first write (~2.5 us each on the development VM, a third of the kernel's time); a huge page faults once per 2 MiB.
// Only a hint: memory already resident, or a kernel with transparent huge pages off, is left as it is.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const size_t bytes = t.numel() * t.element_size();
  if (bytes < 2 * kHuge) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (p + kHuge - 1) & ~(kHuge - 1), end = (p + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint; errors ignored
#else
  (void)t;
#endif
}

// Raw pointers and sizes of one call; every tensor is contiguous.
template <typename scalar_t, typename acc_t>
struct Problem {
  int64_t N, S, M, D, Lq, L, P;
  const int64_t* shapes;  // [L, 2]
  const int64_t* starts;  // [L]
  const scalar_t* value;  // [N, S, M, D]
  const scalar_t* loc;    // [N, Lq, M, L, P, 2]
  const scalar_t* attn;   // [N, Lq, M, L, P]
  int64_t chunks = 1;     // query chunks per (n, m) pair
  // Tasks are (n, m, chunk) = task index (n * M + m) * chunks + chunk; workers claim them one at a time from this
  // counter, so a worker that the OS pauses (the machine may be shared) does not hold back a fixed share of them.
  std::atomic<int64_t>* next_task = nullptr;
  int64_t tasks = 0;
  // forward
  scalar_t* out = nullptr;  // [N, Lq, M, D]
  // backward
  const scalar_t* grad_out = nullptr;  // [N, Lq, M, D]
  scalar_t* grad_value = nullptr;      // [N, S, M, D], written directly when chunks == 1
  acc_t* grad_value_parts = nullptr;   // [chunks, N, S, M, D] when chunks > 1 (summed by the caller)
  scalar_t* grad_loc = nullptr;        // [N, Lq, M, L, P, 2]
  scalar_t* grad_attn = nullptr;       // [N, Lq, M, L, P]
};

// Sums the kLanes partial sums of four dot products at once, as a tree (the AVX "hadd" pattern on GCC vector
// types: three vector additions instead of 4 * kLanes scalar ones). The order of the additions differs from a
// sequential sum by rounding only.
template <typename T>
MSDA_INLINE void sum_lanes(const T* a, const T* b, const T* c, const T* d, T& sa, T& sb, T& sc, T& sd) {
  static_assert(kLanes == 8, "the shuffle masks below are written for eight lanes");
#if defined(__GNUC__) && !defined(__clang__)
  using Int = std::conditional_t<sizeof(T) == 8, int64_t, int32_t>;
  typedef T Vec __attribute__((vector_size(kLanes * sizeof(T))));
  typedef Int Mask __attribute__((vector_size(kLanes * sizeof(T))));
  Vec va, vb, vc, vd;
  std::memcpy(&va, a, sizeof(Vec));
  std::memcpy(&vb, b, sizeof(Vec));
  std::memcpy(&vc, c, sizeof(Vec));
  std::memcpy(&vd, d, sizeof(Vec));
  const Mask even = {0, 2, 8, 10, 4, 6, 12, 14}, odd = {1, 3, 9, 11, 5, 7, 13, 15};
  // [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7], the same for c and d
  const Vec ab = __builtin_shuffle(va, vb, even) + __builtin_shuffle(va, vb, odd);
  const Vec cd = __builtin_shuffle(vc, vd, even) + __builtin_shuffle(vc, vd, odd);
  // [a0..3, b0..3, c0..3, d0..3, a4..7, b4..7, c4..7, d4..7]
  const Vec abcd = __builtin_shuffle(ab, cd, even) + __builtin_shuffle(ab, cd, odd);
  sa = abcd[0] + abcd[4];
  sb = abcd[1] + abcd[5];
  sc = abcd[2] + abcd[6];
  sd = abcd[3] + abcd[7];
#else
  sa = sb = sc = sd = T(0);
  for (int i = 0; i < kLanes; ++i) {
    sa += a[i];
    sb += b[i];
    sc += c[i];
    sd += d[i];
  }
#endif
}

// Queries are walked per (n, m) pair, so consecutive queries' locations, weights and outputs lie M * (their size)
// apart: a stride of 1 KiB at SeqFormer's shapes, which crosses a page every few queries and defeats the hardware
// prefetchers. The kernels prefetch these rows kPrefetchQueries queries ahead themselves.
constexpr int64_t kPrefetchQueries = 4;

// Prefetches the cache lines of [p, p + bytes) for reading (kWrite = false) or writing.
template <bool kWrite>
MSDA_INLINE void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, kWrite ? 1 : 0, 3);
}

// Copies value[n, :, m, :] into the contiguous slice (S rows of D, then kZeroRows zero rows), converting to acc_t.
template <typename scalar_t, typename acc_t, int kD>
MSDA_INLINE void load_slice(const Problem<scalar_t, acc_t>& pb, int64_t n, int64_t m, acc_t* __restrict__ slice) {
  const int64_t D = kD > 0 ? kD : pb.D, row = pb.M * D;
  const scalar_t* __restrict__ src = pb.value + n * pb.S * row + m * D;
  for (int64_t s = 0; s < pb.S; ++s) {
    if (s + 8 < pb.S) prefetch_bytes<false>(src + (s + 8) * row, D * sizeof(scalar_t));
    MSDA_SIMD for (int64_t d = 0; d < D; ++d) slice[s * D + d] = static_cast<acc_t>(src[s * row + d]);
  }
  std::fill(slice + pb.S * D, slice + (pb.S + kZeroRows) * D, acc_t(0));
}

// The four taps of one sample on a slice.
template <typename acc_t>
struct Taps {
  int64_t off[4];   // slice offsets (row * D) of the corners (top-left, top-right, bottom-left, bottom-right)
  acc_t weight[4];  // bilinear weights, zero for corners outside the map
  acc_t fx, fy;     // fractional parts of the pixel coordinates
};

// Fills `t` for a location on a level of size (h, w) whose first row is `start`; corner k outside the map reads the
// zero row S + k. Returns false when every corner is outside (the sample contributes nothing). Most samples lie
// wholly inside, which takes the first, branch-predicted path.
template <typename acc_t>
MSDA_INLINE bool taps_of(acc_t loc_x, acc_t loc_y, int64_t h, int64_t w, int64_t start, int64_t S, int64_t D,
                         Taps<acc_t>& t) {
  int64_t x0, y0;
  if (!bilinear_cell(loc_x, loc_y, h, w, x0, y0, t.fx, t.fy)) return false;
  const acc_t gx = acc_t(1) - t.fx, gy = acc_t(1) - t.fy;
  const acc_t k[4] = {gy * gx, gy * t.fx, t.fy * gx, t.fy * t.fx};
  const int64_t r = (start + y0 * w + x0) * D, down = w * D;
  if (x0 >= 0 && y0 >= 0 && x0 < w - 1 && y0 < h - 1) {
    t.off[0] = r;
    t.off[1] = r + D;
    t.off[2] = r + down;
    t.off[3] = r + down + D;
    for (int c = 0; c < 4; ++c) t.weight[c] = k[c];
    return true;
  }
  const bool top = y0 >= 0, bottom = y0 < h - 1, left = x0 >= 0, right = x0 < w - 1;
  const bool valid[4] = {top && left, top && right, bottom && left, bottom && right};
  const int64_t inside[4] = {r, r + D, r + down, r + down + D};
  for (int c = 0; c < 4; ++c) {
    t.off[c] = valid[c] ? inside[c] : (S + c) * D;
    t.weight[c] = valid[c] ? k[c] : acc_t(0);
  }
  return true;
}

// Forward worker: claims tasks until none is left; a task is one (n, m, query chunk).
// out[n, q, m, :] = sum_{l,p} A * bilinear(V_l, loc), the four taps of a sample fused into one D loop.
template <typename scalar_t, typename acc_t, int kD>
MSDA_INLINE void forward_worker(const Problem<scalar_t, acc_t>& pb) {
  const int64_t D = kD > 0 ? kD : pb.D;
  const int64_t M = pb.M, L = pb.L, P = pb.P, Lq = pb.Lq, S = pb.S;
  Scratch<acc_t> slice_buf(0, (S + kZeroRows) * D);
  acc_t* __restrict__ slice = slice_buf.get();
  std::vector<acc_t> acc_heap(kD > 0 ? 0 : D);
  acc_t acc_stack[kD > 0 ? kD : 1];
  acc_t* __restrict__ acc = kD > 0 ? acc_stack : acc_heap.data();
  int64_t loaded = -1;
  for (int64_t task; (task = pb.next_task->fetch_add(1, std::memory_order_relaxed)) < pb.tasks;) {
    const int64_t chunk = task % pb.chunks, nm = task / pb.chunks, n = nm / M, m = nm % M;
    if (nm != loaded) {
      load_slice<scalar_t, acc_t, kD>(pb, n, m, slice);
      loaded = nm;
    }
    const int64_t q_begin = Lq * chunk / pb.chunks, q_end = Lq * (chunk + 1) / pb.chunks;
    for (int64_t q = q_begin; q < q_end; ++q) {
      const int64_t qm = (n * Lq + q) * M + m;
      const scalar_t* loc = pb.loc + qm * L * P * 2;
      const scalar_t* attn = pb.attn + qm * L * P;
      if (q + kPrefetchQueries < q_end) {
        const int64_t ahead = qm + kPrefetchQueries * M;
        prefetch_bytes<false>(pb.loc + ahead * L * P * 2, L * P * 2 * sizeof(scalar_t));
        prefetch_bytes<false>(pb.attn + ahead * L * P, L * P * sizeof(scalar_t));
        prefetch_bytes<true>(pb.out + ahead * D, D * sizeof(scalar_t));
      }
      MSDA_SIMD for (int64_t d = 0; d < D; ++d) acc[d] = acc_t(0);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t h = pb.shapes[2 * l], w = pb.shapes[2 * l + 1], start = pb.starts[l];
        for (int64_t p = 0; p < P; ++p) {
          const int64_t lp = l * P + p;
          Taps<acc_t> t;
          if (!taps_of(static_cast<acc_t>(loc[2 * lp]), static_cast<acc_t>(loc[2 * lp + 1]), h, w, start, S, D, t)) {
            continue;
          }
          const acc_t a = static_cast<acc_t>(attn[lp]);
          const acc_t* __restrict__ v0 = slice + t.off[0];
          const acc_t* __restrict__ v1 = slice + t.off[1];
          const acc_t* __restrict__ v2 = slice + t.off[2];
          const acc_t* __restrict__ v3 = slice + t.off[3];
          const acc_t cw0 = a * t.weight[0], cw1 = a * t.weight[1], cw2 = a * t.weight[2], cw3 = a * t.weight[3];
          MSDA_SIMD for (int64_t d = 0; d < D; ++d) {
            acc[d] += cw0 * v0[d] + cw1 * v1[d] + cw2 * v2[d] + cw3 * v3[d];
          }
        }
      }
      scalar_t* __restrict__ out = pb.out + qm * D;
      MSDA_SIMD for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
    }
  }
}

// Backward worker: claims tasks until none is left; a task is one (n, m, query chunk). For every sample it computes the four dot
// products g_k = <grad_out, V(corner k)> in one pass over D and, in the same pass, scatters A * w_k * grad_out into
// the task's grad_value slice. grad_attention = sum_k w_k g_k, grad_location from the weights' derivatives.
template <typename scalar_t, typename acc_t, int kD>
MSDA_INLINE void backward_worker(const Problem<scalar_t, acc_t>& pb) {
  const int64_t D = kD > 0 ? kD : pb.D;
  const int64_t M = pb.M, L = pb.L, P = pb.P, Lq = pb.Lq, S = pb.S, row = M * D;
  Scratch<acc_t> slice_buf(0, (S + kZeroRows) * D);
  Scratch<acc_t> grad_buf(1, (S + kZeroRows) * D);
  acc_t* __restrict__ slice = slice_buf.get();
  acc_t* __restrict__ grad_slice = grad_buf.get();
  std::vector<acc_t> g_heap(kD > 0 ? 0 : D);
  acc_t g_stack[kD > 0 ? kD : 1];
  acc_t* __restrict__ g = kD > 0 ? g_stack : g_heap.data();
  int64_t loaded = -1;
  for (int64_t task; (task = pb.next_task->fetch_add(1, std::memory_order_relaxed)) < pb.tasks;) {
    const int64_t chunk = task % pb.chunks, nm = task / pb.chunks, n = nm / M, m = nm % M;
    if (nm != loaded) {
      load_slice<scalar_t, acc_t, kD>(pb, n, m, slice);
      loaded = nm;
    }
    std::fill(grad_slice, grad_slice + (S + kZeroRows) * D, acc_t(0));
    const int64_t q_begin = Lq * chunk / pb.chunks, q_end = Lq * (chunk + 1) / pb.chunks;
    for (int64_t q = q_begin; q < q_end; ++q) {
      const int64_t qm = (n * Lq + q) * M + m;
      const scalar_t* loc = pb.loc + qm * L * P * 2;
      const scalar_t* attn = pb.attn + qm * L * P;
      scalar_t* grad_loc = pb.grad_loc + qm * L * P * 2;
      scalar_t* grad_attn = pb.grad_attn + qm * L * P;
      const scalar_t* __restrict__ grad_out = pb.grad_out + qm * D;
      if (q + kPrefetchQueries < q_end) {
        const int64_t ahead = qm + kPrefetchQueries * M;
        prefetch_bytes<false>(pb.loc + ahead * L * P * 2, L * P * 2 * sizeof(scalar_t));
        prefetch_bytes<false>(pb.attn + ahead * L * P, L * P * sizeof(scalar_t));
        prefetch_bytes<false>(pb.grad_out + ahead * D, D * sizeof(scalar_t));
        prefetch_bytes<true>(pb.grad_loc + ahead * L * P * 2, L * P * 2 * sizeof(scalar_t));
        prefetch_bytes<true>(pb.grad_attn + ahead * L * P, L * P * sizeof(scalar_t));
      }
      MSDA_SIMD for (int64_t d = 0; d < D; ++d) g[d] = static_cast<acc_t>(grad_out[d]);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t h = pb.shapes[2 * l], w = pb.shapes[2 * l + 1], start = pb.starts[l];
        for (int64_t p = 0; p < P; ++p) {
          const int64_t lp = l * P + p;
          Taps<acc_t> t;
          if (!taps_of(static_cast<acc_t>(loc[2 * lp]), static_cast<acc_t>(loc[2 * lp + 1]), h, w, start, S, D, t)) {
            grad_attn[lp] = scalar_t(0);
            grad_loc[2 * lp] = scalar_t(0);
            grad_loc[2 * lp + 1] = scalar_t(0);
            continue;
          }
          const acc_t a = static_cast<acc_t>(attn[lp]);
          const acc_t* __restrict__ v0 = slice + t.off[0];
          const acc_t* __restrict__ v1 = slice + t.off[1];
          const acc_t* __restrict__ v2 = slice + t.off[2];
          const acc_t* __restrict__ v3 = slice + t.off[3];
          // The four corners' rows are distinct (outside ones have a zero row each), so restrict holds.
          acc_t* __restrict__ gv0 = grad_slice + t.off[0];
          acc_t* __restrict__ gv1 = grad_slice + t.off[1];
          acc_t* __restrict__ gv2 = grad_slice + t.off[2];
          acc_t* __restrict__ gv3 = grad_slice + t.off[3];
          const acc_t cw0 = a * t.weight[0], cw1 = a * t.weight[1], cw2 = a * t.weight[2], cw3 = a * t.weight[3];
          // The four dot products are kept as kLanes partial sums each, updated element-wise (vectorised without
          // reassociating anything) and summed by sum_lanes; a plain scalar reduction would not vectorise at -O3.
          acc_t lane0[kLanes] = {}, lane1[kLanes] = {}, lane2[kLanes] = {}, lane3[kLanes] = {};
          int64_t d = 0;
          for (; d + kLanes <= D; d += kLanes) {
            MSDA_SIMD for (int i = 0; i < kLanes; ++i) {
              const acc_t gd = g[d + i];
              lane0[i] += gd * v0[d + i];
              lane1[i] += gd * v1[d + i];
              lane2[i] += gd * v2[d + i];
              lane3[i] += gd * v3[d + i];
              gv0[d + i] += cw0 * gd;
              gv1[d + i] += cw1 * gd;
              gv2[d + i] += cw2 * gd;
              gv3[d + i] += cw3 * gd;
            }
          }
          acc_t s0, s1, s2, s3;
          sum_lanes(lane0, lane1, lane2, lane3, s0, s1, s2, s3);
          for (; d < D; ++d) {
            const acc_t gd = g[d];
            s0 += gd * v0[d];
            s1 += gd * v1[d];
            s2 += gd * v2[d];
            s3 += gd * v3[d];
            gv0[d] += cw0 * gd;
            gv1[d] += cw1 * gd;
            gv2[d] += cw2 * gd;
            gv3[d] += cw3 * gd;
          }
          acc_t d_x, d_y;
          bilinear_coordinate_grads(t.fx, t.fy, s0, s1, s2, s3, d_x, d_y);
          // Outside corners read zero rows, so their dot is 0 and the formulas need no validity test.
          grad_attn[lp] = static_cast<scalar_t>(t.weight[0] * s0 + t.weight[1] * s1 + t.weight[2] * s2 +
                                                t.weight[3] * s3);
          grad_loc[2 * lp] = static_cast<scalar_t>(a * static_cast<acc_t>(w) * d_x);
          grad_loc[2 * lp + 1] = static_cast<scalar_t>(a * static_cast<acc_t>(h) * d_y);
        }
      }
    }
    // grad_value[n, :, m, :] of this task: the output itself, or the chunk's private buffer.
    if (pb.chunks == 1) {
      scalar_t* __restrict__ dst = pb.grad_value + n * S * row + m * D;
      for (int64_t s = 0; s < S; ++s) {
        MSDA_SIMD for (int64_t d = 0; d < D; ++d) dst[s * row + d] = static_cast<scalar_t>(grad_slice[s * D + d]);
      }
    } else {
      acc_t* __restrict__ dst = pb.grad_value_parts + (chunk * pb.N + n) * S * row + m * D;
      for (int64_t s = 0; s < S; ++s) {
        MSDA_SIMD for (int64_t d = 0; d < D; ++d) dst[s * row + d] = grad_slice[s * D + d];
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
#define MSDA_DEFINE_ENTRY_POINTS(SCALAR, ACC, SUFFIX)                                                              \
  MSDA_CLONES void forward_##SUFFIX(const Problem<SCALAR, ACC>& pb) {                                              \
    MSDA_DISPATCH_D(pb.D, (forward_worker<SCALAR, ACC, kD>(pb)))                                                   \
  }                                                                                                                \
  MSDA_CLONES void backward_##SUFFIX(const Problem<SCALAR, ACC>& pb) {                                             \
    MSDA_DISPATCH_D(pb.D, (backward_worker<SCALAR, ACC, kD>(pb)))                                                  \
  }                                                                                                                \
  MSDA_INLINE void forward_entry(const Problem<SCALAR, ACC>& pb) { forward_##SUFFIX(pb); }                         \
  MSDA_INLINE void backward_entry(const Problem<SCALAR, ACC>& pb) { backward_##SUFFIX(pb); }

MSDA_DEFINE_ENTRY_POINTS(double, double, f64)
MSDA_DEFINE_ENTRY_POINTS(float, float, f32)
MSDA_DEFINE_ENTRY_POINTS(c10::BFloat16, float, bf16)

// Query chunks per (n, m) pair. A task is (n, m, chunk); one chunk per pair when the pairs alone give every thread
// equal work (or many tasks each), else enough chunks for about four tasks per thread. In backward every chunk
// beyond one costs a value-sized buffer, summed at the end, so this is for small batches only.
int64_t plan_chunks(int64_t pairs, int64_t Lq, int64_t threads) {
  if (threads <= 1 || pairs >= 4 * threads || (pairs >= threads && pairs % threads == 0)) return 1;
  return std::clamp<int64_t>((4 * threads + pairs - 1) / pairs, 1, std::max<int64_t>(Lq, 1));
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
  pb.chunks = plan_chunks(pb.N * pb.M, pb.Lq, at::get_num_threads());
  return pb;
}

// Runs one worker per thread (at most one per task) over a shared task counter.
template <typename scalar_t, typename Worker>
void run_workers(Problem<scalar_t, acc_of<scalar_t>>& pb, const Worker& worker) {
  std::atomic<int64_t> next_task{0};
  pb.next_task = &next_task;
  pb.tasks = pb.N * pb.M * pb.chunks;
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), pb.tasks);
  // Each call of the body runs one worker, whatever range of worker indices it is given.
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) { worker(); });
}

}  // namespace
}  // namespace msda

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  const int64_t N = value.size(0), M = value.size(2), D = value.size(3), Lq = sampling_locations.size(1);
  at::Tensor out = at::empty({N, Lq, M * D}, value.options());
  if (out.numel() == 0) return out;
  msda::advise_huge_pages(out);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    auto pb = msda::make_problem<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                                           attention_weights);
    pb.out = out.data_ptr<scalar_t>();
    msda::run_workers(pb, [&] { msda::forward_entry(pb); });
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_locations,
                                                    const at::Tensor& attention_weights,
                                                    const at::Tensor& grad_output) {
  const int64_t N = value.size(0), M = value.size(2);
  at::Tensor grad_loc = at::empty_like(sampling_locations);
  at::Tensor grad_attn = at::empty_like(attention_weights);
  if (grad_loc.numel() == 0 || value.numel() == 0) {
    return {at::zeros_like(value), grad_loc.zero_(), grad_attn.zero_()};
  }
  at::Tensor grad_value = at::empty_like(value);  // every element is written by exactly one task
  for (const at::Tensor* t : {&grad_value, &grad_loc, &grad_attn}) msda::advise_huge_pages(*t);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    using acc_t = msda::acc_of<scalar_t>;
    auto pb = msda::make_problem<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                                           attention_weights);
    const at::Tensor grad_out = grad_output.contiguous();
    pb.grad_out = grad_out.data_ptr<scalar_t>();
    pb.grad_loc = grad_loc.data_ptr<scalar_t>();
    pb.grad_attn = grad_attn.data_ptr<scalar_t>();
    pb.grad_value = grad_value.data_ptr<scalar_t>();
    at::Tensor parts;  // [chunks, N, S, M, D] partial gradients when queries are split
    if (pb.chunks > 1) {
      const auto acc_dtype = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
      parts = at::empty({pb.chunks, value.numel()}, value.options().dtype(acc_dtype));
      pb.grad_value_parts = parts.data_ptr<acc_t>();
    }
    msda::run_workers(pb, [&] { msda::backward_entry(pb); });
    if (parts.defined()) grad_value.view({-1}).copy_(parts.sum(0));
  });
  return {grad_value, grad_loc, grad_attn};
}
