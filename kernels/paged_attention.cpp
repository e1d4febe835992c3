// kvserve's CPU paged attention: causal attention of a flat batch of query tokens (decoding
// rows and prefill chunks mixed) over KV caches kept in fixed-size blocks.
//
// Shapes (H heads, D head dim, B tokens per block, T tokens this call, S sequences):
//   qkv          float32 [T, 3*H*D]   packed q|k|v per token (GPT-2's c_attn output)
//   key_pool     float32|int8 [num_blocks, H, B, D] outer shape, same bytes per block; inside
//                a block-head the keys are channel-major, NOT [B][D]:
//                  float32: [D][B]       row d = channel d of the block's B tokens
//                  int8:    [D/2][B][2]  channel pairs: 32 bytes = 16 tokens x 2 channels
//                so a query scores 16 tokens per vector op with no horizontal sums (float: one
//                broadcast FMA per channel; int8: one 16-bit multiply-add per channel pair).
//                kernels.gather() / reference.gather() read keys back as [H, tokens, D].
//   value_pool   float32|int8 [num_blocks, H, B, D], token-major as the shape says.
//   block_tables int32 [S, max_blocks]   block ids of each sequence, in position order
//   query_starts int32 [S+1]             sequence s owns qkv rows query_starts[s]..[s+1]-1
//   context_lens int32 [S]               tokens of s already cached before this call
//   out          float32 [T, H*D]
//   key_scale, value_scale float32 [H*D] int8 pools only: value = q * scale[h*D + d];
//                quantisation = clip(rint(x / scale), -127, 127), NaN -> 0.
// Token i of sequence s sits at position p = context_lens[s] + i. A call first writes every
// token's k and v into block block_tables[s][p / B], slot p % B, then (after a barrier) each
// token attends to positions 0..p of its sequence, reading k/v back from the cache.
//
// Dispatch: an AVX-512 path (F/BW/VL/DQ, functions compiled with target attributes; the
// module itself is built for baseline x86-64, no -march=native) for D in {16, 32, 64, 128}
// and B a multiple of 16, chosen at run time with __builtin_cpu_supports (kernels/isa.h);
// otherwise a portable path written for the compiler's auto-vectoriser (online softmax, float
// math).
// set_isa("portable") forces the portable path (tests).
// AVX-512: three passes per (queries, head): scores -> exp -> weighted values. Decode rows
// (chunks under 4 tokens) run one query at a time straight from the pools, prefetching the
// blocks ahead (and the next head's); longer chunks run tiles of 4 queries so each key/value
// row loaded serves 4 queries, int8 values being dequantised once per (sequence, head,
// 32-query group) into a float scratch that stays in L2. int8 keys are scored in integers:
// q is rounded to 16 bits per (query, head) (relative error 2^-15, far below the cache's
// own int8 rounding) and 16-bit multiply-adds (vpmaddwd) score 16 tokens x 2 channels.
//
// Threads: work items (sequence, heads[, 32-query group]) are claimed dynamically by the
// caller and up to threads-1 pool threads, which sleep on a condition variable between calls
// (never spin: ONNX Runtime's pools share the same cores). Writes phase, barrier, attention.
// Each item's arithmetic is the same whatever thread runs it and whatever else is in the
// call, so results are bit-identical across thread counts and batch company.
//
// Why hand-written: ONNX Runtime's GroupQueryAttention takes one contiguous [rows, heads,
// capacity, D] cache per call and dequantises int8 slowly; no library on PyPI ships a CPU
// paged-attention kernel over block tables that a pip install can build.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "isa.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KV_X86 1
#else
#define KV_X86 0
#endif

#include <pthread.h>
#include <unistd.h>

namespace py = pybind11;

