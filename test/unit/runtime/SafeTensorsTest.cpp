//===- SafeTensorsTest.cpp - The safetensors reader and writer ------------===//

#include "runtime/checkpoint/SafeTensors.h"

#include "TestUtil.h"

#include <gtest/gtest.h>

#include <cstring>
#include <sys/stat.h>

using namespace hotstage::rt;
using namespace hotstage::rt::test;

namespace {

std::string headerOf(const std::vector<uint8_t> &bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = n << 8 | bytes[i];
  return std::string(bytes.begin() + 8, bytes.begin() + 8 + long(n));
}

/// A file with the given header text and `dataBytes` bytes of data.
std::vector<uint8_t> rawFile(const std::string &header, size_t dataBytes) {
  std::vector<uint8_t> bytes(8);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    bytes[i] = uint8_t(n >> (8 * i));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.resize(bytes.size() + dataBytes, 0xAB);
  return bytes;
}

TEST(DType, NamesAndSizes) {
  EXPECT_STREQ(dtypeName(DType::F32), "F32");
  EXPECT_STREQ(dtypeName(DType::BF16), "BF16");
  EXPECT_STREQ(dtypeName(DType::F8E4M3), "F8_E4M3");
  EXPECT_STREQ(dtypeName(DType::Bool), "BOOL");
  EXPECT_EQ(dtypeSize(DType::F64), 8u);
  EXPECT_EQ(dtypeSize(DType::F32), 4u);
  EXPECT_EQ(dtypeSize(DType::F16), 2u);
  EXPECT_EQ(dtypeSize(DType::BF16), 2u);
  EXPECT_EQ(dtypeSize(DType::I64), 8u);
  EXPECT_EQ(dtypeSize(DType::I32), 4u);
  EXPECT_EQ(dtypeSize(DType::U8), 1u);
  EXPECT_EQ(dtypeSize(DType::U16), 2u);
  EXPECT_EQ(dtypeSize(DType::U32), 4u);
  for (DType d :
       {DType::Bool, DType::U8, DType::I8, DType::F8E5M2, DType::F8E4M3,
        DType::I16, DType::U16, DType::F16, DType::BF16, DType::I32, DType::U32,
        DType::F32, DType::F64, DType::I64, DType::U64})
    EXPECT_EQ(parseDType(dtypeName(d)), d);
  EXPECT_FALSE(parseDType("f32"));
}

TEST(SafeTensors, RoundTrip) {
  TempDir dir;
  std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  std::vector<int64_t> ids = {1, -2, 3};
  std::vector<uint16_t> half = {0x3C00, 0xC000};
  std::vector<uint8_t> bytes = {1, 2, 3};
  std::vector<double> scalar = {3.141592653589793};

  SafeTensorsWriter writer;
  writer.add("blocks.0.attn.qkv.weight", DType::F32, {2, 3}, w.data(),
             w.size() * 4);
  writer.add("step", DType::I64, {3}, ids.data(), 24);
  writer.add("h", DType::F16, {2}, half.data(), 4);
  writer.add("mask", DType::U8, {3}, bytes.data(), 3);
  writer.add("pi", DType::F64, {}, scalar.data(), 8);
  writer.add("empty", DType::BF16, {0, 4}, nullptr, 0);
  writer.setMetadata("format", "pt");
  writer.setMetadata("step", "120");
  std::string error;
  std::string path = dir.file("model.safetensors");
  ASSERT_TRUE(writer.writeAtomically(path, error)) << error;

  auto st = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(st) << error;
  EXPECT_EQ(st->path(), path);
  EXPECT_EQ(st->tensors().size(), 6u);
  const TensorEntry *e = st->find("blocks.0.attn.qkv.weight");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->dtype, DType::F32);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(e->bytes, 24u);
  EXPECT_EQ(e->numElements(), 6);
  EXPECT_EQ(std::memcmp(e->data, w.data(), 24), 0);
  // The writer's layout aligns every tensor to its element size.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(e->data) % 4, 0u);

