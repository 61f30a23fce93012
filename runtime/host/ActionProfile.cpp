//===- ActionProfile.cpp - HOTSTAGE_PROFILE's table -----------------------===//

#include "runtime/host/ActionProfile.h"

#include <algorithm>
#include <vector>

using namespace hotstage::rt;

void ActionProfile::add(const std::string &function, const PlanAction &a,
                        const Plan &plan, double ms) {
  Entry &e = entries_[function + " / " + a.profileName()];
  e.ms += ms;
  ++e.calls;
  if (a.gemm)
    e.flops += 2.0 * a.batch * a.m * a.n * a.k;
  // Attention's two products (half of them under a causal mask); its
  // gradient's five.
  if (a.attention)
    e.flops += (a.attention == 1 ? 4.0 : 10.0) * a.batch * a.heads * a.seq *
               a.seq * a.headDim * (a.causal ? 0.5 : 1.0);
  if (!a.gemm && !a.attention)
    for (int b : a.buffers)
      e.bytes += plan.buffers.at(b).bytes;
}

void ActionProfile::print(std::FILE *out, const std::string &where) const {
  std::vector<std::pair<std::string, const Entry *>> rows;
  double total = 0;
  for (auto &[key, entry] : entries_) {
    rows.push_back({key, &entry});
    total += entry.ms;
  }
  std::sort(rows.begin(), rows.end(),
            [](auto &a, auto &b) { return a.second->ms > b.second->ms; });
  std::fprintf(out, "profile (HOTSTAGE_PROFILE%s%s): %.3f s in actions\n",
               where.empty() ? "" : ", ", where.c_str(), total / 1e3);
  std::fprintf(out, "%10s %6s %10s %9s %9s  %s\n", "ms", "%", "calls",
               "TFLOP/s", "GB/s", "function / action");
  for (auto &[key, e] : rows) {
    char rate[32] = "", bandwidth[32] = "";
    if (e->flops > 0 && e->ms > 0)
      std::snprintf(rate, sizeof(rate), "%9.1f", e->flops / (e->ms * 1e9));
    if (e->bytes > 0 && e->ms > 0)
      std::snprintf(bandwidth, sizeof(bandwidth), "%9.0f",
                    e->bytes / (e->ms * 1e6));
    std::fprintf(out, "%10.2f %6.1f %10lld %9s %9s  %s\n", e->ms,
                 total > 0 ? 100 * e->ms / total : 0.0,
                 static_cast<long long>(e->calls), rate, bandwidth,
                 key.c_str());
  }
}
