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
// - Backward accumulates grad_value of the task's head in the same per-thread slice, each row's D gradient
//   elements right after its D values (one pass both copies the values and zeroes the gradients, and a corner's
//   read and read-modify-write share a pointer), and writes it to grad_value[n, :, m, :] once at the end: no
//   atomics, no zero-filled output, no per-thread copies of the whole gradient. Queries are split further (into
//   private [N, S, M, D] buffers, summed at the end) only when there are fewer (n, m) pairs than threads.
// - Queries are walked per (n, m), so consecutive queries' locations, weights and outputs are M rows apart; the
//   kernels prefetch them a few queries ahead (the hardware prefetchers stop at page boundaries).
// - Corners outside the map read one of four zero rows after the slice with weight zero, so the four taps of a
//   sample fuse into one branch-free D-channel loop. D = 32 and 64 are compiled with a fixed trip count and run on
//   whole vectors held in registers (forward_samples, backward_samples); the backward keeps each dot product as a
//   vector of partial sums and adds them up a vector of samples at a time afterwards (sum_partial_dots).
// - The per-sample set-up (pixel coordinates, floor, corner rows and bilinear weights, validity) runs a vector of
//   samples at a time (sample_taps), as do the backward's location and weight gradients once the dot products of a
//   query's samples are known; only the D-channel taps run sample by sample.
// - Large outputs are advised onto transparent huge pages (advise_huge_pages): a fresh output then faults once per
//   2 MiB rather than per 4 KiB page.
//
// Portability: the hot loops are compiled twice with GCC target_clones (x86-64-v3 = AVX2 + FMA, and the baseline)
// and the loader picks one at run time, so the shipped flags need no -march=native. Plain -O3, no -ffast-math:
// float64 results must match the reference to allclose's default tolerance.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
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
// GCC 12+ and clang have __builtin_shufflevector (used by broadcast4). Nested: a compiler without __has_builtin
// (GCC before 10) cannot parse it even behind `defined(__has_builtin) &&`.
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define MSDA_HAS_SHUFFLEVECTOR 1
#endif
#endif

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
// up to kKeptScratchBytes are kept by the thread between calls (a thread holds one, ~1.2 MiB at SeqFormer's
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