namespace {

constexpr int kTile = 4;  // queries per prefill tile (registers: 4 x D/16 accumulators)
constexpr int64_t kGroup = 32;    // queries per prefill work item (scratch reuse across 8 tiles)
constexpr int64_t kTileMin = 4;   // chunks shorter than this run one query at a time
constexpr int64_t kWriteChunk = 16;  // tokens per write work item
constexpr int kMaxThreads = 256;

// ---------------------------------------------------------------------------------------------
// The validated problem: raw pointers and copies of the small index arrays (so the Python
// caller cannot change them between validation and use).

struct Sequence {
  int64_t first_token;  // row of qkv/out holding this chunk's first token
  int64_t num_tokens;   // tokens in this call's chunk
  int64_t context;      // tokens already cached
  int64_t blocks_at;    // offset of this sequence's block ids in Problem::block_ids
};

struct Problem {
  const float* qkv;           // [T, 3*H*D]
  void* key_pool;             // [num_blocks, H, (D, B) or (D/2, B, 2)]: see the top
  void* value_pool;           // [num_blocks, H, B, D]
  float* out;                 // [T, H*D]
  const float* key_scale;     // [H*D] or null (fp32 pools)
  const float* value_scale;   // [H*D] or null
  bool int8;
  int64_t H, B, D, T;
  float inv_sqrt_d;  // 1 / sqrt(D)
  std::vector<Sequence> seqs;
  std::vector<int32_t> block_ids;  // per sequence, the ids of the blocks this call touches
};

struct WriteItem {
  int32_t seq;
  int64_t first, count;  // chunk-relative token range
};

struct Item {
  int32_t seq;
  int32_t head, heads;   // heads head..head+heads-1
  int64_t first, count;  // chunk-relative query range
};

// Where block b of one (sequence, head) lives: base + ids[b] * stride + offset (elements).
struct Blocks {
  const int32_t* ids;
  int64_t stride;
  int64_t offset;
};

// ---------------------------------------------------------------------------------------------
// Writes (one implementation; compiled twice so the AVX-512 copy auto-vectorises wider).

// v rounded half to even (np.rint), saturated to [-limit, limit], NaN -> 0; limit < 2^22.
__attribute__((always_inline)) inline int32_t round_clamped(float v, float limit) {
  v = v == v ? v : 0.0f;
  v = v < -limit ? -limit : v;
  v = v > limit ? limit : v;
  // |v| < 2^22: adding 1.5 * 2^23 leaves a unit ulp, so the sum rounds to the nearest
  // integer, ties to even (the default rounding mode); vectorises where rint would not.
  v = (v + 12582912.0f) - 12582912.0f;
  return static_cast<int32_t>(v);
}

__attribute__((always_inline)) inline void quantize_row(const float* x, const float* scale,
                                                         int64_t n, int8_t* q) {
  for (int64_t d = 0; d < n; ++d)
    q[d] = static_cast<int8_t>(round_clamped(x[d] / scale[d], 127.0f));
}

// Tokens first..first+count-1 of a sequence's chunk into their slots. Keys are channel-major
// in a block, so the loop runs per run of tokens sharing a block, per head, per channel: each
// channel row of a block-head is filled in one stretch rather than one element per token.
__attribute__((always_inline)) inline void write_tokens_body(const Problem& P,
                                                              const WriteItem& w) {
  const Sequence& s = P.seqs[w.seq];
  const int64_t H = P.H, B = P.B, D = P.D, HD = H * D, stride = 3 * HD;
  alignas(64) int8_t qk[16 * 256];  // int8: a run's quantised keys of one head, [t][d]
  for (int64_t i0 = w.first; i0 < w.first + w.count;) {
    const int64_t pos0 = s.context + i0, slot0 = pos0 % B;
    const int64_t run = std::min({w.first + w.count - i0, B - slot0, int64_t{16}});
    const int64_t blk = P.block_ids[s.blocks_at + pos0 / B];
    const float* rows = P.qkv + (s.first_token + i0) * stride;  // [run][3*H*D]
    for (int64_t h = 0; h < H; ++h) {
      const int64_t at = (blk * H + h) * B * D;  // element offset of the block-head
      const float* k = rows + HD + h * D;
      const float* v = rows + 2 * HD + h * D;
      if (!P.int8) {
        float* kd = static_cast<float*>(P.key_pool) + at + slot0;  // [D][B]
        for (int64_t d = 0; d < D; ++d)
          for (int64_t t = 0; t < run; ++t) kd[d * B + t] = k[t * stride + d];
        float* vd = static_cast<float*>(P.value_pool) + at + slot0 * D;  // [B][D]
        for (int64_t t = 0; t < run; ++t) std::memcpy(vd + t * D, v + t * stride, D * 4);
        continue;
      }
      const float* ks = P.key_scale + h * D;
      const float* vs = P.value_scale + h * D;
      int8_t* vd = static_cast<int8_t*>(P.value_pool) + at + slot0 * D;  // [B][D]
      for (int64_t t = 0; t < run; ++t) quantize_row(v + t * stride, vs, D, vd + t * D);
      int8_t* kd = static_cast<int8_t*>(P.key_pool) + at + 2 * slot0;  // [D/2][B][2]
      for (int64_t d0 = 0; d0 < D; d0 += 256) {  // D is unbounded in the portable path
        const int64_t n = std::min<int64_t>(256, D - d0);
        for (int64_t t = 0; t < run; ++t) quantize_row(k + t * stride + d0, ks + d0, n, qk + t * n);
        for (int64_t j = 0; j < n / 2; ++j)
          for (int64_t t = 0; t < run; ++t) {
            kd[(d0 / 2 + j) * 2 * B + 2 * t] = qk[t * n + 2 * j];
            kd[(d0 / 2 + j) * 2 * B + 2 * t + 1] = qk[t * n + 2 * j + 1];
          }
      }
    }
    i0 += run;
  }
}

void write_tokens_portable(const Problem& P, const WriteItem& w) { write_tokens_body(P, w); }

// ---------------------------------------------------------------------------------------------
// Portable attention: one query at a time, online softmax per block.

inline float to_float(float x) { return x; }
inline float to_float(int8_t x) { return static_cast<float>(x); }

// Scores of a block's first n tokens, s[t] = q . k_t: keys [D][B] (float) or channel
// pairs [D/2][B][2] (int8).
inline void score_block(const float* q, const float* kb, int64_t B, int64_t D, int64_t n,
                        float* s) {
  for (int64_t d = 0; d < D; ++d) {
    const float qd = q[d];
    const float* kr = kb + d * B;
    for (int64_t t = 0; t < n; ++t) s[t] += qd * kr[t];
  }
}

inline void score_block(const float* q, const int8_t* kb, int64_t B, int64_t D, int64_t n,
                        float* s) {
  for (int64_t j = 0; j < D / 2; ++j) {
    const float q0 = q[2 * j], q1 = q[2 * j + 1];
    const int8_t* kr = kb + j * 2 * B;
    for (int64_t t = 0; t < n; ++t)
      s[t] += q0 * static_cast<float>(kr[2 * t]) + q1 * static_cast<float>(kr[2 * t + 1]);
  }
}

template <typename T>
void attend_portable(const float* q,        // [D] pre-scaled by key scale / sqrt(D)
                     int64_t last,          // last position attended (inclusive)
                     float* out,            // [D]
                     const float* vscale,   // [D] or null
                     const T* kbase, const T* vbase, const Blocks& blk, int64_t B, int64_t D,
                     std::vector<float>& scratch) {
  scratch.resize(static_cast<size_t>(D + B));
  float* acc = scratch.data();  // [D]
  float* s = acc + D;           // [B]
  std::fill(acc, acc + D, 0.0f);
  float m = -std::numeric_limits<float>::infinity(), l = 0.0f;
  const int64_t end = last + 1;
  for (int64_t b = 0; b * B < end; ++b) {
    const T* kb = kbase + blk.ids[b] * blk.stride + blk.offset;
    const T* vb = vbase + blk.ids[b] * blk.stride + blk.offset;  // [B][D]
    const int64_t n = std::min(B, end - b * B);
    std::fill(s, s + n, 0.0f);
    score_block(q, kb, B, D, n, s);
    float gmax = s[0];
    for (int64_t t = 1; t < n; ++t) gmax = std::max(gmax, s[t]);
    if (gmax > m) {
      const float corr = std::exp(m - gmax);
      l *= corr;
      for (int64_t d = 0; d < D; ++d) acc[d] *= corr;
      m = gmax;
    }
    for (int64_t t = 0; t < n; ++t) {
      const float p = std::exp(s[t] - m);
      l += p;
      const T* vr = vb + t * D;
      for (int64_t d = 0; d < D; ++d) acc[d] += p * to_float(vr[d]);
    }
  }
  const float inv = 1.0f / l;
  for (int64_t d = 0; d < D; ++d) out[d] = acc[d] * inv * (vscale ? vscale[d] : 1.0f);
}

// ---------------------------------------------------------------------------------------------
// AVX-512 attention.

#if KV_X86
#define KV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

KV_AVX512 void write_tokens_avx512(const Problem& P, const WriteItem& w) {
  write_tokens_body(P, w);
}

KV_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
KV_AVX512 inline __m512 load16(const int8_t* p) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
}

