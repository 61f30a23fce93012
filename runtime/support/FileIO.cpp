//===- FileIO.cpp - Mapped input files and atomic output files ------------===//

#include "runtime/support/FileIO.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hotstage::rt {

namespace {
std::string errnoText(int err) { return std::strerror(err); }

std::string parentDirectory(const std::string &path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

bool writeAll(int fd, const void *data, size_t size, int &err) {
  const char *p = static_cast<const char *>(data);
  while (size > 0) {
    // Linux writes at most about 2 GiB per call.
    size_t chunk = std::min<size_t>(size, size_t(1) << 30);
    ssize_t n = ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      return false;
    }
    p += n;
    size -= size_t(n);
  }
  return true;
}
} // namespace

std::unique_ptr<MappedFile> MappedFile::open(const std::string &path,
                                             std::string &error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = path + ": cannot open: " + errnoText(errno);
    return nullptr;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    error = path + ": cannot stat: " + errnoText(errno);
    ::close(fd);
    return nullptr;
  }
  if (!S_ISREG(st.st_mode)) {
    error = path + ": not a regular file";
    ::close(fd);
    return nullptr;
  }
  size_t size = size_t(st.st_size);
  const uint8_t *data = nullptr;
  if (size > 0) {
    void *p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      error = path + ": cannot mmap " + std::to_string(size) +
              " bytes: " + errnoText(errno);
      ::close(fd);
      return nullptr;
    }
    data = static_cast<const uint8_t *>(p);
  }
  // The mapping stays valid after the descriptor is closed.
  ::close(fd);
  return std::unique_ptr<MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_)
    ::munmap(const_cast<uint8_t *>(data_), size_);
}

bool writeFileAtomically(const std::string &path,
                         const std::vector<ByteRange> &pieces,
                         std::string &error) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = tmp + ": cannot create: " + errnoText(errno);
    return false;
  }
  auto fail = [&](const std::string &what, int err) {
    error = tmp + ": " + what + ": " + errnoText(err);
    if (fd >= 0)
      ::close(fd);
    ::unlink(tmp.c_str());
    return false;
  };
  int err = 0;
  for (const ByteRange &piece : pieces)
    if (piece.size > 0 && !writeAll(fd, piece.data, piece.size, err))
      return fail("cannot write", err);
  if (::fsync(fd) != 0)
    return fail("cannot fsync", errno);
  int closed = ::close(fd);
  fd = -1;
  if (closed != 0)
    return fail("cannot close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    error = path + ": cannot rename " + tmp + " over it: " + errnoText(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  // Make the rename itself durable.
  std::string dir = parentDirectory(path);
  int dirFd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd < 0) {
    error = dir + ": cannot open directory to fsync: " + errnoText(errno);
    return false;
  }
  int synced = ::fsync(dirFd);
  int syncErr = errno;
  ::close(dirFd);
  if (synced != 0) {
    error = dir + ": cannot fsync directory: " + errnoText(syncErr);
    return false;
  }
  return true;
}

} // namespace hotstage::rt