// The scratch buffer of the calling thread (its slice), trimmed when the scope ends.
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t size) : buffer_(kept()) {
    data_ = static_cast<T*>(buffer_.reserve(static_cast<size_t>(size) * sizeof(T)));
  }
  ~Scratch() { buffer_.trim(); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return data_; }

 private:
  static ThreadBuffer& kept() {
    thread_local ThreadBuffer buffer;
    return buffer;
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

// Unaligned vector loads and stores (memcpy of a vector type compiles to one move).
template <typename V>
MSDA_INLINE V load_vector(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V>
MSDA_INLINE void store_vector(void* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Eight zeros, for load_slice.
template <typename T>
struct Zeros8 {
  T v[8] = {};
};

// Copies value[n, :, m, :] into the slice (S rows, then kZeroRows zero rows), converting to acc_t. Forward slices
// are rows of D values (kGrad = false); backward slices interleave each row's D values with its D gradient
// elements (kGrad = true), which are zeroed in the same pass.
template <typename scalar_t, typename acc_t, int kD, bool kGrad>
MSDA_INLINE void load_slice(const Problem<scalar_t, acc_t>& pb, int64_t n, int64_t m, acc_t* __restrict__ slice) {
  const int64_t D = kD > 0 ? kD : pb.D, row = pb.M * D, stride = kGrad ? 2 * D : D;
  const scalar_t* __restrict__ src = pb.value + n * pb.S * row + m * D;
  for (int64_t s = 0; s < pb.S; ++s) {
    if (s + 8 < pb.S) prefetch_bytes<false>(src + (s + 8) * row, D * sizeof(scalar_t));
    MSDA_SIMD for (int64_t d = 0; d < D; ++d) slice[s * stride + d] = static_cast<acc_t>(src[s * row + d]);
    if constexpr (kGrad) {
      // Explicit stores: GCC turns a zero-filling loop into memset, a `rep stos` with a startup cost of tens of
      // cycles for every 128-byte row.
      acc_t* __restrict__ grad = slice + s * stride + D;
      int64_t d = 0;
      for (; d + 8 <= D; d += 8) store_vector(grad + d, Zeros8<acc_t>{});
      for (; d < D; ++d) grad[d] = acc_t(0);
    }
  }
  std::fill(slice + pb.S * stride, slice + (pb.S + kZeroRows) * stride, acc_t(0));
}

// The bilinear geometry of the L * P samples of one (query, head) is computed a vector of samples at a time (GCC
// vector extensions: 8 floats or 4 doubles, two SSE halves in the baseline clone) with selects instead of branches.
// Corner k of a sample reads slice row `row[k]`, the zero row S + k when it lies outside the map, with weight zero
// then. A sample with no corner inside the map (NaN locations included) is not `live`: it contributes nothing.
template <typename acc_t>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float Real __attribute__((vector_size(32)));
  typedef int32_t Int __attribute__((vector_size(32)));
  static constexpr int kWidth = 8;
};
template <>
struct Lanes<double> {
  typedef double Real __attribute__((vector_size(32)));
  typedef int64_t Int __attribute__((vector_size(32)));
  static constexpr int kWidth = 4;
};

template <typename acc_t>
struct SampleTaps {
  using Real = typename Lanes<acc_t>::Real;
  using Int = typename Lanes<acc_t>::Int;
  using index_t = std::remove_reference_t<decltype(Int{}[0])>;  // int32 rows for float, int64 for double
  static constexpr int kWidth = Lanes<acc_t>::kWidth;
  int64_t n, padded;  // samples of a query (L * P) and that rounded up to whole vectors
  // per level and point, filled once per worker (padding lanes: a 1 x 1 level at row 0)
  acc_t *level_w, *level_h;
  index_t *level_wi, *level_hi, *level_start;
  // per sample of the current query
  index_t* live;
  // The corner rows and attention weight * bilinear weight of sample i, corner k, at [4 * i + k]: the D-channel
  // loops read a sample's eight values from two base pointers (eight separate arrays cost the loop spilled
  // pointers, reloaded from the stack for every sample).
  index_t* rows;
  acc_t* scaled;
  acc_t *weight[4];  // bilinear weights, zero for corners outside the map
  acc_t *fx, *fy, *attn;
  acc_t *dot[4];  // backward: <grad_out, V(corner k)>
  // backward, D a multiple of kWidth: the partial sums (kWidth lanes) of the four dot products of sample i, corner k,
  // at [4 * i + k], summed a vector of samples at a time by sum_partial_dots (read and written with load_vector and
  // store_vector: std::vector does not align its storage for these vector types)
  Real* partial_dots;
  std::vector<Int> ints;
  std::vector<Real> reals;
  std::vector<Real> partials;

  SampleTaps(const int64_t* shapes, const int64_t* starts, int64_t L, int64_t P)
      : n(L * P),
        padded((L * P + kWidth - 1) / kWidth * kWidth),
        ints(8 * padded / kWidth),
        reals(17 * padded / kWidth),
        partials(4 * padded) {
    index_t* i = reinterpret_cast<index_t*>(ints.data());
    acc_t* r = reinterpret_cast<acc_t*>(reals.data());
    level_wi = i;
    level_hi = i + padded;
    level_start = i + 2 * padded;
    live = i + 3 * padded;
    rows = i + 4 * padded;
    level_w = r;
    level_h = r + padded;
    fx = r + 2 * padded;
    fy = r + 3 * padded;
    attn = r + 4 * padded;
    scaled = r + 5 * padded;
    for (int k = 0; k < 4; ++k) {
      weight[k] = r + (9 + k) * padded;
      dot[k] = r + (13 + k) * padded;
    }
    partial_dots = partials.data();  // zero-initialised: lanes of padding samples stay zero
    for (int64_t s = 0; s < padded; ++s) {
      const int64_t l = s < n ? s / P : 0;
      const int64_t h = s < n ? shapes[2 * l] : 1, w = s < n ? shapes[2 * l + 1] : 1;
      level_hi[s] = static_cast<index_t>(h);
      level_wi[s] = static_cast<index_t>(w);
      level_start[s] = static_cast<index_t>(s < n ? starts[l] : 0);
      level_h[s] = static_cast<acc_t>(h);
      level_w[s] = static_cast<acc_t>(w);
    }
  }
};

// The four values p[0..3] each broadcast to a vector. A vector built from a scalar ({x, x, ...}, or x - Real{}) is
// expanded into a chain of lane inserts inside the AVX2 clone (GCC 12, also in a five-line test; outside
// target_clones it is one broadcast); a shuffle of one 4-element load becomes one broadcast per value.
template <typename Real, typename T>
MSDA_INLINE void broadcast4(const T* p, Real& b0, Real& b1, Real& b2, Real& b3) {
#if defined(MSDA_HAS_SHUFFLEVECTOR)
  typedef T Four __attribute__((vector_size(4 * sizeof(T))));
  const Four v = load_vector<Four>(p);
  if constexpr (sizeof(Real) == 8 * sizeof(T)) {
    b0 = __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
    b1 = __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1);
    b2 = __builtin_shufflevector(v, v, 2, 2, 2, 2, 2, 2, 2, 2);
    b3 = __builtin_shufflevector(v, v, 3, 3, 3, 3, 3, 3, 3, 3);
  } else {
    static_assert(sizeof(Real) == 4 * sizeof(T), "a vector of 4 or 8 lanes");
    b0 = __builtin_shufflevector(v, v, 0, 0, 0, 0);
    b1 = __builtin_shufflevector(v, v, 1, 1, 1, 1);
    b2 = __builtin_shufflevector(v, v, 2, 2, 2, 2);
    b3 = __builtin_shufflevector(v, v, 3, 3, 3, 3);
  }
#else  // GCC before 12: correct, slower
  b0 = p[0] - Real{};
  b1 = p[1] - Real{};
  b2 = p[2] - Real{};
  b3 = p[3] - Real{};
#endif
}

// Writes four vectors of W samples (one per corner) sample-major: out[4 * j + k] = c_k[j], a 4 x W transpose in
// shuffles (unpacks within 128-bit halves, then whole halves). Vec is a vector of W 4-byte (W = 8) or 8-byte
// (W = 4) elements.
template <int W, typename Vec>
MSDA_INLINE void store_corners(void* out, Vec c0, Vec c1, Vec c2, Vec c3) {
  static_assert(W == 4 || W == 8, "the shuffle masks below are written for 4 or 8 lanes");
  using Elem = std::remove_reference_t<decltype(c0[0])>;
  using Mask = std::conditional_t<sizeof(Elem) == 8, int64_t, int32_t>;
  typedef Mask MaskVec __attribute__((vector_size(sizeof(Vec))));
  char* p = static_cast<char*>(out);
  if constexpr (W == 8) {
    const MaskVec lo32 = {0, 8, 1, 9, 4, 12, 5, 13}, hi32 = {2, 10, 3, 11, 6, 14, 7, 15};
    const MaskVec lo64 = {0, 1, 8, 9, 4, 5, 12, 13}, hi64 = {2, 3, 10, 11, 6, 7, 14, 15};
    const MaskVec lo128 = {0, 1, 2, 3, 8, 9, 10, 11}, hi128 = {4, 5, 6, 7, 12, 13, 14, 15};
    const Vec t0 = __builtin_shuffle(c0, c1, lo32), t1 = __builtin_shuffle(c0, c1, hi32);
    const Vec t2 = __builtin_shuffle(c2, c3, lo32), t3 = __builtin_shuffle(c2, c3, hi32);
    // samples (0 | 4), (1 | 5), (2 | 6), (3 | 7) in the two halves
    const Vec u0 = __builtin_shuffle(t0, t2, lo64), u1 = __builtin_shuffle(t0, t2, hi64);
    const Vec u2 = __builtin_shuffle(t1, t3, lo64), u3 = __builtin_shuffle(t1, t3, hi64);
    store_vector(p, __builtin_shuffle(u0, u1, lo128));
    store_vector(p + sizeof(Vec), __builtin_shuffle(u2, u3, lo128));
    store_vector(p + 2 * sizeof(Vec), __builtin_shuffle(u0, u1, hi128));
    store_vector(p + 3 * sizeof(Vec), __builtin_shuffle(u2, u3, hi128));
  } else {
    const MaskVec lo = {0, 4, 2, 6}, hi = {1, 5, 3, 7}, lo128 = {0, 1, 4, 5}, hi128 = {2, 3, 6, 7};
    const Vec t0 = __builtin_shuffle(c0, c1, lo), t1 = __builtin_shuffle(c0, c1, hi);  // samples (0 | 2), (1 | 3)
    const Vec t2 = __builtin_shuffle(c2, c3, lo), t3 = __builtin_shuffle(c2, c3, hi);
    store_vector(p, __builtin_shuffle(t0, t2, lo128));
    store_vector(p + sizeof(Vec), __builtin_shuffle(t1, t3, lo128));
    store_vector(p + 2 * sizeof(Vec), __builtin_shuffle(t0, t2, hi128));
    store_vector(p + 3 * sizeof(Vec), __builtin_shuffle(t1, t3, hi128));
  }
}

// floor(v) for |v| < 2^31 as the integer vector and as reals: truncation, minus one where it rounded up.
template <typename Real, typename Int>
MSDA_INLINE Int floor_lanes(Real v, Real& floored) {
  Int i = __builtin_convertvector(v, Int);
  i += __builtin_convertvector(i, Real) > v;  // comparisons give -1 in true lanes
  floored = __builtin_convertvector(i, Real);
  return i;
}

// Fills the per-sample arrays of `t` for one (query, head): `loc` holds t.n (x, y) pairs, `attn_in` t.n weights.
// Pixel coordinates follow bilinear_cell in bilinear.h (align_corners=False). A location outside the map is moved
// to (-2, -2) before floor, so no lane converts an out-of-range value and all four of its corners come out invalid.
template <typename scalar_t, typename acc_t>
MSDA_INLINE void sample_taps(const scalar_t* loc, const scalar_t* attn_in, int64_t S, SampleTaps<acc_t>& t) {
  using Real = typename SampleTaps<acc_t>::Real;
  using Int = typename SampleTaps<acc_t>::Int;
  using index_t = typename SampleTaps<acc_t>::index_t;
  constexpr int W = SampleTaps<acc_t>::kWidth;
  const Real zero = {}, one = zero + acc_t(1), half = zero + acc_t(0.5);
  const Int zero_rows = Int{} + static_cast<index_t>(S);
  for (int64_t i0 = 0; i0 < t.padded; i0 += W) {
    Real x, y, a;
    if (std::is_same_v<scalar_t, acc_t> && i0 + W <= t.n) {
      Int even, odd;  // de-interleaves (x, y) pairs
      for (int j = 0; j < W; ++j) {
        even[j] = 2 * j;
        odd[j] = 2 * j + 1;
      }
      const Real lo = load_vector<Real>(loc + 2 * i0), hi = load_vector<Real>(loc + 2 * i0 + W);
      x = __builtin_shuffle(lo, hi, even);
      y = __builtin_shuffle(lo, hi, odd);
      a = load_vector<Real>(attn_in + i0);
    } else {  // a partial vector, or a storage type other than acc_t: lanes past n sample nothing
      for (int j = 0; j < W; ++j) {
        const bool valid = i0 + j < t.n;
        x[j] = valid ? static_cast<acc_t>(loc[2 * (i0 + j)]) : acc_t(-2);
        y[j] = valid ? static_cast<acc_t>(loc[2 * (i0 + j) + 1]) : acc_t(-2);
        a[j] = valid ? static_cast<acc_t>(attn_in[i0 + j]) : acc_t(0);
      }
    }
    const Real lw = load_vector<Real>(t.level_w + i0), lh = load_vector<Real>(t.level_h + i0);
    const Int wi = load_vector<Int>(t.level_wi + i0), hi = load_vector<Int>(t.level_hi + i0);
    x = x * lw - half;
    y = y * lh - half;
    const Int in = (y > -one) & (x > -one) & (y < lh) & (x < lw);  // false for NaN
    x = in ? x : zero - acc_t(2);
    y = in ? y : zero - acc_t(2);
    Real xf, yf;
    const Int x0 = floor_lanes<Real, Int>(x, xf), y0 = floor_lanes<Real, Int>(y, yf);
    const Real fx = x - xf, fy = y - yf, gx = one - fx, gy = one - fy;
    const Int top = y0 >= 0, bottom = (y0 >= -1) & (y0 < hi - 1), left = x0 >= 0, right = (x0 >= -1) & (x0 < wi - 1);
    const Int v0 = top & left, v1 = top & right, v2 = bottom & left, v3 = bottom & right;
    const Int r = load_vector<Int>(t.level_start + i0) + y0 * wi + x0;
    a = in ? a : zero;
    const Real k0 = v0 ? gy * gx : zero, k1 = v1 ? gy * fx : zero, k2 = v2 ? fy * gx : zero;
    const Real k3 = v3 ? fy * fx : zero;
    store_vector(t.live + i0, in);
    store_corners<W>(t.rows + 4 * i0, v0 ? r : zero_rows, v1 ? r + 1 : zero_rows + 1, v2 ? r + wi : zero_rows + 2,
                     v3 ? r + wi + 1 : zero_rows + 3);
    store_vector(t.weight[0] + i0, k0);
    store_vector(t.weight[1] + i0, k1);
    store_vector(t.weight[2] + i0, k2);
    store_vector(t.weight[3] + i0, k3);
    store_corners<W>(t.scaled + 4 * i0, a * k0, a * k1, a * k2, a * k3);
    store_vector(t.fx + i0, fx);
    store_vector(t.fy + i0, fy);
    store_vector(t.attn + i0, a);
  }
}

// The D-channel loops for D a multiple of the vector width (SeqFormer's D = 32 and 64): whole vectors in
// registers, so a sample costs its 4 * D / kWidth row loads (and, backward, read-modify-writes) plus a few
// instructions. Other D take the element-wise loops in the workers.
template <typename acc_t, int kD>
constexpr bool kVectorRows = kD > 0 && kD % Lanes<acc_t>::kWidth == 0;

// out_acc[d] = sum over the query's live samples of sum_k scaled_k * V(corner k)[d], in the order of the
// element-wise loop (the four products summed, then added).
template <typename acc_t, int kD>
MSDA_INLINE void forward_samples(const SampleTaps<acc_t>& t, const acc_t* __restrict__ slice, acc_t* out_acc) {
  using Real = typename Lanes<acc_t>::Real;
  constexpr int W = Lanes<acc_t>::kWidth, C = kD / W;
  Real acc[C];
  for (int c = 0; c < C; ++c) acc[c] = Real{};
  // The arrays' pointers as locals: the stores below could otherwise alias `t` and make GCC reload them.
  const auto *__restrict__ live = t.live, *__restrict__ rows = t.rows;
  const acc_t* __restrict__ scaled = t.scaled;
  const int64_t n = t.n;
  for (int64_t i = 0; i < n; ++i) {
    if (!live[i]) continue;
    const auto* __restrict__ r = rows + 4 * i;
    const acc_t* __restrict__ v0 = slice + static_cast<int64_t>(r[0]) * kD;
    const acc_t* __restrict__ v1 = slice + static_cast<int64_t>(r[1]) * kD;
    const acc_t* __restrict__ v2 = slice + static_cast<int64_t>(r[2]) * kD;
    const acc_t* __restrict__ v3 = slice + static_cast<int64_t>(r[3]) * kD;
    const acc_t* __restrict__ w = scaled + 4 * i;
    Real w0, w1, w2, w3;
    broadcast4(w, w0, w1, w2, w3);
    for (int c = 0; c < C; ++c) {
      acc[c] += w0 * load_vector<Real>(v0 + c * W) + w1 * load_vector<Real>(v1 + c * W) +
                w2 * load_vector<Real>(v2 + c * W) + w3 * load_vector<Real>(v3 + c * W);
    }
  }
  for (int c = 0; c < C; ++c) store_vector(out_acc + c * W, acc[c]);
}

// Backward of one query's samples: scatters scaled_k * g into the grad rows of the four corners and keeps the four
// dot products <g, V(corner k)> as W-lane partial sums (t.partial_dots), summed afterwards by sum_partial_dots.
// `slice` interleaves rows: values of row r at [2 * kD * r], its gradient at [2 * kD * r + kD].
template <typename acc_t, int kD>
MSDA_INLINE void backward_samples(SampleTaps<acc_t>& t, acc_t* __restrict__ slice, const acc_t* __restrict__ g) {
  using Real = typename Lanes<acc_t>::Real;
  constexpr int W = Lanes<acc_t>::kWidth, C = kD / W;
  Real gv[C];
  for (int c = 0; c < C; ++c) gv[c] = load_vector<Real>(g + c * W);
  Real* __restrict__ partial = t.partial_dots;
  const auto *__restrict__ live = t.live, *__restrict__ rows = t.rows;  // as locals: see forward_samples
  const acc_t* __restrict__ scaled = t.scaled;
  const int64_t n = t.n;
  for (int64_t i = 0; i < n; ++i) {
    if (!live[i]) {
      for (int k = 0; k < 4; ++k) store_vector(partial + 4 * i + k, Real{});
      continue;
    }
    const auto* __restrict__ r = rows + 4 * i;
    // The four corners' rows are distinct (outside ones have a zero row each), so the updates are independent.
    acc_t* __restrict__ p0 = slice + static_cast<int64_t>(r[0]) * (2 * kD);
    acc_t* __restrict__ p1 = slice + static_cast<int64_t>(r[1]) * (2 * kD);
    acc_t* __restrict__ p2 = slice + static_cast<int64_t>(r[2]) * (2 * kD);
    acc_t* __restrict__ p3 = slice + static_cast<int64_t>(r[3]) * (2 * kD);
    const acc_t* __restrict__ w = scaled + 4 * i;
    Real w0, w1, w2, w3;
    broadcast4(w, w0, w1, w2, w3);
    Real d0 = {}, d1 = {}, d2 = {}, d3 = {};
    for (int c = 0; c < C; ++c) {
      d0 += gv[c] * load_vector<Real>(p0 + c * W);
      d1 += gv[c] * load_vector<Real>(p1 + c * W);
      d2 += gv[c] * load_vector<Real>(p2 + c * W);
      d3 += gv[c] * load_vector<Real>(p3 + c * W);
    }
    for (int c = 0; c < C; ++c) {
      store_vector(p0 + kD + c * W, load_vector<Real>(p0 + kD + c * W) + w0 * gv[c]);
      store_vector(p1 + kD + c * W, load_vector<Real>(p1 + kD + c * W) + w1 * gv[c]);
      store_vector(p2 + kD + c * W, load_vector<Real>(p2 + kD + c * W) + w2 * gv[c]);
      store_vector(p3 + kD + c * W, load_vector<Real>(p3 + kD + c * W) + w3 * gv[c]);
    }
    store_vector(partial + 4 * i, d0);
    store_vector(partial + 4 * i + 1, d1);
    store_vector(partial + 4 * i + 2, d2);
    store_vector(partial + 4 * i + 3, d3);
  }
}

// t.dot[k][i] = the sum of the W lanes of t.partial_dots[4 * i + k], W samples at a time: a transpose-and-add tree
// (pairs of vectors combined by even/odd shuffles within 128-bit halves, then the halves) gives W sums in
// 3 * (W - 1) shuffles and additions, where summing each vector alone takes a shuffle tree and scalar additions per
// sample. The order of the additions differs from a sequential sum by rounding only.
template <typename acc_t>
MSDA_INLINE void sum_partial_dots(SampleTaps<acc_t>& t) {
  using Real = typename Lanes<acc_t>::Real;
  using Int = typename Lanes<acc_t>::Int;
  constexpr int W = Lanes<acc_t>::kWidth;
  const Real* __restrict__ partial = t.partial_dots;
  for (int k = 0; k < 4; ++k) {
    for (int64_t i0 = 0; i0 < t.padded; i0 += W) {
      const Real* p0 = partial + 4 * i0 + k;  // sample i0 + j at p0[4 * j]
      const auto p = [p0](int j) { return load_vector<Real>(p0 + 4 * j); };
      Real sum;
      if constexpr (W == 8) {
        const Int even = {0, 2, 8, 10, 4, 6, 12, 14}, odd = {1, 3, 9, 11, 5, 7, 13, 15};
        const Int lo = {0, 1, 2, 3, 8, 9, 10, 11}, hi = {4, 5, 6, 7, 12, 13, 14, 15};
        const auto pair = [&](Real a, Real b) { return __builtin_shuffle(a, b, even) + __builtin_shuffle(a, b, odd); };
        // [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7], then four-element sums of a..d | a..d
        const Real abcd = pair(pair(p(0), p(1)), pair(p(2), p(3)));
        const Real efgh = pair(pair(p(4), p(5)), pair(p(6), p(7)));
        sum = __builtin_shuffle(abcd, efgh, lo) + __builtin_shuffle(abcd, efgh, hi);
      } else {
        static_assert(W == 4, "the shuffle masks below are written for 4 or 8 lanes");
        const Int even = {0, 4, 2, 6}, odd = {1, 5, 3, 7}, lo = {0, 1, 4, 5}, hi = {2, 3, 6, 7};
        const Real a = p(0), b = p(1), c = p(2), d = p(3);
        const Real ab = __builtin_shuffle(a, b, even) + __builtin_shuffle(a, b, odd);
        const Real cd = __builtin_shuffle(c, d, even) + __builtin_shuffle(c, d, odd);
        sum = __builtin_shuffle(ab, cd, lo) + __builtin_shuffle(ab, cd, hi);
      }
      store_vector(t.dot[k] + i0, sum);
    }
  }
}

// Forward worker: claims tasks until none is left; a task is one (n, m, query chunk).
// out[n, q, m, :] = sum_{l,p} A * bilinear(V_l, loc), the four taps of a sample fused into one D loop.
template <typename scalar_t, typename acc_t, int kD>
MSDA_INLINE void forward_worker(const Problem<scalar_t, acc_t>& pb) {
  const int64_t D = kD > 0 ? kD : pb.D;
  const int64_t M = pb.M, L = pb.L, P = pb.P, Lq = pb.Lq, S = pb.S, LP = L * P;
  Scratch<acc_t> slice_buf((S + kZeroRows) * D);
  acc_t* __restrict__ slice = slice_buf.get();
  SampleTaps<acc_t> t(pb.shapes, pb.starts, L, P);
  std::vector<acc_t> acc_heap(kD > 0 ? 0 : D);
  acc_t acc_stack[kD > 0 ? kD : 1];
  acc_t* __restrict__ acc = kD > 0 ? acc_stack : acc_heap.data();
  int64_t loaded = -1;
  for (int64_t task; (task = pb.next_task->fetch_add(1, std::memory_order_relaxed)) < pb.tasks;) {
    const int64_t chunk = task % pb.chunks, nm = task / pb.chunks, n = nm / M, m = nm % M;
    if (nm != loaded) {
      load_slice<scalar_t, acc_t, kD, false>(pb, n, m, slice);
      loaded = nm;
    }
    const int64_t q_begin = Lq * chunk / pb.chunks, q_end = Lq * (chunk + 1) / pb.chunks;
    for (int64_t q = q_begin; q < q_end; ++q) {
      const int64_t qm = (n * Lq + q) * M + m;
      if (q + kPrefetchQueries < q_end) {
        const int64_t ahead = qm + kPrefetchQueries * M;
        prefetch_bytes<false>(pb.loc + ahead * LP * 2, LP * 2 * sizeof(scalar_t));
        prefetch_bytes<false>(pb.attn + ahead * LP, LP * sizeof(scalar_t));
        prefetch_bytes<true>(pb.out + ahead * D, D * sizeof(scalar_t));
      }
      sample_taps(pb.loc + qm * LP * 2, pb.attn + qm * LP, S, t);
      scalar_t* __restrict__ out = pb.out + qm * D;
      if constexpr (kVectorRows<acc_t, kD>) {
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          forward_samples<acc_t, kD>(t, slice, out);
        } else {
          forward_samples<acc_t, kD>(t, slice, acc);
          MSDA_SIMD for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
        }
        continue;
      }
      MSDA_SIMD for (int64_t d = 0; d < D; ++d) acc[d] = acc_t(0);
      for (int64_t i = 0; i < LP; ++i) {
        if (!t.live[i]) continue;
        const acc_t* __restrict__ v0 = slice + t.rows[4 * i] * D;
        const acc_t* __restrict__ v1 = slice + t.rows[4 * i + 1] * D;
        const acc_t* __restrict__ v2 = slice + t.rows[4 * i + 2] * D;
        const acc_t* __restrict__ v3 = slice + t.rows[4 * i + 3] * D;
        const acc_t cw0 = t.scaled[4 * i], cw1 = t.scaled[4 * i + 1], cw2 = t.scaled[4 * i + 2];
        const acc_t cw3 = t.scaled[4 * i + 3];
        MSDA_SIMD for (int64_t d = 0; d < D; ++d) {
          acc[d] += cw0 * v0[d] + cw1 * v1[d] + cw2 * v2[d] + cw3 * v3[d];
        }
      }
      MSDA_SIMD for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
    }
  }
}