  e = st->find("step");
  ASSERT_TRUE(e);
  EXPECT_EQ(std::memcmp(e->data, ids.data(), 24), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(e->data) % 8, 0u);
  e = st->find("pi");
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->shape.empty());
  EXPECT_EQ(e->numElements(), 1);
  EXPECT_EQ(*static_cast<const double *>(e->data), scalar[0]);
  e = st->find("h");
  ASSERT_TRUE(e);
  EXPECT_EQ(std::memcmp(e->data, half.data(), 4), 0);
  e = st->find("mask");
  ASSERT_TRUE(e);
  EXPECT_EQ(std::memcmp(e->data, bytes.data(), 3), 0);
  e = st->find("empty");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->bytes, 0u);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_FALSE(st->find("missing"));
  EXPECT_FALSE(st->find("__metadata__"));

  EXPECT_EQ(st->metadata(), (std::map<std::string, std::string>{
                                {"format", "pt"}, {"step", "120"}}));
  // tensors() follows the data: 8-byte elements first, then by name.
  std::vector<std::string> order;
  for (const TensorEntry &t : st->tensors())
    order.push_back(t.name);
  EXPECT_EQ(order,
            (std::vector<std::string>{"pi", "step", "blocks.0.attn.qkv.weight",
                                      "empty", "h", "mask"}));
}

TEST(SafeTensors, ByteLayoutMatchesReference) {
  // What Python's safetensors.torch.save_file writes for
  // {"b": torch.tensor([[1., 2., 3.], [4., 5., 6.]]), "a": torch.zeros(1,
  // dtype=torch.uint8)}, except that our top-level keys are sorted.
  TempDir dir;
  std::vector<float> b = {1, 2, 3, 4, 5, 6};
  uint8_t a = 0;
  SafeTensorsWriter writer;
  writer.add("b", DType::F32, {2, 3}, b.data(), 24);
  writer.add("a", DType::U8, {1}, &a, 1);
  std::string error;
  std::string path = dir.file("x.safetensors");
  ASSERT_TRUE(writer.writeAtomically(path, error)) << error;
  std::vector<uint8_t> bytes = readBytes(path);
  std::string json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":"
                     "[24,25]},\"b\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                     "\"data_offsets\":[0,24]}}";
  size_t padded = (json.size() + 7) / 8 * 8;
  ASSERT_EQ(bytes.size(), 8 + padded + 25);
  // u64 little-endian header length, counting the padding.
  EXPECT_EQ(bytes[0], padded);
  for (int i = 1; i < 8; ++i)
    EXPECT_EQ(bytes[i], 0);
  std::string header = headerOf(bytes);
  EXPECT_EQ(header, json + std::string(padded - json.size(), ' '));
  EXPECT_EQ(header.size() % 8, 0u);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + padded, b.data(), 24), 0);
  EXPECT_EQ(bytes.back(), 0);

  std::string built;
  ASSERT_TRUE(writer.buildHeader(built, error));
  EXPECT_EQ(built, header);
}

TEST(SafeTensors, MetadataEscapingRoundTrips) {
  TempDir dir;
  SafeTensorsWriter writer;
  std::string odd =
      "quote\" back\\ nl\n tab\t ctl\x01 utf8 \xc3\xa9 \xf0\x9f\x98\x80";
  writer.setMetadata("config", "{\"n_layer\": 12}");
  writer.setMetadata("odd", odd);
  writer.setMetadata("z", "");
  std::string error;
  std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(writer.writeAtomically(path, error)) << error;
  auto st = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(st) << error;
  EXPECT_TRUE(st->tensors().empty());
  EXPECT_EQ(st->metadata().at("config"), "{\"n_layer\": 12}");
  EXPECT_EQ(st->metadata().at("odd"), odd);
  EXPECT_EQ(st->metadata().at("z"), "");
  EXPECT_NE(headerOf(readBytes(path)).find("ctl\\u0001"), std::string::npos);
}

