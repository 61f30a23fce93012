//===- KernelBuilder.h - Writing kernels as MLIR, host and GPU -*- C++ -*-===//
//
// What HostLowering writes its kernels with (func, scf, arith, memref and
// vector ops over bare buffers): Kernel, one kernel function under
// construction (loads and stores that round to bf16 where a buffer is bf16,
// 128-bit chunks, loops, reductions), and RowLanes, a row that the 32 lanes
// of a warp reduce together (warp shuffles on a GPU; on the host, the same
// additions in the same order, so that both give the same bits), or a block
// of warps through shared memory.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_HOST_KERNELBUILDER_H
#define HOTSTAGE_COMPILER_HOST_KERNELBUILDER_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>

namespace hotstage::host::kernels {
using namespace mlir;

/// The bf16 bits of f32 `x` (i16), rounded to nearest with ties to even
/// (NaN stays NaN) by integer ops: the same bits on every target, with no
/// runtime library call.
inline Value bf16Bits(OpBuilder &b, Location loc, Value x) {
  Type i32 = b.getI32Type(), i16 = b.getI16Type();
  auto c32 = [&](uint32_t v) {
    return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v));
  };
  Value bits = arith::BitcastOp::create(b, loc, i32, x);
  Value lsb = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, bits, c32(16)), c32(1));
  Value rounded = arith::AddIOp::create(
      b, loc, bits, arith::AddIOp::create(b, loc, lsb, c32(0x7fff)));
  Value isNan = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNO, x, x);
  Value quiet = arith::OrIOp::create(b, loc, bits, c32(0x00400000));
  Value chosen = arith::SelectOp::create(b, loc, isNan, quiet, rounded);
  return arith::TruncIOp::create(
      b, loc, i16, arith::ShRUIOp::create(b, loc, chosen, c32(16)));
}

