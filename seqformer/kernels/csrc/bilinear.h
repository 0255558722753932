// Bilinear sampling geometry shared by the CPU and CUDA kernels.
//
// A normalised location (x, y) on a level of size (h, w) maps to pixel coordinates (x*w - 0.5, y*h - 0.5): the
// align_corners=False convention of F.grid_sample on the grid 2*loc - 1. Corners outside the map contribute zero
// (grid_sample's padding_mode="zeros"); a location whose four corners are all outside is skipped.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MSDA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MSDA_HOST_DEVICE inline
#endif

namespace msda {

MSDA_HOST_DEVICE float floor_of(float v) { return floorf(v); }
MSDA_HOST_DEVICE double floor_of(double v) { return floor(v); }

// The four neighbours of a sampling point, in the order (top-left, top-right, bottom-left, bottom-right).
template <typename T>
struct Corners {
  int64_t offset[4];  // row index inside the level (y * w + x); meaningful only where valid
  bool valid[4];      // the neighbour lies inside the map
  T weight[4];        // bilinear weights (they sum to one)
  T frac_y, frac_x;   // fractional parts; the weights' derivatives are built from them
};

// The cell of a sampling point: the top-left neighbour (x0, y0) and the fractional parts (fx, fy) of the pixel
// coordinates. Returns false, leaving the outputs unset, when no neighbour of (loc_x, loc_y) lies inside an h x w map
// (NaN locations included).
template <typename T>
MSDA_HOST_DEVICE bool bilinear_cell(T loc_x, T loc_y, int64_t h, int64_t w, int64_t& x0, int64_t& y0, T& fx, T& fy) {
  const T y = loc_y * static_cast<T>(h) - static_cast<T>(0.5);
  const T x = loc_x * static_cast<T>(w) - static_cast<T>(0.5);
  // Written as a negated conjunction so that NaN locations are skipped like out-of-range ones.
  if (!(y > static_cast<T>(-1) && x > static_cast<T>(-1) && y < static_cast<T>(h) && x < static_cast<T>(w))) {
    return false;
  }
  const T y_floor = floor_of(y);
  const T x_floor = floor_of(x);
  y0 = static_cast<int64_t>(y_floor);
  x0 = static_cast<int64_t>(x_floor);
  fy = y - y_floor;
  fx = x - x_floor;
  return true;
}

// Fills `c` and returns true when at least one neighbour of (loc_x, loc_y) lies inside an h x w map.
template <typename T>
MSDA_HOST_DEVICE bool bilinear_corners(T loc_x, T loc_y, int64_t h, int64_t w, Corners<T>& c) {
  int64_t x0, y0;
  T fx, fy;
  if (!bilinear_cell(loc_x, loc_y, h, w, x0, y0, fx, fy)) return false;
  const int64_t y1 = y0 + 1;
  const int64_t x1 = x0 + 1;
  const T gy = static_cast<T>(1) - fy;
  const T gx = static_cast<T>(1) - fx;
  c.frac_y = fy;
  c.frac_x = fx;
  c.weight[0] = gy * gx;
  c.weight[1] = gy * fx;
  c.weight[2] = fy * gx;
  c.weight[3] = fy * fx;
  const bool top = y0 >= 0, bottom = y1 <= h - 1, left = x0 >= 0, right = x1 <= w - 1;
  c.valid[0] = top && left;
  c.valid[1] = top && right;
  c.valid[2] = bottom && left;
  c.valid[3] = bottom && right;
  c.offset[0] = y0 * w + x0;
  c.offset[1] = y0 * w + x1;
  c.offset[2] = y1 * w + x0;
  c.offset[3] = y1 * w + x1;
  return true;
}

// fx, fy are the fractional parts of the pixel coordinates (Corners::frac_x, frac_y).
template <typename T>
MSDA_HOST_DEVICE void bilinear_coordinate_grads(T fx, T fy, T g0, T g1, T g2, T g3, T& d_x, T& d_y) {
  const T gy = static_cast<T>(1) - fy, gx = static_cast<T>(1) - fx;
  d_x = gy * (g1 - g0) + fy * (g3 - g2);
  d_y = gx * (g2 - g0) + fx * (g3 - g1);
}

template <typename T>
MSDA_HOST_DEVICE void bilinear_coordinate_grads(const Corners<T>& c, const T g[4], T& d_x, T& d_y) {
  bilinear_coordinate_grads(c.frac_x, c.frac_y, g[0], g[1], g[2], g[3], d_x, d_y);
}

}  // namespace msda
