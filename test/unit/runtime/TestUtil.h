//===- TestUtil.h - Helpers for the runtime unit tests ----------*- C++ -*-===//

#ifndef HOTSTAGE_TEST_UNIT_RUNTIME_TESTUTIL_H
#define HOTSTAGE_TEST_UNIT_RUNTIME_TESTUTIL_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace hotstage::rt::test {

/// A fresh directory under /tmp, removed with its files at the end.
class TempDir {
public:
  TempDir() {
    char name[] = "/tmp/hotstage-rt-XXXXXX";
    if (char *p = mkdtemp(name))
      path_ = p;
  }
  ~TempDir() {
    if (!path_.empty())
      std::system(("rm -rf '" + path_ + "'").c_str());
  }
  const std::string &path() const { return path_; }
  std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

inline void writeBytes(const std::string &path,
                       const std::vector<uint8_t> &bytes) {
  FILE *f = std::fopen(path.c_str(), "wb");
  if (!f)
    return;
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

inline std::vector<uint8_t> readBytes(const std::string &path) {
  std::vector<uint8_t> bytes;
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    return bytes;
  int c;
  while ((c = std::fgetc(f)) != EOF)
    bytes.push_back(uint8_t(c));
  std::fclose(f);
  return bytes;
}

inline void putU32(std::vector<uint8_t> &bytes, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    bytes[at + i] = uint8_t(v >> (8 * i));
}

} // namespace hotstage::rt::test

#endif // HOTSTAGE_TEST_UNIT_RUNTIME_TESTUTIL_H
