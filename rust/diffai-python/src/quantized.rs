//! Quantized logical weights (`diffai_core::quantized`) for `diffai.quantized`: the Python side
//! recognises which tensors form a logical weight and passes a spec `(kind, parts, params)`:
//! `parts` maps each role to a tensor name of the model, `params` holds the convention's numbers.
//! Statistics come back as `(numel, mean, std, min, max, nan, inf, zeros)` for the Python record
//! (its dtype, shape and byte size are the logical weight's, known there).

use super::{run, DiffaiError, Model};
use crate::results::ChangeMetrics;
use diffai_core::gguf::llama_qk_rows;
use diffai_core::quantized::{
    self as q, Bnb4, BnbInt8, Dequantize, Fp8Scaled, IntPacked, Mxfp4, NestedAbsmax, Side,
};
use diffai_core::stats::{RowOrder, TensorStats as CoreStats};
use diffai_core::{Error, Model as CoreModel, Tensor};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::HashMap;
use std::sync::Arc;

type Spec = (String, HashMap<String, String>, HashMap<String, f64>);

/// A spec resolved against its model: the parts as positions, checked to exist.
#[derive(Clone)]
struct Resolved {
    kind: String,
    parts: HashMap<String, usize>,
    params: HashMap<String, f64>,
}

fn resolve(model: &Model, (kind, parts, params): Spec) -> PyResult<Resolved> {
    let parts = parts
        .into_iter()
        .map(|(role, name)| Ok((role, model.position(&name)?)))
        .collect::<PyResult<_>>()?;
    Ok(Resolved {
        kind,
        parts,
        params,
    })
}

impl Resolved {
    fn part<'m>(&self, m: &'m CoreModel, role: &str) -> diffai_core::Result<&'m Tensor> {
        self.parts
            .get(role)
            .map(|&i| &m.tensors[i])
            .ok_or_else(|| Error::Invalid(format!("{} spec without its {role} part", self.kind)))
    }

    fn optional<'m>(&self, m: &'m CoreModel, role: &str) -> Option<&'m Tensor> {
        self.parts.get(role).map(|&i| &m.tensors[i])
    }

    fn number(&self, key: &str) -> diffai_core::Result<f64> {
        self.params
            .get(key)
            .copied()
            .ok_or_else(|| Error::Invalid(format!("{} spec without {key}", self.kind)))
    }

    fn count(&self, key: &str) -> diffai_core::Result<usize> {
        let v = self.number(key)?;
        if v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53) {
            Ok(v as usize)
        } else {
            Err(Error::Invalid(format!(
                "{} spec: {key} = {v} is not a count",
                self.kind
            )))
        }
    }

    /// The decoder of this logical weight, borrowing its parts from `m`.
    fn build<'m>(&self, m: &'m CoreModel) -> diffai_core::Result<Box<dyn Dequantize + 'm>> {
        Ok(match self.kind.as_str() {
            "gptq" => Box::new(IntPacked::gptq(
                self.part(m, "qweight")?,
                self.part(m, "qzeros")?,
                self.part(m, "scales")?,
                self.optional(m, "g_idx"),
                self.count("bits")?,
                self.number("zeros_minus_one")? != 0.0,
            )?),
            "awq" => Box::new(IntPacked::awq(
                self.part(m, "qweight")?,
                self.part(m, "qzeros")?,
                self.part(m, "scales")?,
            )?),
            "pack_quantized" => Box::new(IntPacked::pack_quantized(
                self.part(m, "packed")?,
                self.part(m, "scale")?,
                self.optional(m, "zero_point"),
                self.count("rows")?,
                self.count("width")?,
                self.count("bits")?,
            )?),
            "bnb4" => {
                let nested = match self.optional(m, "nested_absmax") {
                    None => None,
                    Some(absmax) => Some(NestedAbsmax {
                        quant_map: self.part(m, "nested_quant_map")?,
                        absmax,
                        blocksize: self.count("nested_blocksize")?,
                        offset: self.number("nested_offset")? as f32,
                    }),
                };
                Box::new(Bnb4::new(
                    self.part(m, "weight")?,
                    self.part(m, "absmax")?,
                    self.part(m, "quant_map")?,
                    nested,
                    &[self.count("rows")?, self.count("width")?],
                    self.count("blocksize")?,
                )?)
            }
            "bnb_int8" => Box::new(BnbInt8::new(self.part(m, "weight")?, self.part(m, "scb")?)?),
            "fp8" => Box::new(Fp8Scaled::new(
                self.part(m, "weight")?,
                self.part(m, "scale")?,
                self.count("block_rows")?,
                self.count("block_cols")?,
            )?),
            "mxfp4" => Box::new(Mxfp4::new(
                self.part(m, "blocks")?,
                self.part(m, "scales")?,
            )?),
            other => {
                return Err(Error::Invalid(format!(
                    "unknown quantized convention {other:?}"
                )))
            }
        })
    }
}

type StatsTuple = (
    u64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    u64,
    u64,
    u64,
);

fn stats_tuple(s: &CoreStats) -> StatsTuple {
    (
        s.numel,
        s.mean(),
        s.std(),
        s.min(),
        s.max(),
        s.nan_count,
        s.inf_count,
        s.zero_count,
    )
}

