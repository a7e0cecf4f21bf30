//! PyTorch quantized tensors: `torch._utils._rebuild_qtensor(storage, offset, size, stride,
//! quantizer_params, requires_grad, backward_hooks)`, as `Tensor.__reduce_ex__` writes them, with
//! `quantizer_params`
//! - `(torch.per_tensor_affine, scale, zero_point)`, or
//! - `(torch.per_channel_affine, scales, zero_points, axis)`: 1-D tensors, one value per index
//!   along `axis`. torch pickles `per_channel_affine_float_qparams` under this name too; its zero
//!   points are floats.
//!
//! The codes are a `QInt8Storage`, `QUInt8Storage`, `QInt32Storage`, or `QUInt4x2Storage` /
//! `QUInt2x4Storage` (two / four codes a byte, low bits first); `offset`, `size` and `stride`
//! count codes.
//!
//! Such a tensor is read as the f32 tensor `q.dequantize()` gives, bit for bit, with torch's own
//! arithmetic:
//! - per tensor (ATen `Vectorized<q>::dequantize`): `(float(q) - float(zp)) * float(scale)`;
//! - per channel, integer zero points (`dequantize_tensor_per_channel_affine`):
//!   `float(q) - float(zp)` in f32, times the double scale, rounded to f32;
//! - per channel, float zero points (`..._float_qparams`): `(float(q) - zp) * scale` in f32.
//!
//! Its storage decodes the codes a band at a time when it is read (`Storage::streamed`), so the
//! statistics kernels see the values without a whole-tensor f32 copy; its `Encoded` says how the
//! file stores it (`qint8 per-channel`, the bytes of codes, scales and zero points).

use super::*;
use crate::tensor::Encoded;

/// Values decoded per band (64 KiB of f32).
const BAND: usize = 1 << 14;

/// The code types of torch's quantized tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum QDType {
    QInt8,
    QUInt8,
    QInt32,
    QUInt4x2,
    QUInt2x4,
}

impl QDType {
    /// The element type of the storage that holds the codes.
    pub(super) fn storage_dtype(self) -> DType {
        match self {
            QDType::QInt8 => DType::I8,
            QDType::QInt32 => DType::I32,
            QDType::QUInt8 | QDType::QUInt4x2 | QDType::QUInt2x4 => DType::U8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            QDType::QInt8 => "qint8",
            QDType::QUInt8 => "quint8",
            QDType::QInt32 => "qint32",
            QDType::QUInt4x2 => "quint4x2",
            QDType::QUInt2x4 => "quint2x4",
        }
    }

    /// Codes per storage element.
    fn per_element(self) -> usize {
        match self {
            QDType::QUInt4x2 => 2,
            QDType::QUInt2x4 => 4,
            _ => 1,
        }
    }
}

/// How the codes map to values, as the pickle gave it.
#[derive(Debug)]
pub(super) enum QScheme {
    PerTensor {
        scale: f64,
        zero_point: i64,
    },
    PerChannel {
        scales: Box<TensorRef>,
        zero_points: Box<TensorRef>,
        axis: usize,
    },
}

#[derive(Debug)]
pub(super) struct QuantRef {
    pub(super) qdtype: QDType,
    pub(super) scheme: QScheme,
}

