// kvserve's per-token log-probabilities: for each row of a logits matrix, the log-softmax of
// one chosen token and the row's `top` most likely tokens with theirs, without ever writing
// the [N, V] log-softmax out.
//
// Shapes (N rows, V vocabulary, K = top):
//   logits       float32 [N, V], C-contiguous (one row per sampled or scored position)
//   tokens       int64   [N]      the token whose logprob each row reports, 0 <= t < V
//   -> logprob   float32 [N]      logits[i, t_i] - logsumexp(logits[i])
//      top_ids   int64   [N, K]   by logit descending (= logprob descending), ties to the
//                                 lower token id; 0 <= K <= min(64, V)
//      top_lp    float32 [N, K]
// logsumexp(row) = max + log(sum(exp(x - max))); every logprob is x - logsumexp in double,
// rounded once to float32. -inf logits contribute 0 (logprob -inf). A row holding a NaN or a
// +inf, or only -inf, has a NaN logsumexp: all its logprobs are NaN and, NaNs being all
// equal for the order, its top ids are 0..K-1 (kernels.reference says the same).
//
// Per row, two passes, the second over a row that the first left in L2 (a 50257-float row is
// 200 KB):
//   1. top-K and max: a K-sized list sorted by (value desc, id asc). The first K entries go
//      in unconditionally; after that an entry goes in only when it beats the list's K-th
//      value (strictly: an equal value comes later, so it has the higher id and loses).
//      16 entries are tested with one vector compare against that threshold, 64 per branch;
//      most of V is rejected there, and the scalar insertion runs about K*ln(V/K) times per
//      row (random order; an ascending row inserts every entry: K*V steps at worst). The max
//      is then the list's first value; K = 0 takes a plain max pass instead.
//   2. sum(exp(x - max)): exp by range reduction (x = n ln2 + r, |r| <= ln2/2), a degree-6
//      polynomial for e^r (fitted here, relative error 2e-8 before float rounding) and
//      scalef by 2^n; below -87 the term is 0 (never a denormal). Float lanes hold at most 16
//      terms each before they are added into double lanes, so the summation error stays near
//      1e-7 relative whatever V is; NaN terms propagate, which is how a NaN row is found.
//   While pass 2 runs (compute-bound), the next row of the same thread is prefetched into L2,
//   so its pass 1 finds it there: memory and arithmetic overlap.
//
// Dispatch: an AVX-512 path (F/BW/VL/DQ + FMA, the same set as the attention kernel's, in
// functions compiled with target attributes; the module is built for baseline x86-64, never
// -march=native), chosen at run time with __builtin_cpu_supports (kernels/isa.h); otherwise a
// portable path in plain C++ blocks of 16 that the auto-vectoriser turns into SSE2 (same
// algorithm and exp).
// set_isa("portable") forces the portable path (kernels.set_isa sets it with the attention
// kernel's).
//
// Threads: rows are split into `threads` contiguous ranges, the caller taking the first and
// short-lived std::threads the rest. A row's arithmetic never depends on which thread runs it
// or on the other rows, so results are bit-identical across thread counts. The GIL is
// released during the work (tokens are copied first, so no Python thread can change them
// under it).
//
// Why hand-written: numpy needs a full [N, V] log-softmax plus argpartition (12 ms for
// 32 x 50257, top 5); ONNX Runtime's ReduceLogSumExp + TopK took 15 ms. Neither fuses the
// max, the top-K and the sum into one read of the row, which is what makes this < 1 ms.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "isa.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LP_X86 1
#else
#define LP_X86 0
#endif

namespace py = pybind11;

namespace {

constexpr int kMaxTop = 64;
constexpr int kMaxThreads = 64;
constexpr float kInf = std::numeric_limits<float>::infinity();

// e^r on [-ln2/2, ln2/2], r^0..r^6 (a weighted least-squares fit to the relative error,
// 1.7e-8 with these float coefficients).
constexpr float kC2 = 0.49999991059303284f, kC3 = 0.16666419804096222f,
                kC4 = 0.04166822507977486f, kC5 = 0.008374815806746483f,
                kC6 = 0.0013836845755577087f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;
constexpr float kLn2Hi = 0.693145751953125f;  // few mantissa bits: n * kLn2Hi is exact
constexpr float kLn2Lo = 1.42860682030941723212e-6f;
constexpr float kExpFloor = -87.0f;  // e^-87 = 1.6e-38, still a normal float

// Pass 2: terms summed in each float lane before the lanes are added into double ones.
constexpr int64_t kLaneRun = 16;

// ---------------------------------------------------------------------------------------------
// The top-K list of one row: sorted by value descending; entries arrive in id order, so an
// entry equal to one already there goes after it (ties to the lower id).

struct TopList {
  float val[kMaxTop];
  int64_t id[kMaxTop];
  int k = 0;  // capacity
  int n = 0;  // entries so far (n == k once the first k entries are in)

