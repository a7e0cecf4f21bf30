//! What the core computes, as the Python classes `TensorStats`, `ChangeMetrics` and
//! `TensorComparison`: made here in one step per tensor (a model of 20,000 small tensors spent longer turning dicts into Python
//! dataclasses than computing the statistics) and read from Python as plain attributes.

use diffai_core::sparse::SparseLayout;
use diffai_core::stats::{PairStats, TensorStats as CoreStats};
use diffai_core::{json, Tensor};
use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

/// Statistics of one tensor. mean/std/min/max are over its finite elements, accumulated in
/// float64; std is the population std (ddof=0). They are None for an empty or all-NaN tensor,
/// and for every tensor when only headers were read (``shape_only``). ``zero_count`` and
/// ``nbytes`` serve the analyses, ``layout`` and ``nnz`` (a sparse tensor's layout, e.g.
/// ``sparse_coo``, and its stored entries; None when dense) the text output: they are neither
/// serialised nor compared by ``==``.
#[pyclass(frozen, module = "diffai._core", get_all)]
pub struct TensorStats {
    shape: Py<PyTuple>,
    dtype: Py<PyString>,
    numel: u64,
    mean: Option<f64>,
    std: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    nan_count: Option<u64>,
    inf_count: Option<u64>,
    zero_count: Option<u64>,
    nbytes: u64,
    layout: Option<&'static str>,
    nnz: Option<u64>,
}

impl TensorStats {
    /// `dtype` and `shape`: the tensor's, already Python objects (shared, not copied).
    pub fn computed(
        py: Python<'_>,
        t: &Tensor,
        dtype: &Py<PyString>,
        shape: &Py<PyTuple>,
        s: &CoreStats,
    ) -> PyResult<Py<TensorStats>> {
        Py::new(
            py,
            TensorStats {
                shape: shape.clone_ref(py),
                dtype: dtype.clone_ref(py),
                numel: t.numel() as u64,
                mean: s.mean(),
                std: s.std(),
                min: s.min(),
                max: s.max(),
                nan_count: Some(s.nan_count),
                inf_count: Some(s.inf_count),
                zero_count: Some(s.zero_count),
                nbytes: t.stored_nbytes() as u64,
                layout: t.sparse.as_ref().map(|p| p.layout.name()),
                nnz: t.sparse.as_ref().map(|p| p.nnz() as u64),
            },
        )
    }

    /// A tensor known from its header only (values not read).
    pub fn header(
        py: Python<'_>,
        t: &Tensor,
        dtype: &Py<PyString>,
        shape: &Py<PyTuple>,
    ) -> PyResult<Py<TensorStats>> {
        Py::new(
            py,
            TensorStats {
                shape: shape.clone_ref(py),
                dtype: dtype.clone_ref(py),
                numel: t.numel() as u64,
                mean: None,
                std: None,
                min: None,
                max: None,
                nan_count: None,
                inf_count: None,
                zero_count: None,
                nbytes: t.stored_nbytes() as u64,
                layout: t.sparse.as_ref().map(|p| p.layout.name()),
                nnz: t.sparse.as_ref().map(|p| p.nnz() as u64),
            },
        )
    }

    fn fields(&self) -> [(&'static str, Field<'_>); 9] {
        [
            ("mean", Field::Float(self.mean)),
            ("std", Field::Float(self.std)),
            ("min", Field::Float(self.min)),
            ("max", Field::Float(self.max)),
            ("shape", Field::Shape(&self.shape)),
            ("dtype", Field::Text(&self.dtype)),
            ("numel", Field::Count(Some(self.numel))),
            ("nan_count", Field::Count(self.nan_count)),
            ("inf_count", Field::Count(self.inf_count)),
        ]
    }

    /// The compared fields, as Python objects (shape and dtype compare as Python values).
    fn key<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                self.shape.clone_ref(py).into_any(),
                self.dtype.clone_ref(py).into_any(),
                self.numel.into_py_any(py)?,
                self.mean.into_py_any(py)?,
                self.std.into_py_any(py)?,
                self.min.into_py_any(py)?,
                self.max.into_py_any(py)?,
                self.nan_count.into_py_any(py)?,
                self.inf_count.into_py_any(py)?,
            ],
        )
    }
}

