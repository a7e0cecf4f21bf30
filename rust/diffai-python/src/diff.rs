//! The Python face of `diffai_core::diff`: options checked by the core, the plan (what is
//! compared with what) and the compared rows turned into Python objects. No diff logic here:
//! names are aligned, filtered and compared, and the change rule applied, in the core.

use crate::results::{ChangeMetrics, TensorComparison, TensorStats};
use crate::{run, tensor_dtype, to_py_err, DiffaiError, Model};
use diffai_core::diff::{self, ModelDiff, Row, Side, Status};
use diffai_core::gguf::llama_qk_rows;
use diffai_core::{Model as CoreModel, Scalar, Skipped};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

/// What to compare and how, checked by the core (bad values are `DiffaiError`).
#[pyclass(frozen, name = "DiffOptions", module = "diffai._core")]
pub struct PyDiffOptions {
    inner: diff::DiffOptions,
}

#[pymethods]
impl PyDiffOptions {
    #[new]
    #[pyo3(signature = (epsilon=0.0, path=None, ignore_keys_regex=None, align=true, strip_prefix=None,
                        shape_only=false, threads=0, gram_max_tensors=0,
                        row_products=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        epsilon: f64,
        path: Option<String>,
        ignore_keys_regex: Option<&str>,
        align: bool,
        strip_prefix: Option<&str>,
        shape_only: bool,
        threads: i64,
        gram_max_tensors: i64,
        row_products: Option<&str>,
    ) -> PyResult<Self> {
        let inner = diff::DiffOptions::new(
            epsilon,
            path,
            ignore_keys_regex,
            align,
            strip_prefix,
            shape_only,
            threads,
        )
        .and_then(|o| o.with_gram_max_tensors(gram_max_tensors))
        .and_then(|o| o.with_row_products(row_products))
        .map_err(to_py_err)?;
        Ok(PyDiffOptions { inner })
    }

    /// The most pairs whose Gram the diff's pass sums (`gram_max_tensors`).
    #[classattr]
    const GRAM_MAX_TENSORS: usize = diff::GRAM_MAX_TENSORS;

    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Whether a path or ignore filter is set.
    #[getter]
    fn filters(&self) -> bool {
        self.inner.filter.is_active()
    }

    /// Whether the filters keep `name`.
    fn keeps(&self, name: &str) -> bool {
        self.inner.filter.keeps(name)
    }

    /// `(path hits, ignore hits)` among `names`.
    fn hits(&self, names: Vec<String>) -> (usize, usize) {
        self.inner.filter.hits(names.iter().map(String::as_str))
    }
}

/// A side's non-tensor leaves as the caller read them, and how its tensors are paired and read
/// (`diffai_core::diff::Side`).
#[derive(Clone, Default)]
struct Leaves {
    scalars: Vec<(String, Scalar)>,
    metadata: Vec<(String, String)>,
    skipped: Vec<Skipped>,
    keys: Option<FxHashMap<String, String>>,
    opaque: FxHashSet<usize>,
    row_orders: FxHashMap<usize, Vec<usize>>,
}

impl Leaves {
    fn side<'a>(&'a self, model: &'a CoreModel) -> Side<'a> {
        Side {
            model,
            scalars: &self.scalars,
            metadata: &self.metadata,
            skipped: &self.skipped,
            keys: self.keys.as_ref(),
            opaque: &self.opaque,
            row_orders: Some(&self.row_orders),
        }
    }
}

/// A Python scalar as the core compares it.
fn scalar(v: &Bound<'_, PyAny>) -> PyResult<Scalar> {
    Ok(if v.is_none() {
        Scalar::None
    } else if v.is_exact_instance_of::<PyBool>() {
        Scalar::Bool(v.extract()?)
    } else if v.is_exact_instance_of::<PyInt>() {
        match v.extract::<i64>() {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::Other(format!("int:{}", v.repr()?)),
        }
    } else if v.is_exact_instance_of::<PyFloat>() {
        Scalar::Float(v.extract()?)
    } else if v.is_exact_instance_of::<PyString>() {
        Scalar::Str(v.extract()?)
    } else {
        Scalar::Other(format!("{}:{}", v.get_type().qualname()?, v.repr()?))
    })
}

