//! `diffai._core`: the Python face of diffai-core. Opening files, statistics and histograms run
//! with the GIL released on a worker thread; the calling thread wakes every 100 ms to report
//! progress and to notice Ctrl-C. Every error, and any panic, becomes `DiffaiError`.

use diffai_core::stats::{self, Control};
use diffai_core::{DType, Error, Format, Model as CoreModel, Scalar, Storage, Tensor};
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

mod quantized;
mod results;
use results::{ChangeMetrics, TensorComparison, TensorStats};

create_exception!(
    _core,
    DiffaiError,
    PyException,
    "A model file could not be read, or a request did not fit it."
);

fn to_py_err(e: Error) -> PyErr {
    match e {
        Error::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
        other => DiffaiError::new_err(other.to_string()),
    }
}

/// A loaded model: its tensors stay in the file's memory map (or the caller's arrays).
#[pyclass(frozen, module = "diffai._core")]
struct Model {
    inner: Arc<CoreModel>,
    index: FxHashMap<String, usize>,
    /// Each tensor's name and shape as Python objects, made once (when first asked for) and
    /// shared by `tensors`, `align` and every statistics object (a model can hold tens of
    /// thousands).
    py_infos: GILOnceCell<Vec<PyInfo>>,
}

struct PyInfo {
    name: Py<PyString>,
    shape: Py<PyTuple>,
}

/// A dtype's name as one interned Python string per process.
fn py_dtype(py: Python<'_>, dtype: DType) -> &Py<PyString> {
    static NAMES: GILOnceCell<Vec<Py<PyString>>> = GILOnceCell::new();
    let names = NAMES.get_or_init(py, || {
        let mut names: Vec<_> = DType::ALL.iter().map(|_| None).collect();
        for d in DType::ALL {
            names[d as usize] = Some(PyString::intern(py, d.name()).unbind());
        }
        names.into_iter().flatten().collect()
    });
    &names[dtype as usize]
}

impl Model {
    fn wrap(inner: CoreModel) -> Model {
        let index = inner
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Model {
            inner: Arc::new(inner),
            index,
            py_infos: GILOnceCell::new(),
        }
    }

    fn py_infos(&self, py: Python<'_>) -> PyResult<&[PyInfo]> {
        self.py_infos
            .get_or_try_init(py, || {
                self.inner
                    .tensors
                    .iter()
                    .map(|t| {
                        Ok(PyInfo {
                            name: PyString::new(py, &t.name).unbind(),
                            shape: PyTuple::new(py, &t.shape)?.unbind(),
                        })
                    })
                    .collect()
            })
            .map(Vec::as_slice)
    }

    fn position(&self, name: &str) -> PyResult<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| DiffaiError::new_err(format!("no tensor named {name:?}")))
    }

    fn tensor(&self, name: &str) -> PyResult<Tensor> {
        Ok(self.inner.tensors[self.position(name)?].clone())
    }
}

/// Unmapping a multi-GB file and freeing tens of thousands of tensor entries takes milliseconds
/// the caller need not wait for: on Unix, where a mapped file can be replaced or deleted at once,
/// a large model read from a file is dropped on a thread of its own. (In-memory models hold
/// Python buffers, which are released here, with the GIL.)
impl Drop for Model {
    fn drop(&mut self) {
        let tensors = &self.inner.tensors;
        let large = || {
            tensors.len() >= 1024 || tensors.iter().map(Tensor::nbytes).sum::<usize>() >= 1 << 28
        };
        if cfg!(unix) && self.inner.format != Format::InMemory && large() {
            // Python objects first, on this thread: freeing them while the other thread holds
            // the address-space lock to unmap would wait for it.
            drop(self.py_infos.take());
            let inner = std::mem::replace(&mut self.inner, Arc::new(CoreModel::new(Format::InMemory)));
            let index = std::mem::take(&mut self.index);
            let _ = std::thread::Builder::new()
                .name("diffai-drop".into())
                .spawn(move || drop((inner, index)));
        }
    }
}