impl Vm<'_> {
    /// `_rebuild_qtensor(storage, offset, size, stride, quantizer_params, ...)`: a `TensorRef` of
    /// the codes with its `quant`, or an opaque leaf for a scheme diffai does not read.
    pub(super) fn rebuild_qtensor(&mut self, args: &[Value]) -> VmResult<Value> {
        const FUNC: &str = "_rebuild_qtensor";
        if args.len() < 5 {
            return Err(self.err(format!(
                "{FUNC} with {} arguments, expected at least 5",
                args.len()
            )));
        }
        let storage = match args.first() {
            Some(Value::Node(i)) => match self.nodes.get(*i) {
                Some(Node::Storage(s)) => (**s).clone(),
                _ => return Err(self.err(format!("{FUNC}: the first argument is not a storage"))),
            },
            _ => return Err(self.err(format!("{FUNC}: the first argument is not a storage"))),
        };
        let StorageKind::Quantized(qdtype) = storage.kind else {
            return Err(self.err(format!(
                "{FUNC}: its storage is a {}, which holds no quantized codes",
                storage.type_name
            )));
        };
        let offset = match args.get(1) {
            Some(Value::Int(i)) if *i >= 0 => *i as u64,
            _ => {
                return Err(self.err(format!(
                    "{FUNC}: the storage offset is not a non-negative integer"
                )))
            }
        };
        let shape = self.ints(args.get(2), FUNC, "size")?;
        let strides = self.ints(args.get(3), FUNC, "stride")?;
        if shape.len() != strides.len() {
            return Err(self.err(format!(
                "{FUNC}: {} sizes but {} strides",
                shape.len(),
                strides.len()
            )));
        }
        if let Some(v) = shape.iter().chain(&strides).find(|&&v| v < 0) {
            return Err(self.err(format!("{FUNC}: negative size or stride {v}")));
        }
        let shape: Vec<u64> = shape.into_iter().map(|d| d as u64).collect();
        let params = args
            .get(4)
            .and_then(|p| self.seq_items(p))
            .map(<[Value]>::to_vec)
            .ok_or_else(|| self.err(format!("{FUNC}: the quantizer parameters are not a tuple")))?;
        let scheme_name = match params.first() {
            Some(Value::Global(g)) if g.known == Known::TorchConstant => g.name.clone(),
            _ => {
                return Err(self.err(format!(
                    "{FUNC}: the quantizer parameters do not start with a torch qscheme"
                )))
            }
        };
        let scheme = match (scheme_name.as_str(), &params[1..]) {
            ("per_tensor_affine", [scale, zero_point]) => {
                let scale = match scale {
                    Value::Float(f) => *f,
                    Value::Int(i) => *i as f64,
                    _ => return Err(self.err(format!("{FUNC}: the scale is not a number"))),
                };
                let Value::Int(zero_point) = *zero_point else {
                    return Err(self.err(format!("{FUNC}: the zero point is not an integer")));
                };
                QScheme::PerTensor { scale, zero_point }
            }
            (
                "per_channel_affine" | "per_channel_affine_float_qparams",
                [scales, zero_points, axis],
            ) => {
                let axis = match axis {
                    Value::Int(a) if (*a as u64) < shape.len() as u64 && *a >= 0 => *a as usize,
                    _ => {
                        return Err(self.err(format!(
                            "{FUNC}: the axis is not a dimension of the {}-dimensional tensor",
                            shape.len()
                        )))
                    }
                };
                let channels = shape.get(axis).copied().unwrap_or_default();
                let scales = match self.channel_params(scales, channels, "scales")? {
                    Ok(t) => t,
                    Err(opaque) => return Ok(opaque),
                };
                let zero_points = match self.channel_params(zero_points, channels, "zero points")? {
                    Ok(t) => t,
                    Err(opaque) => return Ok(opaque),
                };
                QScheme::PerChannel {
                    scales,
                    zero_points,
                    axis,
                }
            }
            (
                "per_tensor_affine" | "per_channel_affine" | "per_channel_affine_float_qparams",
                _,
            ) => {
                return Err(self.err(format!(
                    "{FUNC}: torch.{scheme_name} with {} parameters",
                    params.len() - 1
                )))
            }
            // torch's own `_reduce_ex_internal` refuses to save any other scheme and its
            // `_rebuild_qtensor` to load one (the symmetric schemes are observer settings: every
            // quantized tensor torch makes is affine), so there is no reference to read against.
            _ => {
                return Ok(self.new_node(Node::Opaque(format!(
                    "a {} tensor quantized with torch.{scheme_name}, which diffai does not read \
                     (torch itself neither saves nor loads this scheme)",
                    qdtype.name()
                ))))
            }
        };
        let tensor = TensorRef {
            storage,
            dtype: qdtype.storage_dtype(),
            offset,
            shape,
            strides: strides.into_iter().map(|s| s as u64).collect(),
            sparse: None,
            quant: Some(Rc::new(QuantRef { qdtype, scheme })),
        };
        Ok(self.new_node(Node::Tensor(Box::new(tensor))))
    }

    /// A per-channel parameter tensor: 1-D with one value per channel. `Ok(Err(leaf))` when it is
    /// a tensor diffai does not read (the quantized tensor is then skipped with its reason).
    fn channel_params(
        &mut self,
        v: &Value,
        channels: u64,
        what: &str,
    ) -> VmResult<std::result::Result<Box<TensorRef>, Value>> {
        let t = match v {
            Value::Node(i) => match self.nodes.get(*i) {
                Some(Node::Tensor(t)) if t.sparse.is_none() && t.quant.is_none() => Some(t.clone()),
                Some(Node::Opaque(why)) => {
                    let why = format!("a quantized tensor whose {what} are {why}");
                    return Ok(Err(self.new_node(Node::Opaque(why))));
                }
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| self.err(format!("_rebuild_qtensor: the {what} are not a tensor")))?;
        if t.shape != [channels] {
            return Err(self.err(format!(
                "_rebuild_qtensor: {what} of shape {:?} for {channels} channels",
                t.shape
            )));
        }
        Ok(Ok(t))
    }
}

