// Compiled helpers of the YouTube-VIS evaluator: compressed-RLE decoding and encoding, exact video IoU sums, the
// official greedy matching, and readers for results and annotation files.
//
// Written against the Python C API only (no torch or numpy headers), so the built module imports without torch.
// Arrays travel as buffer-protocol objects (numpy arrays, bytes, bytearray); outputs are written into arrays that
// the caller allocates, or returned as bytes.
//
// Compressed RLE ("counts" string, pycocotools' format): each run is written as 5-bit groups in characters '0'..'o'
// (value + 48), least significant group first; bit 0x20 of a group means "more groups follow", bit 0x10 of the last
// group is the sign. From the fourth run on, the stored value is the difference to the run two places earlier. Runs
// alternate background / foreground in column-major order, starting with background.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

enum Status : int8_t { kOk = 0, kBadChar = 1, kUnterminated = 2, kNegative = 3, kBadSum = 4, kTooLong = 5 };

// Walks the runs of one compressed string, calling visit(index, run) for each; returns a Status. Checks characters,
// termination and group count (a valid run of a mask below 2**35 pixels needs at most 7 groups; 12 keeps the shift
// inside 64 bits). Runs from the fourth on add the run two places earlier, so only the last two are kept.
template <typename Visit>
inline int walk_runs(const uint8_t* s, int64_t n, Visit&& visit) {
  int64_t p = 0, m = 0, prev2 = 0, prev1 = 0;
  while (p < n) {
    int c = static_cast<int>(s[p]) - 48;
    int64_t x;
    if (static_cast<unsigned>(c) < 32u) {  // the common case: a whole run in one character (sign in bit 4)
      x = (c ^ 0x10) - 0x10;
      ++p;
    } else {
      x = 0;
      int k = 0;
      bool more = true;
      while (more) {
        if (p >= n) return kUnterminated;
        c = static_cast<int>(s[p]) - 48;
        if (c < 0 || c > 63) return kBadChar;
        if (k >= 12) return kTooLong;
        x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
        more = (c & 0x20) != 0;
        ++p;
        ++k;
        if (!more && (c & 0x10)) x |= static_cast<int64_t>(~((uint64_t{1} << (5 * k)) - 1));
      }
    }
    if (m > 2) x += prev2;
    visit(m, x);
    prev2 = prev1;
    prev1 = x;
    ++m;
  }
  return kOk;
}

// Validates one string as a mask of height x width; sets its area (pixels of the odd runs).
int check_string(const uint8_t* s, int64_t n, int64_t height, int64_t width, int64_t& area) {
  int64_t total = 0, fg = 0;
  bool negative = false;
  const int code = walk_runs(s, n, [&](int64_t m, int64_t x) {
    negative |= x < 0;
    total += x;
    if (m & 1) fg += x;
  });
  area = fg;
  if (code != kOk) return code;
  if (negative) return kNegative;
  return total == height * width ? kOk : kBadSum;
}

// Appends the foreground intervals [begin, end) of a valid string, as begin, end pairs.
int append_intervals(const uint8_t* s, int64_t n, std::vector<int64_t>& out) {
  int64_t position = 0;
  return walk_runs(s, n, [&](int64_t m, int64_t x) {
    if ((m & 1) && x > 0) {
      out.push_back(position);
      out.push_back(position + x);
    }
    position += x;
  });
}

// Writes the foreground intervals of a valid string as begin, end pairs to out (room for n + 2 values: a run takes
// at least one character), stopping at the first interval that starts at or after limit (it and all later ones
// cannot meet an interval ending at or before limit). Returns the number of intervals, or -status on a bad string.
int64_t decode_intervals_until(const uint8_t* s, int64_t n, int64_t limit, int64_t* out) {
  int64_t p = 0, prev2 = 0, prev1 = 0, position = 0, count = 0;
  // Runs 0..2 are absolute; from run 3 on each adds the run two places earlier.
  for (int64_t m = 0; p < n && position < limit; ++m) {
    int64_t x;
    const int c0 = static_cast<int>(s[p]) - 48;
    if (static_cast<unsigned>(c0) < 32u) {  // the common case: a whole run in one character
      x = (c0 ^ 0x10) - 0x10;
      ++p;
    } else {
      x = 0;
      int k = 0;
      bool more = true;
      while (more) {
        if (p >= n) return -kUnterminated;
        const int c = static_cast<int>(s[p]) - 48;
        if (c < 0 || c > 63) return -kBadChar;
        if (k >= 12) return -kTooLong;
        x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
        more = (c & 0x20) != 0;
        ++p;
        ++k;
        if (!more && (c & 0x10)) x |= static_cast<int64_t>(~((uint64_t{1} << (5 * k)) - 1));
      }
    }
    if (m > 2) x += prev2;
    if (m & 1) {
      out[2 * count] = position;
      out[2 * count + 1] = position + x;
      count += x > 0;
    }
    position += x;
    prev2 = prev1;
    prev1 = x;
  }
  return count;
}

// Pixels in both of two sorted disjoint interval lists (na and nb intervals).
int64_t intersection(const int64_t* a, int64_t na, const int64_t* b, int64_t nb) {
  if (na == 0 || nb == 0 || a[2 * na - 1] <= b[0] || b[2 * nb - 1] <= a[0]) return 0;
  // Skip the intervals of each list that end before the other list starts.
  int64_t i = 0, j = 0;
  {
    int64_t lo = 0, hi = na;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (a[2 * mid + 1] <= b[0]) lo = mid + 1; else hi = mid;
    }
    i = lo;
    lo = 0, hi = nb;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (b[2 * mid + 1] <= a[0]) lo = mid + 1; else hi = mid;
    }
    j = lo;
  }
  int64_t total = 0;
  while (i < na && j < nb) {
    const int64_t a0 = a[2 * i], a1 = a[2 * i + 1], b0 = b[2 * j], b1 = b[2 * j + 1];
    const int64_t lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
    if (hi > lo) total += hi - lo;
    if (a1 < b1) ++i; else ++j;
  }
  return total;
}

// ------------------------------------------------------------------------------------------------ buffer helpers
struct Buffer {
  Py_buffer view{};
  bool held = false;
  ~Buffer() {
    if (held) PyBuffer_Release(&view);
  }
  int64_t size() const { return view.len / view.itemsize; }
  template <typename T> T* data() const { return static_cast<T*>(view.buf); }
};

// kind: 'i' signed integer, 'f' float, 'b' bytes.
bool acquire(PyObject* obj, Buffer& out, Py_ssize_t itemsize, char kind, bool writable, const char* name) {
  const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj, &out.view, flags) != 0) {
    PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous%s buffer", name, writable ? " writable" : "");
    return false;
  }
  out.held = true;
  const char* format = out.view.format ? out.view.format : "B";
  const char code = format[std::strlen(format) - 1];
  const bool ok_kind = kind == 'i' ? (code == 'l' || code == 'q' || code == 'i' || code == 'b')
                       : kind == 'f' ? code == 'd'
                                     : (code == 'B' || code == 'b' || code == 'c');
  if (out.view.itemsize != itemsize || !ok_kind) {
    PyErr_Format(PyExc_TypeError, "%s: expected %zd-byte items of kind '%c', got format '%s' with %zd-byte items",
                 name, itemsize, kind, format, out.view.itemsize);
    return false;
  }
  return true;
}