// e^x for the lanes in `live` (0 elsewhere), for x <= 0: scores minus their maximum.
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Taylor series to r^7 (relative error
// below 1e-7), then scalef by 2^n. Below -87 the result would be denormal: it is 0 instead.
KV_AVX512 inline __m512 exp_masked(__mmask16 live, __m512 x) {
  live &= _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(live, p, n);
}

template <typename T>
KV_AVX512 inline void prefetch_block(const T* p, int64_t elements) {
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = elements * static_cast<int64_t>(sizeof(T));
  for (int64_t at = 0; at < bytes; at += 64) _mm_prefetch(c + at, _MM_HINT_T0);
}

constexpr int64_t kPrefetchBlocks = 4;  // how far ahead the next blocks' K/V are requested

// The blocks a decode row reads after this one (the next head of the item), so prefetching
// runs on across the hand-over instead of stalling at every head's first blocks.
struct Upcoming {
  Blocks blk;
  int64_t nblocks = 0;
};

// The queries of one attend call. Float keys take q as floats; int8 keys take q rounded to
// 16 bits per (query, head) (relative error 2^-15, far below the cache's own int8 rounding)
// so one vpmaddwd scores 16 tokens x 2 channels with no int8 -> float conversion.
template <int NQ>
struct Queries {
  const float* f;        // [NQ][D] pre-scaled by key scale / sqrt(D)
  const int32_t* pairs;  // [NQ][D/2] int16 channel pairs (2j low, 2j+1 high), int8 keys only
  float scale[NQ];       // q = q16 * scale, int8 keys only
  int64_t last[NQ];      // last position each query attends to (inclusive)
  float* out[NQ];        // [D] each
};

// q16 = q * 32767 / max|q| per query, rounded half to even; pairs (as int32) are just the
// int16 array reinterpreted (little-endian: channel 2j low, 2j+1 high).
template <int NV, int NQ>
KV_AVX512 void quantize_queries(Queries<NQ>& q, int16_t* q16) {
  constexpr int D = 16 * NV;
  for (int i = 0; i < NQ; ++i) {
    const float* f = q.f + i * D;
    __m512 amax = _mm512_setzero_ps();
    for (int k = 0; k < NV; ++k)
      amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(f + 16 * k)));
    const float top = _mm512_reduce_max_ps(amax);
    // a non-finite q (the model's own overflow) gives garbage scores, never a UB cast
    const float inv = top > 0.0f && std::isfinite(top) ? 32767.0f / top : 0.0f;
    q.scale[i] = top / 32767.0f;
    for (int k = 0; k < NV; ++k) {
      const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(f + 16 * k), _mm512_set1_ps(inv));
      const __m256i w = _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(x));  // saturating
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q16 + i * D + 16 * k), w);
    }
  }
  q.pairs = reinterpret_cast<const int32_t*>(q16);
}

// Scores of 16 tokens (group g of a block) for NQ queries: s[i] = q_i . k_t.
template <int NV, int NQ>
KV_AVX512 inline void score16(const Queries<NQ>& q, const float* kb, int64_t B, int64_t g,
                              __m512* s) {
  constexpr int D = 16 * NV, CH = 8 / NQ;  // CH independent chains per query (FMA latency)
  __m512 a[NQ][CH];
  for (int i = 0; i < NQ; ++i)
    for (int c = 0; c < CH; ++c) a[i][c] = _mm512_setzero_ps();
  for (int d = 0; d < D; d += CH) {
    for (int c = 0; c < CH; ++c) {
      const __m512 k = _mm512_loadu_ps(kb + (d + c) * B + g);  // keys [D][B]
      for (int i = 0; i < NQ; ++i)
        a[i][c] = _mm512_fmadd_ps(_mm512_set1_ps(q.f[i * D + d + c]), k, a[i][c]);
    }
  }
  for (int i = 0; i < NQ; ++i) {
    s[i] = a[i][0];
    for (int c = 1; c < CH; ++c) s[i] = _mm512_add_ps(s[i], a[i][c]);
  }
}

template <int NV, int NQ>
KV_AVX512 inline void score16(const Queries<NQ>& q, const int8_t* kb, int64_t B, int64_t g,
                              __m512* s) {
  constexpr int P = 8 * NV, CH = 8 / NQ;  // P channel pairs
  __m512i a[NQ][CH];
  for (int i = 0; i < NQ; ++i)
    for (int c = 0; c < CH; ++c) a[i][c] = _mm512_setzero_si512();
  for (int j = 0; j < P; j += CH) {
    for (int c = 0; c < CH; ++c) {
      // keys [D/2][B][2]: 16 tokens x 2 channels, widened to 16 bits
      const __m256i raw = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(kb + ((j + c) * B + g) * 2));
      const __m512i k = _mm512_cvtepi8_epi16(raw);
      for (int i = 0; i < NQ; ++i)
        a[i][c] = _mm512_add_epi32(
            a[i][c], _mm512_madd_epi16(k, _mm512_set1_epi32(q.pairs[i * P + j + c])));
    }
  }
  for (int i = 0; i < NQ; ++i) {
    __m512i sum = a[i][0];
    for (int c = 1; c < CH; ++c) sum = _mm512_add_epi32(sum, a[i][c]);
    s[i] = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(q.scale[i]));
  }
}

#define KV_AVX512_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512vnni")))

// sum_t p[t] * v_t over positions 0..end-1 of one (sequence, head), int8 values [B][D] (D a
// multiple of 64), for a decode row: summed[D] = 65535 x that sum. Each weight p in [0, 1] is
// rounded to 16 bits and split into its high and low byte, so vpdpbusd (unsigned byte x
// signed byte, 4 products summed per lane) weighs 4 tokens' values in one instruction, where
// widening int8 -> float costs 3 instructions per 16 values. The 4 rows are interleaved
// byte-wise first (8 unpacks per 4 x 64 bytes), which leaves each accumulator's lanes in a
// fixed channel order, undone once at the end. Integer sums are flushed to float every 16
// tokens (at most 16 x 255 x 128 x 256 < 2^31). Weights lose 2^-16 absolute: far below the
// values' own int8 rounding.
template <int NV>
KV_AVX512_VNNI void weigh_values_vnni(const float* p, int64_t end, const int8_t* vbase,
                                      const Blocks& vblk, int64_t B, const int8_t* kbase,
                                      const Upcoming& upcoming, float* summed) {
  constexpr int D = 16 * NV, PIECES = D / 64;  // 64-byte pieces of a value row
  static_assert(D % 64 == 0, "whole 64-byte pieces");
  const int64_t nblocks = (end + B - 1) / B;
  __m512 acc[NV];  // channel 64r + 16L + 4k + m sits in acc[4r + k], lane 4L + m
  for (int k = 0; k < NV; ++k) acc[k] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t ahead = b + kPrefetchBlocks;
    if (ahead < nblocks) {
      prefetch_block(vbase + vblk.ids[ahead] * vblk.stride + vblk.offset, B * D);
    } else if (ahead - nblocks < upcoming.nblocks) {  // same pools: the next head's keys
      const Blocks& u = upcoming.blk;
      prefetch_block(kbase + u.ids[ahead - nblocks] * u.stride + u.offset, B * D);
    }
    const int8_t* vb = vbase + vblk.ids[b] * vblk.stride + vblk.offset;
    for (int64_t g = 0; g < B && b * B + g < end; g += 16) {
      const int64_t pos0 = b * B + g, n = std::min<int64_t>(16, end - pos0);
      const __mmask16 live = static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1);
      // rows past `end` are read (they are inside the block) but weigh exactly 0
      const __m512i w = _mm512_cvtps_epi32(
          _mm512_mul_ps(_mm512_maskz_loadu_ps(live, p + pos0), _mm512_set1_ps(65535.0f)));
      alignas(16) uint32_t high[4], low[4];  // 4 tokens' weight bytes per word
      _mm_store_si128(reinterpret_cast<__m128i*>(high),
                      _mm512_cvtepi32_epi8(_mm512_srli_epi32(w, 8)));
      _mm_store_si128(reinterpret_cast<__m128i*>(low), _mm512_cvtepi32_epi8(w));
      __m512i hi[NV], lo[NV];
      for (int k = 0; k < NV; ++k) hi[k] = lo[k] = _mm512_setzero_si512();
      for (int t4 = 0; t4 < 16; t4 += 4) {
        if (t4 >= n) break;
        const __m512i wh = _mm512_set1_epi32(static_cast<int32_t>(high[t4 / 4]));
        const __m512i wl = _mm512_set1_epi32(static_cast<int32_t>(low[t4 / 4]));
        const int8_t* rows = vb + (g + t4) * D;
        for (int r = 0; r < PIECES; ++r) {
          const __m512i r0 = _mm512_loadu_si512(rows + 64 * r);
          const __m512i r1 = _mm512_loadu_si512(rows + D + 64 * r);
          const __m512i r2 = _mm512_loadu_si512(rows + 2 * D + 64 * r);
          const __m512i r3 = _mm512_loadu_si512(rows + 3 * D + 64 * r);
          const __m512i a_lo = _mm512_unpacklo_epi8(r0, r1), a_hi = _mm512_unpackhi_epi8(r0, r1);
          const __m512i b_lo = _mm512_unpacklo_epi8(r2, r3), b_hi = _mm512_unpackhi_epi8(r2, r3);
          const __m512i c[4] = {
              _mm512_unpacklo_epi16(a_lo, b_lo), _mm512_unpackhi_epi16(a_lo, b_lo),
              _mm512_unpacklo_epi16(a_hi, b_hi), _mm512_unpackhi_epi16(a_hi, b_hi)};
          for (int k = 0; k < 4; ++k) {
            hi[4 * r + k] = _mm512_dpbusd_epi32(hi[4 * r + k], wh, c[k]);
            lo[4 * r + k] = _mm512_dpbusd_epi32(lo[4 * r + k], wl, c[k]);
          }
        }
      }
      for (int k = 0; k < NV; ++k) {
        const __m512i sum = _mm512_add_epi32(_mm512_slli_epi32(hi[k], 8), lo[k]);
        acc[k] = _mm512_add_ps(acc[k], _mm512_cvtepi32_ps(sum));
      }
    }
  }
  alignas(64) float lanes[D];
  for (int k = 0; k < NV; ++k) _mm512_store_ps(lanes + 16 * k, acc[k]);
  for (int r = 0; r < PIECES; ++r)
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 16; ++j)
        summed[64 * r + 16 * (j / 4) + 4 * k + j % 4] = lanes[16 * (4 * r + k) + j];
}