#[pymethods]
impl TensorStats {
    #[new]
    #[pyo3(signature = (shape, dtype, numel, mean=None, std=None, min=None, max=None,
                        nan_count=None, inf_count=None, zero_count=None, nbytes=0, layout=None,
                        nnz=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        shape: Vec<u64>,
        dtype: &str,
        numel: u64,
        mean: Option<f64>,
        std: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
        nan_count: Option<u64>,
        inf_count: Option<u64>,
        zero_count: Option<u64>,
        nbytes: u64,
        layout: Option<&str>,
        nnz: Option<u64>,
    ) -> PyResult<Self> {
        let layout = match layout {
            None => None,
            Some(name) => Some(
                SparseLayout::from_name(name)
                    .ok_or_else(|| {
                        pyo3::exceptions::PyValueError::new_err(format!(
                            "unknown sparse layout {name:?}"
                        ))
                    })?
                    .name(),
            ),
        };
        Ok(TensorStats {
            shape: PyTuple::new(py, shape)?.unbind(),
            dtype: PyString::intern(py, dtype).unbind(),
            numel,
            mean,
            std,
            min,
            max,
            nan_count,
            inf_count,
            zero_count,
            nbytes,
            layout,
            nnz,
        })
    }

    /// A tensor known from its header only: ``(dtype, shape, nbytes)`` as in ``Model.tensors``.
    #[staticmethod]
    fn from_header(py: Python<'_>, info: (String, Vec<u64>, u64)) -> PyResult<Self> {
        let (dtype, shape, nbytes) = info;
        let numel = shape.iter().product();
        Self::new(
            py, shape, &dtype, numel, None, None, None, None, None, None, None, nbytes, None, None,
        )
    }

    /// The serialised form (JSON/YAML), in the schema's key order.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        fields_dict(py, &self.fields())
    }

    /// `to_dict()` as JSON text, written as `json.dumps` writes it once non-finite floats are
    /// the strings "nan"/"inf"/"-inf" (Python's float formatting took most of the time of
    /// `--output json` on a 20,000-tensor diff).
    #[pyo3(signature = (ensure_ascii=true))]
    fn to_json(&self, py: Python<'_>, ensure_ascii: bool) -> PyResult<String> {
        fields_json(py, &self.fields(), ensure_ascii)
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<PyObject> {
        let py = other.py();
        richcmp(self, other, op, |x, y| x.key(py)?.eq(y.key(py)?))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let sparse = match self.layout {
            Some(layout) => format!(
                ", layout={}, nnz={}",
                repr(py, layout)?,
                repr(py, self.nnz)?
            ),
            None => String::new(),
        };
        Ok(format!(
            "TensorStats(shape={}, dtype={}, numel={}, mean={}, std={}, min={}, max={}, \
             nan_count={}, inf_count={}, zero_count={}, nbytes={}{sparse})",
            self.shape.bind(py).repr()?,
            self.dtype.bind(py).repr()?,
            self.numel,
            repr(py, self.mean)?,
            repr(py, self.std)?,
            repr(py, self.min)?,
            repr(py, self.max)?,
            repr(py, self.nan_count)?,
            repr(py, self.inf_count)?,
            repr(py, self.zero_count)?,
            self.nbytes
        ))
    }

    /// Pickling (results cross process pools): the class and its constructor's arguments.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, PyObject)> {
        let py = slf.py();
        let s = slf.get();
        let args = PyTuple::new(
            py,
            [
                s.shape.clone_ref(py).into_any(),
                s.dtype.clone_ref(py).into_any(),
                s.numel.into_py_any(py)?,
                s.mean.into_py_any(py)?,
                s.std.into_py_any(py)?,
                s.min.into_py_any(py)?,
                s.max.into_py_any(py)?,
                s.nan_count.into_py_any(py)?,
                s.inf_count.into_py_any(py)?,
                s.zero_count.into_py_any(py)?,
                s.nbytes.into_py_any(py)?,
                s.layout.into_py_any(py)?,
                s.nnz.into_py_any(py)?,
            ],
        )?;
        Ok((slf.get_type().into_any(), args.into_py_any(py)?))
    }
}

/// Elementwise change between two tensors of the same shape. Differences, norms and the
/// cosine are over positions where both elements are finite; ``changed_elements`` counts every
/// position that differs (by more than epsilon; NaN against NaN is equal). ``l2_diff``, ``l2_a``
/// and ``l2_b`` (||b - a||, ||a||, ||b||) serve the analyses: they are neither serialised nor
/// compared.
#[pyclass(frozen, module = "diffai._core", get_all)]
pub struct ChangeMetrics {
    max_abs_diff: Option<f64>,
    mean_abs_diff: Option<f64>,
    /// ||b - a|| / ||a||
    rel_l2: Option<f64>,
    /// <a, b> / (||a|| ||b||)
    cosine: Option<f64>,
    changed_elements: u64,
    compared: u64,
    l2_diff: f64,
    l2_a: f64,
    l2_b: f64,
}