bool check_size(const Buffer& b, int64_t expected, const char* name) {
  if (b.size() != expected) {
    PyErr_Format(PyExc_ValueError, "%s: expected %lld items, got %lld", name, static_cast<long long>(expected),
                 static_cast<long long>(b.size()));
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------------------------------ rle_areas
const char* kRleAreasDoc =
    "rle_areas(buf, start, length, height, width, area_out, status_out) -> int\n\n"
    "Decodes the compressed strings buf[start[i]:start[i]+length[i]] and writes their areas (int64) and a status\n"
    "(int8: 0 ok, 1 bad character, 2 ends inside a run, 3 negative run, 4 runs do not sum to height*width,\n"
    "5 too many groups in one run). Returns the index of the first bad string, or -1.";

PyObject* rle_areas(PyObject*, PyObject* args) {
  PyObject *o_buf, *o_start, *o_len, *o_h, *o_w, *o_area, *o_status;
  if (!PyArg_ParseTuple(args, "OOOOOOO", &o_buf, &o_start, &o_len, &o_h, &o_w, &o_area, &o_status)) return nullptr;
  Buffer buf, start, len, h, w, area, status;
  if (!acquire(o_buf, buf, 1, 'b', false, "buf") || !acquire(o_start, start, 8, 'i', false, "start") ||
      !acquire(o_len, len, 8, 'i', false, "length") || !acquire(o_h, h, 8, 'i', false, "height") ||
      !acquire(o_w, w, 8, 'i', false, "width") || !acquire(o_area, area, 8, 'i', true, "area_out") ||
      !acquire(o_status, status, 1, 'i', true, "status_out"))
    return nullptr;
  const int64_t n = start.size();
  if (!check_size(len, n, "length") || !check_size(h, n, "height") || !check_size(w, n, "width") ||
      !check_size(area, n, "area_out") || !check_size(status, n, "status_out"))
    return nullptr;
  const uint8_t* bytes = buf.data<uint8_t>();
  const int64_t buf_size = buf.size();
  int64_t first_bad = -1;
  Py_BEGIN_ALLOW_THREADS;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = start.data<int64_t>()[i], l = len.data<int64_t>()[i];
    int code = kBadChar;
    int64_t a = 0;
    if (s >= 0 && l >= 0 && s + l <= buf_size) code = check_string(bytes + s, l, h.data<int64_t>()[i], w.data<int64_t>()[i], a);
    area.data<int64_t>()[i] = a;
    status.data<int8_t>()[i] = static_cast<int8_t>(code);
    if (code != kOk && first_bad < 0) first_bad = i;
  }
  Py_END_ALLOW_THREADS;
  return PyLong_FromLongLong(first_bad);
}

// ------------------------------------------------------------------------------------------------ pair_sums
struct FrameTable {
  Buffer buf, start, len, h, w, area, owner_offsets;
  bool acquire_all(PyObject* const* o, const char* prefix) {
    std::string p(prefix);
    return acquire(o[0], buf, 1, 'b', false, (p + "buf").c_str()) &&
           acquire(o[1], start, 8, 'i', false, (p + "start").c_str()) &&
           acquire(o[2], len, 8, 'i', false, (p + "length").c_str()) &&
           acquire(o[3], h, 8, 'i', false, (p + "height").c_str()) &&
           acquire(o[4], w, 8, 'i', false, (p + "width").c_str()) &&
           acquire(o[5], area, 8, 'i', false, (p + "area").c_str()) &&
           acquire(o[6], owner_offsets, 8, 'i', false, (p + "offsets").c_str()) && check_size(len, start.size(), "length") &&
           check_size(h, start.size(), "height") && check_size(w, start.size(), "width") &&
           check_size(area, start.size(), "area");
  }
  int64_t frames_of(int64_t owner) const {
    return owner_offsets.data<int64_t>()[owner + 1] - owner_offsets.data<int64_t>()[owner];
  }
  int64_t first_frame(int64_t owner) const { return owner_offsets.data<int64_t>()[owner]; }
};

// Decodes every frame of the given owners into intervals; spans[k * 2] / [k * 2 + 1] = first interval, count.
bool decode_owners(const FrameTable& t, const int64_t* owners, int64_t count, int64_t max_frames,
                   std::vector<int64_t>& intervals, std::vector<int64_t>& spans) {
  intervals.clear();
  spans.assign(static_cast<size_t>(count * max_frames * 2), 0);
  const uint8_t* bytes = t.buf.data<uint8_t>();
  for (int64_t k = 0; k < count; ++k) {
    const int64_t first = t.first_frame(owners[k]), frames = std::min(t.frames_of(owners[k]), max_frames);
    for (int64_t f = 0; f < frames; ++f) {
      const int64_t s = t.start.data<int64_t>()[first + f];
      if (s < 0) continue;
      const size_t before = intervals.size();
      if (append_intervals(bytes + s, t.len.data<int64_t>()[first + f], intervals) != kOk) return false;
      spans[(k * max_frames + f) * 2] = static_cast<int64_t>(before / 2);
      spans[(k * max_frames + f) * 2 + 1] = static_cast<int64_t>((intervals.size() - before) / 2);
    }
  }
  return true;
}

const char* kPairSumsDoc =
    "pair_sums(dt_buf, dt_start, dt_length, dt_height, dt_width, dt_area, dt_offsets,\n"
    "          gt_buf, gt_start, gt_length, gt_height, gt_width, gt_area, gt_offsets,\n"
    "          problem_dt_offsets, problem_dts, problem_gt_offsets, problem_gts, inter_out, union_out) -> None\n\n"
    "Exact official video-IoU sums for every (prediction, track) pair of every problem (a video and category).\n"
    "Frame tables: per frame the string's start (-1: absent) and length in buf, the mask height, width and area;\n"
    "owner o (a prediction or track) holds frames offsets[o]:offsets[o+1]. Problem p pairs predictions\n"
    "problem_dts[problem_dt_offsets[p]:...] with tracks problem_gts[problem_gt_offsets[p]:...]; its pairs are written\n"
    "row-major (prediction-major) after those of the earlier problems. Frames pair as Python zip does; a frame adds\n"
    "I += |d&g|, U += |d|g| when both are present with equal sizes, nothing when sizes differ, the present one's\n"
    "area to U otherwise.";

PyObject* pair_sums(PyObject*, PyObject* args) {
  PyObject* o[20];
  if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOOOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8],
                        &o[9], &o[10], &o[11], &o[12], &o[13], &o[14], &o[15], &o[16], &o[17], &o[18], &o[19]))
    return nullptr;
  FrameTable dt, gt;
  Buffer p_dt_off, p_dts, p_gt_off, p_gts, inter_out, union_out;
  if (!dt.acquire_all(o, "dt_") || !gt.acquire_all(o + 7, "gt_") ||
      !acquire(o[14], p_dt_off, 8, 'i', false, "problem_dt_offsets") ||
      !acquire(o[15], p_dts, 8, 'i', false, "problem_dts") ||
      !acquire(o[16], p_gt_off, 8, 'i', false, "problem_gt_offsets") ||
      !acquire(o[17], p_gts, 8, 'i', false, "problem_gts") || !acquire(o[18], inter_out, 8, 'i', true, "inter_out") ||
      !acquire(o[19], union_out, 8, 'i', true, "union_out"))
    return nullptr;
  const int64_t num_problems = p_dt_off.size() - 1;
  if (num_problems < 0 || !check_size(p_gt_off, num_problems + 1, "problem_gt_offsets")) return nullptr;
  const int64_t* dto = p_dt_off.data<int64_t>();
  const int64_t* gto = p_gt_off.data<int64_t>();
  int64_t total = 0;
  for (int64_t p = 0; p < num_problems; ++p) total += (dto[p + 1] - dto[p]) * (gto[p + 1] - gto[p]);
  if (!check_size(inter_out, total, "inter_out") || !check_size(union_out, total, "union_out")) return nullptr;
  if (dto[num_problems] != p_dts.size() || gto[num_problems] != p_gts.size()) {
    PyErr_SetString(PyExc_ValueError, "problem offsets do not end at the lengths of problem_dts / problem_gts");
    return nullptr;
  }
  const int64_t num_dt_owners = dt.owner_offsets.size() - 1, num_gt_owners = gt.owner_offsets.size() - 1;
  for (int64_t i = 0; i < p_dts.size(); ++i) {
    if (p_dts.data<int64_t>()[i] < 0 || p_dts.data<int64_t>()[i] >= num_dt_owners) {
      PyErr_SetString(PyExc_IndexError, "problem_dts holds a prediction index outside dt_offsets");
      return nullptr;
    }
  }
  for (int64_t i = 0; i < p_gts.size(); ++i) {
    if (p_gts.data<int64_t>()[i] < 0 || p_gts.data<int64_t>()[i] >= num_gt_owners) {
      PyErr_SetString(PyExc_IndexError, "problem_gts holds a track index outside gt_offsets");
      return nullptr;
    }
  }
  bool decoded = true;
  Py_BEGIN_ALLOW_THREADS;
  // Per problem: every track's frames decoded once into intervals; then prediction by prediction, frame by frame,
  // the prediction's frame is decoded (only as far as the farthest track interval it can meet) into a small buffer
  // that stays in cache, and intersected with each track's frame.
  std::vector<int64_t> gt_intervals, gt_spans, dt_buf, inter_acc, uni_acc, limits;
  const int64_t* d_start = dt.start.data<int64_t>();
  const int64_t* d_len = dt.len.data<int64_t>();
  const int64_t* d_h = dt.h.data<int64_t>();
  const int64_t* d_w = dt.w.data<int64_t>();
  const int64_t* d_area = dt.area.data<int64_t>();
  const int64_t* g_start = gt.start.data<int64_t>();
  const int64_t* g_h = gt.h.data<int64_t>();
  const int64_t* g_w = gt.w.data<int64_t>();
  const int64_t* g_area = gt.area.data<int64_t>();
  const uint8_t* d_bytes = dt.buf.data<uint8_t>();
  int64_t out = 0;
  for (int64_t p = 0; p < num_problems && decoded; ++p) {
    const int64_t* dts = p_dts.data<int64_t>() + dto[p];
    const int64_t* gts = p_gts.data<int64_t>() + gto[p];
    const int64_t nd = dto[p + 1] - dto[p], ng = gto[p + 1] - gto[p];
    if (nd == 0 || ng == 0) continue;
    int64_t max_g = 0;
    for (int64_t b = 0; b < ng; ++b) max_g = std::max(max_g, gt.frames_of(gts[b]));
    if (!decode_owners(gt, gts, ng, max_g, gt_intervals, gt_spans)) {
      decoded = false;
      break;
    }
    inter_acc.assign(static_cast<size_t>(ng), 0);
    uni_acc.assign(static_cast<size_t>(ng), 0);
    limits.assign(static_cast<size_t>(ng), 0);
    for (int64_t a = 0; a < nd && decoded; ++a, out += ng) {
      const int64_t d0 = dt.first_frame(dts[a]), d_frames = std::min(dt.frames_of(dts[a]), max_g);
      std::fill(inter_acc.begin(), inter_acc.end(), 0);
      std::fill(uni_acc.begin(), uni_acc.end(), 0);
      for (int64_t f = 0; f < d_frames; ++f) {
        const int64_t di = d0 + f;
        const bool d_on = d_start[di] >= 0;
        const int64_t ad = d_on ? d_area[di] : 0;
        int64_t limit = -1;  // the farthest end of a track interval this frame must be intersected with
        for (int64_t b = 0; b < ng; ++b) {
          limits[b] = -1;
          if (f >= gt.frames_of(gts[b])) continue;  // zip stops at the shorter list
          const int64_t gi = gt.first_frame(gts[b]) + f;
          const bool g_on = g_start[gi] >= 0;
          const int64_t ag = g_on ? g_area[gi] : 0;
          if (d_on && g_on) {
            if (d_h[di] != g_h[gi] || d_w[di] != g_w[gi]) continue;  // pycocotools merges to an empty mask: adds 0
            uni_acc[b] += ad + ag;  // the intersection is subtracted below
            if (ad > 0 && ag > 0) {
              const int64_t* gs = &gt_spans[(b * max_g + f) * 2];
              limits[b] = gt_intervals[2 * (gs[0] + gs[1]) - 1];
              limit = std::max(limit, limits[b]);
            }
          } else {
            uni_acc[b] += ad + ag;
          }
        }
        if (limit < 0) continue;
        if (static_cast<int64_t>(dt_buf.size()) < d_len[di] + 2) dt_buf.resize(static_cast<size_t>(d_len[di] + 2));
        const int64_t n_dt = decode_intervals_until(d_bytes + d_start[di], d_len[di], limit, dt_buf.data());
        if (n_dt < 0) {
          decoded = false;
          break;
        }
        for (int64_t b = 0; b < ng; ++b) {
          if (limits[b] < 0) continue;
          const int64_t* gs = &gt_spans[(b * max_g + f) * 2];
          const int64_t i = intersection(dt_buf.data(), n_dt, gt_intervals.data() + 2 * gs[0], gs[1]);
          inter_acc[b] += i;
          uni_acc[b] -= i;
        }
      }
      for (int64_t b = 0; b < ng; ++b) {
        inter_out.data<int64_t>()[out + b] = inter_acc[b];
        union_out.data<int64_t>()[out + b] = uni_acc[b];
      }
    }
  }
  Py_END_ALLOW_THREADS;
  if (!decoded) {
    PyErr_SetString(PyExc_ValueError, "a compressed RLE string could not be decoded (check it with rle_areas first)");
    return nullptr;
  }
  Py_RETURN_NONE;
}