/// Per-element parameters, as the arithmetic uses them.
enum Params {
    PerTensor {
        scale: f32,
        zero_point: f32,
    },
    PerChannel {
        axis: usize,
        scales: Vec<f64>,
        zero_points: Vec<f32>,
        float_zero_points: bool,
    },
}

/// Everything the decoding storage needs: the codes and how to turn them into values.
struct Plan {
    codes: Storage,
    qdtype: QDType,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
    numel: usize,
    params: Params,
}

/// The f32 `Tensor` of a quantized `TensorRef`, its storages resolved by `storage`.
pub(super) fn make_quantized_tensor(
    path: &Path,
    name: String,
    t: &TensorRef,
    q: &QuantRef,
    mut storage: impl FnMut(&StorageRef, DType) -> Result<StorageBytes>,
) -> Result<Tensor> {
    let bad = |what: String| Error::format(path, format!("tensor {name}: {what}"));
    if t.sparse.is_some() {
        return Err(bad(
            "a sparse tensor of quantized values, which diffai does not read".into(),
        ));
    }
    let code_dtype = q.qdtype.storage_dtype();
    // The codes are decoded from their bytes read whole: a deflated entry only as far as its
    // compressed size justifies.
    let bytes = storage(&t.storage, code_dtype)?;
    if let Some(why) = bytes.refuse_whole("a quantized tensor") {
        return Err(bad(why));
    }
    let codes = bytes.whole(path, &t.storage.key);
    let usize_of = |v: u64, what: &str| {
        usize::try_from(v).map_err(|_| bad(format!("{what} {v} is too large")))
    };
    let shape = (t.shape.iter())
        .map(|&d| usize_of(d, "dimension"))
        .collect::<Result<Vec<_>>>()?;
    let strides = (t.strides.iter())
        .map(|&s| usize_of(s, "stride"))
        .collect::<Result<Vec<_>>>()?;
    let offset = usize_of(t.offset, "storage offset")?;
    let numel = (shape.iter())
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|n| n.checked_mul(4).is_some())
        .ok_or_else(|| bad(format!("shape {shape:?} has more elements than can exist")))?;
    let stored = codes.len() / code_dtype.size() * q.qdtype.per_element();
    if numel > 0 {
        let last = (shape.iter().zip(&strides))
            .try_fold(offset as u128, |last, (&d, &s)| {
                last.checked_add((d as u128 - 1) * s as u128)
            })
            .unwrap_or(u128::MAX);
        if last >= stored as u128 {
            return Err(bad(format!(
                "its view addresses code {last} but storage {} holds {stored} {} codes",
                t.storage.key,
                q.qdtype.name()
            )));
        }
    }
    if numel > MAX_VIEW_READS_FREE && numel / MAX_VIEW_READS_PER_ELEMENT > stored {
        return Err(bad(format!(
            "a view of {numel} elements over {stored} stored codes implies more than \
             {MAX_VIEW_READS_PER_ELEMENT} reads per stored code; budget: view reads"
        )));
    }
    let code_bytes = numel.div_ceil(q.qdtype.per_element()) * code_dtype.size();
    let (params, param_bytes, scheme) = match &q.scheme {
        QScheme::PerTensor { scale, zero_point } => (
            Params::PerTensor {
                scale: *scale as f32,
                zero_point: *zero_point as f32,
            },
            0,
            "per-tensor",
        ),
        QScheme::PerChannel {
            scales,
            zero_points,
            axis,
        } => {
            let mut read = |label: &str, r: &TensorRef| -> Result<(Vec<f64>, DType, usize)> {
                let bytes = storage(&r.storage, r.dtype)?;
                if let Some(why) = bytes.refuse_whole("a quantized tensor") {
                    return Err(bad(format!("{label}: {why}")));
                }
                let part = make_tensor(path, format!("{name}.{label}"), r, bytes)?;
                Ok((
                    crate::stats::to_f64(&part, 0, None)?,
                    part.dtype,
                    part.nbytes(),
                ))
            };
            let (scales, scale_dtype, scale_bytes) = read("scales", scales)?;
            let (zero_points, zp_dtype, zp_bytes) = read("zero_points", zero_points)?;
            if !scale_dtype.is_float() {
                return Err(bad(format!("its scales are {scale_dtype}, not floats")));
            }
            let float_zero_points = zp_dtype.is_float();
            (
                Params::PerChannel {
                    axis: *axis,
                    scales,
                    zero_points: zero_points.into_iter().map(|z| z as f32).collect(),
                    float_zero_points,
                },
                scale_bytes + zp_bytes,
                if float_zero_points {
                    "per-channel float-qparams"
                } else {
                    "per-channel"
                },
            )
        }
    };
    let encoded = Encoded {
        dtype: format!("{} {scheme}", q.qdtype.name()),
        nbytes: code_bytes + param_bytes,
    };
    let plan = Arc::new(Plan {
        codes,
        qdtype: q.qdtype,
        offset,
        shape: shape.clone(),
        strides,
        numel,
        params,
    });
    let open =
        move || -> Result<Box<dyn Read + Send>> { Ok(Box::new(Dequantize::open(plan.clone())?)) };
    let mut tensor = Tensor::contiguous(
        name,
        DType::F32,
        shape,
        Storage::streamed(numel * 4, Arc::new(open)),
    );
    tensor.encoded = Some(Arc::new(encoded));
    Ok(tensor)
}