impl ChangeMetrics {
    pub fn computed(py: Python<'_>, p: &PairStats) -> PyResult<Py<ChangeMetrics>> {
        Py::new(
            py,
            ChangeMetrics {
                max_abs_diff: (p.compared > 0).then_some(p.max_abs_diff),
                mean_abs_diff: p.mean_abs_diff(),
                rel_l2: p.rel_l2(),
                cosine: p.cosine(),
                changed_elements: p.diff_count,
                compared: p.compared,
                l2_diff: p.sum_sq_diff.sqrt(),
                l2_a: p.sum_sq_a.sqrt(),
                l2_b: p.sum_sq_b.sqrt(),
            },
        )
    }

    fn fields(&self) -> [(&'static str, Field<'_>); 6] {
        [
            ("max_abs_diff", Field::Float(self.max_abs_diff)),
            ("mean_abs_diff", Field::Float(self.mean_abs_diff)),
            ("rel_l2", Field::Float(self.rel_l2)),
            ("cosine", Field::Float(self.cosine)),
            (
                "changed_elements",
                Field::Count(Some(self.changed_elements)),
            ),
            ("compared", Field::Count(Some(self.compared))),
        ]
    }

    fn key(&self) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>, u64, u64) {
        (
            self.max_abs_diff,
            self.mean_abs_diff,
            self.rel_l2,
            self.cosine,
            self.changed_elements,
            self.compared,
        )
    }
}

#[pymethods]
impl ChangeMetrics {
    #[new]
    #[pyo3(signature = (max_abs_diff, mean_abs_diff, rel_l2, cosine, changed_elements, compared,
                        l2_diff=0.0, l2_a=0.0, l2_b=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_abs_diff: Option<f64>,
        mean_abs_diff: Option<f64>,
        rel_l2: Option<f64>,
        cosine: Option<f64>,
        changed_elements: u64,
        compared: u64,
        l2_diff: f64,
        l2_a: f64,
        l2_b: f64,
    ) -> Self {
        ChangeMetrics {
            max_abs_diff,
            mean_abs_diff,
            rel_l2,
            cosine,
            changed_elements,
            compared,
            l2_diff,
            l2_a,
            l2_b,
        }
    }

    /// The serialised form (JSON/YAML), in the schema's key order.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        fields_dict(py, &self.fields())
    }

    /// `to_dict()` as JSON text (see `TensorStats.to_json`).
    #[pyo3(signature = (ensure_ascii=true))]
    fn to_json(&self, py: Python<'_>, ensure_ascii: bool) -> PyResult<String> {
        fields_json(py, &self.fields(), ensure_ascii)
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<PyObject> {
        // As Python's == on the values: a NaN metric (squares overflowing f64) differs from another.
        richcmp(self, other, op, |x, y| Ok(x.key() == y.key()))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "ChangeMetrics(max_abs_diff={}, mean_abs_diff={}, rel_l2={}, cosine={}, \
             changed_elements={}, compared={}, l2_diff={}, l2_a={}, l2_b={})",
            repr(py, self.max_abs_diff)?,
            repr(py, self.mean_abs_diff)?,
            repr(py, self.rel_l2)?,
            repr(py, self.cosine)?,
            self.changed_elements,
            self.compared,
            repr(py, self.l2_diff)?,
            repr(py, self.l2_a)?,
            repr(py, self.l2_b)?
        ))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, PyObject)> {
        let py = slf.py();
        let c = slf.get();
        let args = (
            c.max_abs_diff,
            c.mean_abs_diff,
            c.rel_l2,
            c.cosine,
            c.changed_elements,
            c.compared,
            c.l2_diff,
            c.l2_a,
            c.l2_b,
        );
        Ok((slf.get_type().into_any(), args.into_py_any(py)?))
    }
}