TEST(SafeTensors, EmptyFileOfTensors) {
  TempDir dir;
  SafeTensorsWriter writer;
  std::string error;
  ASSERT_TRUE(writer.writeAtomically(dir.file("e.safetensors"), error));
  std::vector<uint8_t> bytes = readBytes(dir.file("e.safetensors"));
  EXPECT_EQ(bytes.size(), 16u);
  EXPECT_EQ(headerOf(bytes), "{}      ");
  auto st = SafeTensorsFile::open(dir.file("e.safetensors"), error);
  ASSERT_TRUE(st) << error;
  EXPECT_TRUE(st->tensors().empty());
  EXPECT_TRUE(st->metadata().empty());
}

TEST(SafeTensors, ReadsForeignLayouts) {
  // Key order, whitespace, escapes, unknown fields and a null metadata are
  // all fine; data order need not follow the header.
  TempDir dir;
  std::string header =
      "  { \"__metadata__\" : null ,\n \"x\\u0041\": {\"data_offsets\": [8, "
      "16], \"shape\": [2], \"dtype\": \"I32\", \"extra\": {\"k\": [1, "
      "-2.5e3, true, null, \"s\"]}},\t\"y\": {\"dtype\": \"F64\", "
      "\"shape\": [1], \"data_offsets\": [0, 8]} }  ";
  std::string path = dir.file("f.safetensors");
  writeBytes(path, rawFile(header, 16));
  std::string error;
  auto st = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(st) << error;
  ASSERT_EQ(st->tensors().size(), 2u);
  EXPECT_EQ(st->tensors()[0].name, "y");
  EXPECT_EQ(st->tensors()[1].name, "xA");
  EXPECT_TRUE(st->find("xA"));
  EXPECT_TRUE(st->metadata().empty());
}

TEST(SafeTensors, WriteReplacesAtomically) {
  TempDir dir;
  std::string path = dir.file("c.safetensors");
  std::vector<float> one = {1}, two = {2, 2};
  std::string error;
  SafeTensorsWriter w1;
  w1.add("p", DType::F32, {1}, one.data(), 4);
  ASSERT_TRUE(w1.writeAtomically(path, error));
  SafeTensorsWriter w2;
  w2.add("p", DType::F32, {2}, two.data(), 8);
  ASSERT_TRUE(w2.writeAtomically(path, error));
  auto st = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(st) << error;
  EXPECT_EQ(st->find("p")->shape, (std::vector<int64_t>{2}));
  // No temporary is left behind.
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  struct stat sb;
  EXPECT_NE(stat(tmp.c_str(), &sb), 0);
  // A failing write leaves the old file whole.
  SafeTensorsWriter bad;
  bad.add("p", DType::F32, {3}, two.data(), 8);
  EXPECT_FALSE(bad.writeAtomically(path, error));
  EXPECT_EQ(error, path + ": tensor 'p': 8 bytes given but shape [3] of F32 "
                          "needs 12");
  st = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(st) << error;
  EXPECT_EQ(st->find("p")->bytes, 8u);
}

TEST(SafeTensors, WriterErrors) {
  TempDir dir;
  std::string path = dir.file("w.safetensors");
  float x = 0;
  std::string error;
  {
    SafeTensorsWriter w;
    w.add("a", DType::F32, {1}, &x, 4);
    w.add("a", DType::F32, {1}, &x, 4);
    EXPECT_FALSE(w.writeAtomically(path, error));
    EXPECT_EQ(error, path + ": duplicate tensor name 'a'");
  }
  {
    SafeTensorsWriter w;
    w.add("a", DType::F32, {-1}, &x, 4);
    EXPECT_FALSE(w.writeAtomically(path, error));
    EXPECT_EQ(error, path + ": tensor 'a' has a bad shape [-1] (negative or "
                            "overflowing)");
  }
  {
    SafeTensorsWriter w;
    w.add("__metadata__", DType::F32, {1}, &x, 4);
    EXPECT_FALSE(w.writeAtomically(path, error));
  }
  {
    SafeTensorsWriter w;
    w.add("a", DType::F32, {1}, &x, 4);
    EXPECT_FALSE(w.writeAtomically(dir.file("no/such/dir.safetensors"), error));
    EXPECT_NE(error.find("cannot create"), std::string::npos) << error;
  }
  struct stat sb;
  EXPECT_NE(stat(path.c_str(), &sb), 0);
}