// NQ queries (1: a decode row; kTile: a prefill tile) of one (sequence, head) over its blocks,
// in three passes over positions 0..end-1 (end: one past the furthest query's position):
// scores and their running maxima, exp, then values. Three passes rather than an online
// softmax: a per-16-token rescale puts a ~100-cycle chain (horizontal max, exp) between
// every score block and its values, and that latency, not the loads, bounded the loop.
// scores: [NQ][blocks * B] scratch. TK/TV: float or int8_t (values dequantised on the fly).
template <int NV, int NQ, bool VNNI, typename TK, typename TV>
KV_AVX512 void attend_avx512(const Queries<NQ>& q, const float* vscale, const TK* kbase,
                             const Blocks& kblk, const TV* vbase, const Blocks& vblk,
                             int64_t B, const Upcoming& upcoming, float* scores) {
  constexpr int D = 16 * NV;
  constexpr int SETS = NQ == 1 ? 2 : 1;  // value accumulator sets (FMA latency)
  int64_t end = 0;
  for (int i = 0; i < NQ; ++i) end = std::max(end, q.last[i] + 1);
  const int64_t nblocks = (end + B - 1) / B, stride = nblocks * B;
  auto live = [&](int i, int64_t pos0) {  // the positions of a 16-group query i attends to
    const int64_t valid = std::min<int64_t>(16, q.last[i] - pos0 + 1);
    return static_cast<__mmask16>(valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : (1u << valid) - 1);
  };
  auto kblock = [&](int64_t b) { return kbase + kblk.ids[b] * kblk.stride + kblk.offset; };
  auto vblock = [&](int64_t b) { return vbase + vblk.ids[b] * vblk.stride + vblk.offset; };

  // pass 1: scores, and per lane the largest score each query may see
  __m512 vmax[NQ];
  for (int i = 0; i < NQ; ++i) vmax[i] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t ahead = b + kPrefetchBlocks;
    if (ahead < nblocks)
      prefetch_block(kblock(ahead), B * D);
    else if (ahead - nblocks < nblocks)  // pass 3's first value blocks
      prefetch_block(vblock(ahead - nblocks), B * D);
    const TK* kb = kblock(b);  // keys [D][B] (float) or [D/2][B][2] (int8)
    for (int64_t g = 0; g < B && b * B + g < end; g += 16) {
      const int64_t pos0 = b * B + g;
      __m512 s[NQ];
      score16<NV, NQ>(q, kb, B, g, s);
      for (int i = 0; i < NQ; ++i) {
        vmax[i] = _mm512_mask_max_ps(vmax[i], live(i, pos0), vmax[i], s[i]);
        _mm512_storeu_ps(scores + i * stride + pos0, s[i]);
      }
    }
  }
  // pass 2: weights exp(score - max), 0 beyond each query's own position
  __m512 lsum[NQ];
  for (int i = 0; i < NQ; ++i) {
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax[i]));
    float* si = scores + i * stride;
    lsum[i] = _mm512_setzero_ps();
    for (int64_t pos0 = 0; pos0 < end; pos0 += 16) {
      const __m512 p = exp_masked(live(i, pos0), _mm512_sub_ps(_mm512_loadu_ps(si + pos0), m));
      lsum[i] = _mm512_add_ps(lsum[i], p);
      _mm512_storeu_ps(si + pos0, p);
    }
  }
  // pass 3: weighted values
  if constexpr (VNNI) {  // a decode row over int8 values
    static_assert(NQ == 1 && std::is_same_v<TV, int8_t> && std::is_same_v<TK, int8_t>);
    alignas(64) float summed[D];
    weigh_values_vnni<NV>(scores, end, vbase, vblk, B, kbase, upcoming, summed);
    const __m512 inv = _mm512_set1_ps(1.0f / (65535.0f * _mm512_reduce_add_ps(lsum[0])));
    for (int k = 0; k < NV; ++k) {
      __m512 o = _mm512_mul_ps(_mm512_load_ps(summed + 16 * k), inv);
      if (vscale) o = _mm512_mul_ps(o, _mm512_loadu_ps(vscale + 16 * k));
      _mm512_storeu_ps(q.out[0] + 16 * k, o);
    }
    return;
  }
  __m512 acc[SETS][NQ][NV];
  for (int u = 0; u < SETS; ++u)
    for (int i = 0; i < NQ; ++i)
      for (int k = 0; k < NV; ++k) acc[u][i][k] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t ahead = b + kPrefetchBlocks;
    if (ahead < nblocks) {
      prefetch_block(vblock(ahead), B * D);
    } else if (ahead - nblocks < upcoming.nblocks) {  // same pools: the next head's keys
      const Blocks& u = upcoming.blk;
      prefetch_block(kbase + u.ids[ahead - nblocks] * u.stride + u.offset, B * D);
    }
    const TV* vb = vblock(b);  // values [B][D]
    // rows past `end` may never have been written (NaN * 0 is NaN): stop at end
    const int64_t rows = std::min(B, end - b * B);
    const float* pb = scores + b * B;
    int64_t t = 0;
    for (; t + SETS <= rows; t += SETS) {
      for (int u = 0; u < SETS; ++u) {
        __m512 v[NV];
        for (int k = 0; k < NV; ++k) v[k] = load16(vb + (t + u) * D + 16 * k);
        for (int i = 0; i < NQ; ++i) {
          const __m512 pt = _mm512_set1_ps(pb[i * stride + t + u]);
          for (int k = 0; k < NV; ++k) acc[u][i][k] = _mm512_fmadd_ps(pt, v[k], acc[u][i][k]);
        }
      }
    }
    for (; t < rows; ++t) {
      __m512 v[NV];
      for (int k = 0; k < NV; ++k) v[k] = load16(vb + t * D + 16 * k);
      for (int i = 0; i < NQ; ++i) {
        const __m512 pt = _mm512_set1_ps(pb[i * stride + t]);
        for (int k = 0; k < NV; ++k) acc[0][i][k] = _mm512_fmadd_ps(pt, v[k], acc[0][i][k]);
      }
    }
  }
  for (int i = 0; i < NQ; ++i) {
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(lsum[i]));
    for (int k = 0; k < NV; ++k) {
      __m512 o = acc[0][i][k];
      for (int u = 1; u < SETS; ++u) o = _mm512_add_ps(o, acc[u][i][k]);
      o = _mm512_mul_ps(o, inv);
      if (vscale) o = _mm512_mul_ps(o, _mm512_loadu_ps(vscale + 16 * k));
      _mm512_storeu_ps(q.out[i] + 16 * k, o);
    }
  }
}