  void insert(float x, int64_t j) {
    int p = n < k ? n : k - 1;  // when full, the last entry drops out
    while (p > 0 && val[p - 1] < x) {
      val[p] = val[p - 1];
      id[p] = id[p - 1];
      --p;
    }
    val[p] = x;
    id[p] = j;
    if (n < k) ++n;
  }
};

// Entries `at + bit` of `mask` were above the threshold when tested; test each against the
// current threshold (it rises as entries go in) and insert. Returns the new threshold.
inline float take_candidates(const float* x, int64_t at, uint32_t mask, TopList& top,
                             float thr) {
  while (mask) {
    const int b = __builtin_ctz(mask);
    mask &= mask - 1;
    const float v = x[at + b];
    if (v > thr) {
      top.insert(v, at + b);
      thr = top.val[top.k - 1];
    }
  }
  return thr;
}

// The first K entries go in unconditionally (so -inf and ties fill the list by id).
inline void prelude(const float* x, TopList& top) {
  for (int64_t j = 0; j < top.k; ++j) top.insert(x[j], j);
}

struct RowOut {
  float* logprob;    // [1]
  int64_t* top_ids;  // [K]
  float* top_lp;     // [K]
};

// double -> float: an out-of-range value becomes +-inf (IEEE conversion, defined for
// floating types: their range includes the infinities).
inline float to_f32(double v) { return static_cast<float>(v); }

void finish_row(const float* x, int64_t token, const TopList& top, float max, double sum,
                const RowOut& out) {
  const double lse = static_cast<double>(max) + std::log(sum);
  if (std::isnan(lse)) {  // NaN or +inf in the row, or only -inf
    const float nan = std::numeric_limits<float>::quiet_NaN();
    *out.logprob = nan;
    for (int i = 0; i < top.k; ++i) {
      out.top_ids[i] = i;
      out.top_lp[i] = nan;
    }
    return;
  }
  *out.logprob = to_f32(static_cast<double>(x[token]) - lse);
  for (int i = 0; i < top.k; ++i) {
    out.top_ids[i] = top.id[i];
    out.top_lp[i] = to_f32(static_cast<double>(top.val[i]) - lse);
  }
}

// ---------------------------------------------------------------------------------------------
// Portable path: blocks of 16 in plain loops the auto-vectoriser can take (SSE2 at baseline).

constexpr int kLanes = 16;

inline float exp_portable(float d) {
  // d <= 0 here (the caller clamps; NaN handled by the caller). Round to nearest with the
  // 1.5 * 2^23 trick: |d * log2e| < 2^22, and the build never sets -ffast-math.
  const bool keep = d >= kExpFloor;
  d = keep ? d : kExpFloor;
  const float n = (d * kLog2e + 12582912.0f) - 12582912.0f;
  float r = d - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = kC6;
  p = p * r + kC5;
  p = p * r + kC4;
  p = p * r + kC3;
  p = p * r + kC2;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return keep ? p * scale : 0.0f;
}

// lane_max[l] = max(lane_max[l], b[l]) (NaN ignored). (Functions of their own, with restrict
// pointers and no unrolling first, so that GCC vectorises them.)
inline void max_block(const float* __restrict b, float* __restrict lane_max) {
#pragma GCC unroll 1
  for (int l = 0; l < kLanes; ++l) lane_max[l] = b[l] > lane_max[l] ? b[l] : lane_max[l];
}

// Whether any b[l] > thr.
inline bool any_above(const float* __restrict b, float thr) {
  int32_t hit[kLanes];
#pragma GCC unroll 1
  for (int l = 0; l < kLanes; ++l) hit[l] = b[l] > thr ? -1 : 0;
  int32_t any = 0;
  for (int l = 0; l < kLanes; ++l) any |= hit[l];
  return any != 0;
}

// Pass 1, as scan_avx512 (K > 0: the max is the list's first value).
float scan_portable(const float* x, int64_t V, TopList& top) {
  if (top.k == 0) {
    float lane_max[kLanes];
    std::fill(lane_max, lane_max + kLanes, -kInf);
    int64_t j = 0;
    for (; j + kLanes <= V; j += kLanes) max_block(x + j, lane_max);
    float m = -kInf;
    for (; j < V; ++j) m = x[j] > m ? x[j] : m;
    for (int l = 0; l < kLanes; ++l) m = lane_max[l] > m ? lane_max[l] : m;
    return m;
  }
  prelude(x, top);
  float thr = top.val[top.k - 1];
  int64_t j = top.k;
  for (; j + kLanes <= V; j += kLanes) {
    if (any_above(x + j, thr)) {
      uint32_t mask = 0;
      for (int l = 0; l < kLanes; ++l) mask |= static_cast<uint32_t>(x[j + l] > thr) << l;
      thr = take_candidates(x, j, mask, top, thr);
    }
  }
  for (; j < V; ++j) {
    if (x[j] > thr) {
      top.insert(x[j], j);
      thr = top.val[top.k - 1];
    }
  }
  return top.val[0];
}

double sum_exp_portable(const float* x, int64_t V, float m) {
  double total = 0.0;
  float acc[kLanes];
  int64_t j = 0;
  while (j < V) {
    std::fill(acc, acc + kLanes, 0.0f);
    const int64_t stop = std::min(V, j + kLaneRun * kLanes);
    for (; j + kLanes <= stop; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float d = x[j + l] - m;
        const float e = exp_portable(d < 0.0f ? d : 0.0f);
        acc[l] += d == d ? e : d;  // NaN propagates into the sum
      }
    }
    for (; j < stop; ++j) {
      const float d = x[j] - m;
      acc[0] += d == d ? exp_portable(d < 0.0f ? d : 0.0f) : d;
    }
    for (int l = 0; l < kLanes; ++l) total += acc[l];
  }
  return total;
}