// --- Corrupt files ---------------------------------------------------------

class CorruptSafeTensors : public ::testing::Test {
protected:
  /// Opens a file with this header and data size; returns the error.
  std::string openRaw(const std::string &header, size_t dataBytes) {
    return openBytes(rawFile(header, dataBytes));
  }
  std::string openBytes(const std::vector<uint8_t> &bytes) {
    path = dir.file("bad.safetensors");
    writeBytes(path, bytes);
    std::string error;
    auto st = SafeTensorsFile::open(path, error);
    EXPECT_FALSE(st) << "accepted a bad file";
    // Every error names the file.
    EXPECT_EQ(error.rfind(path + ": ", 0), 0u) << error;
    return error.substr(std::min(error.size(), path.size() + 2));
  }
  /// A valid one-tensor file's bytes.
  std::vector<uint8_t> valid() {
    std::vector<float> v = {1, 2, 3, 4};
    SafeTensorsWriter w;
    w.add("w", DType::F32, {2, 2}, v.data(), 16);
    std::string error;
    EXPECT_TRUE(w.writeAtomically(dir.file("ok.safetensors"), error));
    return readBytes(dir.file("ok.safetensors"));
  }
  TempDir dir;
  std::string path;
};

TEST_F(CorruptSafeTensors, MissingFile) {
  std::string error;
  EXPECT_FALSE(SafeTensorsFile::open(dir.file("none"), error));
  EXPECT_EQ(error, dir.file("none") + ": cannot open: No such file or "
                                      "directory");
}

TEST_F(CorruptSafeTensors, TooShort) {
  EXPECT_EQ(openBytes({1, 2, 3}),
            "file is 3 bytes, too short for the 8-byte header length");
  EXPECT_EQ(openBytes({}),
            "file is 0 bytes, too short for the 8-byte header length");
}

TEST_F(CorruptSafeTensors, Truncated) {
  std::vector<uint8_t> bytes = valid();
  bytes.resize(bytes.size() - 5);
  EXPECT_EQ(openBytes(bytes),
            "tensor 'w': data_offsets [0, 16] lie outside the 11 bytes of "
            "data");
  bytes.resize(20); // into the header
  EXPECT_EQ(openBytes(bytes), "header length " + std::to_string(bytes[0]) +
                                  " runs past the end of the file (20 bytes)");
}

TEST_F(CorruptSafeTensors, HeaderLengthTooLarge) {
  std::vector<uint8_t> bytes = valid();
  for (int i = 0; i < 8; ++i)
    bytes[i] = 0xFF;
  EXPECT_EQ(openBytes(bytes), "header length 18446744073709551615 is over the "
                              "limit of 100000000 bytes");
  bytes[7] = 0;
  bytes[6] = 0;
  bytes[5] = 0;
  bytes[4] = 0;
  bytes[3] = 0;
  EXPECT_EQ(openBytes(bytes), "header length 16777215 runs past the end of "
                              "the file (" +
                                  std::to_string(bytes.size()) + " bytes)");
  EXPECT_EQ(openRaw("", 0), "header is empty");
}

TEST_F(CorruptSafeTensors, TrailingBytes) {
  std::vector<uint8_t> bytes = valid();
  bytes.push_back(0);
  EXPECT_EQ(openBytes(bytes), "the tensors cover 16 bytes of data but the "
                              "file has 17 after the header");
}