// int8 value block-heads -> float, same layout, for the prefill tiles (once per item).
KV_AVX512 void widen_blocks(const int8_t* base, const Blocks& blk, int64_t nblocks,
                            int64_t elements, float* to) {
  for (int64_t b = 0; b < nblocks; ++b) {
    const int8_t* from = base + blk.ids[b] * blk.stride + blk.offset;
    for (int64_t x = 0; x < elements; x += 16) _mm512_storeu_ps(to + x, load16(from + x));
    to += elements;
  }
}
#endif  // KV_X86

// ---------------------------------------------------------------------------------------------
// Dispatch.

// avx512vnni: avx512 plus the int8-value decode pass that needs AVX512_VNNI (vpdpbusd).
// Levels as kernels/isa.h numbers them.
enum class Isa { portable, avx512, avx512vnni };
constexpr int kTopIsa = static_cast<int>(Isa::avx512vnni);

const Isa g_best = static_cast<Isa>(kv_isa::best_level(kTopIsa));
std::atomic<Isa> g_isa{g_best};  // set_isa() may pick a lesser one

Isa active_isa() { return g_isa.load(std::memory_order_relaxed); }

std::string isa_name(Isa isa) { return kv_isa::kNames[static_cast<int>(isa)]; }

struct Scratch {
  std::vector<float> portable;
  std::vector<float> scores;  // [queries][positions] of one attend
  std::vector<float> widened;  // int8 prefill: the item's value blocks as float [blocks][B*D]
  std::vector<int32_t> iota;
};

// q of token `tok`, head h, times 1/sqrt(D) and (int8) the key scale: scores need no more.
void prepare_query(const Problem& P, int64_t tok, int64_t h, float* q) {
  const float* src = P.qkv + tok * 3 * P.H * P.D + h * P.D;
  for (int64_t d = 0; d < P.D; ++d)
    q[d] = src[d] * P.inv_sqrt_d * (P.key_scale ? P.key_scale[h * P.D + d] : 1.0f);
}

void run_head_portable(const Problem& P, const Item& it, int64_t h, Scratch& ws) {
  const Sequence& s = P.seqs[it.seq];
  const int64_t D = P.D;
  const Blocks blk{P.block_ids.data() + s.blocks_at, P.H * P.B * D, h * P.B * D};
  std::vector<float> q(static_cast<size_t>(D));
  const float* vscale = P.value_scale ? P.value_scale + h * D : nullptr;
  for (int64_t i = it.first; i < it.first + it.count; ++i) {
    const int64_t tok = s.first_token + i;
    prepare_query(P, tok, h, q.data());
    float* out = P.out + tok * P.H * D + h * D;
    if (P.int8)
      attend_portable(q.data(), s.context + i, out, vscale,
                      static_cast<const int8_t*>(P.key_pool),
                      static_cast<const int8_t*>(P.value_pool), blk, P.B, D, ws.portable);
    else
      attend_portable(q.data(), s.context + i, out, vscale,
                      static_cast<const float*>(P.key_pool),
                      static_cast<const float*>(P.value_pool), blk, P.B, D, ws.portable);
  }
}

void run_item_portable(const Problem& P, const Item& it, Scratch& ws) {
  for (int64_t h = it.head; h < it.head + it.heads; ++h) run_head_portable(P, it, h, ws);
}

#if KV_X86
bool avx512_handles(const Problem& P) {
  return (P.D == 16 || P.D == 32 || P.D == 64 || P.D == 128) && P.B % 16 == 0;
}

// prepare_query, vectorised: q * 1/sqrt(D) (* key scale).
template <int NV>
KV_AVX512 void prepare_query_avx512(const Problem& P, int64_t tok, int64_t h, float* q) {
  constexpr int D = 16 * NV;
  const float* src = P.qkv + tok * 3 * P.H * D + h * D;
  const __m512 inv = _mm512_set1_ps(P.inv_sqrt_d);
  for (int k = 0; k < NV; ++k) {
    __m512 x = _mm512_mul_ps(_mm512_loadu_ps(src + 16 * k), inv);
    if (P.key_scale) x = _mm512_mul_ps(x, _mm512_loadu_ps(P.key_scale + h * D + 16 * k));
    _mm512_storeu_ps(q + 16 * k, x);
  }
}

template <int NV, int NQ, bool VNNI = false, typename TK, typename TV>
KV_AVX512 void attend_tile(const Problem& P, Queries<NQ>& q, int64_t h, const TK* kbase,
                           const Blocks& kblk, const TV* vbase, const Blocks& vblk,
                           Scratch& ws, const Upcoming& upcoming = Upcoming{}) {
  constexpr int D = 16 * NV;
  alignas(64) int16_t q16[NQ * D];
  if constexpr (std::is_same_v<TK, int8_t>) quantize_queries<NV, NQ>(q, q16);
  const float* vscale = P.value_scale ? P.value_scale + h * D : nullptr;
  int64_t end = 0;
  for (int i = 0; i < NQ; ++i) end = std::max(end, q.last[i] + 1);
  ws.scores.resize(static_cast<size_t>(NQ * ((end + P.B - 1) / P.B) * P.B));
  attend_avx512<NV, NQ, VNNI>(q, vscale, kbase, kblk, vbase, vblk, P.B, upcoming,
                              ws.scores.data());
}

