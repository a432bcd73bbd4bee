#include "storage/pickle.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/pickle_test_util.h"
#include "testing/status_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::dcp::test::Asm;
using ::dcp::test::Hex;
using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::HasSubstr;

using V = PickleValue;
using Kind = PickleValue::Kind;

PickleReadOptions Permissive() {
  PickleReadOptions options;
  options.allow_global = [](absl::string_view, absl::string_view) {
    return true;
  };
  options.allow_persistent_ids = true;
  return options;
}

absl::StatusOr<PickleValue> Read(absl::string_view bytes) {
  return ReadPickle(bytes, Permissive());
}

V Str(absl::string_view s) { return V::String(std::string(s)); }

// ---- Scalars -----------------------------------------------------------------

TEST(ReadPickleTest, NoneAndBooleans) {
  EXPECT_THAT(Read(Hex("80 02 4e 2e")), test::IsOkAndHolds(V::None()));
  EXPECT_THAT(Read(Hex("88 2e")), test::IsOkAndHolds(V::Bool(true)));
  EXPECT_THAT(Read(Hex("89 2e")), test::IsOkAndHolds(V::Bool(false)));
  // Protocol 0 spells booleans as INT "01" / "00".
  EXPECT_THAT(Read("I01\n."), test::IsOkAndHolds(V::Bool(true)));
  EXPECT_THAT(Read("I00\n."), test::IsOkAndHolds(V::Bool(false)));
}

TEST(ReadPickleTest, BinaryIntegers) {
  EXPECT_THAT(Read(Hex("4b ff 2e")), test::IsOkAndHolds(V::Int(255)));
  EXPECT_THAT(Read(Hex("4d 01 02 2e")), test::IsOkAndHolds(V::Int(0x0201)));
  EXPECT_THAT(Read(Hex("4a ff ff ff ff 2e")), test::IsOkAndHolds(V::Int(-1)));
  EXPECT_THAT(Read(Hex("4a 00 00 00 80 2e")),
              test::IsOkAndHolds(V::Int(std::numeric_limits<int32_t>::min())));
}

TEST(ReadPickleTest, LongIntegers) {
  // Python: LONG1 2147483648.
  EXPECT_THAT(Read(Hex("8a 05 00 00 00 80 00 2e")),
              test::IsOkAndHolds(V::Int(int64_t{1} << 31)));
  // LONG1 with no bytes is 0.
  EXPECT_THAT(Read(Hex("8a 00 2e")), test::IsOkAndHolds(V::Int(0)));
  EXPECT_THAT(Read(Hex("8a 08 00 00 00 00 00 00 00 80 2e")),
              test::IsOkAndHolds(V::Int(std::numeric_limits<int64_t>::min())));
  // Non-minimal encodings are normalised.
  EXPECT_THAT(Read(Hex("8a 04 ff ff ff ff 2e")),
              test::IsOkAndHolds(V::Int(-1)));
  // Python: LONG1 9223372036854775808 (2**63) does not fit in int64.
  DCP_ASSERT_OK_AND_ASSIGN(V big,
                           Read(Hex("8a 09 00 00 00 00 00 00 00 80 00 2e")));
  EXPECT_EQ(big.kind(), Kind::kBigInt);
  EXPECT_EQ(big.big_int_bytes(), Hex("00 00 00 00 00 00 00 80 00"));
  // LONG4.
  EXPECT_THAT(Read(Hex("8b 02 00 00 00 34 12 2e")),
              test::IsOkAndHolds(V::Int(0x1234)));
  EXPECT_THAT(Read(Hex("8b ff ff ff ff 2e")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("negative length")));
}

