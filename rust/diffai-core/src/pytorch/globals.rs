//! The security boundary: which global names a pickle may reference. Anything else is refused
//! or kept as an inert placeholder (never imported, never called).

use super::*;

/// The global names the reader understands. Other names are refused when dangerous
/// (`unknown_global`), else kept as `Inert` placeholders.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Known {
    /// A class or function outside the allowlist (a pickled nn.Module, a namedtuple, a tensor
    /// subclass): never imported or called. Calling it records its arguments, BUILD its state.
    Inert,
    /// `copyreg._reconstructor(cls, base, state)` / `copyreg.__newobj__(cls, *args)`: how
    /// protocols 0-2 write an instance; becomes a call of `cls`.
    Reconstructor,
    OrderedDict,
    DefaultDict,
    Namespace,
    AttributeDict,
    BuiltinDict,
    BuiltinList,
    BuiltinTuple,
    BuiltinSet,
    BuiltinBytes,
    /// int, float, str, bool, complex, slice, object: defaultdict factories and such.
    BuiltinType,
    CodecsEncode,
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildFromTypeV2,
    /// `torch._utils._rebuild_qtensor`: a quantized tensor (`quantized.rs`).
    RebuildQTensor,
    /// Other `torch._utils._rebuild_*`: sparse, nested, meta, device tensors.
    RebuildOther,
    TensorType,
    Storage(StorageKind),
    /// A torch dtype; `None` when diffai has no matching `DType` (quantized, sub-byte, ...).
    DType(Option<DType>),
    /// A complex torch dtype, by the dtype of its real and imaginary parts.
    ComplexDType(DType),
    Size,
    Device,
    /// Layouts, memory formats, quantization schemes.
    TorchConstant,
    NumpyScalar,
    NumpyDType,
    NumpyReconstruct,
    NumpyType,
}

pub(super) fn known_global(module: &str, name: &str) -> Option<Known> {
    use Known::*;
    let module = match module {
        "__builtin__" => "builtins",
        "torch.tensor" => "torch._tensor",
        m => m,
    };
    Some(match (module, name) {
        ("collections", "OrderedDict") => OrderedDict,
        ("collections", "defaultdict") => DefaultDict,
        ("argparse", "Namespace") | ("types", "SimpleNamespace") => Namespace,
        ("copyreg" | "copy_reg", "_reconstructor" | "__newobj__" | "__newobj_ex__") => {
            Reconstructor
        }
        (m, "AttributeDict")
            if m.starts_with("pytorch_lightning.")
                || m.starts_with("lightning.")
                || m.starts_with("lightning_fabric.") =>
        {
            AttributeDict
        }
        ("builtins", "dict") => BuiltinDict,
        ("builtins", "list") => BuiltinList,
        ("builtins", "tuple") => BuiltinTuple,
        ("builtins", "set" | "frozenset") => BuiltinSet,
        ("builtins", "bytes" | "bytearray") => BuiltinBytes,
        ("builtins", "int" | "float" | "str" | "bool" | "complex" | "slice" | "object") => {
            BuiltinType
        }
        ("_codecs", "encode") => CodecsEncode,
        ("torch._utils", "_rebuild_tensor") => RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            RebuildParameter
        }
        ("torch._utils", "_rebuild_qtensor") => RebuildQTensor,
        ("torch._utils", n) if n.starts_with("_rebuild_") => RebuildOther,
        ("torch._tensor", "_rebuild_from_type_v2") => RebuildFromTypeV2,
        ("torch._tensor" | "torch", "Tensor")
        | ("torch.nn.parameter" | "torch.nn", "Parameter" | "Buffer") => TensorType,
        ("torch" | "torch.storage", n) if n.ends_with("Storage") => Storage(storage_kind(n)?),
        ("torch", "Size") => Size,
        ("torch", "device") => Device,
        ("torch.serialization", "_get_layout") => TorchConstant,
        (
            "torch",
            "strided"
            | "sparse_coo"
            | "sparse_csr"
            | "sparse_csc"
            | "sparse_bsr"
            | "sparse_bsc"
            | "_mkldnn"
            | "jagged"
            | "contiguous_format"
            | "channels_last"
            | "channels_last_3d"
            | "preserve_format"
            | "per_tensor_affine"
            | "per_channel_affine"
            | "per_tensor_symmetric"
            | "per_channel_symmetric"
            | "per_channel_affine_float_qparams",
        ) => TorchConstant,
        ("torch", "complex128" | "cdouble") => ComplexDType(crate::dtype::DType::F64),
        ("torch", "complex64" | "cfloat") => ComplexDType(crate::dtype::DType::F32),
        ("torch", "complex32" | "chalf") => ComplexDType(crate::dtype::DType::F16),
        ("torch", n) => DType(torch_dtype(n)?),
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => NumpyScalar,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => NumpyReconstruct,
        ("numpy", "dtype") => NumpyDType,
        ("numpy", "ndarray") => NumpyType,
        ("numpy.dtypes", n) if n.ends_with("DType") => NumpyType,
        _ => return None,
    })
}