void row_portable(const float* x, int64_t V, int k, int64_t token, const float* /*next*/,
                  const RowOut& out) {
  TopList top;
  top.k = k;
  const float m = scan_portable(x, V, top);
  finish_row(x, token, top, m, sum_exp_portable(x, V, m), out);
}

// ---------------------------------------------------------------------------------------------
// AVX-512 path.

#if LP_X86
#define LP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

// e^d for d <= 0; NaN stays NaN; d < -87 gives 0 (those lanes are masked off at the end,
// whatever inf or NaN their arithmetic made on the way). One-step reduction r = d - n*ln2_f
// (one FMA rounding): ln2_f is 1.9e-9 off ln2, so the term is off by n * 1.9e-9 relative
// (2.4e-7 at n = -126, where e^d is < 1e-37 of the sum; 2e-8 at n = -10).
LP_AVX512 inline __m512 exp512(__m512 d) {
  const __mmask16 keep = _mm512_cmp_ps_mask(d, _mm512_set1_ps(kExpFloor), _CMP_NLT_UQ);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(d, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2), d);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kC6), r, _mm512_set1_ps(kC5));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(keep, p, n);
}

LP_AVX512 inline __mmask16 tail_mask(int64_t rem) {
  return static_cast<__mmask16>((1u << rem) - 1u);
}

// Pass 1: top-K, and the max. K = 0: a max pass (NaN lanes ignored: max returns its second
// operand on NaN). K > 0: the max is the list's first value. That holds for every row
// without NaN; a row with one comes out NaN whatever max is used (its NaN term reaches the
// sum in pass 2), so the max needs no pass of its own.
LP_AVX512 float scan_avx512(const float* x, int64_t V, TopList& top) {
  if (top.k == 0) {
    __m512 vmax = _mm512_set1_ps(-kInf), vmax1 = vmax;
    int64_t j = 0;
    for (; j + 32 <= V; j += 32) {
      vmax = _mm512_max_ps(_mm512_loadu_ps(x + j), vmax);
      vmax1 = _mm512_max_ps(_mm512_loadu_ps(x + j + 16), vmax1);
    }
    vmax = _mm512_max_ps(vmax1, vmax);
    for (; j + 16 <= V; j += 16) vmax = _mm512_max_ps(_mm512_loadu_ps(x + j), vmax);
    if (j < V)
      vmax = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-kInf), tail_mask(V - j), x + j),
                           vmax);
    return _mm512_reduce_max_ps(vmax);
  }
  prelude(x, top);
  float thr = top.val[top.k - 1];
  __m512 vthr = _mm512_set1_ps(thr);
  int64_t j = top.k;
  for (; j + 64 <= V; j += 64) {
    const __m512 a0 = _mm512_loadu_ps(x + j), a1 = _mm512_loadu_ps(x + j + 16),
                 a2 = _mm512_loadu_ps(x + j + 32), a3 = _mm512_loadu_ps(x + j + 48);
    const __mmask16 c0 = _mm512_cmp_ps_mask(a0, vthr, _CMP_GT_OQ),
                    c1 = _mm512_cmp_ps_mask(a1, vthr, _CMP_GT_OQ),
                    c2 = _mm512_cmp_ps_mask(a2, vthr, _CMP_GT_OQ),
                    c3 = _mm512_cmp_ps_mask(a3, vthr, _CMP_GT_OQ);
    if (_kortestz_mask16_u8(_kor_mask16(c0, c1), _kor_mask16(c2, c3))) continue;
    thr = take_candidates(x, j, c0, top, thr);
    thr = take_candidates(x, j + 16, c1, top, thr);
    thr = take_candidates(x, j + 32, c2, top, thr);
    thr = take_candidates(x, j + 48, c3, top, thr);
    vthr = _mm512_set1_ps(thr);
  }
  for (; j < V; j += 16) {
    const __mmask16 live = V - j >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(V - j);
    const __m512 a = _mm512_maskz_loadu_ps(live, x + j);
    const __mmask16 c = _mm512_mask_cmp_ps_mask(live, a, vthr, _CMP_GT_OQ);
    if (c) {
      thr = take_candidates(x, j, c, top, thr);
      vthr = _mm512_set1_ps(thr);
    }
  }
  return top.val[0];
}