/// The body of one kernel under construction: its function, a builder at
/// its end, its buffers and its [begin, end) range.
struct Kernel {
  func::FuncOp func;
  OpBuilder b;
  Location loc;
  SmallVector<Value> args;
  Value begin, end;
  /// The narrowest element of the kernel's buffers, in bits: of its
  /// arguments' types, or of the buffers a call gives it (a buffer kept in
  /// bf16 that the kernel reads as f32, retypedForBf16 later). How many
  /// elements a 128-bit access holds.
  unsigned narrowestBits = 32;

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value f32(double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }
  Value f64(double v) {
    return arith::ConstantOp::create(b, loc, b.getF64FloatAttr(v));
  }
  Value load(Value m, ValueRange i) {
    return memref::LoadOp::create(b, loc, m, i);
  }
  /// i < n, unsigned (as index).
  Value below(Value i, int64_t n) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, i, idx(n));
  }
  Value equal(Value i, Value j) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, i, j);
  }
  /// body() where `condition` holds.
  void when(Value condition, llvm::function_ref<void()> body) {
    auto guard = scf::IfOp::create(b, loc, condition, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&guard.getThenRegion().front());
    body();
  }
  /// `v` as a buffer of `element` holds it: an f32 into a bf16 buffer (a
  /// value only GEMMs read, kept in bf16: storeInBf16) rounds as the GEMMs'
  /// cast would; a bf16 into an f32 buffer widens (exactly).
  Value storedAs(Value v, Type element) {
    if (element.isBF16() && v.getType().isF32())
      return arith::BitcastOp::create(b, loc, b.getBF16Type(),
                                      bf16Bits(b, loc, v));
    if (element.isF32() && v.getType().isBF16())
      return arith::ExtFOp::create(b, loc, element, v);
    return v;
  }
  void store(Value v, Value m, ValueRange i) {
    Type element = cast<MemRefType>(m.getType()).getElementType();
    memref::StoreOp::create(b, loc, storedAs(v, element), m, i);
  }
  /// A chunk of n elements' alignment: its size, at most 16 bytes (eight
  /// floats are two 128-bit accesses).
  static llvm::Align chunkAlignment(Type element, int64_t n) {
    return llvm::Align(
        std::min<int64_t>(16, n * element.getIntOrFloatBitWidth() / 8));
  }
  /// Elements at .. at + n - 1 along the last dimension of `m`, as one
  /// vector load aligned to its size (a 128-bit load of four floats or
  /// eight bf16: the caller knows the chunk starts on such a boundary).
  SmallVector<Value> loadChunk(Value m, ValueRange at, int64_t n) {
    Type element = cast<MemRefType>(m.getType()).getElementType();
    auto type = VectorType::get({n}, element);
    Value v = vector::LoadOp::create(b, loc, type, m, at, /*nontemporal=*/false,
                                     chunkAlignment(element, n));
    SmallVector<Value> elements;
    for (int64_t e = 0; e < n; ++e)
      elements.push_back(vector::ExtractOp::create(b, loc, v, e));
    return elements;
  }
  /// Stores `values` from `at` on along the last dimension of `m` as one
  /// aligned vector store, each converted as storedAs converts it.
  void storeChunk(ArrayRef<Value> values, Value m, ValueRange at) {
    Type element = cast<MemRefType>(m.getType()).getElementType();
    SmallVector<Value> converted;
    for (Value v : values)
      converted.push_back(storedAs(v, element));
    int64_t n = values.size();
    Value v = vector::FromElementsOp::create(
        b, loc, VectorType::get({n}, element), converted);
    vector::StoreOp::create(b, loc, v, m, at, /*nontemporal=*/false,
                            chunkAlignment(element, n));
  }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  Value max(Value x, Value y) {
    return arith::MaximumFOp::create(b, loc, x, y);
  }
  Value exp(Value x) { return math::ExpOp::create(b, loc, x); }
  Value addi(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value muli(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value divi(Value x, Value y) { return arith::DivUIOp::create(b, loc, x, y); }
  Value remi(Value x, Value y) { return arith::RemUIOp::create(b, loc, x, y); }
  Value toIndex(Value id) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), id);
  }

  /// The row-major indices of element `flat` of `shape`.
  SmallVector<Value> unflatten(Value flat, ArrayRef<int64_t> shape) {
    SmallVector<Value> at(shape.size());
    Value rest = flat;
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d > 0; --d) {
      at[d] = remi(rest, idx(shape[d]));
      rest = divi(rest, idx(shape[d]));
    }
    if (!shape.empty())
      at[0] = rest;
    return at;
  }

  /// Folds indices first, first + stride, ... below `end` into one f32
  /// accumulator: the strided walk of a split reduction (neighbouring
  /// `first`s read neighbouring elements). `body(acc, i)` only sees indices
  /// in range; past the end the accumulator is kept.
  Value foldStrided(Value first, int64_t stride, int64_t end, Value init,
                    llvm::function_ref<Value(Value, Value)> body) {
    int64_t steps = (end + stride - 1) / stride;
    return reduce(0, steps, init, [&](Value step, Value acc) {
      Value i = addi(first, muli(step, idx(stride)));
      Value inRange =
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, i, idx(end));
      Value safe = arith::SelectOp::create(b, loc, inRange, i, idx(0));
      return arith::SelectOp::create(b, loc, inRange, body(acc, safe), acc)
          .getResult();
    });
  }

  /// for (i = lb; i < ub; ++i) body(i)
  void loop(Value lb, Value ub, llvm::function_ref<void(Value)> body) {
    auto op = scf::ForOp::create(b, loc, lb, ub, idx(1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(op.getBody());
    body(op.getInductionVar());
  }
  void loop(int64_t lb, int64_t ub, llvm::function_ref<void(Value)> body) {
    loop(idx(lb), idx(ub), body);
  }
  /// A loop carrying one f32 accumulator; returns its final value.
  Value reduce(Value lb, Value ub, Value init,
               llvm::function_ref<Value(Value, Value)> body) {
    auto op = scf::ForOp::create(b, loc, lb, ub, idx(1), ValueRange{init});
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(op.getBody());
    Value next = body(op.getInductionVar(), op.getRegionIterArgs()[0]);
    scf::YieldOp::create(b, loc, next);
    return op.getResult(0);
  }
  Value reduce(int64_t lb, int64_t ub, Value init,
               llvm::function_ref<Value(Value, Value)> body) {
    return reduce(idx(lb), idx(ub), init, body);
  }
};

/// Floats in 16 bytes: a GPU thread's widest load.
constexpr int64_t kVector = 4;

/// The columns a thread takes at a time where `fits` them: 16 bytes of
/// elements of `bits` (one 128-bit load of a bf16 buffer, two of an f32
/// one), else four, else one.
inline int64_t chunkWhere(unsigned bits,
                          llvm::function_ref<bool(int64_t)> fits) {
  for (int64_t vector : {int64_t(128 / bits), kVector})
    if (fits(vector))
      return vector;
  return 1;
}
/// The same along a last dimension of `n` elements, in chunks of `per`
/// threads (a row's 32 lanes; 1 for an elementwise kernel).
inline int64_t chunkColumns(int64_t n, int64_t per, unsigned bits) {
  return chunkWhere(bits,
                    [&](int64_t vector) { return n % (per * vector) == 0; });
}

/// On a kernel that needs its GPU blocks of a size (its threads share
/// memory): the threads a block.
constexpr llvm::StringLiteral kBlockAttr = "hotstage.block";

/// An f32 array of `shape` in the GPU block's shared memory, `name` (one
/// for the kernels module, each kernel's block its own copy; on the host
/// nothing reads it).
inline Value sharedArray(Kernel &k, StringRef name, ArrayRef<int64_t> shape) {
  auto space = gpu::AddressSpaceAttr::get(k.b.getContext(),
                                          gpu::AddressSpace::Workgroup);
  auto type = MemRefType::get(shape, k.b.getF32Type(),
                              MemRefLayoutAttrInterface(), space);
  auto module = k.func->getParentOfType<ModuleOp>();
  if (!module.lookupSymbol(name)) {
    OpBuilder top = OpBuilder::atBlockBegin(module.getBody());
    memref::GlobalOp::create(top, k.loc, name, top.getStringAttr("private"),
                             type, Attribute(), false, IntegerAttr());
  }
  return memref::GetGlobalOp::create(k.b, k.loc, type, name);
}

/// The 32 lanes of a row (a warp on a GPU) that reduce it together. Lane
/// l walks the row's chunks l, l + 32, ... of `vector` neighbouring
/// columns (16 bytes of the kernel's narrowest buffer: one 128-bit load on
/// a GPU, neighbouring lanes reading neighbouring chunks) where the row
/// divides into whole chunks of every lane, else its columns l, l + 32,
/// .... A sum or maximum
/// combines the lanes' partials as warp shuffles do, halving the distance
/// (xor 16, 8, 4, 2, 1), which leaves the same bits in every lane. With
/// `shuffles` (the GPU) each index of the kernel is one lane of a row;
/// without, each index is a row whose lanes run in turn, keeping their
/// partials in a 32-float array, so the host computes bitwise what the
/// GPU's warps compute.
///
/// A row may take several warps (`warps`: a GPU block of 32 * warps
/// threads a row, which the kernel's `hotstage.block` attribute asks for),
/// its lanes 0 .. 32 * warps walking its chunks in turn; maxSumExpOfChunks
/// then combines the warps' pairs through shared memory, in warp order.
struct RowLanes {
  static constexpr int64_t kLanes = 32;
  /// The kernel's parallel range for `rows` rows.
  static int64_t range(int64_t rows, bool shuffles, int64_t warps = 1) {
    return shuffles ? rows * kLanes * warps : rows;
  }

  RowLanes(Kernel &k, Value index, int64_t d, bool shuffles)
      : k(k), d(d), shuffles(shuffles), vector(defaultVector(k, d)) {
    row = shuffles ? k.divi(index, k.idx(kLanes)) : index;
    if (shuffles)
      lane = k.remi(index, k.idx(kLanes));
  }
  /// A row on `warps` warps (a GPU block), walked in chunks of `vector`
  /// columns whether or not the row holds whole chunks of every lane, or
  /// whole chunks at all (the caller's loads then take a chunk's columns
  /// one at a time).
  RowLanes(Kernel &k, Value index, int64_t d, bool shuffles, int64_t warps,
           int64_t vector)
      : k(k), d(d), shuffles(shuffles), vector(vector), warps(warps) {
    row = shuffles ? k.divi(index, k.idx(lanesPerRow())) : index;
    if (shuffles)
      lane = k.remi(index, k.idx(lanesPerRow()));
  }
  /// Row `row` on lane `lane` (null without shuffles): a warp that walks
  /// several rows.
  RowLanes(Kernel &k, Value row, Value lane, int64_t d, bool shuffles)
      : k(k), d(d), shuffles(shuffles), vector(defaultVector(k, d)), row(row),
        lane(lane) {}

  /// A row's chunks: 16 bytes of the kernel's narrowest buffer where every
  /// lane has whole chunks of them (a bf16 row of 768 columns: 8), else
  /// four columns, else one.
  static int64_t defaultVector(Kernel &k, int64_t d) {
    return chunkColumns(d, kLanes, k.narrowestBits);
  }

  /// combine over the row's columns j of term(j), starting from `init` in
  /// every lane; `combine` must be commutative (add, maximum).
  Value reduce(Value init, llvm::function_ref<Value(Value, Value)> combine,
               llvm::function_ref<Value(Value)> term) {
    assert(warps == 1 && "a row on one warp");
    auto fold = [&](Value l) {
      if (vector == 1)
        return k.foldStrided(l, kLanes, d, init, [&](Value acc, Value j) {
          return combine(acc, term(j));
        });
      return k.reduce(0, d / (kLanes * vector), init,
                      [&](Value step, Value acc) {
                        Value first = chunkStart(l, step);
                        for (int64_t e = 0; e < vector; ++e)
                          acc = combine(acc, term(k.addi(first, k.idx(e))));
                        return acc;
                      });
    };
    if (shuffles) {
      Value v = fold(lane);
      for (int32_t offset = kLanes / 2; offset >= 1; offset /= 2) {
        Value other = gpu::ShuffleOp::create(k.b, k.loc, v, offset, kLanes,
                                             gpu::ShuffleMode::XOR)
                          .getShuffleResult();
        v = combine(v, other);
      }
      return v;
    }
    // At the kernel's entry, not in its loop over rows (the stack would
    // grow a row at a time).
    OpBuilder entry = OpBuilder::atBlockBegin(&k.func.getBody().front());
    Value partial = memref::AllocaOp::create(
        entry, k.loc, MemRefType::get({kLanes}, k.b.getF32Type()));
    k.loop(0, kLanes, [&](Value l) { k.store(fold(l), partial, l); });
    // Lane l < offset takes lane l + offset's partial, as lane l reads lane
    // l ^ offset's; the others hold the same values mirrored.
    for (int64_t offset = kLanes / 2; offset >= 1; offset /= 2)
      k.loop(0, offset, [&](Value l) {
        Value other = k.load(partial, k.addi(l, k.idx(offset)));
        k.store(combine(k.load(partial, l), other), partial, l);
      });
    return k.load(partial, k.idx(0));
  }
  Value sum(llvm::function_ref<Value(Value)> term) {
    return reduce(
        k.f32(0), [&](Value a, Value b) { return k.add(a, b); }, term);
  }

  /// The row's maximum m of term(j) and the sum of exp(term(j) - m), in
  /// one pass over the row rather than two (the online softmax): each lane
  /// keeps a running maximum and its sum scaled to it, taking kGroup of its
  /// steps at a time (one rescaling exp per group), and the lanes combine
  /// their pairs as warp shuffles do. A row too wide to stay in cache (a
  /// vocabulary's logits) is read once.
  std::pair<Value, Value> maxSumExp(llvm::function_ref<Value(Value)> term) {
    return maxSumExpOfChunks([&](Value first) {
      SmallVector<Value> xs;
      for (int64_t e = 0; e < vector; ++e)
        xs.push_back(term(k.addi(first, k.idx(e))));
      return xs;
    });
  }
  /// The same of the values chunk(first) gives for the `vector` columns
  /// from `first`, of which those before `columns` count (a chunk past the
  /// row's end, of a lane's last group of steps, reads the row's first
  /// chunk instead).
  std::pair<Value, Value>
  maxSumExpOfChunks(llvm::function_ref<SmallVector<Value>(Value)> chunk) {
    constexpr int64_t kGroup = 4;
    // Below any value, yet lowest - x is finite: exp of it is 0 on every
    // target's expansion of exp, where -inf might not be.
    Value lowest = k.f32(-3.4028234663852886e38);
    int64_t perStep = lanesPerRow() * vector;
    int64_t steps = (d + perStep - 1) / perStep;
    int64_t groups = (steps + kGroup - 1) / kGroup;
    bool overhang = groups * kGroup * perStep > d;
    bool masked = columns < groups * kGroup * perStep;
    auto fold = [&](Value l) -> std::pair<Value, Value> {
      auto loop = scf::ForOp::create(k.b, k.loc, k.idx(0), k.idx(groups),
                                     k.idx(1), ValueRange{lowest, k.f32(0)});
      OpBuilder::InsertionGuard guard(k.b);
      k.b.setInsertionPointToStart(loop.getBody());
      Value group = loop.getInductionVar();
      Value m = loop.getRegionIterArgs()[0], s = loop.getRegionIterArgs()[1];
      SmallVector<Value> xs, present;
      for (int64_t g = 0; g < kGroup; ++g) {
        Value step = k.addi(k.muli(group, k.idx(kGroup)), k.idx(g));
        Value first = chunkStart(l, step);
        xs.append(chunk(overhang ? inRow(first) : first));
        for (int64_t e = 0; masked && e < vector; ++e)
          present.push_back(k.below(k.addi(first, k.idx(e)), columns));
      }
      // Columns past the row's end count as nothing.
      auto counted = [&](size_t i, Value x, Value otherwise) -> Value {
        if (!masked)
          return x;
        return arith::SelectOp::create(k.b, k.loc, present[i], x, otherwise);
      };
      Value top = lowest;
      for (auto [i, x] : llvm::enumerate(xs))
        top = k.max(top, counted(i, x, lowest));
      Value next = k.max(m, top);
      Value sum = k.mul(s, k.exp(k.sub(m, next)));
      for (auto [i, x] : llvm::enumerate(xs))
        sum = k.add(sum, counted(i, k.exp(k.sub(x, next)), k.f32(0)));
      scf::YieldOp::create(k.b, k.loc, ValueRange{next, sum});
      return {loop.getResult(0), loop.getResult(1)};
    };
    // (m, s) and (m', s') as one pair: either order gives the same bits.
    auto combine = [&](Value m, Value s, Value om, Value os) {
      Value next = k.max(m, om);
      Value sum = k.add(k.mul(s, k.exp(k.sub(m, next))),
                        k.mul(os, k.exp(k.sub(om, next))));
      return std::pair<Value, Value>{next, sum};
    };
    // The pairs of the warps (pairs[w * stride], as each warp's lane 0
    // holds it), combined in warp order: the same bits in every lane.
    auto combineWarps = [&](Value pairs,
                            int64_t stride) -> std::pair<Value, Value> {
      auto at = [&](int64_t w, int64_t i) {
        return k.load(pairs, {k.idx(w * stride), k.idx(i)});
      };
      Value m = at(0, 0), s = at(0, 1);
      for (int64_t w = 1; w < warps; ++w)
        std::tie(m, s) = combine(m, s, at(w, 0), at(w, 1));
      return {m, s};
    };
    if (shuffles) {
      Value m, s;
      std::tie(m, s) = fold(lane);
      for (int32_t offset = kLanes / 2; offset >= 1; offset /= 2) {
        auto shuffle = [&](Value v) {
          return gpu::ShuffleOp::create(k.b, k.loc, v, offset, kLanes,
                                        gpu::ShuffleMode::XOR)
              .getShuffleResult();
        };
        Value om = shuffle(m), os = shuffle(s);
        std::tie(m, s) = combine(m, s, om, os);
      }
      if (warps == 1)
        return {m, s};
      // The block is the row's: its shared memory holds the row's pairs.
      Value pairs = sharedPairs();
      Value warp = k.divi(lane, k.idx(kLanes));
      k.when(k.equal(k.remi(lane, k.idx(kLanes)), k.idx(0)), [&] {
        k.store(m, pairs, {warp, k.idx(0)});
        k.store(s, pairs, {warp, k.idx(1)});
      });
      gpu::BarrierOp::create(k.b, k.loc);
      return combineWarps(pairs, 1);
    }
    OpBuilder entry = OpBuilder::atBlockBegin(&k.func.getBody().front());
    auto type = MemRefType::get({lanesPerRow(), 2}, k.b.getF32Type());
    Value partial = memref::AllocaOp::create(entry, k.loc, type);
    k.loop(0, lanesPerRow(), [&](Value l) {
      auto [m, s] = fold(l);
      k.store(m, partial, {l, k.idx(0)});
      k.store(s, partial, {l, k.idx(1)});
    });
    // Each warp's lanes as its shuffles combine them, then the warps' lane
    // 0 pairs in warp order.
    for (int64_t offset = kLanes / 2; offset >= 1; offset /= 2)
      k.loop(0, warps * offset, [&](Value i) {
        Value warpStart = k.muli(k.divi(i, k.idx(offset)), k.idx(kLanes));
        Value l = k.addi(warpStart, k.remi(i, k.idx(offset)));
        Value o = k.addi(l, k.idx(offset));
        auto [m, s] = combine(
            k.load(partial, {l, k.idx(0)}), k.load(partial, {l, k.idx(1)}),
            k.load(partial, {o, k.idx(0)}), k.load(partial, {o, k.idx(1)}));
        k.store(m, partial, {l, k.idx(0)});
        k.store(s, partial, {l, k.idx(1)});
      });
    return combineWarps(partial, kLanes);
  }
  Value max(llvm::function_ref<Value(Value)> term) {
    return reduce(
        k.f32(-INFINITY), [&](Value a, Value b) { return k.max(a, b); }, term);
  }

  /// out[row, j] = value(j) for every column j of the row, each lane its
  /// own; a chunk's values all before its stores (one 128-bit store, its
  /// loads not held back by the stores between them).
  void writeRow(Value out, llvm::function_ref<Value(Value)> value) {
    writeRow(ArrayRef<Value>(out), value);
  }
  /// The same into each of `outs` (each converting as Kernel::store does).
  void writeRow(ArrayRef<Value> outs, llvm::function_ref<Value(Value)> value) {
    assert(warps == 1 && "a row on one warp");
    auto walk = [&](Value l) {
      int64_t perStep = kLanes * vector;
      k.loop(0, (d + perStep - 1) / perStep, [&](Value step) {
        if (vector > 1) {
          Value first = chunkStart(l, step);
          SmallVector<Value> columns, values;
          for (int64_t e = 0; e < vector; ++e) {
            columns.push_back(k.addi(first, k.idx(e)));
            values.push_back(value(columns.back()));
          }
          for (Value out : outs)
            for (int64_t e = 0; e < vector; ++e)
              k.store(values[e], out, {row, columns[e]});
          return;
        }
        Value j = k.addi(l, k.muli(step, k.idx(kLanes)));
        auto store = [&] {
          Value v = value(j);
          for (Value out : outs)
            k.store(v, out, {row, j});
        };
        if (d % kLanes == 0)
          return store();
        k.when(k.below(j, d), store);
      });
    };
    if (shuffles)
      return walk(lane);
    k.loop(0, kLanes, walk);
  }

  /// body() once per row: in its first lane.
  void once(llvm::function_ref<void()> body) {
    if (!shuffles)
      return body();
    k.when(k.equal(lane, k.idx(0)), body);
  }

  /// body() once per row: in the lane whose chunks hold column `j`, before
  /// anything that lane writes after it (a column it may overwrite).
  void onLaneOf(Value j, llvm::function_ref<void()> body) {
    if (!shuffles)
      return body();
    Value owner = k.remi(k.divi(j, k.idx(vector)), k.idx(lanesPerRow()));
    k.when(k.equal(lane, owner), body);
  }

  /// out[row, first ..] = values(first) for each chunk of the row's d
  /// columns (padding too: the values of every column a chunk holds), one
  /// vector store a chunk where rows hold whole chunks, each lane its own.
  void writeChunks(Value out,
                   llvm::function_ref<SmallVector<Value>(Value)> values) {
    auto walk = [&](Value l) {
      int64_t perStep = lanesPerRow() * vector;
      k.loop(0, (d + perStep - 1) / perStep, [&](Value step) {
        Value first = chunkStart(l, step);
        auto store = [&] {
          if (vector == 1)
            return k.store(values(first).front(), out, {row, first});
          if (d % vector == 0)
            return k.storeChunk(values(first), out, {row, first});
          // A chunk that may cross the row's end: those columns inside.
          SmallVector<Value> chunk = values(first);
          for (int64_t e = 0; e < static_cast<int64_t>(chunk.size()); ++e) {
            Value j = k.addi(first, k.idx(e));
            k.when(k.below(j, d), [&] { k.store(chunk[e], out, {row, j}); });
          }
        };
        if (d % perStep == 0)
          return store();
        k.when(k.below(first, d), store);
      });
    };
    if (shuffles)
      return walk(lane);
    k.loop(0, lanesPerRow(), walk);
  }

  /// Column j, or column 0 for a j past the row's end: an index every load
  /// may use.
  Value inRow(Value j) {
    return arith::SelectOp::create(k.b, k.loc, k.below(j, d), j, k.idx(0));
  }

  /// The first column of lane l's chunk at `step`: (l + 32 warps step) *
  /// vector.
  Value chunkStart(Value l, Value step) {
    return k.muli(k.addi(l, k.muli(step, k.idx(lanesPerRow()))), k.idx(vector));
  }

  int64_t lanesPerRow() const { return kLanes * warps; }

  /// A [warps, 2] f32 array in the GPU block's shared memory.
  Value sharedPairs() {
    return sharedArray(k, "hs_shared_row_pairs", {kMaxWarps, 2});
  }
  /// A GPU block's most warps (1024 threads).
  static constexpr int64_t kMaxWarps = 32;

  Kernel &k;
  int64_t d;
  bool shuffles;
  int64_t vector;
  int64_t warps = 1;
  Value row, lane;
  /// The columns that count (maxSumExp), from the first: fewer than d in a
  /// row padded to whole chunks.
  int64_t columns = d;
};

} // namespace hotstage::host::kernels

#endif // HOTSTAGE_COMPILER_HOST_KERNELBUILDER_H
