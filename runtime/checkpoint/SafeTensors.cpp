//===- SafeTensors.cpp - The safetensors checkpoint format ----------------===//

#include "runtime/checkpoint/SafeTensors.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace hotstage::rt {

namespace {
struct DTypeInfo {
  DType dtype;
  const char *name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::Bool, "BOOL", 1},      {DType::U8, "U8", 1},
    {DType::I8, "I8", 1},          {DType::F8E5M2, "F8_E5M2", 1},
    {DType::F8E4M3, "F8_E4M3", 1}, {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},        {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},      {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},        {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},        {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},
};

// The reference implementation refuses larger headers too.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr int kMaxJsonDepth = 64;
constexpr const char *kMetadataKey = "__metadata__";

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Elements * element size, or false on a negative dimension or overflow.
bool tensorBytes(const std::vector<int64_t> &shape, DType dtype,
                 uint64_t &bytes) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n))
      return false;
  }
  return !__builtin_mul_overflow(n, uint64_t(dtypeSize(dtype)), &bytes);
}

/// Byte offset of the first invalid UTF-8 sequence, or -1.
int64_t invalidUtf8At(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return int64_t(i);
    }
    if (i + len > n)
      return int64_t(i);
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80)
        return int64_t(i);
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF.
    static const uint32_t minimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < minimum[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return int64_t(i);
    i += len;
  }
  return -1;
}

bool validUtf8(std::string_view s) {
  return invalidUtf8At(reinterpret_cast<const uint8_t *>(s.data()), s.size()) <
         0;
}