#[pymethods]
impl Model {
    #[getter]
    fn format(&self) -> &'static str {
        self.inner.format.name()
    }

    /// `{name: (dtype, shape, nbytes)}` for every tensor, in file order.
    #[getter]
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (t, i) in self.inner.tensors.iter().zip(self.py_infos(py)?) {
            d.set_item(&i.name, (py_dtype(py, t.dtype), &i.shape, t.nbytes()))?;
        }
        Ok(d)
    }

    /// `{name: (layout, nnz)}` for the sparse tensors (`sparse_coo`, `sparse_csr`, ...; nnz is
    /// the stored index entries, duplicates of an uncoalesced COO included).
    #[getter]
    fn sparse(&self) -> HashMap<String, (&'static str, usize)> {
        (self.inner.tensors.iter())
            .filter_map(|t| {
                let parts = t.sparse.as_ref()?;
                Some((t.name.clone(), (parts.layout.name(), parts.nnz())))
            })
            .collect()
    }

    /// Every tensor's name, in file order.
    #[getter]
    fn names(&self, py: Python<'_>) -> PyResult<Vec<Py<PyString>>> {
        Ok(self
            .py_infos(py)?
            .iter()
            .map(|i| i.name.clone_ref(py))
            .collect())
    }

    #[getter]
    fn scalars<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, PyObject)>> {
        self.inner
            .scalars
            .iter()
            .map(|(name, value)| {
                let v: PyObject = match value {
                    Scalar::None => py.None(),
                    Scalar::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
                    Scalar::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
                    Scalar::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
                    Scalar::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
                };
                Ok((name.clone(), v))
            })
            .collect()
    }

    #[getter]
    fn metadata(&self) -> Vec<(String, String)> {
        self.inner.metadata.clone()
    }

    /// Classes a pickle referenced outside the allowlist, kept inert (never imported or called).
    #[getter]
    fn inert_classes(&self) -> Vec<String> {
        self.inner.inert_classes.clone()
    }

    /// `(name, given)`: an entry whose name an earlier entry already had, and the name it got.
    #[getter]
    fn name_collisions(&self) -> Vec<(String, String)> {
        self.inner.name_collisions.clone()
    }

    /// `(name, reason)` for entries found but not read as tensors or scalars.
    #[getter]
    fn skipped(&self) -> Vec<(String, String)> {
        self.inner
            .skipped
            .iter()
            .map(|s| (s.name.clone(), s.reason.clone()))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.inner.tensors.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<diffai._core.Model {} with {} tensors>",
            self.inner.format.name(),
            self.inner.tensors.len()
        )
    }
}

/// Caller-owned bytes (a NumPy array's buffer) kept alive while Rust reads them.
struct PyBytesOwner(PyBuffer<u8>);

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `from_buffers` accepts only C-contiguous buffers; the PyBuffer holds a
        // reference that keeps the memory alive and unmoved for as long as this owner exists.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr() as *const u8, self.0.len_bytes()) }
    }
}

/// Runs `job` on a worker thread inside a Rayon pool of `threads` threads (0: all cores) with
/// the GIL released, while this thread reports progress and watches for Ctrl-C.
fn run<T: Send + 'static>(
    py: Python<'_>,
    threads: usize,
    progress: Option<&Bound<'_, PyAny>>,
    job: impl FnOnce(&Control) -> diffai_core::Result<T> + Send + 'static,
) -> PyResult<T> {
    let ctl = Arc::new(Control::default());
    let pool = pool(threads)?;
    let (tx, rx) = mpsc::channel();
    let worker_ctl = ctl.clone();
    std::thread::spawn(move || {
        // The control is installed for the thread so loops without one (the pickle VM) see Ctrl-C.
        let scoped = || diffai_core::cancel::scope(worker_ctl.clone(), || job(&worker_ctl));
        let out = catch_unwind(AssertUnwindSafe(|| pool.install(scoped)));
        let _ = tx.send(out);
    });
    // Stops the worker and waits until it no longer touches the data, then returns `err`.
    let cancel = |rx: mpsc::Receiver<_>, err: PyErr| -> PyResult<T> {
        ctl.cancel.store(true, Ordering::Relaxed);
        let _ = py.allow_threads(move || rx.recv());
        Err(err)
    };
    let mut reported = 0u64;
    let mut rx = rx;
    loop {
        // The receiver moves into the GIL-free wait and back: it cannot be shared across threads.
        let (waited, back) =
            py.allow_threads(move || (rx.recv_timeout(Duration::from_millis(100)), rx));
        rx = back;
        let done = ctl.bytes_done.load(Ordering::Relaxed);
        if let (Some(cb), true) = (progress, done != reported) {
            if let Err(e) = cb.call1((done,)) {
                return cancel(rx, e);
            }
            reported = done;
        }
        match waited {
            Ok(Ok(result)) => return result.map_err(to_py_err),
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(DiffaiError::new_err(format!(
                    "internal error in diffai's Rust core (please report): {msg}"
                )));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    return cancel(rx, e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(DiffaiError::new_err(
                    "internal error: worker thread vanished",
                ));
            }
        }
    }
}

