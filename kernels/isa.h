// The instruction-set paths of kvserve's kernel modules, chosen at run time (one place for
// both modules: what the CPU supports, the paths' names, and `set_isa`'s choice).
//
// Paths, in order: 0 "portable" (any CPU), 1 "avx512" (AVX-512 F/BW/VL/DQ + FMA), 2
// "avx512vnni" (that + AVX512_VNNI). A module with paths 0..top runs min(top, cpu_level());
// set_isa may name a lower one (tests, benches). Errors are std::invalid_argument, which
// pybind11 raises in Python as ValueError.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace kv_isa {

inline const char* const kNames[] = {"portable", "avx512", "avx512vnni"};

// The highest path this CPU (and OS) runs.
inline int cpu_level() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("fma");
  if (!avx512) return 0;
  return __builtin_cpu_supports("avx512vnni") ? 2 : 1;
#else
  return 0;
#endif
}

// The best path of a module whose paths are 0..top, on this CPU.
inline int best_level(int top) { return std::min(top, cpu_level()); }

// The path `wanted` names ("auto": `best`) among a module's paths 0..top.
inline int choose(const std::string& wanted, int top, int best) {
  if (wanted == "auto") return best;
  std::string known = "'auto'";
  for (int level = 0; level <= top; ++level) {
    if (wanted == kNames[level]) {
      if (level > best)
        throw std::invalid_argument("this CPU (or OS) cannot run the '" + wanted +
                                    "' path; it runs '" + kNames[best] + "'");
      return level;
    }
    known += std::string(", '") + kNames[level] + "'";
  }
  throw std::invalid_argument("isa must be one of " + known + ", got '" + wanted + "'");
}

// The names of paths 0..best.
inline std::vector<std::string> supported(int best) {
  return std::vector<std::string>(kNames, kNames + best + 1);
}

}  // namespace kv_isa