TEST(ReadPickleTest, TextIntegersAndFloats) {
  EXPECT_THAT(Read("I-42\n."), test::IsOkAndHolds(V::Int(-42)));
  EXPECT_THAT(Read("L12345678901L\n."),
              test::IsOkAndHolds(V::Int(12345678901)));
  EXPECT_THAT(Read("F2.5\n."), test::IsOkAndHolds(V::Float(2.5)));
  EXPECT_THAT(Read("I123456789012345678901234567890\n."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not fit in 64 bits")));
  EXPECT_THAT(Read("Ixyz\n."), StatusIs(absl::StatusCode::kDataLoss,
                                        HasSubstr("invalid integer \"xyz\"")));
  EXPECT_THAT(Read("F1.5"), StatusIs(absl::StatusCode::kDataLoss,
                                     HasSubstr("no newline")));
}

TEST(ReadPickleTest, BinFloatIsBigEndian) {
  EXPECT_THAT(Read(Hex("47 3f f8 00 00 00 00 00 00 2e")),
              test::IsOkAndHolds(V::Float(1.5)));
  EXPECT_THAT(Read(Hex("47 c0 04 00 00 00 00 00 00 2e")),
              test::IsOkAndHolds(V::Float(-2.5)));
}

// ---- Strings and bytes ---------------------------------------------------------

TEST(ReadPickleTest, UnicodeOpcodes) {
  EXPECT_THAT(Read(Asm().ShortUnicode("torch").Stop()),
              test::IsOkAndHolds(Str("torch")));
  EXPECT_THAT(Read(Asm().Unicode("caf\xc3\xa9").Stop()),
              test::IsOkAndHolds(Str("caf\xc3\xa9")));
  EXPECT_THAT(Read(Asm().Op(0x8d).U64(3).Raw("abc").Stop()),
              test::IsOkAndHolds(Str("abc")));
  // Python 2 str (ASCII only).
  EXPECT_THAT(Read(Asm().Op('U').U8(2).Raw("hi").Stop()),
              test::IsOkAndHolds(Str("hi")));
  EXPECT_THAT(Read(Asm().Op('T').U32(2).Raw("hi").Stop()),
              test::IsOkAndHolds(Str("hi")));
  EXPECT_THAT(Read(Asm().Op('U').U8(1).Raw("\xff").Stop()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-ASCII")));
  // Surrogates pass, as with Python's "surrogatepass".
  EXPECT_THAT(Read(Asm().Unicode("\xed\xa0\x80").Stop()), IsOk());
}

TEST(ReadPickleTest, InvalidUtf8IsDataLoss) {
  for (absl::string_view bad :
       {"\xff", "\xc3", "\xc0\x80", "\xe0\x80\x80", "\xf4\x90\x80\x80"}) {
    EXPECT_THAT(Read(Asm().Unicode(bad).Stop()),
                StatusIs(absl::StatusCode::kDataLoss,
                         HasSubstr("not valid UTF-8")))
        << absl::CHexEscape(bad);
  }
}

TEST(ReadPickleTest, BytesOpcodes) {
  EXPECT_THAT(Read(Asm().Op('C').U8(2).Raw(Hex("00 ff")).Stop()),
              test::IsOkAndHolds(V::Bytes(Hex("00 ff"))));
  EXPECT_THAT(Read(Asm().Op('B').U32(1).Raw("x").Stop()),
              test::IsOkAndHolds(V::Bytes("x")));
  EXPECT_THAT(Read(Asm().Op(0x8e).U64(0).Stop()),
              test::IsOkAndHolds(V::Bytes("")));
}

// Exactly what Python 3.11 writes for `pickle.dumps([b'ab\xff', b'', b'x'], 2)`.
TEST(ReadPickleTest, Protocol2BytesReductions) {
  const std::string exact =
      Asm()
          .Proto(2)
          .Op(']').Op('q').U8(0)
          .Op('(')
          .Global("_codecs", "encode").Op('q').U8(1)
          .Unicode("ab\xc3\xbf").Op('q').U8(2)
          .Unicode("latin1").Op('q').U8(3)
          .Op(0x86).Op('q').U8(4)
          .Op('R').Op('q').U8(5)
          .Global("__builtin__", "bytes").Op('q').U8(6)
          .Op(')').Op('R').Op('q').U8(7)
          .Op('h').U8(1)
          .Unicode("x").Op('q').U8(8)
          .Op('h').U8(3)
          .Op(0x86).Op('q').U8(9)
          .Op('R').Op('q').U8(10)
          .Op('e')
          .Stop();
  EXPECT_EQ(exact.size(), 99u);  // pickletools: STOP at byte 98.
  // Bytes reductions need no allow-list entry.
  PickleReadOptions options;
  EXPECT_THAT(ReadPickle(exact, options),
              test::IsOkAndHolds(V::List(
                  {V::Bytes(Hex("61 62 ff")), V::Bytes(""), V::Bytes("x")})));
}

TEST(ReadPickleTest, BytesReducerGlobalsAreOnlyForBytes) {
  PickleReadOptions options;
  // The global itself as a value.
  EXPECT_THAT(ReadPickle(Asm().Proto(2).Global("_codecs", "encode").Stop(),
                         options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("other than to build bytes")));
  // Stored in a list.
  EXPECT_THAT(ReadPickle(Asm().Op(']').Global("_codecs", "encode").Op('a').Stop(),
                         options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("other than to build bytes")));
  // Another codec.
  EXPECT_THAT(ReadPickle(Asm()
                             .Global("_codecs", "encode")
                             .Unicode("x")
                             .Unicode("rot13")
                             .Op(0x86)
                             .Op('R')
                             .Stop(),
                         options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("_codecs.encode(str, 'latin1')")));
  // Code points above 255.
  EXPECT_THAT(ReadPickle(Asm()
                             .Global("_codecs", "encode")
                             .Unicode("\xe2\x82\xac")
                             .Unicode("latin1")
                             .Op(0x86)
                             .Op('R')
                             .Stop(),
                         options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // With the evaluation off, the global follows the allow-list.
  options.decode_bytes_reductions = false;
  EXPECT_THAT(ReadPickle(Asm().Global("builtins", "bytes").Op(')').Op('R').Stop(),
                         options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unsupported global \"builtins.bytes\"")));
}

// ---- Containers ------------------------------------------------------------------

TEST(ReadPickleTest, Tuples) {
  EXPECT_THAT(Read(Asm().Op(')').Stop()), test::IsOkAndHolds(V::Tuple({})));
  EXPECT_THAT(Read(Asm().BinInt1(1).Op(0x85).Stop()),
              test::IsOkAndHolds(V::Tuple({V::Int(1)})));
  EXPECT_THAT(Read(Asm().BinInt1(1).BinInt1(2).Op(0x86).Stop()),
              test::IsOkAndHolds(V::Tuple({V::Int(1), V::Int(2)})));
  EXPECT_THAT(Read(Asm().BinInt1(1).BinInt1(2).BinInt1(3).Op(0x87).Stop()),
              test::IsOkAndHolds(V::Tuple({V::Int(1), V::Int(2), V::Int(3)})));
  EXPECT_THAT(Read(Asm()
                       .Op('(')
                       .BinInt1(1)
                       .BinInt1(2)
                       .BinInt1(3)
                       .BinInt1(4)
                       .Op('t')
                       .Stop()),
              test::IsOkAndHolds(
                  V::Tuple({V::Int(1), V::Int(2), V::Int(3), V::Int(4)})));
}

TEST(ReadPickleTest, ListsDictsAndSets) {
  EXPECT_THAT(Read(Asm()
                       .Op(']')
                       .BinInt1(1)
                       .Op('a')
                       .Op('(')
                       .BinInt1(2)
                       .BinInt1(3)
                       .Op('e')
                       .Stop()),
              test::IsOkAndHolds(V::List({V::Int(1), V::Int(2), V::Int(3)})));
  EXPECT_THAT(Read(Asm().Op('(').BinInt1(1).Op('l').Stop()),
              test::IsOkAndHolds(V::List({V::Int(1)})));
  EXPECT_THAT(Read(Asm()
                       .Op('}')
                       .ShortUnicode("a")
                       .BinInt1(1)
                       .Op('s')
                       .Op('(')
                       .ShortUnicode("b")
                       .Op('N')
                       .ShortUnicode("a")
                       .BinInt1(2)
                       .Op('u')
                       .Stop()),
              test::IsOkAndHolds(V::Dict({{Str("a"), V::Int(1)},
                                          {Str("b"), V::None()},
                                          {Str("a"), V::Int(2)}})));
  DCP_ASSERT_OK_AND_ASSIGN(V dict, Read(Asm()
                                            .Op('(')
                                            .ShortUnicode("a")
                                            .BinInt1(1)
                                            .ShortUnicode("a")
                                            .BinInt1(2)
                                            .Op('d')
                                            .Stop()));
  ASSERT_NE(dict.FindString("a"), nullptr);
  EXPECT_EQ(*dict.FindString("a"), V::Int(2));  // The last value wins.
  EXPECT_EQ(dict.FindString("b"), nullptr);
  EXPECT_THAT(
      Read(Asm().Op(0x8f).Op('(').BinInt1(1).BinInt1(2).Op(0x90).Stop()),
      test::IsOkAndHolds(V::Set({V::Int(1), V::Int(2)})));
  EXPECT_THAT(Read(Asm().Op('(').BinInt1(1).Op(0x91).Stop()),
              test::IsOkAndHolds(V::FrozenSet({V::Int(1)})));
  EXPECT_THAT(Read(Asm().Op('(').BinInt1(1).Op('d').Stop()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("odd number")));
  EXPECT_THAT(Read(Asm().Op(')').BinInt1(1).Op('a').Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("cannot append to a tuple")));
}

// ---- Memo and stack --------------------------------------------------------------

TEST(ReadPickleTest, MemoOpcodesShareNodes) {
  for (const std::string& pickle : std::vector<std::string>{
           Asm().Op(']').Op('p').Raw("7\n").Op('g').Raw("7\n").Op(0x86).Stop(),
           Asm().Op(']').Op('q').U8(7).Op('h').U8(7).Op(0x86).Stop(),
           Asm().Op(']').Op('r').U32(70000).Op('j').U32(70000).Op(0x86).Stop(),
           Asm().Op(']').Op(0x94).Op('h').U8(0).Op(0x86).Stop(),
       }) {
    DCP_ASSERT_OK_AND_ASSIGN(V v, Read(pickle));
    ASSERT_EQ(v.kind(), Kind::kTuple);
    ASSERT_EQ(v.num_items(), 2u);
    EXPECT_EQ(&v.item(0), &v.item(1)) << absl::CHexEscape(pickle);
    EXPECT_EQ(v.tree_size(), 3u);
  }
  EXPECT_THAT(Read(Asm().Op('h').U8(3).Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("memo index 3 was never set")));
  EXPECT_THAT(Read(Asm().Op('q').U8(0).Stop()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("stack underflow")));
}

TEST(ReadPickleTest, StackOpcodes) {
  // DUP, POP.
  EXPECT_THAT(Read(Asm().BinInt1(1).Op('2').Op(0x86).Stop()),
              test::IsOkAndHolds(V::Tuple({V::Int(1), V::Int(1)})));
  EXPECT_THAT(Read(Asm().BinInt1(1).BinInt1(2).Op('0').Stop()),
              test::IsOkAndHolds(V::Int(1)));
  // POP_MARK drops everything down to the MARK.
  EXPECT_THAT(
      Read(Asm().BinInt1(1).Op('(').BinInt1(2).BinInt1(3).Op('1').Stop()),
      test::IsOkAndHolds(V::Int(1)));
  // POP of a MARK drops the MARK (as CPython).
  EXPECT_THAT(Read(Asm().BinInt1(1).Op('(').Op('0').Stop()),
              test::IsOkAndHolds(V::Int(1)));
  // Values below a MARK cannot be popped.
  EXPECT_THAT(Read(Asm().BinInt1(1).Op('(').Op(0x85).Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("TUPLE1 at byte 3: stack underflow")));
  EXPECT_THAT(Read(Asm().Op('t').Stop()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("no MARK")));
  EXPECT_THAT(Read(Asm().Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("STOP at byte 0: stack underflow")));
}

TEST(ReadPickleTest, FramingAndTrailingData) {
  EXPECT_THAT(Read(Asm().Proto(4).Op(0x95).U64(2).BinInt1(5).Stop()),
              test::IsOkAndHolds(V::Int(5)));
  EXPECT_THAT(Read(Asm().Proto(4).Op(0x95).U64(100).BinInt1(5).Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("FRAME at byte 2 announces 100 bytes")));
  EXPECT_THAT(Read(Asm().Proto(6).Op('N').Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("unsupported pickle protocol 6")));
  EXPECT_THAT(Read(Asm().Op('N').Stop().Raw("xy")),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("2 trailing bytes after STOP at byte 1")));
  PickleReadOptions options = Permissive();
  options.allow_trailing_data = true;
  EXPECT_THAT(ReadPickle(Asm().Op('N').Stop().Raw("xy"), options),
              test::IsOkAndHolds(V::None()));
}

// ---- Globals and objects ---------------------------------------------------------

TEST(ReadPickleTest, GlobalsFollowTheAllowList) {
  PickleReadOptions options;
  options.allow_global = AllowGlobals({{"torch", "Size"}});
  DCP_ASSERT_OK_AND_ASSIGN(
      V g, ReadPickle(Asm().Proto(2).Global("torch", "Size").Stop(), options));
  EXPECT_TRUE(g.IsGlobal("torch", "Size"));
  EXPECT_EQ(g.offset(), 2);
  // 57 bytes of padding put the GLOBAL at byte 57.
  Asm hostile;
  hostile.Proto(2);
  for (int i = 0; i < 55; ++i) hostile.Op('N');
  hostile.Global("os", "system").Stop();
  EXPECT_THAT(ReadPickle(hostile, options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "pickle references unsupported global \"os.system\" at "
                       "byte 57"));
  // Without a filter nothing is allowed.
  EXPECT_THAT(ReadPickle(Asm().Global("torch", "Size").Stop(), PickleReadOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"torch.Size\" at byte 0")));
  // STACK_GLOBAL is checked too and needs two strings.
  EXPECT_THAT(ReadPickle(Asm().ShortUnicode("os").ShortUnicode("system").Op(0x93)
                             .Stop(),
                         options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"os.system\" at byte 12")));
  EXPECT_THAT(Read(Asm().ShortUnicode("os").BinInt1(1).Op(0x93).Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("module and name must be str")));
}

TEST(ReadPickleTest, ReduceNewObjAndBuild) {
  // torch.Size((2, 3)), protocol-2 style.
  DCP_ASSERT_OK_AND_ASSIGN(V size, Read(Asm()
                                            .Global("torch", "Size")
                                            .BinInt1(2)
                                            .BinInt1(3)
                                            .Op(0x86)
                                            .Op(0x85)
                                            .Op('R')
                                            .Stop()));
  EXPECT_EQ(size, V::Reduce(V::Global("torch", "Size"),
                            V::Tuple({V::Tuple({V::Int(2), V::Int(3)})})));
  EXPECT_EQ(size.construction(), V::Construction::kReduce);
  EXPECT_FALSE(size.has_state());
  EXPECT_EQ(size.DebugString(), "torch.Size((2, 3))");

  // A dataclass: NEWOBJ + BUILD with a dict.
  DCP_ASSERT_OK_AND_ASSIGN(V obj, Read(Asm()
                                           .Global("m", "C")
                                           .Op(')')
                                           .Op(0x81)
                                           .Op('}')
                                           .ShortUnicode("x")
                                           .BinInt1(1)
                                           .Op('s')
                                           .Op('b')
                                           .Stop()));
  EXPECT_EQ(obj.construction(), V::Construction::kNewObj);
  ASSERT_TRUE(obj.has_state());
  EXPECT_EQ(obj.state(), V::Dict({{Str("x"), V::Int(1)}}));
  EXPECT_EQ(obj, V::NewObj(V::Global("m", "C"), V::Tuple({}),
                           V::Dict({{Str("x"), V::Int(1)}})));
  EXPECT_EQ(obj.DebugString(), "m.C.__new__().__setstate__({'x': 1})");

  // NEWOBJ_EX.
  DCP_ASSERT_OK_AND_ASSIGN(
      V ex, Read(Asm().Global("m", "C").Op(')').Op('}').Op(0x92).Stop()));
  EXPECT_TRUE(ex.has_kwargs());
  EXPECT_EQ(ex.kwargs().kind(), Kind::kDict);

  EXPECT_THAT(Read(Asm().Global("m", "f").BinInt1(1).Op('R').Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("REDUCE at byte 7: arguments are a int")));
  EXPECT_THAT(Read(Asm().Op(']').Op('}').Op('b').Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("cannot set the state of a list")));
  EXPECT_THAT(Read(Asm().Global("m", "C").Op(')').Op(0x81).Op('N').Op('b').Op('N')
                       .Op('b').Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("already has a state")));
}

TEST(ReadPickleTest, OrderedDictItemsAreKeptOnTheObject) {
  // collections.OrderedDict([('k', 1)]) as Python writes it.
  DCP_ASSERT_OK_AND_ASSIGN(V od, Read(Asm()
                                          .Global("collections", "OrderedDict")
                                          .Op(')')
                                          .Op('R')
                                          .ShortUnicode("k")
                                          .BinInt1(1)
                                          .Op('s')
                                          .Stop()));
  EXPECT_EQ(od.set_items(), V::Dict({{Str("k"), V::Int(1)}}));
  EXPECT_EQ(od.appended(), V::List({}));
  EXPECT_EQ(od.DebugString(), "collections.OrderedDict().update({'k': 1})");
  DCP_ASSERT_OK_AND_ASSIGN(
      V lst,
      Read(Asm().Global("m", "L").Op(')').Op(0x81).BinInt1(1).Op('a').Stop()));
  EXPECT_EQ(lst.appended(), V::List({V::Int(1)}));
}

TEST(ReadPickleTest, PersistentIds) {
  const std::string bin = Asm().ShortUnicode("0").Op('Q').Stop();
  EXPECT_THAT(Read(bin), test::IsOkAndHolds(V::PersistentId(Str("0"))));
  EXPECT_THAT(Read(Asm().Op('P').Raw("abc\n").Stop()),
              test::IsOkAndHolds(V::PersistentId(Str("abc"))));
  EXPECT_THAT(ReadPickle(bin, PickleReadOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("persistent id (opcode BINPERSID at byte 3)")));
}

TEST(ReadPickleTest, UnsupportedAndInvalidOpcodes) {
  EXPECT_THAT(Read(Asm().Op(0x82).U8(1).Stop()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "unsupported pickle opcode EXT1 (0x82) at byte 0"));
  EXPECT_THAT(Read(Asm().Op('N').Op(0xff).Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       "invalid pickle opcode 0xff at byte 1"));
  EXPECT_THAT(Read(""), StatusIs(absl::StatusCode::kDataLoss,
                                 HasSubstr("without a STOP opcode")));
}

// The exact bytes Python 3.11 (same pickler as 3.13 for these opcodes)
// writes for
//   pickle.dumps({'w': [Size((2, 3)), Size((2, 3))], 'name': 'w',
//                 'again': 'name', 'od': OrderedDict([('k', 1)]),
//                 'b': b'\x00\xff'}, protocol=4)
// where Size is a tuple subclass in module `torch` reducing like torch.Size.
TEST(ReadPickleTest, Protocol4FrameMemoizeStackGlobalBinGet) {
  const std::string python = Hex(
      "80 04"                          //   0 PROTO 4
      "95 7d 00 00 00 00 00 00 00"     //   2 FRAME 125
      "7d 94 28"                       //  11 EMPTY_DICT MEMOIZE(0) MARK
      "8c 01 77 94"                    //  14 SHORT_BINUNICODE 'w' MEMOIZE(1)
      "5d 94 28"                       //  18 EMPTY_LIST MEMOIZE(2) MARK
      "8c 05 74 6f 72 63 68 94"        //  21 'torch' MEMOIZE(3)
      "8c 04 53 69 7a 65 94"           //  29 'Size' MEMOIZE(4)
      "93 94"                          //  36 STACK_GLOBAL MEMOIZE(5)
      "4b 02 4b 03 86 94 85 94 52 94"  //  38 ((2, 3),) REDUCE MEMOIZE(8)
      "68 05"                          //  48 BINGET 5 (torch.Size)
      "4b 02 4b 03 86 94 85 94 52 94"  //  50 ((2, 3),) REDUCE MEMOIZE(11)
      "65"                             //  60 APPENDS
      "8c 04 6e 61 6d 65 94 68 01"     //  61 'name' MEMOIZE(12) BINGET 1
      "8c 05 61 67 61 69 6e 94 68 0c"  //  70 'again' MEMOIZE(13) BINGET 12
      "8c 02 6f 64 94"                 //  80 'od' MEMOIZE(14)
      "8c 0b 63 6f 6c 6c 65 63 74 69 6f 6e 73 94"  //  85 'collections'
      "8c 0b 4f 72 64 65 72 65 64 44 69 63 74 94"  //  99 'OrderedDict'
      "93 94 29 52 94"                 // 113 STACK_GLOBAL EMPTY_TUPLE REDUCE
      "8c 01 6b 94 4b 01 73"           // 118 'k' 1 SETITEM
      "8c 01 62 94 43 02 00 ff 94"     // 125 'b' SHORT_BINBYTES b'\x00\xff'
      "75 2e");                        // 134 SETITEMS STOP
  PickleReadOptions options;
  options.allow_global =
      AllowGlobals({{"torch", "Size"}, {"collections", "OrderedDict"}});
  DCP_ASSERT_OK_AND_ASSIGN(V v, ReadPickle(python, options));
  const V size = V::Reduce(V::Global("torch", "Size"),
                           V::Tuple({V::Tuple({V::Int(2), V::Int(3)})}));
  V od = V::Reduce(V::Global("collections", "OrderedDict"), V::Tuple({}));
  EXPECT_EQ(v.DebugString(),
            "{'w': [torch.Size((2, 3)), torch.Size((2, 3))], 'name': 'w', "
            "'again': 'name', 'od': collections.OrderedDict().update({'k': 1}), "
            "'b': b'\\x00\\xff'}");
  ASSERT_EQ(v.num_entries(), 5u);
  EXPECT_EQ(v.value(0), V::List({size, size}));
  // BINGET 5 reused the very same global node.
  EXPECT_EQ(&v.value(0).item(0).callable(), &v.value(0).item(1).callable());
  EXPECT_EQ(&v.value(1), &v.key(0));  // 'w' via BINGET 1.
  EXPECT_EQ(v.key(0).offset(), 14);
}

// ---- Cycles, limits and hostile input ----------------------------------------

TEST(ReadPickleTest, CyclesAreRejected) {
  // a = []; a.append(a)
  EXPECT_THAT(Read(Asm().Op(']').Op(0x94).Op('h').U8(0).Op('a').Stop()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("to itself")));
  // a = []; b = [a]; a.append(b) -- as Python writes it.
  EXPECT_THAT(Read(Asm().Op(']').Op(0x94).Op(']').Op(0x94).Op('h').U8(0).Op('a')
                       .Op('a').Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("after it was nested in another value")));
  // An object whose state contains itself.
  EXPECT_THAT(Read(Asm().Global("m", "C").Op(')').Op(0x81).Op(0x94).Op('h').U8(0)
                       .Op(0x85).Op('b').Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("after it was nested")));
  // A dict set as its own value.
  EXPECT_THAT(Read(Asm().Op('}').Op(0x94).Op('N').Op('h').U8(0).Op('s').Stop()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("to itself")));
}

TEST(ReadPickleTest, MarkBombFailsCleanly) {
  Asm a;
  for (int i = 0; i < 100000; ++i) a.Op('(');
  a.Op('N').Stop();
  EXPECT_THAT(Read(a), StatusIs(absl::StatusCode::kResourceExhausted,
                                HasSubstr("MARKs deeper than 1000")));
}

TEST(ReadPickleTest, NestedListBombFailsCleanly) {
  Asm a;
  for (int i = 0; i < 100000; ++i) a.Op(']');
  for (int i = 0; i < 99999; ++i) a.Op('a');
  a.Stop();
  EXPECT_THAT(Read(a), StatusIs(absl::StatusCode::kResourceExhausted,
                                HasSubstr("deeper than 1000 levels")));
  Asm tuples;
  tuples.Op('N');
  for (int i = 0; i < 100000; ++i) tuples.Op(0x85);
  tuples.Stop();
  EXPECT_THAT(Read(tuples),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("TUPLE1 at byte 1000")));
}

TEST(ReadPickleTest, DeepValuesWithinTheLimitAreDestroyedIteratively) {
  Asm a;
  a.Op('N');
  for (int i = 0; i < 200000; ++i) a.Op(0x85);
  a.Stop();
  PickleReadOptions options = Permissive();
  options.max_depth = 300000;
  DCP_ASSERT_OK_AND_ASSIGN(V v, ReadPickle(a, options));
  EXPECT_EQ(v.depth(), 200001);
  V copy = v;
  v = V::None();      // Assignment releases through the iterative path too.
  EXPECT_EQ(copy.depth(), 200001);
}

TEST(ReadPickleTest, SharedReferenceExplosionIsBounded) {
  // t = (); repeat 200 times: t = (t, t). 2^200 nodes when expanded.
  Asm a;
  a.Op(')');
  for (int i = 0; i < 200; ++i) a.Op('2').Op(0x86);
  a.Stop();
  EXPECT_THAT(Read(a), StatusIs(absl::StatusCode::kResourceExhausted,
                                HasSubstr("expands to more than")));
  PickleReadOptions options = Permissive();
  options.max_tree_size = std::numeric_limits<uint64_t>::max();
  DCP_ASSERT_OK_AND_ASSIGN(V v, ReadPickle(a, options));
  EXPECT_EQ(v.tree_size(), std::numeric_limits<uint64_t>::max());  // Saturated.
  EXPECT_LE(v.DebugString(100).size(), 200u);  // Printing stays bounded.
}

TEST(ReadPickleTest, StringsCountTheirBytesAtEveryReference) {
  const std::string text(1000, 'x');
  DCP_ASSERT_OK_AND_ASSIGN(
      V v,
      Read(Asm().Unicode(text).Op('q').U8(0).Op('h').U8(0).Op(0x86).Stop()));
  ASSERT_EQ(&v.item(0), &v.item(1));
  EXPECT_EQ(v.item(0).tree_size(), 1u + text.size());
  EXPECT_EQ(v.tree_size(), 1u + 2 * (1u + text.size()));
  EXPECT_EQ(V::String(text).tree_size(), 1u + text.size());
  EXPECT_EQ(V::Bytes("abc").tree_size(), 4u);
}

// Issue 9: one memoized 1 MiB string referenced 20,000 times is 20 GiB for
// a consumer that copies it at each reference; the node count alone (20,002)
// looked harmless.
TEST(ReadPickleTest, SharedBigStringExplosionIsBounded) {
  const std::string big(1 << 20, 'k');
  constexpr int kRefs = 20000;
  Asm a;
  a.Proto(2).Unicode(big).Op('q').U8(0).Op('0');  // memo[0] = big; pop
  a.Op(']').Op('(');
  for (int i = 0; i < kRefs; ++i) a.Op('h').U8(0);
  a.Op('e').Stop();
  const uint64_t limit = DecodeLimits().BudgetFor(a.size());
  EXPECT_THAT(Read(a),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr(absl::StrCat("expands to more than ", limit,
                                              " units of decoded size"))));
  // The size is what a consumer copying each reference would allocate.
  PickleReadOptions unlimited = Permissive();
  unlimited.max_tree_size = std::numeric_limits<uint64_t>::max();
  DCP_ASSERT_OK_AND_ASSIGN(V v, ReadPickle(a, unlimited));
  EXPECT_EQ(v.tree_size(), 1u + kRefs * (1u + big.size()));
  EXPECT_LE(v.DebugString(100).size(), 200u);  // Printing stays bounded.
}