template <int NV, typename T>
KV_AVX512 void run_item_avx512(const Problem& P, const Item& it, Scratch& ws, bool vnni) {
  constexpr int D = 16 * NV;
  const Sequence& s = P.seqs[it.seq];
  const int64_t B = P.B;
  const T* kp = static_cast<const T*>(P.key_pool);
  const T* vp = static_cast<const T*>(P.value_pool);
  const int32_t* ids = P.block_ids.data() + s.blocks_at;
  alignas(64) float qf[kTile * D];
  if (it.count < kTileMin) {  // decode rows: one query at a time, straight from the pools
    const int64_t nblocks = (s.context + it.first + it.count + B - 1) / B;
    for (int64_t k = 0; k < std::min(nblocks, kPrefetchBlocks); ++k)  // the first keys
      prefetch_block(kp + ids[k] * P.H * B * D + it.head * B * D, B * D);
    for (int64_t h = it.head; h < it.head + it.heads; ++h) {
      const Blocks pool{ids, P.H * B * D, h * B * D};
      Upcoming next;
      if (h + 1 < it.head + it.heads) next = {{ids, P.H * B * D, (h + 1) * B * D}, nblocks};
      for (int64_t i = it.first; i < it.first + it.count; ++i) {
        const int64_t tok = s.first_token + i;
        prepare_query_avx512<NV>(P, tok, h, qf);
        Queries<1> q{qf, nullptr, {}, {s.context + i}, {P.out + tok * P.H * D + h * D}};
        if constexpr (std::is_same_v<T, int8_t> && D % 64 == 0) {
          if (vnni) {
            attend_tile<NV, 1, true>(P, q, h, kp, pool, vp, pool, ws, next);
            continue;
          }
        }
        attend_tile<NV, 1>(P, q, h, kp, pool, vp, pool, ws, next);
      }
    }
    return;
  }
  const int64_t h = it.head;
  const Blocks pool{ids, P.H * B * D, h * B * D};
  alignas(64) float discard[kTile][D];
  Queries<kTile> q{qf, nullptr, {}, {}, {}};
  for (int64_t i0 = it.first; i0 < it.first + it.count; i0 += kTile) {
    for (int j = 0; j < kTile; ++j) {
      // a short last tile repeats its last query; the copies' outputs are discarded
      const int64_t i = std::min(i0 + j, it.first + it.count - 1);
      const int64_t tok = s.first_token + i;
      q.last[j] = s.context + i;
      prepare_query_avx512<NV>(P, tok, h, qf + j * D);
      q.out[j] = i0 + j == i ? P.out + tok * P.H * D + h * D : discard[j];
    }
    if constexpr (std::is_same_v<T, float>) {
      attend_tile<NV, kTile>(P, q, h, kp, pool, vp, pool, ws);
    } else {
      if (i0 == it.first) {  // int8 values widened once per item; the 8 tiles read them in L2
        const int64_t nblocks = (s.context + it.first + it.count + B - 1) / B;
        ws.widened.resize(static_cast<size_t>(nblocks * B * D));
        if (static_cast<int64_t>(ws.iota.size()) < nblocks) {
          ws.iota.resize(static_cast<size_t>(nblocks));
          std::iota(ws.iota.begin(), ws.iota.end(), 0);
        }
        widen_blocks(vp, pool, nblocks, B * D, ws.widened.data());
      }
      const Blocks widened{ws.iota.data(), B * D, 0};
      attend_tile<NV, kTile>(P, q, h, kp, pool, ws.widened.data(), widened, ws);
    }
  }
}

template <int NV>
void run_item_avx512(const Problem& P, const Item& it, Scratch& ws, bool vnni) {
  if (P.int8)
    run_item_avx512<NV, int8_t>(P, it, ws, vnni);
  else
    run_item_avx512<NV, float>(P, it, ws, vnni);
}
#endif

void run_item(const Problem& P, const Item& it, Scratch& ws, Isa isa) {
#if KV_X86
  if (isa != Isa::portable && avx512_handles(P)) {
    const bool vnni = isa == Isa::avx512vnni;
    switch (P.D) {
      case 16: return run_item_avx512<1>(P, it, ws, vnni);
      case 32: return run_item_avx512<2>(P, it, ws, vnni);
      case 64: return run_item_avx512<4>(P, it, ws, vnni);
      case 128: return run_item_avx512<8>(P, it, ws, vnni);
    }
  }
#endif
  (void)isa;
  run_item_portable(P, it, ws);
}

void write_tokens(const Problem& P, const WriteItem& w, Isa isa) {
#if KV_X86
  if (isa != Isa::portable) return write_tokens_avx512(P, w);
#endif
  (void)isa;
  write_tokens_portable(P, w);
}

// ---------------------------------------------------------------------------------------------
// Threads: the caller plus pool threads that sleep on a condition variable between calls.

class Pool {
 public:
  // Runs job on the caller and on up to threads-1 pool threads; returns once every thread
  // that joined has finished it. A pool thread that wakes after the caller has finished its
  // share (the work is claimed dynamically, so none is left) does not join.
  void run(int threads, const std::function<void()>& job) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (threads <= 1 || !busy.owns_lock()) {  // a concurrent caller runs on its own thread
      job();
      return;
    }
    start_workers(threads - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &job;
      wanted_ = threads - 1;
      closed_ = false;
      ++generation_;
    }
    wake_.notify_all();
    job();
    std::unique_lock<std::mutex> lk(mu_);
    closed_ = true;
    done_.wait(lk, [this] { return active_ == 0; });
    job_ = nullptr;
  }

 private:
  void start_workers(int n) {
    std::lock_guard<std::mutex> lk(mu_);
    while (static_cast<int>(workers_) < n) {
      std::thread(&Pool::work, this, static_cast<int>(workers_)).detach();
      ++workers_;
    }
  }

  void work(int index) {
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "kvserve-attn");  // visible in top -H, py-spy
#endif
    std::unique_lock<std::mutex> lk(mu_);
    uint64_t seen = generation_;
    for (;;) {
      wake_.wait(lk, [&] { return generation_ != seen; });
      seen = generation_;
      if (closed_ || index >= wanted_) continue;
      ++active_;
      const std::function<void()>* job = job_;
      lk.unlock();
      (*job)();
      lk.lock();
      if (--active_ == 0 && closed_) done_.notify_one();
    }
  }

  std::mutex run_mu_;  // one parallel call at a time
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void()>* job_ = nullptr;
  uint64_t generation_ = 0;
  int wanted_ = 0, active_ = 0;
  size_t workers_ = 0;
  bool closed_ = true;
};

// Never destroyed (detached threads wait on its condition variable until the process exits);
// a forked child gets a fresh one, its parent's threads not being there.
Pool& pool() {
  static std::mutex mu;
  static Pool* instance = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lk(mu);
  if (instance == nullptr || owner != getpid()) {
    instance = new Pool();
    owner = getpid();
  }
  return *instance;
}