fn pool(threads: usize) -> PyResult<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("diffai-{i}"))
        .build()
        .map_err(|e| DiffaiError::new_err(format!("cannot start {threads} threads: {e}")))?;
    // 0 (all cores) and the same count asked by number share one pool: starting a second pool
    // of cold threads inside a call cost ~15 ms on a 20k-tensor diff.
    let p = pools
        .entry(p.current_num_threads())
        .or_insert_with(|| Arc::new(p))
        .clone();
    pools.insert(threads, p.clone());
    Ok(p)
}

fn format_arg(format: Option<&str>) -> PyResult<Option<Format>> {
    format
        .map(|f| {
            diffai_core::model::format_from_name(f).ok_or_else(|| {
                DiffaiError::new_err(format!(
                    "unknown format {f:?} (expected safetensors, pytorch, npy, npz, mat or gguf)"
                ))
            })
        })
        .transpose()
}

/// Reads a model file; `format` overrides detection from the file's bytes.
#[pyfunction]
#[pyo3(signature = (path, format=None))]
fn open(py: Python<'_>, path: PathBuf, format: Option<&str>) -> PyResult<Model> {
    let format = format_arg(format)?;
    // On the shared pool, not a one-thread one: both sides of a diff are opened from two Python
    // threads, and their headers parse (and index) at the same time.
    run(py, 0, None, move |_| {
        diffai_core::open(&path, format).map(Model::wrap)
    })
}