/// What is compared with what (`diffai_core::diff::plan`), before the tensors are read.
#[pyclass(module = "diffai._core")]
pub struct DiffPlan {
    a: Py<Model>,
    b: Py<Model>,
    leaves: [Leaves; 2],
    options: diff::DiffOptions,
    prefix: String,
    plan: diff::Plan,
}

/// Plans the diff of `a` and `b` (`prefix`: a folder's file, before every name). The leaves are
/// the sides' scalars (`(key, value)`), metadata and unread entries as the caller holds them;
/// `keys`: per side, names paired by another key (`{name: key}`, e.g. GGUF -> Hugging Face);
/// `opaque`: per side, tensors whose values the caller reads (`fold`'s stand-ins); `qk_heads`:
/// per side, GGUF q/k tensors stored with llama.cpp's row permutation (`{name: heads}`), compared
/// with it undone.
#[pyfunction]
#[pyo3(signature = (a, b, options, prefix="", scalars=(Vec::new(), Vec::new()), metadata=(Vec::new(), Vec::new()),
                    skipped=(Vec::new(), Vec::new()), keys=(None, None), opaque=(Vec::new(), Vec::new()),
                    qk_heads=(Vec::new(), Vec::new())))]
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn plan_diff(
    a: Bound<'_, Model>,
    b: Bound<'_, Model>,
    options: &PyDiffOptions,
    prefix: &str,
    scalars: (
        Vec<(String, Bound<'_, PyAny>)>,
        Vec<(String, Bound<'_, PyAny>)>,
    ),
    metadata: (Vec<(String, String)>, Vec<(String, String)>),
    skipped: (Vec<(String, String)>, Vec<(String, String)>),
    keys: (
        Option<FxHashMap<String, String>>,
        Option<FxHashMap<String, String>>,
    ),
    opaque: (Vec<String>, Vec<String>),
    qk_heads: (Vec<(String, usize)>, Vec<(String, usize)>),
) -> PyResult<DiffPlan> {
    type Parts<'py> = (
        Vec<(String, Bound<'py, PyAny>)>,
        Vec<(String, String)>,
        Vec<(String, String)>,
    );
    type Reading = (
        Option<FxHashMap<String, String>>,
        Vec<String>,
        Vec<(String, usize)>,
    );
    let leaves =
        |(s, m, k): Parts<'_>, (keys, opaque, heads): Reading, model: &Model| -> PyResult<Leaves> {
            let mut row_orders = FxHashMap::default();
            for (name, h) in heads {
                let i = model.position(&name)?;
                let rows = model.inner.tensors[i].shape.first().copied().unwrap_or(0);
                let order = llama_qk_rows(rows, h)
                    .map_err(|e| DiffaiError::new_err(format!("{name}: {e}")))?;
                row_orders.insert(i, order);
            }
            Ok(Leaves {
                scalars: s
                    .into_iter()
                    .map(|(key, v)| Ok((key, scalar(&v)?)))
                    .collect::<PyResult<_>>()?,
                metadata: m,
                skipped: k
                    .into_iter()
                    .map(|(name, reason)| Skipped { name, reason })
                    .collect(),
                keys,
                opaque: opaque
                    .iter()
                    .map(|n| model.position(n))
                    .collect::<PyResult<_>>()?,
                row_orders,
            })
        };
    let leaves = [
        leaves(
            (scalars.0, metadata.0, skipped.0),
            (keys.0, opaque.0, qk_heads.0),
            a.get(),
        )?,
        leaves(
            (scalars.1, metadata.1, skipped.1),
            (keys.1, opaque.1, qk_heads.1),
            b.get(),
        )?,
    ];
    let (ma, mb) = (a.get().inner.clone(), b.get().inner.clone());
    let plan = diff::plan(
        &leaves[0].side(&ma),
        &leaves[1].side(&mb),
        &options.inner,
        prefix,
    )
    .map_err(to_py_err)?;
    Ok(DiffPlan {
        a: a.unbind(),
        b: b.unbind(),
        leaves,
        options: options.inner.clone(),
        prefix: prefix.to_string(),
        plan,
    })
}

#[pymethods]
impl DiffPlan {
    /// `(a_prefix, b_prefix, paired, automatic)` when names were matched after stripping prefixes.
    #[getter]
    fn alignment(&self) -> Option<(String, String, usize, bool)> {
        let a = self.plan.alignment.as_ref()?;
        Some((
            a.a_prefix.clone(),
            a.b_prefix.clone(),
            a.paired,
            a.automatic,
        ))
    }

    /// Whether some a tensor is compared with a b tensor of another name.
    #[getter]
    fn b_renamed(&self) -> bool {
        self.plan.b_renamed
    }

    /// `(path hits, ignore hits)` among this pair's names.
    #[getter]
    fn hits(&self) -> (usize, usize) {
        (self.plan.hits.path, self.plan.hits.ignore)
    }

    #[getter]
    fn example_name(&self) -> Option<String> {
        self.plan.example_name.clone()
    }

    /// Names of `side`'s ("a" or "b") opaque tensors that are read alone (no same-shape pair):
    /// their statistics are the caller's to make.
    fn opaque_singles(&self, side: &str) -> PyResult<Vec<String>> {
        let (model, k) = match side {
            "a" => (self.a.get(), 0),
            "b" => (self.b.get(), 1),
            _ => {
                return Err(DiffaiError::new_err(format!(
                    "side must be 'a' or 'b', not {side:?}"
                )))
            }
        };
        let opaque = &self.leaves[k].opaque;
        Ok((self.plan.read_alone(k == 0).into_iter())
            .filter(|i| opaque.contains(i))
            .map(|i| model.inner.tensors[i].name.clone())
            .collect())
    }

    /// Bytes `compare` reads (both sides).
    #[getter]
    fn nbytes(&self) -> u64 {
        self.plan.bytes(&self.a.get().inner, &self.b.get().inner)
    }

    /// a's names of the pairs of same-shape tensors.
    #[getter]
    fn same_names(&self) -> Vec<String> {
        let ta = &self.a.get().inner.tensors;
        self.plan
            .same
            .iter()
            .map(|&(i, _)| ta[i].name.clone())
            .collect()
    }

    /// a's name -> b's own name, for pairs whose names differ.
    #[getter]
    fn b_names(&self) -> Vec<(String, String)> {
        let (ta, tb) = (&self.a.get().inner.tensors, &self.b.get().inner.tensors);
        (self.plan.same.iter().chain(&self.plan.reshaped))
            .filter(|&&(i, j)| ta[i].name != tb[j].name)
            .map(|&(i, j)| (ta[i].name.clone(), tb[j].name.clone()))
            .collect()
    }

    /// Reads and compares the tensors (`elsewhere`: a's names of same-shape pairs the caller
    /// compared itself -> (how many elements differ (None: values not read), whether the
    /// stored types differ)).
    /// `progress(bytes_done)` is called meanwhile.
    #[pyo3(signature = (elsewhere=None, progress=None))]
    fn compare(
        &self,
        py: Python<'_>,
        elsewhere: Option<FxHashMap<String, (Option<u64>, bool)>>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ModelDiffRows> {
        let (a, b) = (self.a.get(), self.b.get());
        let elsewhere = (elsewhere.unwrap_or_default().into_iter())
            .map(|(n, (diff_count, dtypes_differ))| {
                Ok((
                    a.position(&n)?,
                    diff::Elsewhere {
                        diff_count,
                        dtypes_differ,
                    },
                ))
            })
            .collect::<PyResult<FxHashMap<_, _>>>()?;
        let (ma, mb) = (a.inner.clone(), b.inner.clone());
        let leaves = self.leaves.clone(); // small; the worker thread gets its own
        let (plan, options, prefix) =
            (self.plan.clone(), self.options.clone(), self.prefix.clone());
        let out = run(py, options.threads as i64, progress, move |ctl| {
            diff::compare(
                &leaves[0].side(&ma),
                &leaves[1].side(&mb),
                &plan,
                &options,
                &prefix,
                &elsewhere,
                ctl,
            )
        })?;
        Ok(ModelDiffRows {
            a: self.a.clone_ref(py),
            b: self.b.clone_ref(py),
            prefix: self.prefix.clone(),
            diff: Arc::new(out),
            threads: self.options.threads,
        })
    }
}

/// The compared rows of one pair of models (`diffai_core::diff::ModelDiff`).
#[pyclass(frozen, module = "diffai._core")]
pub struct ModelDiffRows {
    a: Py<Model>,
    b: Py<Model>,
    prefix: String,
    diff: Arc<ModelDiff>,
    threads: usize,
}

impl ModelDiffRows {
    fn name(&self, py: Python<'_>, model: &Model, i: usize) -> PyResult<Py<PyString>> {
        Ok(if self.prefix.is_empty() {
            model.py_infos(py)?[i].name.clone_ref(py)
        } else {
            PyString::new(
                py,
                &format!("{}{}", self.prefix, model.inner.tensors[i].name),
            )
            .unbind()
        })
    }

    fn stats(
        &self,
        py: Python<'_>,
        model: &Model,
        i: Option<usize>,
        s: Option<&diffai_core::stats::TensorStats>,
    ) -> PyResult<Option<Py<TensorStats>>> {
        let Some(i) = i else { return Ok(None) };
        let t = &model.inner.tensors[i];
        let shape = &model.py_infos(py)?[i].shape;
        let dtype = tensor_dtype(py, t);
        Ok(Some(match s {
            Some(s) => TensorStats::computed(py, t, &dtype, shape, s)?,
            None => TensorStats::header(py, t, &dtype, shape)?,
        }))
    }

    fn comparison(&self, py: Python<'_>, row: &Row) -> PyResult<Py<TensorComparison>> {
        let (a, b) = (self.a.get(), self.b.get());
        let name = match row.a {
            Some(i) => self.name(py, a, i)?,
            None => self.name(py, b, row.b.unwrap_or_default())?,
        };
        // A renamed tensor is, for the analyses, an unchanged pair under a's name.
        let status = if row.status == Status::Renamed {
            "unchanged"
        } else {
            row.status.name()
        };
        let (sa, sb) = (
            self.stats(py, a, row.a, row.stats_a.as_ref())?,
            self.stats(py, b, row.b, row.stats_b.as_ref())?,
        );
        let change = row
            .change
            .as_ref()
            .map(|p| ChangeMetrics::computed(py, p))
            .transpose()?;
        TensorComparison::row(py, name, status, sa, sb, change)
    }

    /// `write` of each record row, in order, on the diff's worker threads.
    fn record_texts(
        &self,
        py: Python<'_>,
        write: impl Fn(&Row, &[diffai_core::Tensor], &[diffai_core::Tensor], &str) -> Option<String>
            + Send
            + Sync
            + 'static,
    ) -> PyResult<Vec<Option<String>>> {
        let (ma, mb) = (self.a.get().inner.clone(), self.b.get().inner.clone());
        let (diff, prefix) = (self.diff.clone(), self.prefix.clone());
        run(py, self.threads as i64, None, move |_| {
            use rayon::prelude::*;
            Ok((diff.rows.par_iter())
                .filter(|r| r.status.is_record())
                .map(|r| write(r, &ma.tensors, &mb.tensors, &prefix))
                .collect())
        })
    }
}

#[pymethods]
impl ModelDiffRows {
    /// One TensorComparison per tensor name, in record order (or of the rows given). A row
    /// whose statistics are the caller's (`elsewhere`) carries header statistics only.
    #[pyo3(signature = (rows=None))]
    fn comparisons(
        &self,
        py: Python<'_>,
        rows: Option<Vec<usize>>,
    ) -> PyResult<Vec<Py<TensorComparison>>> {
        let all = &self.diff.rows;
        match rows {
            None => all.iter().map(|r| self.comparison(py, r)).collect(),
            Some(ks) => (ks.into_iter())
                .map(|k| {
                    let row = all
                        .get(k)
                        .ok_or_else(|| DiffaiError::new_err(format!("no row {k}")))?;
                    self.comparison(py, row)
                })
                .collect(),
        }
    }

    /// Each row's status (added, removed, renamed, reshaped, changed, unchanged, not_compared).
    fn statuses(&self) -> Vec<&'static str> {
        self.diff.rows.iter().map(|r| r.status.name()).collect()
    }

    /// Each renamed row: `(row, a's name, b's name)`.
    fn renamed(&self) -> Vec<(usize, String, String)> {
        let (ta, tb) = (&self.a.get().inner.tensors, &self.b.get().inner.tensors);
        (self.diff.rows.iter().enumerate())
            .filter(|(_, r)| r.status == Status::Renamed)
            .map(|(k, r)| {
                (
                    k,
                    ta[r.a.unwrap_or_default()].name.clone(),
                    tb[r.b.unwrap_or_default()].name.clone(),
                )
            })
            .collect()
    }

    /// Each row whose statistics are the caller's: `(row, a's name, b's own name)` (None for a
    /// side without the tensor).
    fn elsewhere(&self) -> Vec<(usize, Option<String>, Option<String>)> {
        let (ta, tb) = (&self.a.get().inner.tensors, &self.b.get().inner.tensors);
        (self.diff.rows.iter().enumerate())
            .filter(|(_, r)| r.elsewhere)
            .map(|(k, r)| {
                (
                    k,
                    r.a.map(|i| ta[i].name.clone()),
                    r.b.map(|j| tb[j].name.clone()),
                )
            })
            .collect()
    }

    #[getter]
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.diff.summary;
        let d = PyDict::new(py);
        for (k, v) in [
            ("added", s.added),
            ("removed", s.removed),
            ("renamed", s.renamed),
            ("reshaped", s.reshaped),
            ("changed", s.changed),
            ("unchanged", s.unchanged),
            ("not_compared", s.not_compared),
            ("params_a", s.params_a),
            ("params_b", s.params_b),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Scalar keys whose values differ (the sides' own keys, without the prefix).
    #[getter]
    fn scalars_changed(&self) -> Vec<String> {
        self.diff.scalars_changed.clone()
    }

    #[getter]
    fn metadata_changed(&self) -> Vec<String> {
        self.diff.metadata_changed.clone()
    }

    /// The similarity matrix's inner products summed in the diff's pass (`gram_max_tensors`):
    /// `(a's names, <a_p, b_q> as native float64 bytes, row-major)`, or None.
    #[allow(clippy::type_complexity)]
    fn gram<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(Vec<Py<PyString>>, Bound<'py, PyBytes>)>> {
        let Some(g) = &self.diff.gram else {
            return Ok(None);
        };
        let a = self.a.get();
        let names = (g.a.iter())
            .map(|&i| self.name(py, a, i))
            .collect::<PyResult<_>>()?;
        let bytes: Vec<u8> = g.dots.iter().flat_map(|x| x.to_ne_bytes()).collect();
        Ok(Some((names, PyBytes::new(py, &bytes))))
    }

    /// The embedding analysis's per-row products summed in the diff's pass (`row_products`):
    /// `(a's name, [a.b, a.a, b.b] of each row as native float64 bytes)` per matrix.
    fn row_products<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Vec<(Py<PyString>, Bound<'py, PyBytes>)>> {
        let a = self.a.get();
        (self.diff.row_products.iter())
            .map(|r| {
                let bytes: Vec<u8> = r
                    .sums
                    .iter()
                    .flatten()
                    .flat_map(|x| x.to_ne_bytes())
                    .collect();
                Ok((self.name(py, a, r.a)?, PyBytes::new(py, &bytes)))
            })
            .collect()
    }

    /// `(name, side, reason, unread)` for entries a reader could not read.
    #[getter]
    fn skipped(&self) -> Vec<(String, &'static str, String, bool)> {
        (self.diff.skipped.iter())
            .map(|e| (e.name.clone(), e.side, e.reason.clone(), e.unread))
            .collect()
    }

    /// The JSON line of each record row, in order (None: a row the caller compared, whose
    /// record is the caller's), written by the core (`diffai_core::diff::json`) on the diff's
    /// worker threads.
    #[pyo3(signature = (ensure_ascii=true))]
    fn json_lines(&self, py: Python<'_>, ensure_ascii: bool) -> PyResult<Vec<Option<String>>> {
        self.record_texts(py, move |r, a, b, prefix| {
            diff::json::record_line(r, a, b, prefix, ensure_ascii)
        })
    }

    /// The YAML list item of each record row, in order (None: a row the caller compared, or
    /// whose strings need PyYAML's escapes), written by the core (`diffai_core::diff::yaml`).
    fn yaml_lines(&self, py: Python<'_>) -> PyResult<Vec<Option<String>>> {
        self.record_texts(py, diff::yaml::record_item)
    }

    /// The rows as columns: `name`, `status`, `dtype_a`, `dtype_b` as lists; every statistic as
    /// native float64 (NaN: none) or int64 (-1: none) bytes, for `numpy.frombuffer`.
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (ta, tb) = (&self.a.get().inner.tensors, &self.b.get().inner.tensors);
        let rows = &self.diff.rows;
        let d = PyDict::new(py);
        let name = |r: &Row| match r.a {
            Some(i) => format!("{}{}", self.prefix, ta[i].name),
            None => format!("{}{}", self.prefix, tb[r.b.unwrap_or_default()].name),
        };
        d.set_item("name", rows.iter().map(name).collect::<Vec<_>>())?;
        d.set_item(
            "status",
            rows.iter().map(|r| r.status.name()).collect::<Vec<_>>(),
        )?;
        d.set_item(
            "dtype_a",
            rows.iter()
                .map(|r| r.a.map(|i| ta[i].shown_dtype()))
                .collect::<Vec<_>>(),
        )?;
        d.set_item(
            "dtype_b",
            rows.iter()
                .map(|r| r.b.map(|j| tb[j].shown_dtype()))
                .collect::<Vec<_>>(),
        )?;
        let floats = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<u8> {
            rows.iter()
                .flat_map(|r| f(r).unwrap_or(f64::NAN).to_ne_bytes())
                .collect()
        };
        let ints = |f: &dyn Fn(&Row) -> Option<u64>| -> Vec<u8> {
            rows.iter()
                .flat_map(|r| f(r).map_or(-1, |n| n as i64).to_ne_bytes())
                .collect()
        };
        type Stat = fn(&diffai_core::stats::TensorStats) -> Option<f64>;
        let stats: [(&str, Stat); 4] = [
            ("mean", |s| s.mean()),
            ("std", |s| s.std()),
            ("min", |s| s.min()),
            ("max", |s| s.max()),
        ];
        for (key, g) in stats {
            d.set_item(
                format!("{key}_a"),
                PyBytes::new(py, &floats(&|r| r.stats_a.as_ref().and_then(g))),
            )?;
            d.set_item(
                format!("{key}_b"),
                PyBytes::new(py, &floats(&|r| r.stats_b.as_ref().and_then(g))),
            )?;
        }
        d.set_item(
            "numel_a",
            PyBytes::new(py, &ints(&|r| r.a.map(|i| ta[i].numel() as u64))),
        )?;
        d.set_item(
            "numel_b",
            PyBytes::new(py, &ints(&|r| r.b.map(|j| tb[j].numel() as u64))),
        )?;
        for (key, g) in [
            (
                "nan_count",
                (|s| s.nan_count) as fn(&diffai_core::stats::TensorStats) -> u64,
            ),
            ("inf_count", |s| s.inf_count),
            ("zero_count", |s| s.zero_count),
        ] {
            d.set_item(
                format!("{key}_a"),
                PyBytes::new(py, &ints(&|r| r.stats_a.as_ref().map(g))),
            )?;
            d.set_item(
                format!("{key}_b"),
                PyBytes::new(py, &ints(&|r| r.stats_b.as_ref().map(g))),
            )?;
        }
        type Change = fn(&diffai_core::stats::PairStats) -> Option<f64>;
        let change: [(&str, Change); 7] = [
            ("max_abs_diff", |p| {
                (p.compared > 0).then_some(p.max_abs_diff)
            }),
            ("mean_abs_diff", |p| p.mean_abs_diff()),
            ("rel_l2", |p| p.rel_l2()),
            ("cosine", |p| p.cosine()),
            ("l2_diff", |p| Some(p.sum_sq_diff.sqrt())),
            ("l2_a", |p| Some(p.sum_sq_a.sqrt())),
            ("l2_b", |p| Some(p.sum_sq_b.sqrt())),
        ];
        for (key, g) in change {
            d.set_item(
                key,
                PyBytes::new(py, &floats(&|r| r.change.as_ref().and_then(g))),
            )?;
        }
        d.set_item(
            "changed_elements",
            PyBytes::new(py, &ints(&|r| r.change.map(|p| p.diff_count))),
        )?;
        d.set_item(
            "compared",
            PyBytes::new(py, &ints(&|r| r.change.map(|p| p.compared))),
        )?;
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.diff.rows.len()
    }
}

/// `model` with each quantized logical weight's parts folded into one stand-in tensor
/// (`diffai_core::diff::fold`): `logicals` is `[(name, member names, shape)]`. The stand-ins are
/// to be passed as `opaque` to `plan_diff`.
#[pyfunction]
pub fn fold(model: &Model, logicals: Vec<(String, Vec<String>, Vec<usize>)>) -> PyResult<Model> {
    let logicals: Vec<diff::fold::Logical> = (logicals.into_iter())
        .map(|(name, members, shape)| diff::fold::Logical {
            name,
            members,
            shape,
        })
        .collect();
    let (folded, _) = diff::fold::fold(&model.inner, &logicals).map_err(to_py_err)?;
    Ok(Model::wrap(folded))
}