/// "invalid header at byte N: " where N is the file offset of `needle`
/// (its last occurrence if `last`) in `header`.
std::string at(const std::string &header, const std::string &needle,
               bool last = false) {
  size_t pos = last ? header.rfind(needle) : header.find(needle);
  EXPECT_NE(pos, std::string::npos) << needle;
  return "invalid header at byte " + std::to_string(8 + pos) + ": ";
}

TEST_F(CorruptSafeTensors, BadJson) {
  std::string entry =
      "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";
  std::string h;
  EXPECT_EQ(openRaw("[]", 0),
            "invalid header at byte 8: expected the header to start with "
            "'{', found '['");
  EXPECT_EQ(openRaw("{", 0), "invalid header at byte 9: expected a string, "
                             "found the end of the header");
  h = "{\"a\" " + entry + "}";
  EXPECT_EQ(openRaw(h, 4),
            at(h, "{\"dtype") + "expected ':' after a key, found '{'");
  h = "{\"a\":" + entry + "} x";
  EXPECT_EQ(openRaw(h, 4),
            at(h, "x") + "unexpected text after the header object");
  h = "{\"a\":" + entry + ",}";
  EXPECT_EQ(openRaw(h, 4), at(h, "}", true) + "expected a string, found '}'");
  h = "{\"a\":" + entry;
  EXPECT_EQ(openRaw(h, 4), "invalid header at byte " +
                               std::to_string(8 + h.size()) +
                               ": expected ',' or '}' after a header entry, "
                               "found the end of the header");
  h = "{\"a\\q\":1}";
  EXPECT_EQ(openRaw(h, 0), at(h, "q") + "bad escape in a string");
  h = "{\"a\\ud800\":1}";
  EXPECT_EQ(openRaw(h, 0),
            at(h, "\":") + "lone high surrogate in a \\u escape");
  h = "{\"a\\udc00\":1}";
  EXPECT_EQ(openRaw(h, 0), at(h, "\":") + "lone low surrogate in a \\u escape");
  h = "{\"a\\u12g4\":1}";
  EXPECT_EQ(openRaw(h, 0), at(h, "g") + "bad \\u escape");
  h = "{\"a\x01\":1}";
  EXPECT_EQ(openRaw(h, 0), at(h, "\x01") + "control character in a string");
  h = "{\"abc";
  EXPECT_EQ(openRaw(h, 0), "invalid header at byte 13: unterminated string");
  EXPECT_EQ(openRaw("{\"a\xff\":1}", 0),
            "header is not valid UTF-8 at byte 11");
  EXPECT_EQ(openRaw("{\"\xc0\x80\":1}", 0), // overlong NUL
            "header is not valid UTF-8 at byte 10");
  h = "{\"a\": 5}";
  EXPECT_EQ(openRaw(h, 0),
            at(h, "5") + "expected an object for tensor 'a', found '5'");
  h = "{\"a\": {\"dtype\": \"F32\", \"x\": tru}}";
  EXPECT_EQ(openRaw(h, 0), at(h, "tru") + "expected a value, found 't'");
  h = "{\"a\": {\"dtype\": \"F32\", \"x\": 1.}}";
  EXPECT_EQ(openRaw(h, 0), at(h, "}}") + "bad number");
  h = "{\"a\": {\"dtype\": \"F32\", \"x\": [1 2]}}";
  EXPECT_EQ(openRaw(h, 0), at(h, "2]") + "expected ',' or ']' in an array, "
                                         "found '2'");
  h = "{\"__metadata__\": {\"k\": 1}}";
  EXPECT_EQ(openRaw(h, 0),
            at(h, "1") + "metadata value for 'k' is not a string");
  h = "{\"__metadata__\": []}";
  EXPECT_EQ(openRaw(h, 0), at(h, "[") + "expected an object for "
                                        "\"__metadata__\", found '['");
  std::string deep =
      "{\"a\":{\"x\":" + std::string(100, '[') + std::string(100, ']') + "}}";
  EXPECT_NE(openRaw(deep, 0).find("nested too deeply"), std::string::npos);
  // A megabyte of nesting must not overflow the stack either.
  std::string huge = "{\"a\":{\"x\":" + std::string(1 << 20, '[');
  EXPECT_NE(openRaw(huge, 0).find("nested too deeply"), std::string::npos);
}