TEST(ReadPickleTest, BytesBuiltFromASharedStringAreBounded) {
  // _codecs.encode(s, 'latin1') copies s; repeated on one memoized s (and
  // popped, so no value ever grows) it must still be bounded.
  const std::string text(64 << 10, 'b');
  auto pickle = [&](int copies) {
    Asm a;
    a.Proto(2).Global("_codecs", "encode").Op('q').U8(0);
    a.Unicode(text).Op('q').U8(1).ShortUnicode("latin1").Op('q').U8(2);
    a.Op('0').Op('0').Op('0');
    for (int i = 0; i < copies; ++i) {
      a.Op('h').U8(0).Op('h').U8(1).Op('h').U8(2).Op(0x86).Op('R').Op('0');
    }
    return a.Op('N').Stop();
  };
  EXPECT_THAT(Read(pickle(10)), IsOk());
  EXPECT_THAT(Read(pickle(10000)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("pickle builds more than")));
}

TEST(DecodeLimitsTest, BudgetIsProportionalToTheInputAndSaturates) {
  DecodeLimits limits;
  EXPECT_EQ(limits.BudgetFor(0), 65536u);
  EXPECT_EQ(limits.BudgetFor(1000), 64u * 1000 + 65536);
  EXPECT_EQ(limits.BudgetFor(std::numeric_limits<uint64_t>::max()),
            std::numeric_limits<uint64_t>::max());
  limits.budget_per_input_byte = 2;
  limits.budget_base_bytes = 10;
  EXPECT_EQ(limits.BudgetFor(100), 210u);
  limits.max_depth = 7;
  PickleReadOptions options = limits.PickleOptions(100);
  EXPECT_EQ(options.max_depth, 7);
  EXPECT_EQ(options.max_tree_size, 210u);
}