/// A torch dtype attribute name: `Some(Some(d))` when diffai reads it, `Some(None)` for a known
/// dtype it does not, `None` for a name that is not a dtype.
pub(super) fn torch_dtype(name: &str) -> Option<Option<DType>> {
    Some(Some(match name {
        "float64" | "double" => DType::F64,
        "float32" | "float" => DType::F32,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "float8_e4m3fn" => DType::F8E4M3,
        "float8_e5m2" => DType::F8E5M2,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int16" | "short" => DType::I16,
        "int8" => DType::I8,
        "uint64" => DType::U64,
        "uint32" => DType::U32,
        "uint16" => DType::U16,
        "uint8" => DType::U8,
        "bool" => DType::Bool,
        "float8_e4m3fnuz" | "float8_e5m2fnuz" | "float8_e8m0fnu" | "float4_e2m1fn_x2" | "qint8"
        | "quint8" | "qint32" | "quint4x2" | "quint2x4" | "bits1x8" | "bits2x4" | "bits4x2"
        | "bits8" | "bits16" | "int1" | "int2" | "int3" | "int4" | "int5" | "int6" | "int7"
        | "uint1" | "uint2" | "uint3" | "uint4" | "uint5" | "uint6" | "uint7" => return Some(None),
        _ => return None,
    }))
}

pub(super) fn storage_kind(name: &str) -> Option<StorageKind> {
    use StorageKind::*;
    Some(match name {
        "UntypedStorage" | "TypedStorage" => Untyped,
        "DoubleStorage" => Typed(DType::F64),
        "FloatStorage" => Typed(DType::F32),
        "HalfStorage" => Typed(DType::F16),
        "BFloat16Storage" => Typed(DType::BF16),
        "LongStorage" => Typed(DType::I64),
        "IntStorage" => Typed(DType::I32),
        "ShortStorage" => Typed(DType::I16),
        "CharStorage" => Typed(DType::I8),
        "ByteStorage" => Typed(DType::U8),
        "BoolStorage" => Typed(DType::Bool),
        "Float8_e4m3fnStorage" => Typed(DType::F8E4M3),
        "Float8_e5m2Storage" => Typed(DType::F8E5M2),
        "UInt16Storage" => Typed(DType::U16),
        "UInt32Storage" => Typed(DType::U32),
        "UInt64Storage" => Typed(DType::U64),
        "ComplexDoubleStorage" => Complex(DType::F64),
        "ComplexFloatStorage" => Complex(DType::F32),
        "ComplexHalfStorage" => Complex(DType::F16),
        "QInt8Storage" => Quantized(QDType::QInt8),
        "QUInt8Storage" => Quantized(QDType::QUInt8),
        "QInt32Storage" => Quantized(QDType::QInt32),
        "QUInt4x2Storage" => Quantized(QDType::QUInt4x2),
        "QUInt2x4Storage" => Quantized(QDType::QUInt2x4),
        _ => return None,
    })
}