LP_AVX512 inline __m512d widen_sum(__m512d total, __m512 s) {
  total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
  return _mm512_add_pd(
      total, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))));
}

// Pass 2: sum of exp(x - m); `next` (or null) is prefetched into L2 along the way, one cache
// line per vector of this row (rows of equal length: it keeps pace).
LP_AVX512 double sum_exp_avx512(const float* x, int64_t V, float m, const float* next) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512d total = _mm512_setzero_pd();
  int64_t j = 0;
  while (j + 64 <= V) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const int64_t stop = std::min(V, j + kLaneRun * 64);  // 4 accumulators x 16 lanes
    for (; j + 64 <= stop; j += 64) {
      if (next) {
        _mm_prefetch(reinterpret_cast<const char*>(next + j), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(next + j + 16), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(next + j + 32), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(next + j + 48), _MM_HINT_T1);
      }
      s0 = _mm512_add_ps(s0, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j), vm)));
      s1 = _mm512_add_ps(s1, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j + 16), vm)));
      s2 = _mm512_add_ps(s2, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j + 32), vm)));
      s3 = _mm512_add_ps(s3, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j + 48), vm)));
    }
    total = widen_sum(total, _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  }
  if (j < V) {  // under 64 left: 16 at a time, the last one masked
    __m512 s = _mm512_setzero_ps();
    for (; j < V; j += 16) {
      const __mmask16 live = V - j >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(V - j);
      const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + j), vm));
      s = _mm512_mask_add_ps(s, live, s, e);
    }
    total = widen_sum(total, s);
  }
  return _mm512_reduce_add_pd(total);
}