/// The format name detected from a file's bytes (`mat73` for MATLAB v7.3/HDF5).
#[pyfunction]
fn detect(py: Python<'_>, path: PathBuf) -> PyResult<&'static str> {
    run(py, 0, None, move |_| diffai_core::detect(&path)).map(Format::name)
}

/// A model over caller-owned arrays: `(name, dtype, shape, buffer)` per tensor, where buffer is a
/// C-contiguous byte buffer (e.g. `array.reshape(-1).view(numpy.uint8)`), little-endian.
#[pyfunction]
fn from_buffers(items: Vec<(String, String, Vec<usize>, Bound<'_, PyAny>)>) -> PyResult<Model> {
    let mut model = CoreModel::new(Format::InMemory);
    for (name, dtype, shape, obj) in items {
        let dt = DType::from_name(&dtype)
            .ok_or_else(|| DiffaiError::new_err(format!("{name}: unsupported dtype {dtype:?}")))?;
        let buf = PyBuffer::<u8>::get(&obj)
            .map_err(|e| DiffaiError::new_err(format!("{name}: not a byte buffer: {e}")))?;
        if !buf.is_c_contiguous() {
            return Err(DiffaiError::new_err(format!(
                "{name}: buffer is not C-contiguous"
            )));
        }
        let len = buf.len_bytes();
        let t = Tensor::contiguous(
            name,
            dt,
            shape,
            Storage::new(Arc::new(PyBytesOwner(buf)), 0..len),
        );
        t.check_bounds().map_err(DiffaiError::new_err)?; // a shape whose size overflows
        if t.nbytes() != len {
            return Err(DiffaiError::new_err(format!(
                "{}: shape {:?} of {} needs {} bytes, buffer has {len}",
                t.name,
                t.shape,
                dt,
                t.nbytes()
            )));
        }
        model.tensors.push(t);
    }
    Ok(Model::wrap(model))
}

/// One model from the shards of a sharded checkpoint, `(label, model)` in shard order: the
/// tensors side by side, still mapped from their shards; a tensor two shards hold is an error.
/// Scalars and metadata are left to the caller (`diffai.shards` merges them).
#[pyfunction]
fn merge_shards(py: Python<'_>, shards: Vec<(String, PyRef<'_, Model>)>) -> PyResult<Model> {
    let parts: Vec<(String, CoreModel)> = (shards.iter())
        .map(|(label, m)| (label.clone(), (*m.inner).clone()))
        .collect();
    run(py, 0, None, move |_| {
        diffai_core::shards::merge(parts).map(Model::wrap)
    })
}

/// Names as Python strings.
type Names = Vec<Py<PyString>>;

/// How the tensors of a and b line up by name: `(a_names, same, reshaped, added)`: a's names in
/// file order; those b also holds with the same shape; those b holds with another shape; and
/// b's names that a lacks, in b's order. A name that appears twice counts once, at its first
/// place and with its last tensor (as in `Model.tensors`).
#[pyfunction]
fn align(py: Python<'_>, a: &Model, b: &Model) -> PyResult<(Names, Names, Names, Names)> {
    let infos_a = a.py_infos(py)?;
    let (mut a_names, mut same, mut reshaped) = (Vec::new(), Vec::new(), Vec::new());
    // Names are unique unless the index holds fewer entries than there are tensors.
    let unique = |m: &Model| m.index.len() == m.inner.tensors.len();
    let (unique_a, unique_b) = (unique(a), unique(b));
    let mut seen = rustc_hash::FxHashSet::default();
    for (t, info) in a.inner.tensors.iter().zip(infos_a) {
        if !unique_a && !seen.insert(t.name.as_str()) {
            continue;
        }
        a_names.push(info.name.clone_ref(py));
        if let Some(&j) = b.index.get(&t.name) {
            let shape_a = if unique_a {
                &t.shape
            } else {
                &a.inner.tensors[a.index[&t.name]].shape // the name's last tensor
            };
            if &b.inner.tensors[j].shape == shape_a {
                same.push(info.name.clone_ref(py));
            } else {
                reshaped.push(info.name.clone_ref(py));
            }
        }
    }
    seen.clear();
    // b's own name objects are not made for this: a diff needs only the few b adds.
    let added = (b.inner.tensors.iter())
        .filter(|t| (unique_b || seen.insert(t.name.as_str())) && !a.index.contains_key(&t.name))
        .map(|t| PyString::new(py, &t.name).unbind())
        .collect();
    Ok((a_names, same, reshaped, added))
}

/// Statistics of the named tensors, computed in parallel. `progress(bytes_done)` is called
/// from this thread while the work runs.
#[pyfunction]
#[pyo3(signature = (model, names, threads=0, progress=None))]
fn tensor_stats<'py>(
    py: Python<'py>,
    model: &Model,
    names: Vec<PyBackedStr>,
    threads: usize,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<Py<TensorStats>>> {
    // Positions into the shared model, not clones: a model can hold tens of thousands of tensors.
    let at = names
        .iter()
        .map(|n| model.position(n))
        .collect::<PyResult<Vec<_>>>()?;
    let inner = model.inner.clone();
    let out = run(py, threads, progress, move |ctl| {
        use rayon::prelude::*;
        at.par_iter()
            .map(|&i| Ok((i, stats::tensor_stats(&inner.tensors[i], ctl)?)))
            .collect::<diffai_core::Result<Vec<_>>>()
    })?;
    let infos = model.py_infos(py)?;
    out.iter()
        .map(|(i, st)| {
            let t = &model.inner.tensors[*i];
            TensorStats::computed(py, t, py_dtype(py, t.dtype), &infos[*i].shape, st)
        })
        .collect()
}

/// For each name: the comparison of a's tensor with b's tensor of that name (or of the name at
/// the same place in `b_names`): the statistics of both and of their elementwise change, from one
/// pass over both, named `prefix + name`. The tensors of a pair must have the same number of
/// elements.
#[pyfunction]
#[pyo3(signature = (a, b, names, epsilon=0.0, threads=0, progress=None, b_names=None, prefix=""))]
#[allow(clippy::too_many_arguments)]
fn pair_stats<'py>(
    py: Python<'py>,
    a: &Model,
    b: &Model,
    names: Vec<PyBackedStr>,
    epsilon: f64,
    threads: usize,
    progress: Option<&Bound<'py, PyAny>>,
    b_names: Option<Vec<PyBackedStr>>,
    prefix: &str,
) -> PyResult<Vec<Py<TensorComparison>>> {
    let b_names = b_names.as_ref().unwrap_or(&names);
    if b_names.len() != names.len() {
        return Err(DiffaiError::new_err(format!(
            "{} names for a but {} for b",
            names.len(),
            b_names.len()
        )));
    }
    let at = names
        .iter()
        .zip(b_names)
        .map(|(x, y)| Ok((a.position(x)?, b.position(y)?)))
        .collect::<PyResult<Vec<_>>>()?;
    let (ma, mb) = (a.inner.clone(), b.inner.clone());
    let out = run(py, threads, progress, move |ctl| {
        use rayon::prelude::*;
        at.par_iter()
            .map(|&(i, j)| {
                let stats = stats::pair_stats(&ma.tensors[i], &mb.tensors[j], epsilon, ctl)?;
                Ok(((i, j), stats))
            })
            .collect::<diffai_core::Result<Vec<_>>>()
    })?;
    let infos_a = a.py_infos(py)?;
    out.iter()
        .map(|((i, j), (x, y, p))| {
            let (ia, ta, tb) = (&infos_a[*i], &a.inner.tensors[*i], &b.inner.tensors[*j]);
            let name = if prefix.is_empty() {
                ia.name.clone_ref(py)
            } else {
                PyString::new(py, &format!("{prefix}{}", ta.name)).unbind()
            };
            // b's shape object is a's when they are equal (always, for pairs from `align`).
            let shape_b = if tb.shape == ta.shape {
                ia.shape.clone_ref(py)
            } else {
                PyTuple::new(py, &tb.shape)?.unbind()
            };
            TensorComparison::compared(
                py,
                name,
                TensorStats::computed(py, ta, py_dtype(py, ta.dtype), &ia.shape, x)?,
                TensorStats::computed(py, tb, py_dtype(py, tb.dtype), &shape_b, y)?,
                ChangeMetrics::computed(py, p)?,
            )
        })
        .collect()
}