/// The f32 values of a quantized tensor as little-endian bytes, in C order, a band at a time.
struct Dequantize {
    plan: Arc<Plan>,
    /// The codes when their storage is not resident (read once per stream).
    loaded: Option<Vec<u8>>,
    /// Elements decoded so far.
    done: usize,
    band: Vec<u8>,
    /// Bytes of `band` already read.
    at: usize,
}

impl Dequantize {
    fn open(plan: Arc<Plan>) -> Result<Self> {
        let loaded = match plan.codes.resident() {
            Some(_) => None,
            None => Some(plan.codes.load()?.into_owned()),
        };
        Ok(Dequantize {
            plan,
            loaded,
            done: 0,
            band: Vec::with_capacity(BAND * 4),
            at: 0,
        })
    }
}

impl Read for Dequantize {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let plan = &*self.plan;
        if self.at == self.band.len() {
            if self.done == plan.numel {
                return Ok(0);
            }
            let n = BAND.min(plan.numel - self.done);
            let codes = match &self.loaded {
                Some(bytes) => bytes.as_slice(),
                None => plan.codes.resident().unwrap_or_default(),
            };
            self.band.clear();
            decode(plan, codes, self.done, n, &mut self.band);
            self.done += n;
            self.at = 0;
        }
        let k = buf.len().min(self.band.len() - self.at);
        buf[..k].copy_from_slice(&self.band[self.at..self.at + k]);
        self.at += k;
        Ok(k)
    }
}