// ------------------------------------------------------------------------------------------------ JSON readers
// The JSON scanning shared by the compiled readers: whitespace, literals, strings (unescaped in place), numbers.
class JsonCursor {
 public:
  JsonCursor(uint8_t* bytes, int64_t size) : b_(bytes), n_(size) {}
  std::string why;  // why reading stopped

 protected:
  uint8_t* b_;
  int64_t n_, p_ = 0;

  bool fail(const char* message) {
    if (why.empty()) why = std::string(message) + " (byte " + std::to_string(p_) + ")";
    return false;
  }
  void ws() {
    while (p_ < n_ && (b_[p_] == ' ' || b_[p_] == '\n' || b_[p_] == '\r' || b_[p_] == '\t')) ++p_;
  }
  bool peek(char c) const { return p_ < n_ && b_[p_] == static_cast<uint8_t>(c); }
  bool take(char c) {
    if (!peek(c)) return false;
    ++p_;
    return true;
  }
  bool literal(const char* word) {
    const int64_t l = static_cast<int64_t>(std::strlen(word));
    if (p_ + l > n_ || std::memcmp(b_ + p_, word, l) != 0) return false;
    p_ += l;
    return true;
  }

  // The first position at or after p holding '"', a backslash, a control character or a non-ASCII byte (or n_).
  int64_t scan_plain(int64_t p) const {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (p + 16 <= n_) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b_ + p));
      // signed compare: bytes >= 0x80 are negative, so "< 0x20" also catches non-ASCII bytes
      const __m128i special = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                           _mm_cmplt_epi8(v, space));
      const int mask = _mm_movemask_epi8(special);
      if (mask != 0) return p + __builtin_ctz(static_cast<unsigned>(mask));
      p += 16;
    }