/// Rows `[r0, r1)` of a logical weight read as a matrix, as native f32 bytes in C order.
#[pyfunction]
pub fn quantized_values<'py>(
    py: Python<'py>,
    model: &Model,
    spec: Spec,
    r0: usize,
    r1: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let spec = resolve(model, spec)?;
    let inner = model.inner.clone();
    let vals = run(py, 0, None, move |_| {
        q::values(&*spec.build(&inner)?, r0..r1)
    })?;
    PyBytes::new_with(py, vals.len() * 4, |out| {
        for (o, v) in out.chunks_exact_mut(4).zip(&vals) {
            o.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    })
}

/// Statistics of a logical weight's dequantized values.
#[pyfunction]
#[pyo3(signature = (model, spec, threads=0))]
pub fn quantized_stats(
    py: Python<'_>,
    model: &Model,
    spec: Spec,
    threads: i64,
) -> PyResult<StatsTuple> {
    let spec = resolve(model, spec)?;
    let inner = model.inner.clone();
    let s = run(py, threads, None, move |ctl| {
        q::tensor_stats(&*spec.build(&inner)?, ctl)
    })?;
    Ok(stats_tuple(&s))
}

/// One side of `quantized_pair` as given: a logical weight (its spec) or a plain tensor.
enum Given {
    Quantized(Resolved),
    Dense(usize),
}

fn given(model: &Model, name: &str, spec: Option<Spec>) -> PyResult<(Arc<CoreModel>, Given)> {
    let which = match spec {
        Some(s) => Given::Quantized(resolve(model, s)?),
        None => Given::Dense(model.position(name)?),
    };
    Ok((model.inner.clone(), which))
}

/// A side ready to read: a quantized side's decoder, or the plain tensor.
enum Built<'m> {
    Quantized(Box<dyn Dequantize + 'm>),
    Dense(&'m Tensor),
}

impl<'m> Built<'m> {
    fn of(m: &'m CoreModel, g: &Given) -> diffai_core::Result<Self> {
        Ok(match g {
            Given::Quantized(s) => Built::Quantized(s.build(m)?),
            Given::Dense(i) => Built::Dense(&m.tensors[*i]),
        })
    }

    fn side(&self) -> Side<'_> {
        match self {
            Built::Quantized(d) => Side::Quantized(d.as_ref()),
            Built::Dense(t) => Side::Dense(t),
        }
    }

    /// The Hugging Face row order of a GGUF q/k weight of `heads` heads (rows: its first dim).
    fn qk_rows(&self, heads: Option<usize>) -> diffai_core::Result<Option<Vec<usize>>> {
        let Some(heads) = heads else { return Ok(None) };
        let rows = match self {
            Built::Quantized(d) => d.matrix().0,
            Built::Dense(t) => t.shape.first().copied().unwrap_or(0),
        };
        llama_qk_rows(rows, heads).map(Some)
    }
}

/// Both sides' statistics and their change metrics over dequantized values; a side without a
/// spec is the plain tensor `name` of its model. A side with `heads` is a GGUF q/k weight whose
/// rows llama.cpp's converter permuted: read in Hugging Face order (`llama_qk_rows`).
#[pyfunction]
#[pyo3(signature = (a, a_name, a_spec, b, b_name, b_spec, epsilon=0.0, threads=0, a_heads=None, b_heads=None))]
#[allow(clippy::too_many_arguments)]
pub fn quantized_pair(
    py: Python<'_>,
    a: &Model,
    a_name: &str,
    a_spec: Option<Spec>,
    b: &Model,
    b_name: &str,
    b_spec: Option<Spec>,
    epsilon: f64,
    threads: i64,
    a_heads: Option<usize>,
    b_heads: Option<usize>,
) -> PyResult<(StatsTuple, StatsTuple, Py<ChangeMetrics>)> {
    if a_spec.is_none() && b_spec.is_none() {
        return Err(DiffaiError::new_err(
            "quantized_pair: neither side is quantized",
        ));
    }
    let (ma, ga) = given(a, a_name, a_spec)?;
    let (mb, gb) = given(b, b_name, b_spec)?;
    let (x, y, p) = run(py, threads, None, move |ctl| {
        let (da, db) = (Built::of(&ma, &ga)?, Built::of(&mb, &gb)?);
        let (oa, ob) = (da.qk_rows(a_heads)?, db.qk_rows(b_heads)?);
        let (ra, rb) = (
            oa.as_deref().map(|rows| RowOrder { rows }),
            ob.as_deref().map(|rows| RowOrder { rows }),
        );
        q::pair_stats_reordered(da.side(), db.side(), ra, rb, epsilon, ctl)
    })?;
    Ok((
        stats_tuple(&x),
        stats_tuple(&y),
        ChangeMetrics::computed(py, &p)?,
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quantized_values, m)?)?;
    m.add_function(wrap_pyfunction!(quantized_stats, m)?)?;
    m.add_function(wrap_pyfunction!(quantized_pair, m)?)?;
    Ok(())
}