// Backward worker: claims tasks until none is left; a task is one (n, m, query chunk). For every sample it computes
// the four dot products g_k = <grad_out, V(corner k)> in one pass over D and, in the same pass, scatters
// A * w_k * grad_out into the task's grad_value slice. Then, lane-wise over the query's samples,
// grad_attention = sum_k w_k g_k and grad_location from the weights' derivatives (bilinear_coordinate_grads).
template <typename scalar_t, typename acc_t, int kD>
MSDA_INLINE void backward_worker(const Problem<scalar_t, acc_t>& pb) {
  const int64_t D = kD > 0 ? kD : pb.D;
  const int64_t M = pb.M, L = pb.L, P = pb.P, Lq = pb.Lq, S = pb.S, LP = L * P, row = M * D;
  // Value and gradient rows interleaved (row r: D values, then D gradient elements): a sample's read-modify-writes
  // land next to the rows it reads, and one pointer per corner addresses both.
  const int64_t stride = 2 * D;
  Scratch<acc_t> slice_buf((S + kZeroRows) * stride);
  acc_t* __restrict__ slice = slice_buf.get();
  acc_t* __restrict__ grad_slice = slice + D;
  SampleTaps<acc_t> t(pb.shapes, pb.starts, L, P);
  std::vector<acc_t> g_heap(kD > 0 ? 0 : D);
  acc_t g_stack[kD > 0 ? kD : 1];
  acc_t* __restrict__ g = kD > 0 ? g_stack : g_heap.data();
  int64_t loaded = -1;
  for (int64_t task; (task = pb.next_task->fetch_add(1, std::memory_order_relaxed)) < pb.tasks;) {
    const int64_t chunk = task % pb.chunks, nm = task / pb.chunks, n = nm / M, m = nm % M;
    if (nm != loaded) {
      load_slice<scalar_t, acc_t, kD, true>(pb, n, m, slice);  // zeroes the gradient rows too
      loaded = nm;
    } else {  // another query chunk of the same (n, m)
      for (int64_t s = 0; s < S + kZeroRows; ++s) {
        std::fill(grad_slice + s * stride, grad_slice + s * stride + D, acc_t(0));
      }
    }
    const int64_t q_begin = Lq * chunk / pb.chunks, q_end = Lq * (chunk + 1) / pb.chunks;
    for (int64_t q = q_begin; q < q_end; ++q) {
      const int64_t qm = (n * Lq + q) * M + m;
      const scalar_t* __restrict__ grad_out = pb.grad_out + qm * D;
      if (q + kPrefetchQueries < q_end) {
        const int64_t ahead = qm + kPrefetchQueries * M;
        prefetch_bytes<false>(pb.loc + ahead * LP * 2, LP * 2 * sizeof(scalar_t));
        prefetch_bytes<false>(pb.attn + ahead * LP, LP * sizeof(scalar_t));
        prefetch_bytes<false>(pb.grad_out + ahead * D, D * sizeof(scalar_t));
        prefetch_bytes<true>(pb.grad_loc + ahead * LP * 2, LP * 2 * sizeof(scalar_t));
        prefetch_bytes<true>(pb.grad_attn + ahead * LP, LP * sizeof(scalar_t));
      }
      sample_taps(pb.loc + qm * LP * 2, pb.attn + qm * LP, S, t);
      MSDA_SIMD for (int64_t d = 0; d < D; ++d) g[d] = static_cast<acc_t>(grad_out[d]);
      if constexpr (kVectorRows<acc_t, kD>) {
        backward_samples<acc_t, kD>(t, slice, g);
        sum_partial_dots(t);
      }
      for (int64_t i = 0; i < (kVectorRows<acc_t, kD> ? 0 : LP); ++i) {
        if (!t.live[i]) {
          t.dot[0][i] = t.dot[1][i] = t.dot[2][i] = t.dot[3][i] = acc_t(0);
          continue;
        }
        const acc_t* __restrict__ v0 = slice + t.rows[4 * i] * stride;
        const acc_t* __restrict__ v1 = slice + t.rows[4 * i + 1] * stride;
        const acc_t* __restrict__ v2 = slice + t.rows[4 * i + 2] * stride;
        const acc_t* __restrict__ v3 = slice + t.rows[4 * i + 3] * stride;
        // The four corners' rows are distinct (outside ones have a zero row each), so restrict holds.
        acc_t* __restrict__ gv0 = grad_slice + t.rows[4 * i] * stride;
        acc_t* __restrict__ gv1 = grad_slice + t.rows[4 * i + 1] * stride;
        acc_t* __restrict__ gv2 = grad_slice + t.rows[4 * i + 2] * stride;
        acc_t* __restrict__ gv3 = grad_slice + t.rows[4 * i + 3] * stride;
        const acc_t cw0 = t.scaled[4 * i], cw1 = t.scaled[4 * i + 1], cw2 = t.scaled[4 * i + 2];
        const acc_t cw3 = t.scaled[4 * i + 3];
        // The four dot products are kept as kLanes partial sums each, updated element-wise (vectorised without
        // reassociating anything) and summed by sum_lanes; a plain scalar reduction would not vectorise at -O3.
        acc_t lane0[kLanes] = {}, lane1[kLanes] = {}, lane2[kLanes] = {}, lane3[kLanes] = {};
        int64_t d = 0;
        for (; d + kLanes <= D; d += kLanes) {
          MSDA_SIMD for (int j = 0; j < kLanes; ++j) {
            const acc_t gd = g[d + j];
            lane0[j] += gd * v0[d + j];
            lane1[j] += gd * v1[d + j];
            lane2[j] += gd * v2[d + j];
            lane3[j] += gd * v3[d + j];
            gv0[d + j] += cw0 * gd;
            gv1[d + j] += cw1 * gd;
            gv2[d + j] += cw2 * gd;
            gv3[d + j] += cw3 * gd;
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
        t.dot[0][i] = s0;
        t.dot[1][i] = s1;
        t.dot[2][i] = s2;
        t.dot[3][i] = s3;
      }
      // Outside corners read zero rows, so their dot is 0 and the formulas need no validity test; a sample that is
      // not live has zero dots, weights and attention, so its gradients come out zero.
      scalar_t* __restrict__ grad_loc = pb.grad_loc + qm * LP * 2;
      scalar_t* __restrict__ grad_attn = pb.grad_attn + qm * LP;
      const acc_t *__restrict__ s0 = t.dot[0], *__restrict__ s1 = t.dot[1], *__restrict__ s2 = t.dot[2],
                  *__restrict__ s3 = t.dot[3];
      const acc_t *__restrict__ w0 = t.weight[0], *__restrict__ w1 = t.weight[1], *__restrict__ w2 = t.weight[2],
                  *__restrict__ w3 = t.weight[3];
      const acc_t *__restrict__ fx = t.fx, *__restrict__ fy = t.fy, *__restrict__ a = t.attn;
      const acc_t *__restrict__ lw = t.level_w, *__restrict__ lh = t.level_h;
      MSDA_SIMD for (int64_t i = 0; i < LP; ++i) {
        acc_t d_x, d_y;
        bilinear_coordinate_grads(fx[i], fy[i], s0[i], s1[i], s2[i], s3[i], d_x, d_y);
        grad_attn[i] = static_cast<scalar_t>(w0[i] * s0[i] + w1[i] * s1[i] + w2[i] * s2[i] + w3[i] * s3[i]);
        grad_loc[2 * i] = static_cast<scalar_t>(a[i] * lw[i] * d_x);
        grad_loc[2 * i + 1] = static_cast<scalar_t>(a[i] * lh[i] * d_y);
      }
    }
    // grad_value[n, :, m, :] of this task: the output itself, or the chunk's private buffer.
    if (pb.chunks == 1) {
      scalar_t* __restrict__ dst = pb.grad_value + n * S * row + m * D;
      for (int64_t s = 0; s < S; ++s) {
        MSDA_SIMD for (int64_t d = 0; d < D; ++d) {
          dst[s * row + d] = static_cast<scalar_t>(grad_slice[s * stride + d]);
        }
      }
    } else {
      acc_t* __restrict__ dst = pb.grad_value_parts + (chunk * pb.N + n) * S * row + m * D;
      for (int64_t s = 0; s < S; ++s) {
        MSDA_SIMD for (int64_t d = 0; d < D; ++d) dst[s * row + d] = grad_slice[s * stride + d];
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
  // Slice rows are indexed with int32 in the lane-wise sample geometry.
  TORCH_CHECK(pb.S <= INT32_MAX - kZeroRows, "ms_deform_attn: value length S=", pb.S, " exceeds the CPU kernel's limit of ",
              INT32_MAX - kZeroRows, " rows; split the levels over several calls");
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