#endif
    while (p < n_ && b_[p] != '"' && b_[p] != '\\' && b_[p] >= 0x20 && b_[p] < 0x80) ++p;
    return p;
  }

  // A string at the cursor ('"'), unescaped in place (the result is never longer than its escaped form).
  bool string(int64_t& start, int64_t& length, bool& escaped) {
    if (!take('"')) return fail("expected a string");
    start = p_;
    p_ = scan_plain(p_);
    int64_t w = p_;  // where the next unescaped byte goes
    escaped = false;
    while (true) {
      if (p_ >= n_) return fail("unterminated string");
      const uint8_t c = b_[p_++];
      if (c == '"') break;
      if (c < 0x20) return fail("control character in a string");
      if (c >= 0x80) return fail("non-ASCII character in a string");
      escaped = true;  // c is a backslash: scan_plain stops only at the bytes above
      if (p_ >= n_) return fail("unterminated string");
      const uint8_t e = b_[p_++];
      const char* plain = "\"\\/bfnrt";
      const char* mapped = "\"\\/\b\f\n\r\t";
      const char* hit = e ? std::strchr(plain, e) : nullptr;
      if (hit) {
        b_[w++] = static_cast<uint8_t>(mapped[hit - plain]);
      } else if (e == 'u') {
        if (p_ + 4 > n_) return fail("bad \\u escape");
        int value = 0;
        for (int k = 0; k < 4; ++k) {
          const uint8_t h = b_[p_++];
          const int digit = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                            : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
          if (digit < 0) return fail("bad \\u escape");
          value = value * 16 + digit;
        }
        if (value >= 0x80) return fail("non-ASCII \\u escape in a string");
        b_[w++] = static_cast<uint8_t>(value);
      } else {
        return fail("bad escape in a string");
      }
      const int64_t next = scan_plain(p_);  // the plain bytes up to the next special one, moved down in one go
      std::memmove(b_ + w, b_ + p_, static_cast<size_t>(next - p_));
      w += next - p_;
      p_ = next;
    }
    length = w - start;
    return true;
  }

  // A JSON number at the cursor: [begin, end) and whether it is an integer (no fraction, no exponent).
  bool number(int64_t& begin, int64_t& end, bool& integer) {
    begin = p_;
    take('-');
    if (take('0')) {
    } else if (p_ < n_ && b_[p_] >= '1' && b_[p_] <= '9') {
      while (p_ < n_ && b_[p_] >= '0' && b_[p_] <= '9') ++p_;
    } else {
      return fail("expected a number");
    }
    integer = true;
    if (take('.')) {
      integer = false;
      if (!(p_ < n_ && b_[p_] >= '0' && b_[p_] <= '9')) return fail("bad number");
      while (p_ < n_ && b_[p_] >= '0' && b_[p_] <= '9') ++p_;
    }
    if (take('e') || take('E')) {
      integer = false;
      if (!take('+')) take('-');
      if (!(p_ < n_ && b_[p_] >= '0' && b_[p_] <= '9')) return fail("bad number");
      while (p_ < n_ && b_[p_] >= '0' && b_[p_] <= '9') ++p_;
    }
    end = p_;
    return true;
  }

  bool integer(int64_t& value) {
    int64_t begin, end;
    bool is_int;
    if (!number(begin, end, is_int)) return false;
    if (!is_int || end - begin > 18) return fail("an id that is not an integer of at most 18 digits");
    const char* first = reinterpret_cast<const char*>(b_ + begin);
    const auto result = std::from_chars(first, reinterpret_cast<const char*>(b_ + end), value);
    return result.ec == std::errc() || fail("bad integer");
  }

  // Same value as Python's float(json.loads(text)): integers convert from the exact int, others round correctly.
  bool real(double& value) {
    int64_t begin, end;
    bool is_int;
    if (!number(begin, end, is_int)) return false;
    const char* first = reinterpret_cast<const char*>(b_ + begin);
    const char* last = reinterpret_cast<const char*>(b_ + end);
    if (is_int) {
      if (end - begin > 18) return fail("an integer score of more than 18 digits");
      int64_t i = 0;
      if (std::from_chars(first, last, i).ec != std::errc()) return fail("bad integer");
      value = static_cast<double>(i);
      return true;
    }
    const auto result = std::from_chars(first, last, value);
    return (result.ec == std::errc() && result.ptr == last) || fail("a number out of the float range");
  }

  bool skip_value(int depth) {
    if (depth > 512) return fail("nesting too deep");
    ws();
    if (p_ >= n_) return fail("unexpected end of file");
    const uint8_t c = b_[p_];
    if (c == '"') {
      int64_t s, l;
      bool e;
      return string(s, l, e);
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++p_;
      ws();
      if (take(close)) return true;
      while (true) {
        if (c == '{') {
          int64_t s, l;
          bool e;
          ws();
          if (!string(s, l, e)) return false;
          ws();
          if (!take(':')) return fail("expected ':'");
        }
        if (!skip_value(depth + 1)) return false;
        ws();
        if (take(',')) continue;
        if (take(close)) return true;
        return fail("expected ',' or a closing bracket");
      }
    }
    if (literal("null") || literal("true") || literal("false")) return true;
    int64_t begin, end;
    bool is_int;
    return number(begin, end, is_int);
  }

  // A non-negative JSON integer of at most 18 digits.
  bool count(int64_t& value) {
    int64_t begin, end;
    bool is_int;
    if (!number(begin, end, is_int)) return false;
    if (!is_int || b_[begin] == '-' || end - begin > 18) return fail("a count or size that is not a small int");
    std::from_chars(reinterpret_cast<const char*>(b_ + begin), reinterpret_cast<const char*>(b_ + end), value);
    return true;
  }

  // An RLE "size" [height, width]; each element read by count() (non_negative) or integer(). Range checks are the
  // caller's.
  bool rle_size(int64_t& h, int64_t& w, bool non_negative) {
    auto element = [&](int64_t& v) { return non_negative ? count(v) : integer(v); };
    if (!take('[')) return fail("an RLE size that is not a list");
    ws();
    if (!element(h)) return false;
    ws();
    if (!take(',')) return fail("an RLE size that is not [height, width]");
    ws();
    if (!element(w)) return false;
    ws();
    return take(']') || fail("an RLE size that is not [height, width]");
  }

  // Reads a key; which: 0..count-1 for known keys, -1 for others.
  bool key(const char* const* names, int count, int& which) {
    int64_t s, l;
    bool escaped;
    ws();
    if (!string(s, l, escaped)) return false;
    if (escaped) return fail("an escaped object key");
    which = -1;
    for (int k = 0; k < count; ++k) {
      if (static_cast<int64_t>(std::strlen(names[k])) == l && std::memcmp(b_ + s, names[k], l) == 0) which = k;
    }
    ws();
    return take(':') || fail("expected ':'");
  }
};

// ------------------------------------------------------------------------------------------------ read_results
// A reader for the common shape of a results file only: a non-empty JSON array of objects whose video_id and
// category_id are integers, score a number, and segmentations an array of null or {"size": [h, w], "counts": str}
// (other keys are skipped). Anything else (and any byte above 127 inside a string) makes it give up with the
// reason, and the caller parses the file with a general JSON parser instead, which also yields the proper errors.
class ResultsReader : public JsonCursor {
 public:
  using JsonCursor::JsonCursor;

