#include "io/pickle.h"

#include <bit>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "io/untrusted_text.h"
#include "sdrt/error.h"

namespace sdrt::io {

namespace {

namespace fs = std::filesystem;

// Bounds for hostile input. Real SD checkpoints have ~1-2k tensors and pickles under a few MB, using a few
// tens of thousands of values; these limits are far above that and keep memory proportional to the input.
constexpr size_t kMaxValues = 1u << 21;
constexpr size_t kMaxMemo = 1u << 21;
constexpr size_t kMaxStack = 1u << 18;  // torch batches SETITEMS by 1000; real depth is tiny
constexpr uint64_t kMaxString = 16u << 20;
constexpr size_t kMaxRank = 16;

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kBytes,
  kTuple,
  kList,
  kDict,
  kGlobal,
  kStorage,
  kTensor,
  kOpaque
};

// What an allow-listed global may do.
enum class Role : uint8_t {
  kOrderedDict,    // REDUCE with () -> empty dict
  kRebuildTensor,  // torch._utils._rebuild_tensor_v2 -> tensor
  kRebuildParam,   // torch._utils._rebuild_parameter(tensor, ...) -> the tensor
  kStorageType,    // torch.FloatStorage etc.: only named in persistent ids
  kInertCtor,  // data-only constructors (numpy scalar/dtype, _codecs.encode): REDUCE -> opaque placeholder
  kInert,      // classes/dtypes that may appear as values but are never called
};

struct Value {
  Kind kind = Kind::kNone;
  int64_t i = 0;                // kInt (kOpaque for ints over 64 bits), kBool
  std::string s;                // kString, kBytes; kGlobal: "module.name"; kStorage: dtype
  std::vector<uint32_t> items;  // kTuple/kList elements; kDict key, value, key, value...
  Role role = Role::kInert;     // kGlobal
  std::string_view dtype;       // kGlobal of a storage class: its element type
  // kStorage: the bytes and element count; kTensor: storage index, offset, size, stride.
  std::span<const std::byte> bytes;
  uint64_t elem_size = 0;
  uint32_t storage = 0;
  int64_t offset = 0;
  Shape size, stride;
};

struct StorageDType {
  std::string_view cls, dtype;
  uint64_t bytes;
};
constexpr StorageDType kStorages[] = {
    {"FloatStorage", "F32", 4},  {"HalfStorage", "F16", 2}, {"BFloat16Storage", "BF16", 2},
    {"DoubleStorage", "F64", 8}, {"LongStorage", "I64", 8}, {"IntStorage", "I32", 4},
    {"ShortStorage", "I16", 2},  {"CharStorage", "I8", 1},  {"ByteStorage", "U8", 1},
    {"BoolStorage", "BOOL", 1},
};

std::optional<Role> allowed_global(std::string_view module, std::string_view name) {
  if (module == "collections" && name == "OrderedDict") return Role::kOrderedDict;
  if (module == "torch._utils") {
    if (name == "_rebuild_tensor_v2") return Role::kRebuildTensor;
    if (name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state") return Role::kRebuildParam;
  }
  if (module == "torch") {
    for (const auto& s : kStorages)
      if (s.cls == name) return Role::kStorageType;
    if (name == "float32" || name == "float16" || name == "bfloat16" || name == "float64" || name == "int64")
      return Role::kInert;
  }
  if ((module == "numpy.core.multiarray" || module == "numpy._core.multiarray") && name == "scalar")
    return Role::kInertCtor;
  if ((module == "numpy" && name == "dtype") || (module == "_codecs" && name == "encode"))
    return Role::kInertCtor;
  if ((module == "pytorch_lightning.callbacks.model_checkpoint" ||
       module == "lightning.pytorch.callbacks.model_checkpoint") &&
      name == "ModelCheckpoint")
    return Role::kInert;
  return std::nullopt;
}

std::string printable(std::string_view s) {
  return printable_ascii(s);
}

std::string quote(std::string_view s) {
  return quoted_ascii(s);
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "a bool";
    case Kind::kInt:
      return "an int";
    case Kind::kFloat:
      return "a float";
    case Kind::kString:
      return "a string";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "a tuple";
    case Kind::kList:
      return "a list";
    case Kind::kDict:
      return "a dict";
    case Kind::kGlobal:
      return "a global";
    case Kind::kStorage:
      return "a storage";
    case Kind::kTensor:
      return "a tensor";
    case Kind::kOpaque:
      return "an opaque object";
  }
  return "?";
}

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> in, const StorageResolver& resolve, const fs::path& label)
      : in_(in), resolve_(resolve), label_(label) {}

  std::vector<PickledTensor> run() {
    const uint32_t root = execute();
    return extract(root);
  }

 private:
  [[noreturn]] void fail(ErrorKind kind, const std::string& what) const {
    throw Error(kind, fmt::format("{}: data.pkl offset {}: {}", label_.string(), op_pos_, what));
  }
  [[noreturn]] void bad(const std::string& what) const { fail(ErrorKind::kFormat, what); }

  // ---- input
  const std::byte* take(uint64_t n) {
    if (n > in_.size() - pos_)
      bad(fmt::format("truncated: needs {} more bytes, {} left", n, in_.size() - pos_));
    const std::byte* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint64_t le(int n) {
    const std::byte* p = take(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = v << 8 | std::to_integer<uint64_t>(p[i]);
    return v;
  }
  std::string text(uint64_t n) {
    if (n > kMaxString) bad(fmt::format("string of {} bytes exceeds the limit of {}", n, kMaxString));
    const std::byte* p = take(n);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  std::string line() {  // GLOBAL's newline-terminated module and name
    for (uint64_t i = pos_; i < in_.size() && i - pos_ < 1024; ++i)
      if (std::to_integer<char>(in_[i]) == '\n') {
        std::string s = text(i - pos_);
        ++pos_;
        return s;
      }
    bad("GLOBAL name is truncated or longer than 1024 bytes");
  }

  // ---- values and stack
  uint32_t make(Value v) {
    if (values_.size() >= kMaxValues) bad(fmt::format("more than {} values", kMaxValues));
    values_.push_back(std::move(v));
    return static_cast<uint32_t>(values_.size() - 1);
  }
  uint32_t make(Kind k) {
    Value v;
    v.kind = k;
    return make(std::move(v));
  }
  void push(uint32_t v) {
    if (stack_.size() >= kMaxStack) bad(fmt::format("stack deeper than {}", kMaxStack));
    stack_.push_back(v);
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  uint32_t pop() {
    if (stack_.size() <= floor()) bad("stack underflow");
    const uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t& top() {
    if (stack_.size() <= floor()) bad("stack underflow");
    return stack_.back();
  }
  std::vector<uint32_t> pop_mark() {  // the items pushed since the last MARK, which is removed
    if (marks_.empty()) bad("no MARK to pop");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Value& at(uint32_t v) { return values_[v]; }
  Value& expect(uint32_t v, Kind k, const char* what) {
    if (at(v).kind != k) bad(fmt::format("{} is {}, expected {}", what, kind_name(at(v).kind), kind_name(k)));
    return at(v);
  }
  uint32_t tuple(std::vector<uint32_t> items) {
    Value v;
    v.kind = Kind::kTuple;
    v.items = std::move(items);
    return make(std::move(v));
  }
  void memo_put(uint64_t key) {
    if (memo_.size() >= kMaxMemo && !memo_.count(key))
      bad(fmt::format("memo larger than {} entries", kMaxMemo));
    memo_[key] = top();
  }
  void memo_get(uint64_t key) {
    const auto it = memo_.find(key);
    if (it == memo_.end()) bad(fmt::format("memo key {} was never stored", key));
    push(it->second);
  }
  void set_items(uint32_t dict, const std::vector<uint32_t>& kv) {
    if (kv.size() % 2) bad("SETITEMS has an odd number of items");
    Value& d = expect(dict, Kind::kDict, "SETITEM target");
    d.items.insert(d.items.end(), kv.begin(), kv.end());
  }
  void append(uint32_t list, const std::vector<uint32_t>& xs) {
    Value& l = expect(list, Kind::kList, "APPEND target");
    l.items.insert(l.items.end(), xs.begin(), xs.end());
  }
  int64_t int_arg(uint32_t v, const char* what) { return expect(v, Kind::kInt, what).i; }

  void global(const std::string& module, const std::string& name) {
    const std::optional<Role> role = allowed_global(module, name);
    if (!role)
      fail(ErrorKind::kUnsupported,
           fmt::format("refuses to load global {}.{} (only tensor data is read from checkpoints)",
                       printable(module), printable(name)));
    Value v;
    v.kind = Kind::kGlobal;
    v.s = module + "." + name;
    v.role = *role;
    for (const auto& st : kStorages)
      if (*role == Role::kStorageType && st.cls == name) {
        v.dtype = st.dtype;
        v.elem_size = st.bytes;
      }
    push(make(std::move(v)));
  }

  // BINPERSID: ('storage', storage_type, key, location, numel) -> the storage's bytes, resolved once per key.
  uint32_t persistent_load(uint32_t pid) {
    const Value& t = expect(pid, Kind::kTuple, "persistent id");
    if (t.items.size() != 5) bad(fmt::format("persistent id has {} fields, expected 5", t.items.size()));
    const std::vector<uint32_t> f = t.items;
    if (expect(f[0], Kind::kString, "persistent id tag").s != "storage")
      bad(fmt::format("persistent id tag {} is not \"storage\"", quote(at(f[0]).s)));
    const Value& type = expect(f[1], Kind::kGlobal, "storage type");
    if (type.role != Role::kStorageType) bad("storage type is not a torch storage class");
    const std::string dtype(type.dtype);
    const uint64_t elem = type.elem_size;
    const std::string key = expect(f[2], Kind::kString, "storage key").s;
    expect(f[3], Kind::kString, "storage location");
    const int64_t numel = int_arg(f[4], "storage size");
    if (numel < 0 || static_cast<uint64_t>(numel) > std::numeric_limits<uint64_t>::max() / elem)
      bad(fmt::format("storage {} has invalid size {}", quote(key), numel));
    if (const auto it = storages_.find(key); it != storages_.end()) {
      const Value& s = at(it->second);
      if (s.s != dtype || s.i != numel)
        bad(fmt::format("storage {} is referenced as both {} x {} and {} x {}", quote(key), s.i, s.s, numel,
                        dtype));
      return it->second;
    }
    Value s;
    s.kind = Kind::kStorage;
    s.s = dtype;
    s.i = numel;
    s.elem_size = elem;
    s.bytes = resolve_(key);
    if (s.bytes.size() != static_cast<uint64_t>(numel) * elem)
      bad(fmt::format("storage {} holds {} bytes but is declared as {} x {} ({} bytes)", quote(key),
                      s.bytes.size(), numel, dtype, static_cast<uint64_t>(numel) * elem));
    const uint32_t v = make(std::move(s));
    storages_.emplace(key, v);
    return v;
  }

  Shape int_tuple(uint32_t v, const char* what) {
    const Value& t = expect(v, Kind::kTuple, what);
    if (t.items.size() > kMaxRank)
      bad(fmt::format("{} has {} dimensions (limit {})", what, t.items.size(), kMaxRank));
    Shape out;
    for (const uint32_t x : t.items) out.push_back(int_arg(x, what));
    return out;
  }

  uint32_t reduce(uint32_t fn, uint32_t args_v) {
    const Value& g = at(fn);
    if (g.kind != Kind::kGlobal)
      bad(fmt::format("REDUCE calls {}, which is not callable", kind_name(g.kind)));
    const std::string name = g.s;
    const Role role = g.role;
    // Copy the arguments only when few: a memoised huge tuple REDUCEd repeatedly must not cost quadratic
    // time.
    const std::vector<uint32_t>& all_args = expect(args_v, Kind::kTuple, "REDUCE arguments").items;
    if (all_args.size() > 8) bad(fmt::format("REDUCE of {} with {} arguments", quote(name), all_args.size()));
    const std::vector<uint32_t> args = all_args;
    switch (role) {
      case Role::kOrderedDict:
        if (!args.empty()) bad("OrderedDict is called with arguments");
        return make(Kind::kDict);
      case Role::kRebuildTensor: {
        if (args.size() != 6 && args.size() != 7)
          bad(fmt::format("_rebuild_tensor_v2 has {} arguments, expected 6 or 7", args.size()));
        Value t;
        t.kind = Kind::kTensor;
        expect(args[0], Kind::kStorage, "tensor storage");
        t.storage = args[0];
        t.offset = int_arg(args[1], "tensor storage offset");
        t.size = int_tuple(args[2], "tensor size");
        t.stride = int_tuple(args[3], "tensor stride");
        if (t.size.size() != t.stride.size())
          bad(fmt::format("tensor size {} and stride {} differ in rank", shape_to_string(t.size),
                          shape_to_string(t.stride)));
        return make(std::move(t));
      }
      case Role::kRebuildParam:
        if (args.size() < 3 || args.size() > 4)
          bad(fmt::format("{} has {} arguments, expected 3 or 4", name, args.size()));
        expect(args[0], Kind::kTensor, "parameter data");
        return args[0];
      case Role::kInertCtor:
        return make(Kind::kOpaque);  // never evaluated: only ever appears outside the weights
      case Role::kStorageType:
      case Role::kInert:
        break;
    }
    fail(ErrorKind::kUnsupported, fmt::format("refuses to call global {}", quote(name)));
  }

  uint32_t execute() {
    while (true) {
      op_pos_ = pos_;
      const auto op = std::to_integer<uint8_t>(*take(1));
      switch (op) {
        case 0x80: {  // PROTO
          const uint64_t proto = le(1);
          if (proto < 2 || proto > 5) fail(ErrorKind::kUnsupported, fmt::format("pickle protocol {}", proto));
          break;
        }
        case 0x95: {  // FRAME: a length hint; the frame's contents must be present
          const uint64_t n = le(8);
          if (n > in_.size() - pos_) bad(fmt::format("FRAME of {} bytes runs past the end", n));
          break;
        }
        case '}':
          push(make(Kind::kDict));
          break;
        case ']':
          push(make(Kind::kList));
          break;
        case ')':
          push(tuple({}));
          break;
        case '(':
          if (marks_.size() >= kMaxStack) bad("too many MARKs");
          marks_.push_back(stack_.size());
          break;
        case 'X':
        case 0x8c:
        case 0x8d: {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
          Value v;
          v.kind = Kind::kString;
          v.s = text(le(op == 'X' ? 4 : op == 0x8c ? 1 : 8));
          push(make(std::move(v)));
          break;
        }
        case 'B':
        case 'C': {  // BINBYTES, SHORT_BINBYTES
          Value v;
          v.kind = Kind::kBytes;
          v.s = text(le(op == 'B' ? 4 : 1));
          push(make(std::move(v)));
          break;
        }
        case 'J':
        case 'K':
        case 'M': {  // BININT (signed 32), BININT1, BININT2 (unsigned)
          Value v;
          v.kind = Kind::kInt;
          const uint64_t x = le(op == 'J' ? 4 : op == 'K' ? 1 : 2);
          v.i = op == 'J' ? static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(x)))
                          : static_cast<int64_t>(x);
          push(make(std::move(v)));
          break;
        }
        case 0x8a: {  // LONG1: little-endian two's complement; wider than 64 bits -> opaque
          const uint64_t n = le(1);
          const std::byte* p = take(n);
          if (n > 8) {
            push(make(Kind::kOpaque));
            break;
          }
          uint64_t x = 0;
          for (uint64_t i = n; i-- > 0;) x = x << 8 | std::to_integer<uint64_t>(p[i]);
          if (n > 0 && n < 8 && (std::to_integer<unsigned>(p[n - 1]) & 0x80)) x |= ~uint64_t{0} << (8 * n);
          Value v;
          v.kind = Kind::kInt;
          v.i = static_cast<int64_t>(x);
          push(make(std::move(v)));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double, value unused
          take(8);
          push(make(Kind::kFloat));
          break;
        }
        case 0x88:
        case 0x89: {
          Value v;
          v.kind = Kind::kBool;
          v.i = op == 0x88;
          push(make(std::move(v)));
          break;
        }
        case 'N':
          push(make(Kind::kNone));
          break;
        case 't':
          push(tuple(pop_mark()));
          break;
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          std::vector<uint32_t> items(op - 0x84u);
          for (size_t i = items.size(); i-- > 0;) items[i] = pop();
          push(tuple(std::move(items)));
          break;
        }
        case 'l': {
          Value v;
          v.kind = Kind::kList;
          v.items = pop_mark();
          push(make(std::move(v)));
          break;
        }
        case 'd': {
          std::vector<uint32_t> kv = pop_mark();
          const uint32_t d = make(Kind::kDict);
          set_items(d, kv);
          push(d);
          break;
        }
        case 'a': {
          const uint32_t x = pop();
          append(top(), {x});
          break;
        }
        case 'e': {
          std::vector<uint32_t> xs = pop_mark();
          append(top(), xs);
          break;
        }
        case 's': {
          const uint32_t v = pop(), k = pop();
          set_items(top(), {k, v});
          break;
        }
        case 'u': {
          std::vector<uint32_t> kv = pop_mark();
          set_items(top(), kv);
          break;
        }
        case 'q':
          memo_put(le(1));
          break;
        case 'r':
          memo_put(le(4));
          break;
        case 0x94:
          memo_put(memo_.size());
          break;
        case 'h':
          memo_get(le(1));
          break;
        case 'j':
          memo_get(le(4));
          break;
        case 'c': {
          std::string module = line();
          std::string name = line();
          global(module, name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const uint32_t name = pop(), module = pop();
          global(expect(module, Kind::kString, "STACK_GLOBAL module").s,
                 expect(name, Kind::kString, "STACK_GLOBAL name").s);
          break;
        }
        case 'R': {
          const uint32_t args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: state for __setstate__ -- ignored, and only allowed on inert objects
          pop();
          const Kind k = at(top()).kind;
          if (k != Kind::kDict && k != Kind::kOpaque && k != Kind::kTensor)
            bad(fmt::format("BUILD on {}", kind_name(k)));
          break;
        }
        case 'Q': {
          const uint32_t pid = pop();
          push(persistent_load(pid));
          break;
        }
        case '.':
          if (!marks_.empty()) bad("STOP inside an unclosed MARK");
          return pop();
        default: {
          const char c = static_cast<char>(op);
          fail(ErrorKind::kUnsupported,
               fmt::format("unsupported pickle opcode 0x{:02x}{}", op,
                           op >= 0x20 && op < 0x7f ? fmt::format(" ('{}')", c) : std::string()));
        }
      }
    }
  }

  // ---- result
  PickledTensor tensor(const std::string& name, const Value& t) {
    const std::string who = "tensor " + quote(name);
    const Value& s = at(t.storage);
    uint64_t numel = 1;
    bool overflow = false;
    for (const int64_t d : t.size) {
      if (d < 0) bad(fmt::format("{}: negative size {}", who, shape_to_string(t.size)));
      if (d != 0 &&
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(d))
        overflow = true;
      numel *= static_cast<uint64_t>(d);
    }
    if (overflow) bad(fmt::format("{}: size {} overflows", who, shape_to_string(t.size)));
    // Row-major check as torch defines contiguity: dimensions of size 1 may have any stride.
    if (numel != 0) {
      int64_t expected = 1;
      for (size_t i = t.size.size(); i-- > 0;) {
        if (t.size[i] == 1) continue;
        if (t.stride[i] != expected)
          fail(ErrorKind::kUnsupported,
               fmt::format("{}: stride {} for size {} is not contiguous (row-major); only contiguous tensors "
                           "are supported",
                           who, shape_to_string(t.stride), shape_to_string(t.size)));
        expected *= t.size[i];
      }
    }
    const auto storage_numel = static_cast<uint64_t>(s.i);
    if (t.offset < 0 || static_cast<uint64_t>(t.offset) > storage_numel ||
        numel > storage_numel - static_cast<uint64_t>(t.offset))
      bad(fmt::format("{}: storage offset {} + {} elements exceed its storage of {} elements", who, t.offset,
                      numel, storage_numel));
    PickledTensor out;
    out.name = name;
    out.dtype = s.s;
    out.shape = t.size;
    out.data = s.bytes.data() + static_cast<uint64_t>(t.offset) * s.elem_size;
    out.nbytes = numel * s.elem_size;
    return out;
  }

  std::vector<PickledTensor> extract(uint32_t root) {
    op_pos_ = pos_;
    if (at(root).kind != Kind::kDict)
      bad(fmt::format("the pickle holds {}, expected a dict of tensors", kind_name(at(root).kind)));
    const Value* dict = &at(root);
    for (size_t i = 0; i + 1 < dict->items.size(); i += 2) {
      const Value& k = at(dict->items[i]);
      const Value& v = at(dict->items[i + 1]);
      if (k.kind == Kind::kString && k.s == "state_dict" && v.kind == Kind::kDict) {
        dict = &v;
        break;
      }
    }
    std::vector<PickledTensor> out;
    std::set<std::string_view> seen;
    for (size_t i = 0; i + 1 < dict->items.size(); i += 2) {
      const Value& k = at(dict->items[i]);
      const Value& v = at(dict->items[i + 1]);
      if (k.kind != Kind::kString || v.kind != Kind::kTensor) continue;
      if (!seen.insert(k.s).second) bad(fmt::format("tensor {} appears twice", quote(k.s)));
      out.push_back(tensor(k.s, v));
    }
    return out;
  }

  std::span<const std::byte> in_;
  const StorageResolver& resolve_;
  const fs::path& label_;
  uint64_t pos_ = 0;
  uint64_t op_pos_ = 0;
  std::vector<Value> values_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, uint32_t> memo_;
  std::map<std::string, uint32_t> storages_;
};

}  // namespace

std::string quote_pickle_string(std::string_view s) {
  return quote(s);
}

std::vector<PickledTensor> read_state_dict_pickle(std::span<const std::byte> pickle,
                                                  const StorageResolver& resolve, const fs::path& label) {
  return Unpickler(pickle, resolve, label).run();
}

}  // namespace sdrt::io
