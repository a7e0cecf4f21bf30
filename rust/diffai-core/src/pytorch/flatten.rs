//! Flattening the object tree into named entries.

use super::*;

#[derive(Default)]
pub(super) struct Flat {
    pub(super) tensors: Vec<(String, TensorRef)>,
    pub(super) scalars: Vec<(String, Scalar)>,
    pub(super) skipped: Vec<Skipped>,
}

pub(super) struct Walker<'n> {
    pub(super) nodes: &'n [Node],
    pub(super) out: Flat,
    /// Entries still allowed; shared references could otherwise expand exponentially.
    pub(super) budget: u64,
    /// Containers enclosing the current one (cycle detection).
    pub(super) open: Vec<usize>,
}

/// Names every tensor, scalar and skipped leaf under `root` by its dotted path, in pickle order.
pub(super) fn flatten(nodes: &[Node], root: &Value, ops: u64) -> VmResult<Flat> {
    let mut w = Walker {
        nodes,
        out: Flat::default(),
        budget: ops.saturating_mul(16).saturating_add(4096),
        open: Vec::new(),
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
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            "the pickle refers to shared objects so often that it would expand into more entries than it could hold (a decompression bomb?)".to_string()
        })?;
        if depth > MAX_DEPTH {
            return Err(format!(
                "{name}: containers nested deeper than {MAX_DEPTH} levels"
            ));
        }
        let leaf = |root: &str| {
            if name.is_empty() {
                root.to_owned()
            } else {
                name.to_owned()
            }
        };
        match v {
            Value::None => self.out.scalars.push((leaf(ROOT_VALUE), Scalar::None)),
            Value::Bool(b) => self.out.scalars.push((leaf(ROOT_VALUE), Scalar::Bool(*b))),
            Value::Int(i) => self.out.scalars.push((leaf(ROOT_VALUE), Scalar::Int(*i))),
            Value::Float(f) => self.out.scalars.push((leaf(ROOT_VALUE), Scalar::Float(*f))),
            Value::Str(s) => self
                .out
                .scalars
                .push((leaf(ROOT_VALUE), Scalar::Str(s.to_string()))),
            Value::BigInt(_) => self.skip(leaf(ROOT_VALUE), "an integer wider than 64 bits".into()),
            Value::Bytes(b) => self.skip(
                leaf(ROOT_VALUE),
                format!("a bytes value ({} bytes)", b.len()),
            ),
            Value::Global(g) => match g.known {
                Known::DType(_) => self
                    .out
                    .scalars
                    .push((leaf(ROOT_VALUE), Scalar::Str(format!("torch.{}", g.name)))),
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
                        for (k, (key, item)) in d.items.iter().enumerate() {
                            match self.key_text(key) {
                                Some(text) => self.walk(item, &child(name, &text), depth + 1)?,
                                None => self.skip(
                                    child(name, &format!("<key {k}>")),
                                    format!(
                                        "its dict key ({}) cannot be part of a name",
                                        describe_value(self.nodes, key)
                                    ),
                                ),
                            }
                        }
                        self.open.pop();
                    }
                    Node::Tensor(t) => self.out.tensors.push((leaf(ROOT_TENSOR), (**t).clone())),
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

    pub(super) fn skip(&mut self, name: String, reason: String) {
        self.out.skipped.push(Skipped { name, reason });
    }

    /// A dict key as a name component: strings as they are, numbers, booleans and None as Python
    /// prints them, tuples of those in parentheses.
    pub(super) fn key_text(&self, key: &Value) -> Option<String> {
        self.key_text_at(key, 0)
    }

    pub(super) fn key_text_at(&self, key: &Value, depth: usize) -> Option<String> {
        Some(match key {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            Value::None => "None".to_owned(),
            Value::Float(f) => format!("{f:?}"),
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Global(g) => g.dotted(),
            Value::Node(i) if depth < 8 => match self.nodes.get(*i)? {
                Node::Tuple(items) => {
                    let parts: Option<Vec<String>> = items
                        .iter()
                        .map(|x| self.key_text_at(x, depth + 1))
                        .collect();
                    format!("({})", parts?.join(", "))
                }
                _ => return None,
            },
            _ => return None,
        })
    }
}