  std::vector<int64_t> video_id, category_id, entry_offsets{0}, frame_start, frame_len, frame_h, frame_w, frame_area;
  std::vector<double> score;
  int64_t first_bad = -1;  // first frame whose string is not a valid mask of its size

  bool read() {
    ws();
    if (!take('[')) return fail("the file is not a JSON array");
    ws();
    if (peek(']')) return fail("the results list is empty");
    while (true) {
      if (!entry()) return false;
      ws();
      if (take(',')) continue;
      if (take(']')) break;
      return fail("expected ',' or ']' after a result");
    }
    ws();
    return p_ == n_ || fail("extra data after the results list");
  }

 private:
  bool entry() {
    static const char* const names[] = {"video_id", "category_id", "score", "segmentations"};
    ws();
    if (!take('{')) return fail("a result that is not an object");
    int seen = 0;
    int64_t vid = 0, cat = 0;
    double sc = 0;
    const size_t frames_before = frame_start.size();
    ws();
    if (!peek('}')) {
      while (true) {
        int which;
        if (!key(names, 4, which)) return false;
        if (which >= 0 && (seen >> which) & 1) return fail("a repeated key in a result");
        if (which >= 0) seen |= 1 << which;
        ws();
        const bool ok = which == 0   ? integer(vid)
                        : which == 1 ? integer(cat)
                        : which == 2 ? real(sc)
                        : which == 3 ? segmentations()
                                     : skip_value(0);
        if (!ok) return false;
        ws();
        if (take(',')) continue;
        if (take('}')) break;
        return fail("expected ',' or '}' in a result");
      }
    } else {
      ++p_;
    }
    if (seen != 15) return fail("a result without video_id, category_id, score and segmentations");
    (void)frames_before;
    video_id.push_back(vid);
    category_id.push_back(cat);
    score.push_back(sc);
    entry_offsets.push_back(static_cast<int64_t>(frame_start.size()));
    return true;
  }

  bool segmentations() {
    if (!take('[')) return fail("segmentations that are not a list");
    ws();
    if (take(']')) return true;
    while (true) {
      ws();
      if (literal("null")) {
        frame_start.push_back(-1);
        frame_len.push_back(0);
        frame_h.push_back(0);
        frame_w.push_back(0);
        frame_area.push_back(0);
      } else if (!frame()) {
        return false;
      }
      ws();
      if (take(',')) continue;
      if (take(']')) return true;
      return fail("expected ',' or ']' in segmentations");
    }
  }

  bool frame() {
    static const char* const names[] = {"size", "counts"};
    if (!take('{')) return fail("a frame that is neither null nor an RLE object");
    ws();
    if (peek('}')) return fail("an empty frame object");
    int seen = 0;
    int64_t h = 0, w = 0, start = 0, length = 0;
    while (true) {
      int which;
      if (!key(names, 2, which)) return false;
      if (which >= 0 && (seen >> which) & 1) return fail("a repeated key in an RLE");
      if (which >= 0) seen |= 1 << which;
      ws();
      if (which == 0) {
        if (!rle_size(h, w, /*non_negative=*/false)) return false;
        if (h < 0 || w < 0 || h > (1 << 30) || w > (1 << 30)) return fail("an RLE size out of range");
      } else if (which == 1) {
        bool escaped;
        if (!peek('"')) return fail("RLE counts that are not a string");
        if (!string(start, length, escaped)) return false;
      } else if (!skip_value(0)) {
        return false;
      }
      ws();
      if (take(',')) continue;
      if (take('}')) break;
      return fail("expected ',' or '}' in an RLE");
    }
    if (seen != 3) return fail("an RLE without size and counts");
    // Decoded here, while the string is still in cache: the area, and whether it is a valid mask of its size.
    int64_t area = 0;
    if (check_string(b_ + start, length, h, w, area) != kOk && first_bad < 0) {
      first_bad = static_cast<int64_t>(frame_start.size());
    }
    frame_area.push_back(area);
    frame_start.push_back(start);
    frame_len.push_back(length);
    frame_h.push_back(h);
    frame_w.push_back(w);
    return true;
  }
};

template <typename T> PyObject* to_bytes(const std::vector<T>& v) {
  return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(v.data()),
                                   static_cast<Py_ssize_t>(v.size() * sizeof(T)));
}

const char* kReadResultsDoc =
    "read_results(buf) -> tuple | str\n\n"
    "Reads a YouTube-VIS results JSON held in the writable byte buffer buf (its RLE strings are unescaped in place).\n"
    "Returns (video_id, category_id, score, entry_offsets, frame_start, frame_length, frame_height, frame_width,\n"
    "frame_area, first_bad) as bytes of int64 (score: float64; frame_start -1 for a null frame; first_bad the first\n"
    "frame that is not a valid mask of its size, or -1), or a str saying why the file needs a general JSON parser.";

PyObject* read_results(PyObject*, PyObject* args) {
  PyObject* o_buf;
  if (!PyArg_ParseTuple(args, "O", &o_buf)) return nullptr;
  Buffer buf;
  if (!acquire(o_buf, buf, 1, 'b', true, "buf")) return nullptr;
  ResultsReader reader(buf.data<uint8_t>(), buf.size());
  bool ok;
  Py_BEGIN_ALLOW_THREADS;
  ok = reader.read();
  Py_END_ALLOW_THREADS;
  if (!ok) return PyUnicode_FromString(reader.why.c_str());
  return Py_BuildValue("(NNNNNNNNNL)", to_bytes(reader.video_id), to_bytes(reader.category_id),
                       to_bytes(reader.score), to_bytes(reader.entry_offsets), to_bytes(reader.frame_start),
                       to_bytes(reader.frame_len), to_bytes(reader.frame_h), to_bytes(reader.frame_w),
                       to_bytes(reader.frame_area), static_cast<long long>(reader.first_bad));
}

// Appends pycocotools' compressed string (rleToString) of the run lengths cnts[0..m).
void append_compressed(const std::vector<int64_t>& cnts, std::string& out) {
  for (size_t i = 0; i < cnts.size(); ++i) {
    int64_t x = cnts[i];
    if (i > 2) x -= cnts[i - 2];
    bool more = true;
    while (more) {
      int c = static_cast<int>(x & 0x1f);
      x >>= 5;
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      out.push_back(static_cast<char>(c + 48));
    }
  }
}

// ------------------------------------------------------------------------------------------------ read_ground_truth
// A reader for annotation files made only of ASCII JSON (no NaN/Infinity): it builds the same Python objects as
// json.loads, except that each annotation's "segmentations" list holds None for a null frame (or an empty object)
// and True for a mask, while the masks themselves go straight into a frame table, compressed as
// frUncompressedRLE would (uncompressed counts) or copied (compressed strings). Masks must be {"size": [h, w],
// "counts": [ints] or str} that decode to a mask of their size; anything else (polygons, other values, bad runs)
// makes it give up with the reason, and the caller takes the general path, which also yields the proper errors.
class GtReader : public JsonCursor {
 public:
  using JsonCursor::JsonCursor;
  std::string buf;
  std::vector<int64_t> frame_start, frame_len, frame_h, frame_w, frame_area, owner_offsets{0};

  // A new reference, or nullptr with why set.
  PyObject* read() {
    ws();
    if (!peek('{')) return none("the file is not a JSON object");
    PyObject* out = value(0, kTop);
    if (out == nullptr) return nullptr;
    ws();
    if (p_ != n_ || annotations_ != 1) {
      Py_DECREF(out);
      return none(p_ != n_ ? "extra data after the object" : "not exactly one 'annotations' list");
    }
    return out;
  }