LP_AVX512 void row_avx512(const float* x, int64_t V, int k, int64_t token, const float* next,
                          const RowOut& out) {
  TopList top;
  top.k = k;
  const float m = scan_avx512(x, V, top);
  finish_row(x, token, top, m, sum_exp_avx512(x, V, m, next), out);
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch.

// Levels as kernels/isa.h numbers them (no VNNI pass here).
enum class Isa { portable, avx512 };
constexpr int kTopIsa = static_cast<int>(Isa::avx512);

const Isa g_best = static_cast<Isa>(kv_isa::best_level(kTopIsa));
std::atomic<Isa> g_isa{g_best};

using RowFn = void (*)(const float*, int64_t, int, int64_t, const float*, const RowOut&);

RowFn row_function(Isa isa) {
#if LP_X86
  if (isa == Isa::avx512) return row_avx512;
#endif
  (void)isa;
  return row_portable;
}

struct Problem {
  const float* logits;  // [N, V]
  int64_t N, V;
  int k;
  std::vector<int64_t> tokens;  // [N], a private copy (validated)
  float* logprob;               // [N]
  int64_t* top_ids;             // [N, K]
  float* top_lp;                // [N, K]
};

void run_rows(const Problem& P, RowFn row, int64_t first, int64_t last) {
  for (int64_t i = first; i < last; ++i) {
    const float* x = P.logits + i * P.V;
    const float* next = i + 1 < last ? x + P.V : nullptr;
    row(x, P.V, P.k, P.tokens[static_cast<size_t>(i)], next,
        RowOut{P.logprob + i, P.top_ids + i * P.k, P.top_lp + i * P.k});
  }
}

void execute(const Problem& P, int threads) {
  const RowFn row = row_function(g_isa.load(std::memory_order_relaxed));
  const int64_t parts = std::min<int64_t>(threads, P.N);
  std::vector<std::thread> helpers;
  for (int64_t t = 1; t < parts; ++t) {
    const int64_t first = P.N * t / parts, last = P.N * (t + 1) / parts;
    try {
      helpers.emplace_back(run_rows, std::cref(P), row, first, last);
    } catch (const std::system_error&) {  // no thread to be had: the caller does it
      run_rows(P, row, first, last);
    }
  }
  run_rows(P, row, 0, parts > 0 ? P.N / parts : 0);
  for (auto& h : helpers) h.join();
}

// ---------------------------------------------------------------------------------------------
// Arguments: every malformed input is a ValueError.

[[noreturn]] void fail(const std::string& message) { throw py::value_error(message); }

constexpr int kNpyAligned = 0x0100;  // NPY_ARRAY_ALIGNED

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

py::array checked(const py::object& obj, const char* name, const py::dtype& dtype,
                  const char* dtype_name, int ndim, const char* shape_name) {
  if (!py::isinstance<py::array>(obj))
    fail(std::string(name) + " must be a numpy array, got " +
         std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(dtype))
    fail(std::string(name) + " must be " + dtype_name + ", got " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim)
    fail(std::string(name) + " must be " + shape_name + ", got shape " + shape_of(a));
  if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
  if (!(a.flags() & kNpyAligned)) fail(std::string(name) + " must be aligned");
  return a;
}

py::tuple token_logprobs(const py::object& logits_o, const py::object& tokens_o, int64_t top,
                         int threads) {
  if (threads < 1 || threads > kMaxThreads)
    fail("threads must be in 1.." + std::to_string(kMaxThreads) + ", got " +
         std::to_string(threads));
  py::array logits = checked(logits_o, "logits", py::dtype::of<float>(), "float32", 2,
                             "[rows, vocab]");
  py::array tokens = checked(tokens_o, "tokens", py::dtype::of<int64_t>(), "int64", 1, "[rows]");
  Problem P;
  P.N = logits.shape(0);
  P.V = logits.shape(1);
  if (P.V < 1) fail("logits must have at least one column (the vocabulary), got shape " +
                    shape_of(logits));
  if (tokens.shape(0) != P.N)
    fail("tokens must be [" + std::to_string(P.N) + "] for logits' rows, got shape " +
         shape_of(tokens));
  const int64_t max_top = std::min<int64_t>(kMaxTop, P.V);
  if (top < 0 || top > max_top)
    fail("top must be in 0.." + std::to_string(max_top) + " (min(64, vocab)), got " +
         std::to_string(top));
  P.k = static_cast<int>(top);
  const int64_t* t = static_cast<const int64_t*>(tokens.data());
  P.tokens.assign(t, t + P.N);
  for (int64_t i = 0; i < P.N; ++i)
    if (P.tokens[static_cast<size_t>(i)] < 0 || P.tokens[static_cast<size_t>(i)] >= P.V)
      fail("tokens[" + std::to_string(i) + "] = " + std::to_string(P.tokens[static_cast<size_t>(i)]) +
           " is outside the vocabulary 0.." + std::to_string(P.V - 1));

  py::array_t<float> logprob(P.N);
  py::array_t<int64_t> top_ids({P.N, top});
  py::array_t<float> top_lp({P.N, top});
  P.logits = static_cast<const float*>(logits.data());
  P.logprob = logprob.mutable_data();
  P.top_ids = top_ids.mutable_data();
  P.top_lp = top_lp.mutable_data();
  if (P.N > 0) {
    py::gil_scoped_release release;
    execute(P, threads);
  }
  return py::make_tuple(logprob, top_ids, top_lp);
}

std::string isa_name(Isa isa) { return kv_isa::kNames[static_cast<int>(isa)]; }

void set_isa(const std::string& name) {
  g_isa = static_cast<Isa>(kv_isa::choose(name, kTopIsa, static_cast<int>(g_best)));
}

}  // namespace

PYBIND11_MODULE(_logprobs, m) {
  m.doc() = "kvserve's per-token log-probabilities kernel (see kernels/__init__.py)";
  m.def("token_logprobs", &token_logprobs, py::arg("logits"), py::arg("tokens"), py::arg("top"),
        py::arg("threads") = 1);
  m.def("set_isa", &set_isa, py::arg("name"));
  m.def("isa", [] { return isa_name(g_isa.load(std::memory_order_relaxed)); });
  m.def("supported", [] { return kv_isa::supported(static_cast<int>(g_best)); });
}
