//! Flattening the object tree into named entries.

use super::*;
use std::collections::HashSet;

#[derive(Default)]
pub(super) struct Flat {
    pub(super) tensors: Vec<(String, TensorRef)>,
    pub(super) scalars: Vec<(String, Scalar)>,
    pub(super) skipped: Vec<Skipped>,
    /// (the name two entries share, the name the later one was given).
    pub(super) collisions: Vec<(String, String)>,
    /// Classes and functions kept as inert placeholders (from the VM).
    pub(super) inert: Vec<String>,
}

/// nn.Module attributes whose entries are named as if the attribute were not there, so a
/// pickled module reads `fc1.weight` like its state dict, not `_modules.fc1._parameters.weight`.
const TRANSPARENT_ATTRS: [&str; 3] = ["_modules", "_parameters", "_buffers"];

pub(super) struct Walker<'n> {
    pub(super) nodes: &'n [Node],
    pub(super) out: Flat,
    /// Entries still allowed; shared references could otherwise expand exponentially.
    pub(super) budget: u64,
    /// Containers enclosing the current one (cycle detection).
    pub(super) open: Vec<usize>,
    /// Every name given so far, to keep colliding names apart (`a.b` from `{"a.b": x}` and
    /// from `{"a": {"b": y}}`).
    pub(super) taken: HashSet<String>,
    /// Inside an object's `_private` attribute: only tensors are named (hook tables, flags and
    /// name sets of nn.Module are bookkeeping, not model content).
    pub(super) tensors_only: usize,
    /// Bytes of names (and string values) still allowed.
    pub(super) name_bytes: u64,
}

/// A name as error messages show it: its last 80 characters at most.
fn short(name: &str) -> String {
    match name.char_indices().rev().nth(79) {
        Some((at, _)) if at > 0 => format!("...{}", &name[at..]),
        _ => name.to_owned(),
    }
}

/// Names every tensor, scalar and skipped leaf under `root` by its dotted path, in pickle order.
pub(super) fn flatten(nodes: &[Node], root: &Value, ops: u64) -> VmResult<Flat> {
    let mut w = Walker {
        nodes,
        out: Flat::default(),
        budget: ops.saturating_mul(16).saturating_add(4096),
        open: Vec::new(),
        taken: HashSet::new(),
        tensors_only: 0,
        name_bytes: NAME_BYTES_BASE.saturating_add(ops.saturating_mul(NAME_BYTES_PER_OP)),
    };
    w.walk(root, "", 0)?;
    Ok(w.out)
}

pub(super) fn child(parent: &str, component: &str) -> String {
    if parent.is_empty() {
        component.to_owned()
    } else {
        format!("{parent}.{component}")
    }
}