// Denormals flushed inside the kernel only (tiny softmax weights), the caller's mode restored.
struct FlushDenormals {
#if KV_X86
  unsigned saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

void spin_until(const std::atomic<int64_t>& counter, int64_t target) {
  for (int spins = 0; counter.load(std::memory_order_acquire) < target; ++spins) {
#if KV_X86
    _mm_pause();
#endif
    if (spins > 256) std::this_thread::yield();  // a preempted writer: let it run
  }
}

void execute(const Problem& P, int threads) {
  const Isa isa = active_isa();
  std::vector<WriteItem> writes;
  std::vector<Item> tiled, rows;
  // Decode rows take all their heads in one item (the next head's blocks sit right after
  // this head's, so reads stream), split only when there are too few rows to share out.
  int64_t row_seqs = 0;
  for (const Sequence& s : P.seqs) row_seqs += s.num_tokens > 0 && s.num_tokens < kTileMin;
  const int64_t wanted = 16 * static_cast<int64_t>(threads);  // items, for an even share-out
  const int64_t per_row = (wanted + row_seqs - 1) / std::max<int64_t>(row_seqs, 1);
  const int64_t groups = std::clamp<int64_t>(per_row, 1, P.H);
  const int32_t heads_per_row_item = static_cast<int32_t>((P.H + groups - 1) / groups);
  for (int32_t si = 0; si < static_cast<int32_t>(P.seqs.size()); ++si) {
    const Sequence& s = P.seqs[si];
    for (int64_t i = 0; i < s.num_tokens; i += kWriteChunk)
      writes.push_back({si, i, std::min(kWriteChunk, s.num_tokens - i)});
    if (s.num_tokens == 0) continue;
    if (s.num_tokens < kTileMin) {
      for (int32_t h = 0; h < P.H; h += heads_per_row_item)
        rows.push_back({si, h, std::min(heads_per_row_item, static_cast<int32_t>(P.H - h)), 0,
                        s.num_tokens});
      continue;
    }
    for (int32_t h = 0; h < P.H; ++h)
      for (int64_t i = 0; i < s.num_tokens; i += kGroup)
        tiled.push_back({si, h, 1, i, std::min(kGroup, s.num_tokens - i)});
  }
  // Costliest first (query count x positions read), so no thread is left with a long item.
  auto cost = [&](const Item& it) {
    return it.count * (P.seqs[it.seq].context + it.first + it.count);
  };
  std::stable_sort(tiled.begin(), tiled.end(),
                   [&](const Item& a, const Item& b) { return cost(a) > cost(b); });
  tiled.insert(tiled.end(), rows.begin(), rows.end());
  const std::vector<Item>& items = tiled;

  std::atomic<int64_t> next_write{0}, writes_done{0}, next_item{0};
  std::atomic<bool> failed{false};
  const int64_t n_writes = static_cast<int64_t>(writes.size());
  const int64_t n_items = static_cast<int64_t>(items.size());
  const std::function<void()> job = [&] {
    try {
      FlushDenormals flush;
      (void)flush;
      for (int64_t w; (w = next_write.fetch_add(1)) < n_writes;) {
        write_tokens(P, writes[w], isa);
        writes_done.fetch_add(1, std::memory_order_release);
      }
      spin_until(writes_done, n_writes);  // the barrier: every k/v is in before any read
      thread_local Scratch ws;
      for (int64_t i; (i = next_item.fetch_add(1)) < n_items;) run_item(P, items[i], ws, isa);
    } catch (...) {  // scratch allocation; nothing may escape a pool thread
      failed = true;
      next_item = n_items;
      writes_done = n_writes;
    }
  };
  pool().run(static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(1, n_items))), job);
  if (failed) throw std::bad_alloc();
}

// ---------------------------------------------------------------------------------------------
// Argument checks: every malformed input is a ValueError, never undefined behaviour.

[[noreturn]] void fail(const std::string& message) { throw py::value_error(message); }

constexpr int kNpyAligned = 0x0100;  // NPY_ARRAY_ALIGNED

py::array as_array(const py::object& obj, const char* name) {
  if (!py::isinstance<py::array>(obj))
    fail(std::string(name) + " must be a numpy array, got " +
         std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
  if (!(a.flags() & kNpyAligned)) fail(std::string(name) + " must be aligned");
  return a;
}

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string dtype_of(const py::array& a) { return std::string(py::str(a.dtype())); }

template <typename T>
void expect_dtype(const py::array& a, const char* name, const char* wanted) {
  if (!a.dtype().equal(py::dtype::of<T>()))
    fail(std::string(name) + " must be " + wanted + ", got " + dtype_of(a));
}

void expect_ndim(const py::array& a, const char* name, int ndim, const char* what) {
  if (a.ndim() != ndim) fail(std::string(name) + " must be " + what + ", got shape " + shape_of(a));
}

void expect_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) fail(std::string(name) + " must be writeable");
}

struct Span {
  const char* name;
  const char* lo;
  const char* hi;
  bool written;
};

Span span(const py::array& a, const char* name, bool written) {
  const char* p = static_cast<const char*>(a.data());
  return {name, p, p + a.nbytes(), written};
}

void expect_disjoint(const std::vector<Span>& spans) {
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = i + 1; j < spans.size(); ++j) {
      const Span &a = spans[i], &b = spans[j];
      if ((a.written || b.written) && a.lo < b.hi && b.lo < a.hi && a.lo != a.hi && b.lo != b.hi)
        fail(std::string(a.name) + " and " + b.name + " share memory");
    }
}