 private:
  enum Context { kOther, kTop, kAnnotations, kAnnotation };
  int annotations_ = 0;
  std::vector<int64_t> cnts_;

  PyObject* none(const char* message) {
    fail(message);
    return nullptr;
  }
  PyObject* python_failed() {
    PyErr_Clear();
    return none("a Python object could not be made");
  }

  PyObject* value(int depth, Context context) {
    if (depth > 512) return none("nesting too deep");
    ws();
    if (p_ >= n_) return none("unexpected end of file");
    const uint8_t c = b_[p_];
    if (context == kAnnotations && c != '[') return none("'annotations' that is not a list");
    if (context == kAnnotation && c != '{') return none("an annotation that is not an object");
    if (c == '{') return object(depth, context);
    if (c == '[') return array(depth, context);
    if (c == '"') {
      int64_t s, l;
      bool e;
      if (!string(s, l, e)) return nullptr;
      PyObject* text = PyUnicode_FromStringAndSize(reinterpret_cast<const char*>(b_ + s), l);
      return text ? text : python_failed();
    }
    if (literal("null")) Py_RETURN_NONE;
    if (literal("true")) Py_RETURN_TRUE;
    if (literal("false")) Py_RETURN_FALSE;
    int64_t begin, end;
    bool is_int;
    if (!number(begin, end, is_int)) return nullptr;
    const char* first = reinterpret_cast<const char*>(b_ + begin);
    const char* last = reinterpret_cast<const char*>(b_ + end);
    PyObject* out;
    if (is_int) {
      const std::string digits(first, last);  // PyLong_FromString needs a terminated string; any length is exact
      out = PyLong_FromString(digits.c_str(), nullptr, 10);
    } else {
      double d = 0;
      const auto result = std::from_chars(first, last, d);
      if (result.ec != std::errc() || result.ptr != last) return none("a number out of the float range");
      out = PyFloat_FromDouble(d);
    }
    return out ? out : python_failed();
  }

  PyObject* array(int depth, Context context) {
    ++p_;  // '['
    PyObject* list = PyList_New(0);
    if (list == nullptr) return python_failed();
    ws();
    if (take(']')) return list;
    while (true) {
      PyObject* item = value(depth + 1, context == kAnnotations ? kAnnotation : kOther);
      if (item == nullptr || PyList_Append(list, item) != 0) {
        Py_XDECREF(item);
        Py_DECREF(list);
        return item ? python_failed() : nullptr;
      }
      Py_DECREF(item);
      ws();
      if (take(',')) continue;
      if (take(']')) return list;
      Py_DECREF(list);
      return none("expected ',' or ']'");
    }
  }

  PyObject* object(int depth, Context context) {
    ++p_;  // '{'
    PyObject* dict = PyDict_New();
    if (dict == nullptr) return python_failed();
    bool segmentations_seen = false;
    ws();
    if (!take('}')) {
      while (true) {
        int64_t s, l;
        bool e;
        ws();
        if (!string(s, l, e)) {
          Py_DECREF(dict);
          return nullptr;
        }
        const char* name = reinterpret_cast<const char*>(b_ + s);
        const bool is_annotations = context == kTop && l == 11 && std::memcmp(name, "annotations", 11) == 0;
        const bool is_segmentations = context == kAnnotation && l == 13 && std::memcmp(name, "segmentations", 13) == 0;
        PyObject* key = PyUnicode_FromStringAndSize(name, l);
        ws();
        if (key == nullptr || !take(':')) {
          Py_XDECREF(key);
          Py_DECREF(dict);
          return key ? none("expected ':'") : python_failed();
        }
        if (is_annotations) ++annotations_;
        if (is_segmentations && segmentations_seen) {
          Py_DECREF(key);
          Py_DECREF(dict);
          return none("an annotation with two 'segmentations'");
        }
        segmentations_seen |= is_segmentations;
        PyObject* item = is_segmentations ? segmentations()
                                          : value(depth + 1, is_annotations ? kAnnotations : kOther);
        if (item == nullptr || PyDict_SetItem(dict, key, item) != 0) {
          Py_DECREF(key);
          Py_XDECREF(item);
          Py_DECREF(dict);
          return item ? python_failed() : nullptr;
        }
        Py_DECREF(key);
        Py_DECREF(item);
        ws();
        if (take(',')) continue;
        if (take('}')) break;
        Py_DECREF(dict);
        return none("expected ',' or '}'");
      }
    }
    if (context == kAnnotation) owner_offsets.push_back(static_cast<int64_t>(frame_start.size()));
    return dict;
  }

  PyObject* segmentations() {
    ws();
    if (!take('[')) return none("'segmentations' that is not a list");
    PyObject* list = PyList_New(0);
    if (list == nullptr) return python_failed();
    ws();
    if (take(']')) return list;
    while (true) {
      ws();
      bool present = false;
      if (literal("null")) {
        present = false;
      } else if (peek('{')) {
        if (!frame(present)) {
          Py_DECREF(list);
          return nullptr;
        }
      } else {
        Py_DECREF(list);
        return none("a frame that is neither null nor an RLE object");
      }
      if (!present) {
        frame_start.push_back(-1);
        frame_len.push_back(0);
        frame_h.push_back(0);
        frame_w.push_back(0);
        frame_area.push_back(0);
      }
      if (PyList_Append(list, present ? Py_True : Py_None) != 0) {
        Py_DECREF(list);
        return python_failed();
      }
      ws();
      if (take(',')) continue;
      if (take(']')) return list;
      Py_DECREF(list);
      return none("expected ',' or ']' in segmentations");
    }
  }

  // One frame object: an empty one is absent (falsy); otherwise an RLE appended to the table.
  bool frame(bool& present) {
    ++p_;  // '{'
    ws();
    if (take('}')) {
      present = false;
      return true;
    }
    static const char* const names[] = {"size", "counts"};
    int seen = 0;
    int64_t h = 0, w = 0, text_start = -1, text_len = 0;
    bool listed = false;
    while (true) {
      int which;
      if (!key(names, 2, which)) return false;
      if (which >= 0 && (seen >> which) & 1) return fail("a repeated key in an RLE");
      if (which >= 0) seen |= 1 << which;
      ws();
      if (which == 0) {
        if (!rle_size(h, w, /*non_negative=*/true)) return false;
        if (h > (1 << 30) || w > (1 << 30)) return fail("an RLE size out of range");
      } else if (which == 1 && peek('[')) {
        listed = true;
        cnts_.clear();
        ++p_;
        ws();
        if (!take(']')) {
          while (true) {
            ws();
            int64_t x;
            if (!count(x)) return false;
            cnts_.push_back(x);
            ws();
            if (take(',')) continue;
            if (take(']')) break;
            return fail("expected ',' or ']' in counts");
          }
        }
      } else if (which == 1) {
        bool escaped;
        if (!peek('"')) return fail("RLE counts that are neither a list nor a string");
        if (!string(text_start, text_len, escaped)) return false;
      } else if (!skip_value(0)) {
        return false;
      }
      ws();
      if (take(',')) continue;
      if (take('}')) break;
      return fail("expected ',' or '}' in an RLE");
    }
    if (seen != 3) return fail("an RLE without size and counts");
    const size_t begin = buf.size();
    int64_t area = 0;
    if (listed) {  // validated as the general path does: non-negative runs summing to h * w
      if (h * w >= (int64_t{1} << 32)) return fail("a mask of 2**32 pixels or more");
      int64_t total = 0;
      for (size_t i = 0; i < cnts_.size(); ++i) {
        total += cnts_[i];
        if (total > h * w) return fail("runs that do not sum to height*width");
        if (i & 1) area += cnts_[i];
      }
      if (total != h * w) return fail("runs that do not sum to height*width");
      append_compressed(cnts_, buf);
    } else {
      if (check_string(b_ + text_start, text_len, h, w, area) != kOk) return fail("a string that is not a mask");
      buf.append(reinterpret_cast<const char*>(b_ + text_start), static_cast<size_t>(text_len));
    }
    frame_start.push_back(static_cast<int64_t>(begin));
    frame_len.push_back(static_cast<int64_t>(buf.size() - begin));
    frame_h.push_back(h);
    frame_w.push_back(w);
    frame_area.push_back(area);
    present = true;
    return true;
  }
};