impl Walker<'_> {
    pub(super) fn walk(&mut self, v: &Value, name: &str, depth: usize) -> VmResult<()> {
        if self.budget.is_multiple_of(1 << 16) && crate::cancel::requested() {
            return Err(INTERRUPTED.into());
        }
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            "the pickle refers to shared objects so often that it would expand into more entries than it could hold (a decompression bomb?); budget: entries".to_string()
        })?;
        if depth > MAX_DEPTH {
            return Err(format!(
                "{}: containers nested deeper than {MAX_DEPTH} levels",
                short(name)
            ));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "{}: a name longer than {MAX_NAME_BYTES} bytes; budget: name length",
                short(name)
            ));
        }
        // String values count like names: a memoized long string can be repeated without limit.
        let text = match v {
            Value::Str(s) => s.len(),
            _ => 0,
        };
        self.name_bytes = self
            .name_bytes
            .checked_sub((name.len() + text) as u64)
            .ok_or_else(|| {
                "the pickle repeats long strings so often that its names and values would take more memory than the file justifies; budget: name bytes".to_string()
            })?;
        let leaf = |root: &'static str| if name.is_empty() { root } else { name };
        match v {
            Value::None => self.scalar(leaf(ROOT_VALUE), Scalar::None),
            Value::Bool(b) => self.scalar(leaf(ROOT_VALUE), Scalar::Bool(*b)),
            Value::Int(i) => self.scalar(leaf(ROOT_VALUE), Scalar::Int(*i)),
            Value::Float(f) => self.scalar(leaf(ROOT_VALUE), Scalar::Float(*f)),
            Value::Str(s) => self.scalar(leaf(ROOT_VALUE), Scalar::Str(s.to_string())),
            Value::BigInt(_) => self.skip(leaf(ROOT_VALUE), "an integer wider than 64 bits".into()),
            Value::Bytes(b) => self.skip(
                leaf(ROOT_VALUE),
                format!("a bytes value ({} bytes)", b.len()),
            ),
            Value::Global(g) => match g.known {
                Known::DType(_) | Known::ComplexDType(_) => {
                    self.scalar(leaf(ROOT_VALUE), Scalar::Str(format!("torch.{}", g.name)))
                }
                _ => self.skip(leaf(ROOT_VALUE), format!("a reference to {}", g.dotted())),
            },
            Value::Node(i) => {
                let i = *i;
                if self.open.contains(&i) {
                    self.skip(
                        leaf(ROOT_VALUE),
                        "a container that contains itself (a reference cycle)".into(),
                    );
                    return Ok(());
                }
                let Some(node) = self.nodes.get(i) else {
                    return Err("internal error: dangling pickle node".into());
                };
                match node {
                    Node::List(items) | Node::Tuple(items) | Node::Set(items) => {
                        self.open.push(i);
                        for (k, item) in items.iter().enumerate() {
                            self.walk(item, &child(name, &k.to_string()), depth + 1)?;
                        }
                        self.open.pop();
                    }
                    Node::Dict(d) => {
                        self.open.push(i);
                        self.walk_items(&d.items, name, depth, false)?;
                        self.open.pop();
                    }
                    Node::Object(o) => {
                        self.open.push(i);
                        self.walk_object(o, name, depth)?;
                        self.open.pop();
                    }
                    Node::Tensor(t) => {
                        let name = self.unique(leaf(ROOT_TENSOR));
                        self.out.tensors.push((name, (**t).clone()))
                    }
                    Node::Storage(_) => self.skip(
                        leaf(ROOT_VALUE),
                        "a bare storage, not wrapped in a tensor".into(),
                    ),
                    Node::Opaque(reason) => self.skip(leaf(ROOT_VALUE), reason.clone()),
                }
            }
        }
        Ok(())
    }

    /// Dict items named by their keys. With `module_attrs`, the items are an object's
    /// `__dict__`: `TRANSPARENT_ATTRS` add no name component, and their `None` entries (a
    /// `bias=None` parameter) are left out, as `state_dict()` leaves them out; other `_private`
    /// attributes contribute tensors only.
    fn walk_items(
        &mut self,
        items: &[(Value, Value)],
        name: &str,
        depth: usize,
        module_attrs: bool,
    ) -> VmResult<()> {
        for (k, (key, item)) in items.iter().enumerate() {
            let Some(text) = self.key_text(key) else {
                self.skip(
                    &child(name, &format!("<key {k}>")),
                    format!(
                        "its dict key ({}) cannot be part of a name",
                        describe_value(self.nodes, key)
                    ),
                );
                continue;
            };
            if module_attrs && TRANSPARENT_ATTRS.contains(&text.as_str()) {
                let inner = match item {
                    Value::Node(j) => match self.nodes.get(*j) {
                        Some(Node::Dict(d)) => Some(&d.items),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(inner) = inner {
                    let present: Vec<(Value, Value)> = inner
                        .iter()
                        .filter(|(_, v)| !matches!(v, Value::None))
                        .cloned()
                        .collect();
                    self.walk_items(&present, name, depth + 1, false)?;
                    continue;
                }
            }
            let private = module_attrs && text.starts_with('_');
            self.tensors_only += private as usize;
            let walked = self.walk(item, &child(name, &text), depth + 1);
            self.tensors_only -= private as usize;
            walked?;
        }
        Ok(())
    }

    /// An inert placeholder: its call arguments by position, then its state (a `__dict__`, or
    /// `(__dict__, slots)`), then the items of a dict or list subclass.
    fn walk_object(&mut self, o: &Object, name: &str, depth: usize) -> VmResult<()> {
        for (k, arg) in o.args.iter().enumerate() {
            self.walk(arg, &child(name, &k.to_string()), depth + 1)?;
        }
        if let Some(state) = &o.state {
            let dicts: Vec<&Value> = match state {
                Value::Node(j) => match self.nodes.get(*j) {
                    Some(Node::Tuple(parts)) if parts.len() == 2 => parts.iter().collect(),
                    _ => vec![state],
                },
                _ => vec![state],
            };
            for part in dicts {
                match part {
                    Value::None => {}
                    Value::Node(j) if matches!(self.nodes.get(*j), Some(Node::Dict(_))) => {
                        if let Some(Node::Dict(d)) = self.nodes.get(*j) {
                            self.walk_items(&d.items, name, depth, true)?;
                        }
                    }
                    other => self.walk(other, name, depth + 1)?,
                }
            }
        }
        self.walk_items(&o.items, name, depth, false)?;
        for (k, item) in o.list.iter().enumerate() {
            self.walk(item, &child(name, &k.to_string()), depth + 1)?;
        }
        Ok(())
    }

    /// `name`, or `name#2`, `name#3` ... when an earlier entry already has it (recorded).
    fn unique(&mut self, name: &str) -> String {
        if self.taken.insert(name.to_owned()) {
            return name.to_owned();
        }
        let given = (2u64..)
            .map(|k| format!("{name}#{k}"))
            .find(|n| !self.taken.contains(n))
            .unwrap_or_default();
        self.taken.insert(given.clone());
        self.out.collisions.push((name.to_owned(), given.clone()));
        given
    }

    fn scalar(&mut self, name: &str, value: Scalar) {
        if self.tensors_only > 0 {
            return;
        }

        let name = self.unique(name);
        self.out.scalars.push((name, value));
    }

    pub(super) fn skip(&mut self, name: &str, reason: String) {
        if self.tensors_only > 0 {
            return;
        }
        let name = self.unique(name);
        self.out.skipped.push(Skipped { name, reason });
    }

    /// A dict key as a name component: strings as they are, numbers, booleans and None as Python
    /// prints them, tuples of those in parentheses.
    pub(super) fn key_text(&self, key: &Value) -> Option<String> {
        self.key_text_at(key, 0)
    }

    pub(super) fn key_text_at(&self, key: &Value, depth: usize) -> Option<String> {
        let mut out = String::new();
        self.write_key(key, depth, &mut out).then_some(out)
    }

    /// Appends the key's text; `false` when it cannot be a name component, or would be longer
    /// than `MAX_NAME_BYTES` (checked as it grows, so shared tuples cannot make it explode).
    fn write_key(&self, key: &Value, depth: usize, out: &mut String) -> bool {
        use std::fmt::Write;
        // A text longer than a name may be is refused before it is copied (a memoized 1 MiB
        // key referenced thousands of times would otherwise be copied each time).
        let fits = |out: &String, n: usize| out.len() + n <= MAX_NAME_BYTES;
        match key {
            Value::Str(s) if !fits(out, s.len()) => return false,
            Value::Bytes(b) if !fits(out, b.len()) => return false,
            Value::Str(s) => out.push_str(s),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Value::None => out.push_str("None"),
            Value::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            Value::Bytes(b) => out.push_str(&String::from_utf8_lossy(b)),
            Value::Global(g) => out.push_str(&g.dotted()),
            Value::Node(i) if depth < 8 => match self.nodes.get(*i) {
                Some(Node::Tuple(items)) => {
                    out.push('(');
                    for (k, x) in items.iter().enumerate() {
                        if k > 0 {
                            out.push_str(", ");
                        }
                        if !self.write_key(x, depth + 1, out) {
                            return false;
                        }
                    }
                    out.push(')');
                }
                _ => return false,
            },
            _ => return false,
        }
        out.len() <= MAX_NAME_BYTES
    }
}