/// Counts of the finite elements of a tensor in `bins` equal bins over [lo, hi].
#[pyfunction]
#[pyo3(signature = (model, name, bins, lo, hi, threads=0))]
fn histogram(
    py: Python<'_>,
    model: &Model,
    name: &str,
    bins: usize,
    lo: f64,
    hi: f64,
    threads: usize,
) -> PyResult<Vec<u64>> {
    let t = model.tensor(name)?;
    run(py, threads, None, move |ctl| {
        stats::histogram(&t, bins, lo, hi, ctl)
    })
}

/// A tensor's elements (or `count` of them from `start`) as native f64 bytes in C order, for
/// `numpy.frombuffer`.
#[pyfunction]
#[pyo3(signature = (model, name, start=0, count=None))]
fn values<'py>(
    py: Python<'py>,
    model: &Model,
    name: &str,
    start: usize,
    count: Option<usize>,
) -> PyResult<Bound<'py, PyBytes>> {
    let t = model.tensor(name)?;
    let vals = run(py, 0, None, move |_| stats::to_f64(&t, start, count))?;
    f64_bytes(py, &vals)
}

/// Columns `[c0, c1)` of every row of a tensor read as [rows, width] (width: its last dim), as
/// native f64 bytes [rows, c1 - c0] in C order: one call where packed quantized weights keep a
/// logical row down a column (GPTQ, AWQ `qweight`).
#[pyfunction]
fn column_values<'py>(
    py: Python<'py>,
    model: &Model,
    name: &str,
    c0: usize,
    c1: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let t = model.tensor(name)?;
    let vals = run(py, 0, None, move |_| {
        let width = t.shape.last().copied().unwrap_or(1);
        if c0 > c1 || c1 > width {
            return Err(Error::Invalid(format!("{}: columns {c0}..{c1} outside its {width} columns", t.name)));
        }
        let rows = if width == 0 { 0 } else { t.shape.iter().product::<usize>() / width };
        let mut out = Vec::with_capacity(rows * (c1 - c0));
        for r in 0..rows {
            out.extend(stats::to_f64(&t, r * width + c0, Some(c1 - c0))?);
        }
        Ok(out)
    })?;
    f64_bytes(py, &vals)
}