void paged_attention(const py::object& qkv_o, const py::object& key_pool_o,
                     const py::object& value_pool_o, const py::object& block_tables_o,
                     const py::object& query_starts_o, const py::object& context_lens_o,
                     const py::object& out_o, const py::object& key_scale_o,
                     const py::object& value_scale_o, int threads) {
  if (threads < 1 || threads > kMaxThreads)
    fail("threads must be in 1.." + std::to_string(kMaxThreads) + ", got " +
         std::to_string(threads));
  py::array qkv = as_array(qkv_o, "qkv"), kp = as_array(key_pool_o, "key_pool"),
            vp = as_array(value_pool_o, "value_pool"),
            tables = as_array(block_tables_o, "block_tables"),
            starts = as_array(query_starts_o, "query_starts"),
            ctx = as_array(context_lens_o, "context_lens"), out = as_array(out_o, "out");

  expect_ndim(kp, "key_pool", 4, "[num_blocks, heads, block_size, head_dim]");
  expect_writeable(kp, "key_pool");
  expect_writeable(vp, "value_pool");
  if (vp.ndim() != 4 || !std::equal(kp.shape(), kp.shape() + 4, vp.shape()))
    fail("value_pool must have key_pool's shape " + shape_of(kp) + ", got " + shape_of(vp));
  if (!kp.dtype().equal(vp.dtype())) fail("key_pool and value_pool must share a dtype");
  Problem P;
  P.int8 = kp.dtype().equal(py::dtype::of<int8_t>());
  if (!P.int8 && !kp.dtype().equal(py::dtype::of<float>()))
    fail("key_pool must be float32 or int8, got " + dtype_of(kp));
  const int64_t num_blocks = kp.shape(0);
  P.H = kp.shape(1);
  P.B = kp.shape(2);
  P.D = kp.shape(3);
  if (P.H < 1 || P.B < 1 || P.D < 1) fail("key_pool has an empty dimension: " + shape_of(kp));
  if (P.int8 && P.D % 2 != 0)  // int8 keys are stored in channel pairs
    fail("int8 pools need an even head_dim, got " + std::to_string(P.D));
  const int64_t HD = P.H * P.D;
  P.inv_sqrt_d = 1.0f / std::sqrt(static_cast<float>(P.D));

  expect_dtype<float>(qkv, "qkv", "float32");
  expect_ndim(qkv, "qkv", 2, "[tokens, 3*heads*head_dim]");
  if (qkv.shape(1) != 3 * HD)
    fail("qkv must be [tokens, " + std::to_string(3 * HD) + "] for the pools' " +
         std::to_string(P.H) + " heads x " + std::to_string(P.D) + ", got " + shape_of(qkv));
  P.T = qkv.shape(0);
  expect_dtype<float>(out, "out", "float32");
  expect_writeable(out, "out");
  if (out.ndim() != 2 || out.shape(0) != P.T || out.shape(1) != HD)
    fail("out must be [" + std::to_string(P.T) + ", " + std::to_string(HD) + "], got " +
         shape_of(out));

  std::vector<Span> spans = {span(qkv, "qkv", false), span(kp, "key_pool", true),
                             span(vp, "value_pool", true), span(out, "out", true)};
  P.key_scale = P.value_scale = nullptr;
  const py::object* scale_objs[2] = {&key_scale_o, &value_scale_o};
  const char* scale_names[2] = {"key_scale", "value_scale"};
  for (int i = 0; i < 2; ++i) {
    if (scale_objs[i]->is_none()) {
      if (P.int8) fail(std::string(scale_names[i]) + " is required for int8 pools");
      continue;
    }
    if (!P.int8) fail(std::string(scale_names[i]) + " applies to int8 pools only");
    py::array a = as_array(*scale_objs[i], scale_names[i]);
    expect_dtype<float>(a, scale_names[i], "float32");
    if (a.ndim() != 1 || a.shape(0) != HD)
      fail(std::string(scale_names[i]) + " must be [" + std::to_string(HD) + "], got " +
           shape_of(a));
    const float* v = static_cast<const float*>(a.data());
    for (int64_t j = 0; j < HD; ++j)
      if (!(v[j] > 0.0f && std::isfinite(v[j])))
        fail(std::string(scale_names[i]) + "[" + std::to_string(j) +
             "] must be positive and finite, got " + std::to_string(v[j]));
    (i == 0 ? P.key_scale : P.value_scale) = v;
    spans.push_back(span(a, scale_names[i], false));
  }
  expect_disjoint(spans);

  expect_dtype<int32_t>(tables, "block_tables", "int32");
  expect_dtype<int32_t>(starts, "query_starts", "int32");
  expect_dtype<int32_t>(ctx, "context_lens", "int32");
  expect_ndim(starts, "query_starts", 1, "[sequences + 1]");
  expect_ndim(ctx, "context_lens", 1, "[sequences]");
  expect_ndim(tables, "block_tables", 2, "[sequences, max_blocks]");
  const int64_t S = ctx.shape(0);
  if (starts.shape(0) != S + 1)
    fail("query_starts must have " + std::to_string(S + 1) + " entries for " +
         std::to_string(S) + " sequences, got " + std::to_string(starts.shape(0)));
  if (tables.shape(0) != S)
    fail("block_tables must have a row per sequence (" + std::to_string(S) + "), got " +
         shape_of(tables));
  const int32_t* qs = static_cast<const int32_t*>(starts.data());
  const int32_t* cl = static_cast<const int32_t*>(ctx.data());
  const int32_t* bt = static_cast<const int32_t*>(tables.data());
  const int64_t max_blocks = tables.shape(1);
  if (qs[0] != 0) fail("query_starts[0] must be 0, got " + std::to_string(qs[0]));
  if (qs[S] != P.T)
    fail("query_starts[-1] must be the token count " + std::to_string(P.T) + ", got " +
         std::to_string(qs[S]));
  std::vector<int64_t> slots;  // block * B + slot of every token written, to find clashes
  slots.reserve(static_cast<size_t>(P.T));
  for (int64_t s = 0; s < S; ++s) {
    if (qs[s + 1] < qs[s])
      fail("query_starts must not decrease (entry " + std::to_string(s + 1) + ")");
    if (cl[s] < 0) fail("context_lens[" + std::to_string(s) + "] is negative");
    Sequence seq{qs[s], qs[s + 1] - qs[s], cl[s], static_cast<int64_t>(P.block_ids.size())};
    if (seq.num_tokens > 0) {
      const int64_t length = seq.context + seq.num_tokens;
      const int64_t needed = (length + P.B - 1) / P.B;
      if (needed > max_blocks)
        fail("block_tables row " + std::to_string(s) + " has " + std::to_string(max_blocks) +
             " blocks; context " + std::to_string(seq.context) + " + " +
             std::to_string(seq.num_tokens) + " tokens need " + std::to_string(needed));
      for (int64_t b = 0; b < needed; ++b) {
        const int32_t id = bt[s * max_blocks + b];
        if (id < 0 || id >= num_blocks)
          fail("block_tables[" + std::to_string(s) + ", " + std::to_string(b) + "] = " +
               std::to_string(id) + " is outside the pool's " + std::to_string(num_blocks) +
               " blocks");
        P.block_ids.push_back(id);
      }
      for (int64_t p = seq.context; p < length; ++p)
        slots.push_back(P.block_ids[seq.blocks_at + p / P.B] * P.B + p % P.B);
    }
    P.seqs.push_back(seq);
  }
  std::sort(slots.begin(), slots.end());
  const auto clash = std::adjacent_find(slots.begin(), slots.end());
  if (clash != slots.end())
    fail("two tokens of this call write the same cache slot (block " +
         std::to_string(*clash / P.B) + ", slot " + std::to_string(*clash % P.B) + ")");

  P.qkv = static_cast<const float*>(qkv.data());
  P.key_pool = kp.mutable_data();
  P.value_pool = vp.mutable_data();
  P.out = static_cast<float*>(out.mutable_data());
  if (P.T == 0) return;
  py::gil_scoped_release release;
  execute(P, threads);
}

void set_isa(const std::string& name) {
  g_isa = static_cast<Isa>(kv_isa::choose(name, kTopIsa, static_cast<int>(g_best)));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "kvserve's CPU paged-attention kernel (see kernels/__init__.py)";
  m.def("paged_attention", &paged_attention, py::arg("qkv"), py::arg("key_pool"),
        py::arg("value_pool"), py::arg("block_tables"), py::arg("query_starts"),
        py::arg("context_lens"), py::arg("out"), py::arg("key_scale") = py::none(),
        py::arg("value_scale") = py::none(), py::arg("threads") = 1);
  m.def("set_isa", &set_isa, py::arg("name"));
  m.def("isa", [] { return isa_name(active_isa()); });
  m.def("supported", [] { return kv_isa::supported(static_cast<int>(g_best)); });
}