TEST_F(CorruptSafeTensors, MissingOrRepeatedFields) {
  std::string h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}";
  EXPECT_EQ(openRaw(h, 4),
            at(h, "{\"dtype") + "tensor 'a' has no \"data_offsets\" field");
  h = "{\"a\":{}}";
  EXPECT_EQ(openRaw(h, 0), at(h, "{}") + "tensor 'a' has no \"dtype\" field");
  h = "{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}";
  EXPECT_EQ(openRaw(h, 0),
            at(h, "{\"shape") + "tensor 'a' has no \"dtype\" field");
  h = "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}";
  EXPECT_EQ(openRaw(h, 0),
            at(h, "{\"dtype") + "tensor 'a' has no \"shape\" field");
  h = "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}";
  EXPECT_EQ(openRaw(h, 0),
            at(h, "\"dtype\"", true) + "tensor 'a' has two \"dtype\" fields");
  h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}";
  EXPECT_EQ(openRaw(h, 4), at(h, "[0]") + "tensor 'a': data_offsets must "
                                          "hold two numbers, not 1");
  h = "{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}";
  EXPECT_EQ(openRaw(h, 4), at(h, "32") + "expected a string, found '3'");
}

TEST_F(CorruptSafeTensors, DuplicateNames) {
  std::string e = "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}";
  std::string e2 = "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}";
  std::string h = "{\"a\":" + e + ",\"a\":" + e2 + "}";
  EXPECT_EQ(openRaw(h, 2), at(h, "\"a\"", true) + "duplicate tensor name 'a'");
  // The same name written with an escape is the same name.
  h = "{\"a\":" + e + ",\"\\u0061\":" + e2 + "}";
  EXPECT_EQ(openRaw(h, 2), at(h, "\"\\u0061") + "duplicate tensor name 'a'");
  h = "{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}";
  EXPECT_EQ(openRaw(h, 0), at(h, "\"k\"", true) + "duplicate metadata key 'k'");
  h = "{\"__metadata__\":{},\"__metadata__\":{}}";
  EXPECT_EQ(openRaw(h, 0),
            at(h, "\"__metadata__\"", true) + "duplicate \"__metadata__\"");
}

TEST_F(CorruptSafeTensors, BadDTypeAndDims) {
  auto tensor = [](const std::string &dtype, const std::string &shape,
                   const std::string &offsets) {
    return "{\"a\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":" + offsets + "}}";
  };
  EXPECT_EQ(openRaw(tensor("F31", "[1]", "[0,4]"), 4),
            "tensor 'a' has unknown dtype 'F31'");
  std::string h = tensor("F32", "[2,-3]", "[0,4]");
  EXPECT_EQ(openRaw(h, 4), at(h, "-3") + "tensor 'a': dimension -3 is "
                                         "negative");
  h = tensor("F32", "[1.5]", "[0,4]");
  EXPECT_EQ(openRaw(h, 4),
            at(h, "1.5") + "tensor 'a': dimension is not an integer");
  h = tensor("F32", "[1e3]", "[0,4]");
  EXPECT_EQ(openRaw(h, 4),
            at(h, "1e3") + "tensor 'a': dimension is not an integer");
  h = tensor("F32", "[01]", "[0,4]");
  EXPECT_EQ(openRaw(h, 4),
            at(h, "01") + "tensor 'a': dimension 01 has a leading zero");
  h = tensor("F32", "[99999999999999999999]", "[0,4]");
  EXPECT_EQ(openRaw(h, 4), at(h, "999") + "tensor 'a': dimension "
                                          "99999999999999999999 is too large");
  h = tensor("F32", "[9223372036854775808]", "[0,4]");
  EXPECT_EQ(openRaw(h, 4), at(h, "922") + "tensor 'a': dimension "
                                          "9223372036854775808 is too large");
  EXPECT_EQ(openRaw(tensor("F32", "[4294967296,4294967296]", "[0,4]"), 4),
            "tensor 'a': shape [4294967296, 4294967296] of F32 overflows 64 "
            "bits");
  h = tensor("F32", "[\"2\"]", "[0,4]");
  EXPECT_EQ(openRaw(h, 4), at(h, "\"2\"") + "tensor 'a': expected a dimension, "
                                            "found '\"'");
  h = tensor("F32", "2", "[0,4]");
  EXPECT_EQ(openRaw(h, 4), at(h, "2,") + "expected '[', found '2'");
}