void appendUtf8(std::string &out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | cp >> 6);
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | cp >> 12);
    out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | cp >> 18);
    out += char(0x80 | (cp >> 12 & 0x3F));
    out += char(0x80 | (cp >> 6 & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

struct ParsedTensor {
  std::string name;
  std::string dtypeName;
  bool haveDType = false;
  std::vector<int64_t> shape;
  bool haveShape = false;
  uint64_t begin = 0, end = 0;
  bool haveOffsets = false;
};

/// A recursive-descent parser for the header's subset of JSON; unknown
/// fields inside a tensor entry are skipped (as the reference does), with
/// nesting bounded so no input can exhaust the stack.
class HeaderParser {
public:
  HeaderParser(const char *data, size_t size, std::string &error)
      : begin_(data), p_(data), end_(data + size), error_(error) {}

  bool parse(std::vector<ParsedTensor> &tensors,
             std::map<std::string, std::string> &metadata) {
    skipSpace();
    if (!expect('{', "the header to start with '{'"))
      return false;
    bool haveMetadata = false;
    std::set<std::string> names;
    bool ok =
        parseMembers("',' or '}' after a header entry", [&](std::string &key,
                                                            const char *keyAt) {
          if (key == kMetadataKey) {
            if (haveMetadata)
              return failAt(keyAt, "duplicate \"__metadata__\"");
            haveMetadata = true;
            return parseMetadata(metadata);
          }
          if (!names.insert(key).second)
            return failAt(keyAt, "duplicate tensor name '" + key + "'");
          ParsedTensor t;
          t.name = std::move(key);
          if (!parseTensor(t))
            return false;
          tensors.push_back(std::move(t));
          return true;
        });
    if (!ok)
      return false;
    skipSpace();
    if (p_ != end_)
      return fail("unexpected text after the header object");
    return true;
  }

private:
  int peek() const { return p_ < end_ ? (unsigned char)*p_ : -1; }

  void skipSpace() {
    while (p_ < end_ &&
           (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r'))
      ++p_;
  }

  bool failAt(const char *at, const std::string &msg) {
    error_ = "invalid header at byte " + std::to_string(8 + (at - begin_)) +
             ": " + msg;
    return false;
  }
  bool fail(const std::string &msg) { return failAt(p_, msg); }

  std::string found() const {
    if (p_ >= end_)
      return "the end of the header";
    unsigned char c = *p_;
    if (c >= 0x20 && c < 0x7F)
      return std::string("'") + char(c) + "'";
    return "byte " + std::to_string(c);
  }

  bool expect(char c, const char *what) {
    if (peek() != (unsigned char)c)
      return fail(std::string("expected ") + what + ", found " + found());
    ++p_;
    return true;
  }

  bool colon() {
    skipSpace();
    if (!expect(':', "':' after a key"))
      return false;
    skipSpace();
    return true;
  }

  bool hex4(uint32_t &v) {
    v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      int c = peek();
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0)
        return fail("bad \\u escape");
      v = v << 4 | uint32_t(d);
    }
    return true;
  }

  bool parseString(std::string &out) {
    if (!expect('"', "a string"))
      return false;
    for (;;) {
      if (p_ >= end_)
        return fail("unterminated string");
      unsigned char c = *p_;
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20)
        return fail("control character in a string");
      if (c != '\\') {
        out += char(c);
        ++p_;
        continue;
      }
      ++p_;
      int e = peek();
      ++p_;
      switch (e) {
      case '"':
      case '\\':
      case '/':
        out += char(e);
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        uint32_t cp;
        if (!hex4(cp))
          return false;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
          return fail("lone low surrogate in a \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          uint32_t low;
          if (peek() != '\\' || p_ + 1 >= end_ || p_[1] != 'u')
            return fail("lone high surrogate in a \\u escape");
          p_ += 2;
          if (!hex4(low))
            return false;
          if (low < 0xDC00 || low > 0xDFFF)
            return fail("bad low surrogate in a \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        appendUtf8(out, cp);
        break;
      }
      default:
        --p_;
        return fail("bad escape in a string");
      }
    }
  }

  struct Integer {
    uint64_t value;
    bool negative;
    const char *at;
  };

  /// A JSON integer; a leading '-' is recorded so callers can say what is
  /// wrong. Messages read "<owner>: <noun> ...", e.g. "tensor 'a':
  /// dimension 01 has a leading zero".
  bool parseInteger(Integer &out, const std::string &owner, const char *noun) {
    std::string what = owner + ": " + noun;
    out = {0, false, p_};
    if (peek() == '-') {
      out.negative = true;
      ++p_;
    }
    if (peek() < '0' || peek() > '9')
      return failAt(out.at,
                    owner + ": expected a " + noun + ", found " + found());
    const char *digits = p_;
    bool overflow = false;
    while (peek() >= '0' && peek() <= '9') {
      overflow |=
          __builtin_mul_overflow(out.value, uint64_t(10), &out.value) ||
          __builtin_add_overflow(out.value, uint64_t(*p_ - '0'), &out.value);
      ++p_;
    }
    std::string text(out.at, size_t(p_ - out.at));
    if (*digits == '0' && p_ - digits > 1)
      return failAt(out.at, what + " " + text + " has a leading zero");
    if (peek() == '.' || peek() == 'e' || peek() == 'E')
      return failAt(out.at, what + " is not an integer");
    if (overflow)
      return failAt(out.at, what + " " + text + " is too large");
    return true;
  }

  bool parseIntArray(std::vector<Integer> &values, const std::string &owner,
                     const char *noun) {
    if (!expect('[', "'['"))
      return false;
    skipSpace();
    if (peek() == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      skipSpace();
      Integer v;
      if (!parseInteger(v, owner, noun))
        return false;
      values.push_back(v);
      skipSpace();
      if (peek() == ',') {
        ++p_;
        continue;
      }
      return expect(']', "',' or ']' in an array");
    }
  }

  /// One field of a tensor entry: dtype, shape, data_offsets, or another
  /// (skipped).
  bool parseTensorField(ParsedTensor &t, const std::string &key,
                        const char *keyAt) {
    auto once = [&](bool &seen) {
      if (seen)
        return failAt(keyAt,
                      "tensor '" + t.name + "' has two \"" + key + "\" fields");
      seen = true;
      return true;
    };
    if (key == "dtype") {
      if (!once(t.haveDType) || !parseString(t.dtypeName))
        return false;
    } else if (key == "shape") {
      if (!once(t.haveShape))
        return false;
      std::vector<Integer> dims;
      std::string owner = "tensor '" + t.name + "'";
      std::string what = owner + ": dimension";
      if (!parseIntArray(dims, owner, "dimension"))
        return false;
      for (const Integer &d : dims) {
        if (d.negative && d.value != 0)
          return failAt(d.at,
                        what + " -" + std::to_string(d.value) + " is negative");
        if (d.value > uint64_t(INT64_MAX))
          return failAt(d.at,
                        what + " " + std::to_string(d.value) + " is too large");
        t.shape.push_back(int64_t(d.value));
      }
    } else if (key == "data_offsets") {
      if (!once(t.haveOffsets))
        return false;
      std::vector<Integer> offsets;
      std::string owner = "tensor '" + t.name + "'";
      std::string what = owner + ": data offset";
      const char *at = p_;
      if (!parseIntArray(offsets, owner, "data offset"))
        return false;
      if (offsets.size() != 2)
        return failAt(at, "tensor '" + t.name +
                              "': data_offsets must hold two numbers, "
                              "not " +
                              std::to_string(offsets.size()));
      for (const Integer &o : offsets)
        if (o.negative && o.value != 0)
          return failAt(o.at,
                        what + " -" + std::to_string(o.value) + " is negative");
      t.begin = offsets[0].value;
      t.end = offsets[1].value;
    } else if (!skipValue(0)) {
      return false;
    }
    return true;
  }

  bool parseTensor(ParsedTensor &t) {
    const char *entryAt = p_;
    if (!expect('{', ("an object for tensor '" + t.name + "'").c_str()))
      return false;
    if (!parseMembers("',' or '}' in a tensor entry",
                      [&](std::string &key, const char *keyAt) {
                        return parseTensorField(t, key, keyAt);
                      }))
      return false;
    const char *missing = !t.haveDType     ? "dtype"
                          : !t.haveShape   ? "shape"
                          : !t.haveOffsets ? "data_offsets"
                                           : nullptr;
    if (missing)
      return failAt(entryAt,
                    "tensor '" + t.name + "' has no \"" + missing + "\" field");
    return true;
  }

  /// The members of a JSON object whose '{' was just read: reads each key
  /// and ':', lets onMember(key, keyAt) read the value, and ends at '}'.
  template <typename OnMember>
  bool parseMembers(const char *separator, OnMember onMember) {
    skipSpace();
    if (peek() == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      skipSpace();
      const char *keyAt = p_;
      std::string key;
      if (!parseString(key) || !colon() || !onMember(key, keyAt))
        return false;
      skipSpace();
      if (peek() == ',') {
        ++p_;
        continue;
      }
      return expect('}', separator);
    }
  }

  bool parseMetadata(std::map<std::string, std::string> &metadata) {
    if (end_ - p_ >= 4 && std::memcmp(p_, "null", 4) == 0) {
      p_ += 4;
      return true;
    }
    if (!expect('{', "an object for \"__metadata__\""))
      return false;
    return parseMembers(
        "',' or '}' in \"__metadata__\"",
        [&](std::string &key, const char *keyAt) {
          if (peek() != '"')
            return fail("metadata value for '" + key + "' is not a string");
          std::string value;
          if (!parseString(value))
            return false;
          if (!metadata.emplace(key, std::move(value)).second)
            return failAt(keyAt, "duplicate metadata key '" + key + "'");
          return true;
        });
  }

  bool skipValue(int depth) {
    if (depth > kMaxJsonDepth)
      return fail("values nested too deeply");
    skipSpace();
    int c = peek();
    if (c == '"') {
      std::string ignored;
      return parseString(ignored);
    }
    if (c == '{' || c == '[') {
      char close = c == '{' ? '}' : ']';
      ++p_;
      skipSpace();
      if (peek() == close) {
        ++p_;
        return true;
      }
      for (;;) {
        skipSpace();
        if (c == '{') {
          std::string ignored;
          if (!parseString(ignored) || !colon())
            return false;
        }
        if (!skipValue(depth + 1))
          return false;
        skipSpace();
        if (peek() == ',') {
          ++p_;
          continue;
        }
        return expect(close, c == '{' ? "',' or '}' in an object"
                                      : "',' or ']' in an array");
      }
    }
    for (const char *word : {"true", "false", "null"}) {
      size_t n = std::strlen(word);
      if (size_t(end_ - p_) >= n && std::memcmp(p_, word, n) == 0) {
        p_ += n;
        return true;
      }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      // JSON's number grammar: -?int frac? exp?
      if (peek() == '-')
        ++p_;
      auto digits = [&] {
        const char *start = p_;
        while (peek() >= '0' && peek() <= '9')
          ++p_;
        return p_ > start;
      };
      if (!digits())
        return fail("bad number");
      if (peek() == '.') {
        ++p_;
        if (!digits())
          return fail("bad number");
      }
      if (peek() == 'e' || peek() == 'E') {
        ++p_;
        if (peek() == '+' || peek() == '-')
          ++p_;
        if (!digits())
          return fail("bad number");
      }
      return true;
    }
    return fail("expected a value, found " + found());
  }

  const char *begin_;
  const char *p_;
  const char *end_;
  std::string &error_;
};

void appendJsonString(std::string &out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    unsigned char c = ch;
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    default:
      if (c < 0x20) {
        static const char hex[] = "0123456789abcdef";
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 15];
      } else {
        out += char(c);
      }
    }
  }
  out += '"';
}
} // namespace

