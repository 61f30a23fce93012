//===- LargeMessageCheck.cpp - Comm moves messages of 2 GiB and more ------===//
//
// Run as two ranks (test/e2e/pipeline/large-message.test): rank 0 sends
// rank 1 a message of 2 GiB and a few bytes, above what an MPI count (an
// int) can say, through the runtime's Comm; rank 1 checks every byte.
//
//===----------------------------------------------------------------------===//

#include "runtime/comm/Comm.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using hotstage::rt::Comm;

static uint8_t pattern(size_t i) {
  return static_cast<uint8_t>((i * 131 + (i >> 20)) % 251);
}

int main(int argc, char **argv) {
  size_t bytes = (size_t(1) << 31) + 7;
  if (argc > 1)
    bytes = std::strtoull(argv[1], nullptr, 10);
  Comm comm;
  std::string error;
  if (!comm.init(&argc, &argv, /*stages=*/2, /*dp=*/1, error)) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  comm.setTimeout(120);
  std::vector<uint8_t> data(bytes);
  if (comm.worldRank() == 0) {
    for (size_t i = 0; i < bytes; ++i)
      data[i] = pattern(i);
    Comm::Request r = comm.isend(data.data(), bytes, 1, 7, "the message");
    comm.wait(r);
    return 0;
  }
  Comm::Request r = comm.irecv(data.data(), bytes, 0, 7, "the message");
  comm.wait(r);
  for (size_t i = 0; i < bytes; ++i)
    if (data[i] != pattern(i)) {
      std::printf("FAIL: byte %zu of %zu is %d, not %d\n", i, bytes, data[i],
                  pattern(i));
      return 1;
    }
  std::printf("ok: %zu bytes\n", bytes);
  return 0;
}