const char* kReadGroundTruthDoc =
    "read_ground_truth(buf) -> tuple | str\n\n"
    "Reads a YouTube-VIS annotation JSON held in the writable byte buffer buf (strings are unescaped in place).\n"
    "Returns (data, table, frame_start, frame_length, frame_height, frame_width, frame_area, owner_offsets): data as\n"
    "json.loads gives it except that each annotation's segmentations list holds None (absent) or True (a mask),\n"
    "table the masks' compressed strings end to end, and int64 arrays (as bytes) with owner o the o-th annotation;\n"
    "or a str saying why the file needs the general path.";

PyObject* read_ground_truth(PyObject*, PyObject* args) {
  PyObject* o_buf;
  if (!PyArg_ParseTuple(args, "O", &o_buf)) return nullptr;
  Buffer buf;
  if (!acquire(o_buf, buf, 1, 'b', true, "buf")) return nullptr;
  GtReader reader(buf.data<uint8_t>(), buf.size());
  PyObject* data = reader.read();  // builds Python objects, so it holds the GIL
  if (data == nullptr) return PyUnicode_FromString(reader.why.c_str());
  PyObject* table = PyBytes_FromStringAndSize(reader.buf.data(), static_cast<Py_ssize_t>(reader.buf.size()));
  if (table == nullptr) {
    Py_DECREF(data);
    return nullptr;
  }
  return Py_BuildValue("(NNNNNNNN)", data, table, to_bytes(reader.frame_start), to_bytes(reader.frame_len),
                       to_bytes(reader.frame_h), to_bytes(reader.frame_w), to_bytes(reader.frame_area),
                       to_bytes(reader.owner_offsets));
}

// ------------------------------------------------------------------------------------------------ match_problems
const char* kMatchProblemsDoc =
    "match_problems(ious, dt_offsets, gt_offsets, gt_ignore, gt_crowd, gt_nonzero, thresholds, matched_out,\n"
    "               matched_ignored_out) -> None\n\n"
    "The official greedy matching (evaluateVid) of every problem (a video and category) in every area range at every\n"
    "IoU threshold. Problem p has the ranked predictions dt_offsets[p]:dt_offsets[p+1] and the tracks (official\n"
    "order) gt_offsets[p]:gt_offsets[p+1]; its IoUs are row-major (prediction-major) in ious, after those of the\n"
    "earlier problems. gt_ignore: int8 [A, G]; gt_crowd, gt_nonzero (annotation id != 0): int8 [G]; thresholds:\n"
    "float64 [T], already min(t, 1 - 1e-10). Writes int8 [A, T, D]: matched (to a track with a non-zero id) and\n"
    "matched_ignored (to an ignored track). Tracks are tried non-ignored first (stable); a prediction takes the free\n"
    "track (crowd tracks are always free) with the highest IoU >= t, the later track winning ties; once a\n"
    "non-ignored track is found, ignored ones are not tried.";