const char *dtypeName(DType dtype) {
  for (const DTypeInfo &info : kDTypes)
    if (info.dtype == dtype)
      return info.name;
  return "?";
}

size_t dtypeSize(DType dtype) {
  for (const DTypeInfo &info : kDTypes)
    if (info.dtype == dtype)
      return info.size;
  return 0;
}

std::optional<DType> parseDType(std::string_view name) {
  for (const DTypeInfo &info : kDTypes)
    if (name == info.name)
      return info.dtype;
  return std::nullopt;
}

int64_t TensorEntry::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::unique_ptr<SafeTensorsFile> SafeTensorsFile::open(const std::string &path,
                                                       std::string &error) {
  std::unique_ptr<MappedFile> file = MappedFile::open(path, error);
  if (!file)
    return nullptr;
  auto fail = [&](const std::string &msg) {
    error = path + ": " + msg;
    return nullptr;
  };
  const uint8_t *base = file->data();
  uint64_t size = file->size();
  if (size < 8)
    return fail("file is " + std::to_string(size) +
                " bytes, too short for the 8-byte header length");
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = headerLen << 8 | base[i];
  if (headerLen > kMaxHeaderBytes)
    return fail("header length " + std::to_string(headerLen) +
                " is over the limit of " + std::to_string(kMaxHeaderBytes) +
                " bytes");
  if (headerLen > size - 8)
    return fail("header length " + std::to_string(headerLen) +
                " runs past the end of the file (" + std::to_string(size) +
                " bytes)");
  if (headerLen == 0)
    return fail("header is empty");
  const uint8_t *header = base + 8;
  int64_t badUtf8 = invalidUtf8At(header, headerLen);
  if (badUtf8 >= 0)
    return fail("header is not valid UTF-8 at byte " +
                std::to_string(8 + badUtf8));

  std::vector<ParsedTensor> parsed;
  std::unique_ptr<SafeTensorsFile> st(new SafeTensorsFile());
  std::string parseError;
  HeaderParser parser(reinterpret_cast<const char *>(header), headerLen,
                      parseError);
  if (!parser.parse(parsed, st->metadata_))
    return fail(parseError);

  uint64_t dataStart = 8 + headerLen;
  uint64_t dataSize = size - dataStart;
  for (const ParsedTensor &t : parsed) {
    std::optional<DType> dtype = parseDType(t.dtypeName);
    if (!dtype)
      return fail("tensor '" + t.name + "' has unknown dtype '" + t.dtypeName +
                  "'");
    uint64_t need;
    if (!tensorBytes(t.shape, *dtype, need))
      return fail("tensor '" + t.name + "': shape " + shapeText(t.shape) +
                  " of " + t.dtypeName + " overflows 64 bits");
    std::string offsets =
        "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
    if (t.end < t.begin)
      return fail("tensor '" + t.name + "': data_offsets " + offsets +
                  " end before they begin");
    if (t.end > dataSize)
      return fail("tensor '" + t.name + "': data_offsets " + offsets +
                  " lie outside the " + std::to_string(dataSize) +
                  " bytes of data");
    if (t.end - t.begin != need)
      return fail("tensor '" + t.name + "': data_offsets " + offsets +
                  " hold " + std::to_string(t.end - t.begin) +
                  " bytes but shape " + shapeText(t.shape) + " of " +
                  t.dtypeName + " needs " + std::to_string(need));
    st->tensors_.push_back(
        {t.name, *dtype, t.shape, base + dataStart + t.begin, size_t(need)});
  }

  // The data must be covered exactly, without gaps or overlaps, as the
  // reference implementation requires.
  auto offsetOf = [&](const TensorEntry &e) {
    return uint64_t(static_cast<const uint8_t *>(e.data) - base) - dataStart;
  };
  std::sort(st->tensors_.begin(), st->tensors_.end(),
            [&](const TensorEntry &a, const TensorEntry &b) {
              uint64_t oa = offsetOf(a), ob = offsetOf(b);
              if (oa != ob)
                return oa < ob;
              // Empty tensors first; names are unique, so the order is total.
              return a.bytes != b.bytes ? a.bytes < b.bytes : a.name < b.name;
            });
  uint64_t covered = 0;
  const TensorEntry *previous = nullptr;
  for (const TensorEntry &e : st->tensors_) {
    uint64_t begin = offsetOf(e);
    if (begin < covered)
      return fail("tensors '" + previous->name + "' and '" + e.name +
                  "' overlap (byte " + std::to_string(begin) + " of the data)");
    if (begin > covered)
      return fail("gap in the data: bytes " + std::to_string(covered) + " to " +
                  std::to_string(begin) + " belong to no tensor (before '" +
                  e.name + "')");
    covered = begin + e.bytes;
    previous = &e;
  }
  if (covered != dataSize)
    return fail("the tensors cover " + std::to_string(covered) +
                " bytes of data but the file has " + std::to_string(dataSize) +
                " after the header");

  for (size_t i = 0; i < st->tensors_.size(); ++i)
    st->index_.emplace(st->tensors_[i].name, i);
  st->file_ = std::move(file);
  return st;
}

