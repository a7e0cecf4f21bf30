//! The values the pickle VM builds: scalars, allowed globals, and arena nodes.

use super::*;

#[derive(Clone, Debug)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// Little-endian two's complement, wider than 64 bits.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// An allowed global name (class, function or constant).
    Global(Rc<Global>),
    /// A container or interpreted object in the VM's arena.
    Node(usize),
}

#[derive(Debug)]
pub(super) struct Global {
    pub(super) module: String,
    pub(super) name: String,
    pub(super) known: Known,
}

impl Global {
    pub(super) fn dotted(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

#[derive(Debug)]
pub(super) enum Node {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Set(Vec<Value>),
    Dict(Box<Dict>),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
    /// A leaf diffai does not read, with the reason it gives.
    Opaque(String),
    /// An instance of an inert placeholder class: what the pickle gave it, never run.
    Object(Box<Object>),
}

#[derive(Debug, Default)]
pub(super) struct Dict {
    /// `argparse.Namespace`: BUILD's state is the content. For real dicts BUILD's state is instance
    /// attributes (torch's `_metadata` version info on state dicts), not items, and is ignored.
    pub(super) state_is_items: bool,
    pub(super) items: Vec<(Value, Value)>,
    pub(super) index: HashMap<HKey, usize>,
}

/// A dict key as Python compares it (1 == 1.0 == True).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum HKey {
    None,
    Int(i64),
    Float(u64),
    Big(Rc<[u8]>),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Vec<HKey>),
    Global(String),
    /// Compared by identity.
    Node(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum StorageKind {
    Typed(DType),
    /// `torch.UntypedStorage`: bytes; the tensor's dtype comes from `_rebuild_tensor_v3`.
    Untyped,
    /// Complex storages: each element is two values of the dtype (real, imaginary).
    Complex(DType),
    /// Quantized storages: codes of a quantized dtype (`quantized.rs`).
    Quantized(QDType),
}

impl StorageKind {
    pub(super) fn elem_size(self) -> usize {
        match self {
            StorageKind::Typed(d) => d.size(),
            StorageKind::Untyped => 1,
            StorageKind::Complex(d) => 2 * d.size(),
            StorageKind::Quantized(q) => q.storage_dtype().size(),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct StorageRef {
    pub(super) key: Rc<str>,
    pub(super) kind: StorageKind,
    /// The storage class, e.g. `torch.FloatStorage`.
    pub(super) type_name: Rc<str>,
    /// Elements of `kind` (bytes when untyped).
    pub(super) numel: u64,
    /// Legacy storage views: (offset, size) in elements of the root storage.
    pub(super) view: Option<(u64, u64)>,
}

#[derive(Clone, Debug)]
pub(super) struct TensorRef {
    pub(super) storage: StorageRef,
    pub(super) dtype: DType,
    pub(super) offset: u64,
    pub(super) shape: Vec<u64>,
    pub(super) strides: Vec<u64>,
    /// A sparse tensor: `shape` is the dense size, the parts are here (`sparse.rs`).
    pub(super) sparse: Option<Rc<SparseRef>>,
    /// A quantized tensor: `storage`, `offset`, `shape` and `strides` address its codes, and
    /// `dtype` is their storage dtype (`quantized.rs`).
    pub(super) quant: Option<Rc<QuantRef>>,
}

pub(super) fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// A short description of a value for error messages.
pub(super) fn describe_value(nodes: &[Node], v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(_) => "a very large integer".into(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        Value::Global(g) => g.dotted(),
        Value::Node(i) => match nodes.get(*i) {
            Some(Node::List(_)) => "a list".into(),
            Some(Node::Tuple(_)) => "a tuple".into(),
            Some(Node::Set(_)) => "a set".into(),
            Some(Node::Dict(_)) => "a dict".into(),
            Some(Node::Storage(_)) => "a storage".into(),
            Some(Node::Tensor(_)) => "a tensor".into(),
            Some(Node::Opaque(what)) => what.clone(),
            Some(Node::Object(o)) => format!("a {} object", o.class),
            None => "an object".into(),
        },
    }
}

/// An instance of a class outside the allowlist, as the pickle describes it: the arguments it
/// was called with (REDUCE/NEWOBJ), the state BUILD gave it, and items a dict or list subclass
/// received (SETITEMS/APPENDS).
#[derive(Debug, Default)]
pub(super) struct Object {
    pub(super) class: String,
    pub(super) args: Vec<Value>,
    pub(super) state: Option<Value>,
    pub(super) items: Vec<(Value, Value)>,
    pub(super) list: Vec<Value>,
}