TEST(DecodeBudgetTest, FailsOnceTheTotalExceedsTheLimit) {
  DecodeLimits limits;
  limits.budget_per_input_byte = 2;
  limits.budget_base_bytes = 10;
  DecodeBudget budget(100, limits, "the input");
  EXPECT_EQ(budget.limit(), 210u);
  EXPECT_THAT(budget.Charge(200), IsOk());
  EXPECT_THAT(budget.Charge(10), IsOk());
  EXPECT_THAT(budget.Charge(1),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("the input decodes to more than its budget "
                                 "of 210 bytes (2 per input byte x 100 bytes "
                                 "+ 10)")));
  EXPECT_THAT(budget.Charge(0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(budget.used(), 211u);
  DecodeBudget strings(0, limits, "x");
  EXPECT_THAT(strings.ChargeString(""),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(ReadPickleTest, MemoLimit) {
  PickleReadOptions options = Permissive();
  options.max_memo_entries = 2;
  EXPECT_THAT(ReadPickle(Asm().Op('N').Op(0x94).Op(0x94).Op(0x94).Stop(), options),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("memo exceeds 2 entries")));
}

TEST(ReadPickleTest, HugeClaimedLengthsFailWithoutAllocating) {
  EXPECT_THAT(Read(Asm().Op(0x8d).U64(uint64_t{1} << 62).Raw("abc").Stop()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("BINUNICODE8 at byte 0 needs 4611686018427387904 "
                                 "bytes for its string but only 4 remain")));
  EXPECT_THAT(Read(Asm().Op(0x8e).U64(~uint64_t{0}).Stop()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  EXPECT_THAT(Read(Asm().Op('X').U32(0xffffffff).Stop()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  EXPECT_THAT(Read(Asm().Op(0x8b).U32(0x7fffffff).Stop()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
}

// A pickle that exercises most opcodes; used for truncation and mutation.
std::string RichPickle() {
  PickleWriter w;
  w.WriteDict(4, [&](size_t i) {
    switch (i) {
      case 0:
        w.WriteString("ints");
        w.WriteList(6, [&](size_t j) {
          const int64_t values[] = {0, 255, 65535, -1, int64_t{1} << 40,
                                    std::numeric_limits<int64_t>::min()};
          w.WriteInt(values[j]);
        });
        return;
      case 1:
        w.WriteString("size");
        w.WriteGlobal("torch", "Size");
        w.WriteTuple(1, [&](size_t) {
          w.WriteTuple(4, [&](size_t j) { w.WriteInt(j); });
        });
        w.EmitReduce();
        return;
      case 2:
        w.WriteString("obj");
        w.WriteGlobal("m", "C");
        w.EmitEmptyTuple();
        w.EmitNewObj();
        w.WriteDict(2, [&](size_t j) {
          w.WriteString(j == 0 ? "f" : "b");
          if (j == 0) {
            w.WriteFloat(0.25);
          } else {
            w.WriteBytes("\x01\x02\xff");
          }
        });
        w.EmitBuild();
        return;
      default:
        w.WriteString("misc");
        w.WriteTuple(3, [&](size_t j) {
          if (j == 0) w.WriteNone();
          if (j == 1) w.WriteBool(true);
          if (j == 2) {
            w.WriteString("0");
            w.EmitBinPersId();
          }
        });
        return;
    }
  });
  absl::StatusOr<std::string> bytes = std::move(w).Finish();
  CHECK(bytes.ok()) << bytes.status();
  return *bytes;
}

// A protocol-4 pickle with frames and memo, for the same purposes.
std::string Protocol4Pickle() {
  const std::string body =
      Asm()
          .Op('}').Op(0x94).Op('(')
          .ShortUnicode("a").Op(0x94)
          .ShortUnicode("torch").Op(0x94).ShortUnicode("Size").Op(0x94)
          .Op(0x93).Op(0x94).Op(')').Op(0x85).Op('R').Op(0x94)
          .ShortUnicode("b").Op(0x94).Op('h').U8(0x03)
          .Op('u')
          .Stop();
  return Asm().Proto(4).Op(0x95).U64(body.size()).Raw(body);
}

TEST(ReadPickleTest, EveryTruncationFailsCleanly) {
  for (const std::string& pickle : {RichPickle(), Protocol4Pickle()}) {
    DCP_ASSERT_OK(Read(pickle).status());
    for (size_t n = 0; n < pickle.size(); ++n) {
      EXPECT_THAT(Read(absl::string_view(pickle).substr(0, n)),
                  StatusIs(absl::StatusCode::kDataLoss))
          << "prefix of " << n << " bytes";
    }
  }
}

TEST(ReadPickleTest, RandomAndMutatedInputsNeverCrash) {
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  const std::vector<std::string> seeds = {RichPickle(), Protocol4Pickle()};
  // Bytes that are opcodes most of the time, so inputs get past byte 0.
  const std::string alphabet = Hex(
      "28 2e 30 31 32 46 49 4a 4b 4c 4d 4e 50 51 52 55 58 61 62 63 64 7d 65 "
      "67 68 6a 6c 5d 70 71 72 73 74 29 75 47 80 81 85 86 87 88 89 8a 8b 42 "
      "43 8c 8d 8e 8f 90 91 92 93 94 95 00 01 02 ff 0a");
  int ok = 0;
  for (int iter = 0; iter < 6000; ++iter) {
    std::string input;
    if (iter % 3 == 0) {
      // Random opcode soup.
      const size_t n = rng() % 64;
      for (size_t i = 0; i < n; ++i) input += alphabet[rng() % alphabet.size()];
      input += '.';
    } else {
      // Mutations of a valid pickle: flips, insertions, deletions.
      input = seeds[rng() % seeds.size()];
      const int edits = 1 + rng() % 4;
      for (int e = 0; e < edits && !input.empty(); ++e) {
        const size_t at = rng() % input.size();
        switch (rng() % 4) {
          case 0:
            input[at] = static_cast<char>(rng());
            break;
          case 1:
            input[at] ^= static_cast<char>(1u << (rng() % 8));
            break;
          case 2:
            input.insert(at, 1, alphabet[rng() % alphabet.size()]);
            break;
          default:
            input.erase(at, 1);
            break;
        }
      }
    }
    absl::StatusOr<PickleValue> result = Read(input);
    if (result.ok()) {
      ++ok;
      EXPECT_LE(result->depth(), 1000);
      EXPECT_FALSE(result->DebugString(500).empty());
    } else {
      EXPECT_FALSE(result.status().message().empty());
    }
  }
  LOG(INFO) << ok << " of 6000 random inputs parsed";
  // Both outcomes occur: the inputs are neither all rejected (the mutations
  // would be too coarse) nor all accepted (the checks would be too lax).
  EXPECT_GT(ok, 0);
  EXPECT_LT(ok, 6000);
}

// ---- Writer ----------------------------------------------------------------------

std::string WriteOne(absl::FunctionRef<void(PickleWriter&)> write) {
  PickleWriter w;
  write(w);
  absl::StatusOr<std::string> bytes = std::move(w).Finish();
  CHECK(bytes.ok()) << bytes.status();
  return *bytes;
}

TEST(PickleWriterTest, IntegersUsePythonsOpcodes) {
  struct Case {
    int64_t value;
    std::string body;  // Between PROTO 2 and STOP.
  };
  const std::vector<Case> cases = {
      {0, Hex("4b 00")},
      {255, Hex("4b ff")},
      {256, Hex("4d 00 01")},
      {65535, Hex("4d ff ff")},
      {65536, Hex("4a 00 00 01 00")},
      {-1, Hex("4a ff ff ff ff")},
      {std::numeric_limits<int32_t>::max(), Hex("4a ff ff ff 7f")},
      {std::numeric_limits<int32_t>::min(), Hex("4a 00 00 00 80")},
      {int64_t{1} << 31, Hex("8a 05 00 00 00 80 00")},
      {-(int64_t{1} << 31) - 1, Hex("8a 05 ff ff ff 7f ff")},
      {std::numeric_limits<int64_t>::max(), Hex("8a 08 ff ff ff ff ff ff ff 7f")},
      {std::numeric_limits<int64_t>::min(), Hex("8a 08 00 00 00 00 00 00 00 80")},
  };
  for (const Case& c : cases) {
    const std::string bytes = WriteOne([&](PickleWriter& w) { w.WriteInt(c.value); });
    EXPECT_EQ(bytes, absl::StrCat(Hex("80 02"), c.body, ".")) << c.value;
    EXPECT_THAT(Read(bytes), test::IsOkAndHolds(V::Int(c.value)));
  }
}

TEST(PickleWriterTest, ScalarsStringsAndBytes) {
  EXPECT_EQ(WriteOne([](PickleWriter& w) { w.WriteFloat(1.5); }),
            Hex("80 02 47 3f f8 00 00 00 00 00 00 2e"));
  EXPECT_EQ(WriteOne([](PickleWriter& w) { w.WriteString("w"); }),
            Hex("80 02 58 01 00 00 00 77 2e"));
  EXPECT_EQ(WriteOne([](PickleWriter& w) { w.WriteGlobal("torch", "float32"); }),
            absl::StrCat(Hex("80 02"), "ctorch\nfloat32\n."));
  // What Python 3 writes for b'ab\xff' and b'' with protocol 2, minus memo.
  EXPECT_EQ(WriteOne([](PickleWriter& w) { w.WriteBytes("ab\xff"); }),
            Asm().Proto(2).Global("_codecs", "encode").Unicode("ab\xc3\xbf")
                .Unicode("latin1").Op(0x86).Op('R').Stop().bytes());
  EXPECT_EQ(WriteOne([](PickleWriter& w) { w.WriteBytes(""); }),
            Asm().Proto(2).Global("__builtin__", "bytes").Op(')').Op('R').Stop()
                .bytes());
}

TEST(PickleWriterTest, ContainersBatchLikePython) {
  EXPECT_EQ(WriteOne([](PickleWriter& w) {
              w.WriteTuple(0, [&](size_t) {});
            }),
            Hex("80 02 29 2e"));
  EXPECT_EQ(WriteOne([](PickleWriter& w) {
              w.WriteTuple(2, [&](size_t i) { w.WriteInt(i); });
            }),
            Hex("80 02 4b 00 4b 01 86 2e"));
  EXPECT_EQ(WriteOne([](PickleWriter& w) {
              w.WriteTuple(4, [&](size_t i) { w.WriteInt(i); });
            }),
            Hex("80 02 28 4b 00 4b 01 4b 02 4b 03 74 2e"));
  // One item: APPEND; more: MARK .. APPENDS (as Python's _batch_appends).
  EXPECT_EQ(WriteOne([](PickleWriter& w) {
              w.WriteList(1, [&](size_t i) { w.WriteInt(7); });
            }),
            Hex("80 02 5d 4b 07 61 2e"));
  EXPECT_EQ(WriteOne([](PickleWriter& w) {
              w.WriteDict(2, [&](size_t i) {
                w.WriteInt(i);
                w.WriteNone();
              });
            }),
            Hex("80 02 7d 28 4b 00 4e 4b 01 4e 75 2e"));
  // 2001 items: batches of 1000, 1000 and a single APPEND.
  const std::string big = WriteOne([](PickleWriter& w) {
    w.WriteList(2001, [&](size_t i) { w.WriteNone(); });
  });
  EXPECT_EQ(std::count(big.begin(), big.end(), 'e'), 2);
  EXPECT_EQ(std::count(big.begin(), big.end(), '('), 2);
  EXPECT_EQ(big.substr(big.size() - 3), Hex("4e 61 2e"));
  DCP_ASSERT_OK_AND_ASSIGN(V v, Read(big));
  EXPECT_EQ(v.num_items(), 2001u);
}

TEST(PickleWriterTest, ValuesRoundTrip) {
  std::vector<V> many;
  for (int i = 0; i < 1500; ++i) many.push_back(V::Int(i * 1000003));
  std::vector<std::pair<V, V>> entries;
  for (int i = 0; i < 1200; ++i) {
    entries.emplace_back(Str(absl::StrCat("k", i)), V::Float(i / 7.0));
  }
  const std::vector<V> values = {
      V::None(),
      V::Bool(false),
      V::Int(-5),
      V::BigInt(Hex("00 00 00 00 00 00 00 00 01")),
      V::BigInt(std::string(300, '\x7f')),  // LONG4
      V::Float(-0.0),
      Str(""),
      Str("\xe2\x82\xac uro"),
      V::Bytes(std::string("\0\x80\xff", 3)),
      V::Bytes(""),
      V::Tuple({}),
      V::Tuple({V::Int(1), Str("x"), V::None(), V::List({})}),
      V::List(many),
      V::Dict(entries),
      V::Global("torch", "bfloat16"),
      V::Reduce(V::Global("torch", "Size"), V::Tuple({V::Tuple({})})),
      V::NewObj(V::Global("m", "C"), V::Tuple({}),
                V::Dict({{Str("a"), V::List({V::Int(1)})}})),
      V::PersistentId(V::Tuple({Str("storage"), V::Int(0)})),
  };
  for (const V& value : values) {
    PickleWriter w;
    w.Write(value);
    DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, std::move(w).Finish());
    EXPECT_THAT(Read(bytes), test::IsOkAndHolds(value))
        << value.DebugString(200);
    // Deterministic.
    PickleWriter again;
    again.Write(value);
    EXPECT_THAT(std::move(again).Finish(), test::IsOkAndHolds(bytes));
  }
  // Objects read from a pickle (with appended and set items) round-trip too.
  DCP_ASSERT_OK_AND_ASSIGN(V od, Read(Asm()
                                          .Global("collections", "OrderedDict")
                                          .Op(')')
                                          .Op('R')
                                          .ShortUnicode("k")
                                          .BinInt1(1)
                                          .Op('s')
                                          .Stop()));
  PickleWriter w;
  w.Write(od);
  DCP_ASSERT_OK_AND_ASSIGN(std::string bytes, std::move(w).Finish());
  EXPECT_THAT(Read(bytes), test::IsOkAndHolds(od));
}

std::string WriteMemoized(absl::FunctionRef<void(PickleWriter&)> write) {
  PickleWriter w(PickleWriterOptions{/*memoize=*/true});
  write(w);
  absl::StatusOr<std::string> bytes = std::move(w).Finish();
  CHECK(bytes.ok()) << bytes.status();
  return *bytes;
}

TEST(PickleWriterTest, MemoizeWritesEachStrAndGlobalOnce) {
  // BINPUT after the first of each, BINGET for the repeats; ints and other
  // values are written as they are.
  EXPECT_EQ(WriteMemoized([](PickleWriter& w) {
              w.WriteTuple(5, [&](size_t i) {
                if (i == 2) {
                  w.WriteInt(1);
                } else if (i % 2 == 0) {
                  w.WriteString("a");
                } else {
                  w.WriteGlobal("torch", "float32");
                }
              });
            }),
            Asm().Proto(2).Op('(').Unicode("a").Op('q').U8(0)
                .Global("torch", "float32").Op('q').U8(1).BinInt1(1)
                .Op('h').U8(1).Op('h').U8(0).Op('t').Stop().bytes());
  // A str and a global with the same text are different values.
  EXPECT_THAT(Read(WriteMemoized([](PickleWriter& w) {
                w.WriteTuple(2, [&](size_t i) {
                  if (i == 0) w.WriteString("torch\nfloat32");
                  if (i == 1) w.WriteGlobal("torch", "float32");
                });
              })),
              test::IsOkAndHolds(V::Tuple(
                  {Str("torch\nfloat32"), V::Global("torch", "float32")})));
}

TEST(PickleWriterTest, MemoizedPicklesReadBackTheSameValues) {
  // 600 distinct strings, each written three times: indices past 255 take
  // LONG_BINPUT / LONG_BINGET.
  std::vector<V> items;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 600; ++i) {
      items.push_back(Str(absl::StrCat("key", i)));
      items.push_back(V::Global("m", absl::StrCat("C", i % 7)));
    }
  }
  const V list = V::List(items);
  PickleWriter plain;
  plain.Write(list);
  DCP_ASSERT_OK_AND_ASSIGN(std::string plain_bytes, std::move(plain).Finish());
  const std::string memoized = WriteMemoized([&](PickleWriter& w) { w.Write(list); });
  EXPECT_THAT(Read(memoized), test::IsOkAndHolds(list));
  EXPECT_LT(memoized.size(), plain_bytes.size());
  EXPECT_NE(memoized.find('r'), std::string::npos);  // LONG_BINPUT
  EXPECT_NE(memoized.find('j'), std::string::npos);  // LONG_BINGET
  // Deterministic.
  EXPECT_EQ(WriteMemoized([&](PickleWriter& w) { w.Write(list); }), memoized);
  // Bytes (protocol 2 spells them with _codecs.encode and a str) too.
  const V bytes_twice = V::Tuple({V::Bytes("ab\xff"), V::Bytes("ab\xff"),
                                  V::Bytes(""), V::Bytes("")});
  EXPECT_THAT(
      Read(WriteMemoized([&](PickleWriter& w) { w.Write(bytes_twice); })),
      test::IsOkAndHolds(bytes_twice));
}

TEST(PickleWriterTest, DataErrorsSurfaceInFinish) {
  PickleWriter bad_utf8;
  bad_utf8.WriteString("\xff");
  EXPECT_THAT(std::move(bad_utf8).Finish(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not valid UTF-8")));
  PickleWriter set;
  set.Write(V::Set({V::Int(1)}));
  EXPECT_THAT(std::move(set).Finish(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot pickle a set")));
  PickleWriter global;
  global.WriteGlobal("a\nb", "c");
  EXPECT_THAT(std::move(global).Finish(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot pickle global")));
}

TEST(PickleWriterDeathTest, MisuseIsAProgrammerError) {
  EXPECT_DEATH(
      {
        PickleWriter w;
        w.EmitReduce();
      },
      "REDUCE needs 2 values");
  EXPECT_DEATH(
      {
        PickleWriter w;
        w.WriteNone();
        w.WriteNone();
        std::move(w).Finish().IgnoreError();
      },
      "exactly one value");
  EXPECT_DEATH(
      {
        PickleWriter w;
        w.WriteTuple(2, [&](size_t) {});
      },
      "must push one value");
}

}  // namespace
}  // namespace dcp