PyObject* match_problems(PyObject*, PyObject* args) {
  PyObject* o[9];
  if (!PyArg_ParseTuple(args, "OOOOOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8]))
    return nullptr;
  Buffer ious, dto_b, gto_b, ignore_b, crowd_b, nonzero_b, thr_b, matched_b, matched_ig_b;
  if (!acquire(o[0], ious, 8, 'f', false, "ious") || !acquire(o[1], dto_b, 8, 'i', false, "dt_offsets") ||
      !acquire(o[2], gto_b, 8, 'i', false, "gt_offsets") || !acquire(o[3], ignore_b, 1, 'i', false, "gt_ignore") ||
      !acquire(o[4], crowd_b, 1, 'i', false, "gt_crowd") || !acquire(o[5], nonzero_b, 1, 'i', false, "gt_nonzero") ||
      !acquire(o[6], thr_b, 8, 'f', false, "thresholds") || !acquire(o[7], matched_b, 1, 'i', true, "matched_out") ||
      !acquire(o[8], matched_ig_b, 1, 'i', true, "matched_ignored_out"))
    return nullptr;
  const int64_t num_problems = dto_b.size() - 1;
  if (num_problems < 0 || !check_size(gto_b, num_problems + 1, "gt_offsets")) return nullptr;
  const int64_t* dto = dto_b.data<int64_t>();
  const int64_t* gto = gto_b.data<int64_t>();
  const int64_t num_d = dto[num_problems], num_g = gto[num_problems], num_t = thr_b.size();
  if (dto[0] != 0 || gto[0] != 0 || num_g != crowd_b.size() || num_g != nonzero_b.size()) {
    PyErr_SetString(PyExc_ValueError, "match_problems: offsets and per-track arrays disagree");
    return nullptr;
  }
  int64_t pairs = 0;
  for (int64_t p = 0; p < num_problems; ++p) {
    if (dto[p + 1] < dto[p] || gto[p + 1] < gto[p]) {
      PyErr_SetString(PyExc_ValueError, "match_problems: offsets must not decrease");
      return nullptr;
    }
    pairs += (dto[p + 1] - dto[p]) * (gto[p + 1] - gto[p]);
  }
  const int64_t per_area = num_t * num_d;
  const int64_t num_a = per_area > 0 ? matched_b.size() / per_area : 0;
  if (!check_size(ious, pairs, "ious") || !check_size(matched_b, num_a * per_area, "matched_out") ||
      !check_size(matched_ig_b, num_a * per_area, "matched_ignored_out") ||
      (per_area > 0 && !check_size(ignore_b, num_a * num_g, "gt_ignore")))
    return nullptr;
  const double* iou = ious.data<double>();
  const int8_t* ignore_all = ignore_b.data<int8_t>();
  const int8_t* crowd = crowd_b.data<int8_t>();
  const int8_t* nonzero = nonzero_b.data<int8_t>();
  const double* thr = thr_b.data<double>();
  int8_t* matched = matched_b.data<int8_t>();
  int8_t* matched_ig = matched_ig_b.data<int8_t>();
  Py_BEGIN_ALLOW_THREADS;
  std::memset(matched, 0, static_cast<size_t>(num_a * per_area));
  std::memset(matched_ig, 0, static_cast<size_t>(num_a * per_area));
  std::vector<int64_t> order;
  std::vector<int8_t> taken;
  int64_t pair0 = 0;
  for (int64_t p = 0; p < num_problems; ++p) {
    const int64_t d0 = dto[p], nd = dto[p + 1] - dto[p], g0 = gto[p], ng = gto[p + 1] - gto[p];
    if (nd > 0 && ng > 0) {
      const double* block = iou + pair0;
      for (int64_t a = 0; a < num_a; ++a) {
        const int8_t* ig = ignore_all + a * num_g + g0;
        order.clear();
        for (int64_t g = 0; g < ng; ++g)
          if (!ig[g]) order.push_back(g);
        for (int64_t g = 0; g < ng; ++g)
          if (ig[g]) order.push_back(g);
        for (int64_t t = 0; t < num_t; ++t) {
          taken.assign(static_cast<size_t>(ng), 0);
          int8_t* m_out = matched + (a * num_t + t) * num_d + d0;
          int8_t* mi_out = matched_ig + (a * num_t + t) * num_d + d0;
          for (int64_t d = 0; d < nd; ++d) {
            const double* row = block + d * ng;
            double best = thr[t];
            int64_t m = -1;
            for (int64_t k = 0; k < ng; ++k) {
              const int64_t g = order[k];
              if (taken[g] && !crowd[g0 + g]) continue;
              if (m > -1 && !ig[m] && ig[g]) break;
              if (row[g] < best) continue;
              best = row[g];
              m = g;
            }
            if (m == -1) continue;
            taken[m] = 1;
            m_out[d] = nonzero[g0 + m] ? 1 : 0;
            mi_out[d] = ig[m] ? 1 : 0;
          }
        }
      }
    }
    pair0 += nd * ng;
  }
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

// ------------------------------------------------------------------------------------------------ encode_tracks

// A non-negative exact int (not bool) that fits in 62 bits, or -1.
int64_t small_int(PyObject* v) {
  if (!PyLong_CheckExact(v)) return -1;
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
  if (overflow != 0 || x < 0 || x > (int64_t{1} << 62)) {
    PyErr_Clear();
    return -1;
  }
  return x;
}

const char* kEncodeTracksDoc =
    "encode_tracks(tracks) -> tuple | int\n\n"
    "The frame table of ground-truth tracks (a list of per-frame segmentation lists) for the common shapes only:\n"
    "a falsy frame is absent; an RLE {'size': [h, w], 'counts': ...} with exact non-negative int sizes and counts\n"
    "either a list of exact non-negative ints summing to h*w (compressed here as pycocotools' frUncompressedRLE\n"
    "does; h*w < 2**32) or an ASCII str that decodes to a mask of its size. Returns (buf, start, length, height,\n"
    "width, area, offsets) (bytes; int64 arrays as bytes), or the flat index of the first frame of another shape\n"
    "(polygons, bytes, bad values), which the caller hands to the general path.";

PyObject* encode_tracks(PyObject*, PyObject* args) {
  PyObject* tracks;
  if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &tracks)) return nullptr;
  std::string buf;
  std::vector<int64_t> start, length, height, width, area, offsets{0}, cnts;
  const Py_ssize_t num_tracks = PyList_GET_SIZE(tracks);
  int64_t frame = 0;
  for (Py_ssize_t k = 0; k < num_tracks; ++k) {
    PyObject* segs = PyList_GET_ITEM(tracks, k);
    if (!PyList_Check(segs)) return PyLong_FromLongLong(frame);
    const Py_ssize_t num_frames = PyList_GET_SIZE(segs);
    for (Py_ssize_t f = 0; f < num_frames; ++f, ++frame) {
      PyObject* seg = PyList_GET_ITEM(segs, f);
      const bool plain = seg == Py_None || PyDict_CheckExact(seg) || PyList_CheckExact(seg);
      const int truth = plain ? PyObject_IsTrue(seg) : -1;
      if (truth < 0) {
        PyErr_Clear();
        return PyLong_FromLongLong(frame);
      }
      if (truth == 0) {
        start.push_back(-1);
        length.push_back(0);
        height.push_back(0);
        width.push_back(0);
        area.push_back(0);
        continue;
      }
      if (!PyDict_CheckExact(seg)) return PyLong_FromLongLong(frame);
      PyObject* size = PyDict_GetItemString(seg, "size");
      PyObject* counts = PyDict_GetItemString(seg, "counts");
      if (size == nullptr || counts == nullptr || !PyList_CheckExact(size) || PyList_GET_SIZE(size) != 2)
        return PyLong_FromLongLong(frame);
      const int64_t h = small_int(PyList_GET_ITEM(size, 0)), w = small_int(PyList_GET_ITEM(size, 1));
      if (h < 0 || w < 0 || h > (int64_t{1} << 30) || w > (int64_t{1} << 30)) return PyLong_FromLongLong(frame);
      const size_t begin = buf.size();
      int64_t a = 0;
      if (PyList_CheckExact(counts)) {
        if (h * w >= (int64_t{1} << 32)) return PyLong_FromLongLong(frame);
        const Py_ssize_t m = PyList_GET_SIZE(counts);
        cnts.resize(static_cast<size_t>(m));
        int64_t total = 0;
        for (Py_ssize_t i = 0; i < m; ++i) {
          const int64_t x = small_int(PyList_GET_ITEM(counts, i));
          if (x < 0) return PyLong_FromLongLong(frame);
          total += x;
          if (total > h * w) return PyLong_FromLongLong(frame);
          if (i & 1) a += x;
          cnts[static_cast<size_t>(i)] = x;
        }
        if (total != h * w) return PyLong_FromLongLong(frame);
        append_compressed(cnts, buf);
      } else if (PyUnicode_CheckExact(counts) && PyUnicode_IS_READY(counts) && PyUnicode_IS_ASCII(counts)) {
        const Py_ssize_t n = PyUnicode_GET_LENGTH(counts);
        const uint8_t* text = static_cast<const uint8_t*>(PyUnicode_DATA(counts));
        if (check_string(text, n, h, w, a) != kOk) return PyLong_FromLongLong(frame);
        buf.append(reinterpret_cast<const char*>(text), static_cast<size_t>(n));
      } else {
        return PyLong_FromLongLong(frame);
      }
      start.push_back(static_cast<int64_t>(begin));
      length.push_back(static_cast<int64_t>(buf.size() - begin));
      height.push_back(h);
      width.push_back(w);
      area.push_back(a);
    }
    offsets.push_back(frame);
  }
  PyObject* text = PyBytes_FromStringAndSize(buf.data(), static_cast<Py_ssize_t>(buf.size()));
  if (text == nullptr) return nullptr;
  return Py_BuildValue("(NNNNNNN)", text, to_bytes(start), to_bytes(length), to_bytes(height), to_bytes(width),
                       to_bytes(area), to_bytes(offsets));
}

PyMethodDef kMethods[] = {
    {"rle_areas", rle_areas, METH_VARARGS, kRleAreasDoc},
    {"pair_sums", pair_sums, METH_VARARGS, kPairSumsDoc},
    {"read_results", read_results, METH_VARARGS, kReadResultsDoc},
    {"match_problems", match_problems, METH_VARARGS, kMatchProblemsDoc},
    {"encode_tracks", encode_tracks, METH_VARARGS, kEncodeTracksDoc},
    {"read_ground_truth", read_ground_truth, METH_VARARGS, kReadGroundTruthDoc},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

#define SEQFORMER_CONCAT_(a, b) a##b
#define SEQFORMER_CONCAT(a, b) SEQFORMER_CONCAT_(a, b)
#define SEQFORMER_STR_(a) #a
#define SEQFORMER_STR(a) SEQFORMER_STR_(a)

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, SEQFORMER_STR(TORCH_EXTENSION_NAME),
                              "Compiled helpers of seqformer's YouTube-VIS evaluator.", -1, kMethods};

PyMODINIT_FUNC SEQFORMER_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&kModule); }