TEST_F(CorruptSafeTensors, OffsetsOutOfRange) {
  auto tensor = [](const std::string &offsets) {
    return "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" +
           offsets + "}}";
  };
  EXPECT_EQ(openRaw(tensor("[4,8]"), 4),
            "tensor 'a': data_offsets [4, 8] lie outside the 4 bytes of "
            "data");
  EXPECT_EQ(openRaw(tensor("[4,0]"), 4),
            "tensor 'a': data_offsets [4, 0] end before they begin");
  std::string h = tensor("[0,-4]");
  EXPECT_EQ(openRaw(h, 4),
            at(h, "-4") + "tensor 'a': data offset -4 is negative");
  h = tensor("[18446744073709551612,18446744073709551616]");
  EXPECT_EQ(openRaw(h, 4), at(h, "18446744073709551616") +
                               "tensor 'a': data offset 18446744073709551616 "
                               "is too large");
  EXPECT_EQ(openRaw(tensor("[18446744073709551612,18446744073709551615]"), 4),
            "tensor 'a': data_offsets [18446744073709551612, "
            "18446744073709551615] lie outside the 4 bytes of data");
}

TEST_F(CorruptSafeTensors, ShapeSizeMismatch) {
  EXPECT_EQ(openRaw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                    "\"data_offsets\":[0,20]}}",
                    20),
            "tensor 'a': data_offsets [0, 20] hold 20 bytes but shape [2, 3] "
            "of F32 needs 24");
}

TEST_F(CorruptSafeTensors, OverlapAndGap) {
  std::string a = "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":";
  std::string b = "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":";
  EXPECT_EQ(openRaw("{" + a + "[0,4]}," + b + "[2,6]}}", 6),
            "tensors 'a' and 'b' overlap (byte 2 of the data)");
  EXPECT_EQ(openRaw("{" + a + "[0,4]}," + b + "[6,10]}}", 10),
            "gap in the data: bytes 4 to 6 belong to no tensor (before 'b')");
  EXPECT_EQ(openRaw("{" + a + "[2,6]}}", 6),
            "gap in the data: bytes 0 to 2 belong to no tensor (before 'a')");
}

TEST_F(CorruptSafeTensors, EveryTruncationFailsCleanly) {
  // No prefix of a valid file is accepted, and none crashes.
  std::vector<uint8_t> bytes = valid();
  for (size_t n = 0; n < bytes.size(); ++n)
    openBytes(std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n)));
}

TEST_F(CorruptSafeTensors, ByteFlipsNeverCrash) {
  // Flip each header byte in turn; the reader may accept a few harmless
  // changes (whitespace, a name) but must never crash.
  std::vector<uint8_t> bytes = valid();
  path = dir.file("flip.safetensors");
  for (size_t i = 0; i < bytes.size() - 16; ++i) {
    for (uint8_t x : {0x01, 0x20, 0x80, 0xFF}) {
      std::vector<uint8_t> b = bytes;
      b[i] ^= x;
      writeBytes(path, b);
      std::string error;
      auto st = SafeTensorsFile::open(path, error);
      if (!st)
        EXPECT_EQ(error.rfind(path + ": ", 0), 0u) << error;
    }
  }
}

} // namespace