const TensorEntry *SafeTensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafeTensorsWriter::add(std::string name, DType dtype,
                            std::vector<int64_t> shape, const void *data,
                            size_t bytes) {
  tensors_.push_back({std::move(name), dtype, std::move(shape), data, bytes});
}

void SafeTensorsWriter::setMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

std::vector<const SafeTensorsWriter::Pending *>
SafeTensorsWriter::dataOrder() const {
  std::vector<const Pending *> order;
  for (const Pending &t : tensors_)
    order.push_back(&t);
  // Largest elements first (then by name) keeps every tensor aligned to
  // its element size, as the reference writer does.
  std::sort(order.begin(), order.end(), [](const Pending *a, const Pending *b) {
    size_t sa = dtypeSize(a->dtype), sb = dtypeSize(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });
  return order;
}

bool SafeTensorsWriter::buildHeader(std::string &header,
                                    std::string &error) const {
  std::map<std::string, std::string> entries; // sorted keys
  uint64_t offset = 0;
  for (const Pending *t : dataOrder()) {
    if (t->name == kMetadataKey) {
      error = "\"__metadata__\" cannot name a tensor";
      return false;
    }
    if (!validUtf8(t->name)) {
      error = "tensor name '" + t->name + "' is not valid UTF-8";
      return false;
    }
    uint64_t need;
    if (!tensorBytes(t->shape, t->dtype, need)) {
      error = "tensor '" + t->name + "' has a bad shape " +
              shapeText(t->shape) + " (negative or overflowing)";
      return false;
    }
    if (need != t->bytes) {
      error = "tensor '" + t->name + "': " + std::to_string(t->bytes) +
              " bytes given but shape " + shapeText(t->shape) + " of " +
              dtypeName(t->dtype) + " needs " + std::to_string(need);
      return false;
    }
    if (t->bytes > 0 && !t->data) {
      error = "tensor '" + t->name + "' has no data";
      return false;
    }
    std::string json = "{\"dtype\":\"";
    json += dtypeName(t->dtype);
    json += "\",\"shape\":[";
    for (size_t i = 0; i < t->shape.size(); ++i)
      json += (i ? "," : "") + std::to_string(t->shape[i]);
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," +
            std::to_string(offset + need) + "]}";
    offset += need;
    if (!entries.emplace(t->name, std::move(json)).second) {
      error = "duplicate tensor name '" + t->name + "'";
      return false;
    }
  }
  if (!metadata_.empty()) {
    std::string json = "{";
    for (const auto &[key, value] : metadata_) {
      if (!validUtf8(key) || !validUtf8(value)) {
        error = "metadata '" + key + "' is not valid UTF-8";
        return false;
      }
      if (json.size() > 1)
        json += ',';
      appendJsonString(json, key);
      json += ':';
      appendJsonString(json, value);
    }
    entries.emplace(kMetadataKey, json + "}");
  }
  header = "{";
  for (const auto &[key, json] : entries) {
    if (header.size() > 1)
      header += ',';
    appendJsonString(header, key);
    header += ':';
    header += json;
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');
  return true;
}

bool SafeTensorsWriter::writeAtomically(const std::string &path,
                                        std::string &error) const {
  std::string header;
  if (!buildHeader(header, error)) {
    error = path + ": " + error;
    return false;
  }
  uint8_t length[8];
  for (int i = 0; i < 8; ++i)
    length[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
  std::vector<ByteRange> pieces = {{length, 8}, {header.data(), header.size()}};
  for (const Pending *t : dataOrder())
    pieces.push_back({t->data, t->bytes});
  return writeFileAtomically(path, pieces, error);
}

} // namespace hotstage::rt
