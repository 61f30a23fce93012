//===- RankLinks.cpp - Whether ranks transfer device to device ------------===//

#include "runtime/train/RankLinks.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace hotstage::rt;

/// 52 bits of FNV-1a: exact in a double, never 0.
static double keyOf(const std::string &text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text)
    h = (h ^ c) * 1099511628211ull;
  return static_cast<double>((h >> 12) | 1);
}

bool hotstage::rt::agreeOnLinks(Executor &exec, Comm &comm, DeviceLinks *&links,
                                std::string &error) {
  links = nullptr;
  const char *mode = std::getenv("HOTSTAGE_LINKS");
  std::string m = mode && *mode ? mode : "auto";
  if (m != "auto" && m != "on" && m != "off") {
    error = "HOTSTAGE_LINKS=" + m + ": expected auto, on or off";
    return false;
  }
  // The host build without a stand-in device has nothing to link; every
  // rank runs the same executable, so all see the same.
  if (m == "off")
    return true;
  if (!exec.device()) {
    if (m == "on")
      error = "HOTSTAGE_LINKS=on, but this host build has no device to link "
              "(HOTSTAGE_DEVICE=copy gives it a stand-in)";
    return m != "on";
  }
  std::string why;
  DeviceLinks *mine = exec.device()->links(comm.timeout(), why);
  // Where each rank's device is (0: it has no links).
  std::vector<double> keys(static_cast<size_t>(comm.worldSize()), 0.0);
  keys[comm.worldRank()] = mine ? keyOf(mine->where()) : 0.0;
  comm.allReduceWorld(keys.data(), keys.size(), "agreeing on device links");
  std::string reason;
  for (size_t r = 0; r < keys.size() && reason.empty(); ++r) {
    if (keys[r] == 0) {
      reason =
          "rank " + std::to_string(r) + " has no device links" +
          (static_cast<int>(r) == comm.worldRank() ? " (" + why + ")" : "");
      continue;
    }
    for (size_t q = 0; q < r && reason.empty(); ++q)
      if (keys[q] == keys[r])
        reason = "ranks " + std::to_string(q) + " and " + std::to_string(r) +
                 " share a device";
  }
  if (!reason.empty()) {
    if (m == "on") {
      error = "HOTSTAGE_LINKS=on, but " + reason;
      return false;
    }
    if (comm.worldRank() == 0)
      std::fprintf(stderr,
                   "note: the ranks' transfers go through the host: %s\n",
                   reason.c_str());
    return true;
  }
  links = mine;
  return true;
}