/// Appends the values of elements [start, start + n) (C order) to `out` as f32 bytes.
fn decode(plan: &Plan, codes: &[u8], start: usize, n: usize, out: &mut Vec<u8>) {
    let byte = |i: usize| codes.get(i).copied().unwrap_or_default();
    match plan.qdtype {
        QDType::QInt8 => decode_with(plan, start, n, out, |p| byte(p) as i8 as f32),
        QDType::QUInt8 => decode_with(plan, start, n, out, |p| byte(p) as f32),
        QDType::QInt32 => decode_with(plan, start, n, out, |p| {
            let word = codes.get(p * 4..p * 4 + 4).unwrap_or(&[0; 4]);
            i32::from_le_bytes(word.try_into().unwrap_or_default()) as f32
        }),
        QDType::QUInt4x2 => decode_with(plan, start, n, out, |p| {
            (byte(p / 2) >> (4 * (p % 2)) & 0xf) as f32
        }),
        QDType::QUInt2x4 => decode_with(plan, start, n, out, |p| {
            (byte(p / 4) >> (2 * (p % 4)) & 0x3) as f32
        }),
    }
}

/// `decode` for one code type: `code(p)` is the code at position `p` of the storage. Runs along
/// the last dimension in a tight loop; an odometer steps the other dimensions between runs.
fn decode_with(
    plan: &Plan,
    start: usize,
    n: usize,
    out: &mut Vec<u8>,
    code: impl Fn(usize) -> f32,
) {
    let (shape, strides) = (&plan.shape, &plan.strides);
    // A 0-dimensional tensor is one run of one element (its `last` dimension has size 1).
    let last = shape.len().saturating_sub(1);
    let (width, step) = (
        shape.get(last).copied().unwrap_or(1),
        strides.get(last).copied().unwrap_or(0),
    );
    // The multi-index of `start` and its position; positions wrap like the odometer below, which
    // may step one stride past the last element (never read).
    let mut index = vec![0usize; shape.len().max(1)];
    let mut rest = start;
    for d in (0..shape.len()).rev() {
        index[d] = rest % shape[d].max(1);
        rest /= shape[d].max(1);
    }
    let mut pos = (index.iter().zip(strides))
        .fold(plan.offset, |p, (&i, &s)| p.wrapping_add(i.wrapping_mul(s)));
    let mut left = n;
    while left > 0 {
        let run = (width - index[last]).min(left);
        let at = |k: usize| code(pos.wrapping_add(k.wrapping_mul(step)));
        let mut push = |value: f32| out.extend_from_slice(&value.to_le_bytes());
        match &plan.params {
            Params::PerTensor { scale, zero_point } => {
                (0..run).for_each(|k| push((at(k) - zero_point) * scale))
            }
            Params::PerChannel {
                axis,
                scales,
                zero_points,
                float_zero_points,
            } => {
                let channel = |k: usize| index[*axis] + if *axis == last { k } else { 0 };
                for k in 0..run {
                    let c = channel(k);
                    let scale = scales.get(c).copied().unwrap_or_default();
                    let zero_point = zero_points.get(c).copied().unwrap_or_default();
                    push(if *float_zero_points {
                        (at(k) - zero_point) * scale as f32
                    } else {
                        ((at(k) - zero_point) as f64 * scale) as f32
                    });
                }
            }
        }
        left -= run;
        index[last] += run;
        pos = pos.wrapping_add(run.wrapping_mul(step));
        // Carry into the outer dimensions.
        let mut d = last;
        while index[d] >= shape.get(d).copied().unwrap_or(1) && d > 0 {
            pos = pos.wrapping_sub(strides[d].wrapping_mul(shape[d]));
            index[d] = 0;
            d -= 1;
            index[d] += 1;
            pos = pos.wrapping_add(strides[d]);
        }
    }
}