/// `==` and `!=` between two objects of one class, by `equal`; other comparisons and other
/// types are NotImplemented.
/// One serialised value: `to_dict` and `to_json` read the same list of fields.
enum Field<'a> {
    Float(Option<f64>),
    Count(Option<u64>),
    Shape(&'a Py<PyTuple>),
    Text(&'a Py<PyString>),
}

fn fields_dict<'py>(py: Python<'py>, fields: &[(&str, Field)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (key, value) in fields {
        match value {
            Field::Float(x) => d.set_item(key, x)?,
            Field::Count(n) => d.set_item(key, n)?,
            Field::Shape(s) => d.set_item(key, s.bind(py).to_list())?,
            Field::Text(t) => d.set_item(key, t)?,
        }
    }
    Ok(d)
}

/// JSON as `json.dumps` writes it (", " and ": " separators), with non-finite floats as the
/// strings "nan", "inf" and "-inf" (JSON has no such numbers).
fn fields_json(py: Python<'_>, fields: &[(&str, Field)], ensure_ascii: bool) -> PyResult<String> {
    use std::fmt::Write;
    let mut out = String::with_capacity(256);
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json::push_str(&mut out, key, ensure_ascii);
        out.push_str(": ");
        match value {
            Field::Float(x) => json::push_number(&mut out, *x),
            Field::Count(n) => json::push_count(&mut out, *n),
            Field::Shape(s) => {
                out.push('[');
                for (j, d) in s.bind(py).iter().enumerate() {
                    if j > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{}", d.extract::<u64>()?);
                }
                out.push(']');
            }
            Field::Text(t) => json::push_str(&mut out, &t.bind(py).to_cow()?, ensure_ascii),
        }
    }
    out.push('}');
    Ok(out)
}

fn richcmp<T>(
    this: &T,
    other: &Bound<'_, PyAny>,
    op: CompareOp,
    equal: impl Fn(&T, &T) -> PyResult<bool>,
) -> PyResult<PyObject>
where
    T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync,
{
    let py = other.py();
    let Ok(other) = other.downcast::<T>() else {
        return Ok(py.NotImplemented());
    };
    // An object equals itself even with a NaN field, as a dataclass's field tuple does.
    let equal = std::ptr::eq(this, other.get()) || equal(this, other.get())?;
    match op {
        CompareOp::Eq => equal.into_py_any(py),
        CompareOp::Ne => (!equal).into_py_any(py),
        _ => Ok(py.NotImplemented()),
    }
}

/// Python's repr of a value (`None`, `0.5`, `1e-05`).
fn repr<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> PyResult<String> {
    Ok(v.into_bound_py_any(py)?.repr()?.to_string())
}

/// One tensor name across the two sides, whatever happened to it: ``status`` is added, removed,
/// reshaped, changed, unchanged or not_compared (``--shape-only``: values not read). The
/// analyses read these; the diff records are the ones that differ.
#[pyclass(frozen, module = "diffai._core", get_all)]
pub struct TensorComparison {
    name: Py<PyString>,
    status: Py<PyString>,
    a: Option<Py<TensorStats>>,
    b: Option<Py<TensorStats>>,
    change: Option<Py<ChangeMetrics>>,
}

impl TensorComparison {
    /// A row of the core's diff: `status` as the core decided it (`diffai_core::diff`).
    pub fn row(
        py: Python<'_>,
        name: Py<PyString>,
        status: &'static str,
        a: Option<Py<TensorStats>>,
        b: Option<Py<TensorStats>>,
        change: Option<Py<ChangeMetrics>>,
    ) -> PyResult<Py<TensorComparison>> {
        Py::new(
            py,
            TensorComparison {
                name,
                status: PyString::intern(py, status).unbind(),
                a,
                b,
                change,
            },
        )
    }

    fn key<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                self.name.clone_ref(py).into_any(),
                self.status.clone_ref(py).into_any(),
                self.a.as_ref().map(|x| x.clone_ref(py)).into_py_any(py)?,
                self.b.as_ref().map(|x| x.clone_ref(py)).into_py_any(py)?,
                self.change
                    .as_ref()
                    .map(|x| x.clone_ref(py))
                    .into_py_any(py)?,
            ],
        )
    }
}

#[pymethods]
impl TensorComparison {
    #[new]
    #[pyo3(signature = (name, status, a, b, change=None))]
    fn new(
        py: Python<'_>,
        name: &str,
        status: &str,
        a: Option<Py<TensorStats>>,
        b: Option<Py<TensorStats>>,
        change: Option<Py<ChangeMetrics>>,
    ) -> Self {
        TensorComparison {
            name: PyString::new(py, name).unbind(),
            status: PyString::intern(py, status).unbind(),
            a,
            b,
            change,
        }
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<PyObject> {
        let py = other.py();
        richcmp(self, other, op, |x, y| x.key(py)?.eq(y.key(py)?))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let k = self.key(py)?;
        Ok(format!(
            "TensorComparison(name={}, status={}, a={}, b={}, change={})",
            k.get_item(0)?.repr()?,
            k.get_item(1)?.repr()?,
            k.get_item(2)?.repr()?,
            k.get_item(3)?.repr()?,
            k.get_item(4)?.repr()?
        ))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, PyObject)> {
        let py = slf.py();
        Ok((
            slf.get_type().into_any(),
            slf.get().key(py)?.into_py_any(py)?,
        ))
    }
}