fn f64_bytes<'py>(py: Python<'py>, vals: &[f64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, vals.len() * 8, |out| {
        for (o, v) in out.chunks_exact_mut(8).zip(vals) {
            o.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    })
}

/// For each of the first `rows` rows of a's tensor `name_a` and b's `name_b`, read as
/// [_, width]: a.b, a.a and b.b, as native f64 bytes (3 per row).
#[pyfunction]
fn row_products<'py>(
    py: Python<'py>,
    a: &Model,
    name_a: &str,
    b: &Model,
    name_b: &str,
    rows: usize,
    width: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let (ta, tb) = (a.tensor(name_a)?, b.tensor(name_b)?);
    let sums = run(py, 0, None, move |ctl| stats::row_products(&ta, &tb, rows, width, ctl))?;
    f64_bytes(py, sums.as_flattened())
}

/// A tensor's elements as f64, `block` at a time (native bytes, C order): what analyses of
/// large tensors read, so that memory holds one block, not a float64 copy of the tensor. A
/// compressed tensor is inflated once, here, not once per block.
#[pyclass(module = "diffai._core")]
struct ValueBlocks {
    tensor: Tensor,
    /// A sparse tensor's entries, read once: each block is laid from them over zeros.
    sparse: Option<Arc<diffai_core::sparse::Entries>>,
    next: usize,
    block: usize,
}

#[pymethods]
impl ValueBlocks {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let numel = self.tensor.numel();
        if self.next >= numel {
            return Ok(None);
        }
        let (t, start, count) = (self.tensor.clone(), self.next, self.block.min(numel - self.next));
        let vals = match &self.sparse {
            Some(entries) => {
                let mut vals = vec![0.0; count];
                entries.fill(start, &mut vals);
                vals
            }
            None => run(py, 0, None, move |_| stats::to_f64(&t, start, Some(count)))?,
        };
        self.next += count;
        f64_bytes(py, &vals).map(Some)
    }
}

#[pyfunction]
fn value_blocks(py: Python<'_>, model: &Model, name: &str, block: usize) -> PyResult<ValueBlocks> {
    if block == 0 {
        return Err(DiffaiError::new_err("block must be at least one element"));
    }
    let mut tensor = model.tensor(name)?;
    let t = tensor.clone();
    let sparse = run(py, 0, None, move |_| diffai_core::sparse::Entries::of(&t))?.map(Arc::new);
    if sparse.is_none() && tensor.storage.resident().is_none() {
        let t = tensor.clone();
        let bytes = run(py, 0, None, move |_| Ok(t.storage.load()?.into_owned()))?;
        tensor.storage = Storage::from_vec(bytes);
    }
    Ok(ValueBlocks {
        tensor,
        sparse,
        next: 0,
        block,
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DiffaiError", m.py().get_type::<DiffaiError>())?;
    m.add("CHUNK_ELEMENTS", stats::CHUNK)?;
    m.add_class::<Model>()?;
    m.add_class::<TensorStats>()?;
    m.add_class::<ChangeMetrics>()?;
    m.add_class::<TensorComparison>()?;
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(detect, m)?)?;
    m.add_function(wrap_pyfunction!(from_buffers, m)?)?;
    m.add_function(wrap_pyfunction!(merge_shards, m)?)?;
    m.add_function(wrap_pyfunction!(align, m)?)?;
    m.add_function(wrap_pyfunction!(tensor_stats, m)?)?;
    m.add_function(wrap_pyfunction!(pair_stats, m)?)?;
    m.add_function(wrap_pyfunction!(histogram, m)?)?;
    m.add_function(wrap_pyfunction!(values, m)?)?;
    m.add_function(wrap_pyfunction!(column_values, m)?)?;
    m.add_function(wrap_pyfunction!(value_blocks, m)?)?;
    m.add_function(wrap_pyfunction!(row_products, m)?)?;
    m.add_class::<ValueBlocks>()?;
    quantized::register(m)?;
    Ok(())
}