/// Packages whose callables run code, touch files, processes or the network, or reach other
/// callables (getattr, functools.partial, operator.attrgetter): a pickle that names anything
/// in them is refused, never kept as a placeholder.
const DANGEROUS_PACKAGES: &[&str] = &[
    "__builtin__",
    "__builtins__",
    "_ctypes",
    "_io",
    "_operator",
    "_pickle",
    "_posixsubprocess",
    "_thread",
    "asyncio",
    "atexit",
    "bdb",
    "builtins",
    "cPickle",
    "code",
    "codeop",
    "commands",
    "copy_reg",
    "copyreg",
    "ctypes",
    "dbm",
    "dill",
    "distutils",
    "fcntl",
    "ftplib",
    "functools",
    "gc",
    "glob",
    "http",
    "httplib",
    "imp",
    "importlib",
    "inspect",
    "io",
    "IPython",
    "joblib",
    "linecache",
    "marshal",
    "mmap",
    "multiprocessing",
    "nt",
    "ntpath",
    "operator",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "pip",
    "pkgutil",
    "platform",
    "popen2",
    "posix",
    "posixpath",
    "profile",
    "pty",
    "pydoc",
    "requests",
    "resource",
    "runpy",
    "sched",
    "select",
    "selectors",
    "setuptools",
    "shelve",
    "shutil",
    "signal",
    "site",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "subprocess",
    "sys",
    "tempfile",
    "telnetlib",
    "thread",
    "threading",
    "timeit",
    "trace",
    "types",
    "urllib",
    "urllib2",
    "urllib3",
    "webbrowser",
    "yaml",
    "zipimport",
];

/// Callable names refused in any module (a placeholder named `eval` is an attack, not a class).
const DANGEROUS_NAMES: &[&str] = &[
    "__import__",
    "__reduce__",
    "__reduce_ex__",
    "__setstate__",
    "_load_from_bytes",
    "apply",
    "attrgetter",
    "breakpoint",
    "call",
    "check_call",
    "check_output",
    "compile",
    "delattr",
    "eval",
    "exec",
    "execfile",
    "execv",
    "execve",
    "exit",
    "fork",
    "getattr",
    "globals",
    "import_module",
    "input",
    "itemgetter",
    "kill",
    "load",
    "load_module",
    "loads",
    "methodcaller",
    "open",
    "partial",
    "popen",
    "Popen",
    "remove",
    "rmtree",
    "run",
    "runstring",
    "setattr",
    "spawn",
    "system",
    "unlink",
    "vars",
];

/// The torch packages whose classes may be kept inert: modules, optimizers, schedulers,
/// quantization observers. Any other unknown `torch.*` name (torch.load, torch.hub, torch._C,
/// torch.jit, torch.ops, torch.serialization ...) is refused.
const TORCH_INERT_PACKAGES: &[&str] = &[
    "torch.nn.",
    "torch.optim.",
    "torch.ao.",
    "torch.nn.modules.",
    "torch.distributions.",
];

/// What an unknown global becomes: `Ok(())` for an inert placeholder, or the refusal.
pub(super) fn unknown_global(module: &str, name: &str) -> VmResult<()> {
    let root = module.split('.').next().unwrap_or(module);
    let dangerous = DANGEROUS_PACKAGES.contains(&root)
        || name
            .split('.')
            .any(|part| DANGEROUS_NAMES.contains(&part) || part.starts_with("__"))
        || module.starts_with("__torch__")
        || (matches!(
            root,
            "torch" | "numpy" | "_codecs" | "collections" | "argparse"
        ) && !TORCH_INERT_PACKAGES.iter().any(|p| module.starts_with(p)));
    if dangerous {
        Err(refusal(module, name))
    } else {
        Ok(())
    }
}

/// The message for a global the reader refuses.
pub(super) fn refusal(module: &str, name: &str) -> String {
    let hint = if module.starts_with("__torch__") {
        ". This looks like a TorchScript archive (torch.jit.save); diffai reads checkpoints written by torch.save"
    } else {
        ""
    };
    format!(
        "pickle references the callable {module}.{name}, which diffai does not run and refuses to read (it can run code or reach what does){hint}"
    )
}
