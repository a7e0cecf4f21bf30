//! The pickle VM: every opcode of protocols 0-5, interpreting only allowed globals.

use super::*;

/// What persistent ids the pickle may contain.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Pids {
    /// None: the small header pickles of the legacy format.
    None,
    /// ('storage', storage_type, key, location, numel)
    Zip,
    /// ('storage', storage_type, root_key, location, numel, view_metadata)
    Legacy,
}

pub(super) struct Vm<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    /// Where the opcode being run starts, for error messages.
    pub(super) op_pos: usize,
    pub(super) what: String,
    pub(super) pids: Pids,
    pub(super) stack: Vec<Value>,
    /// Stack lengths at each MARK.
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u64, Value>,
    pub(super) nodes: Vec<Node>,
    /// Opcodes run; bounds the work of flattening.
    pub(super) ops: u64,
    pub(super) rebuild_nesting: usize,
    /// Classes and functions kept as inert placeholders, by dotted name.
    pub(super) inert: BTreeSet<String>,
    /// Tuple nodes dict-key hashing may still visit (`hkey`).
    pub(super) key_work: std::cell::Cell<u64>,
}

impl<'a> Vm<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize, what: &str, pids: Pids) -> Self {
        Vm {
            data,
            pos,
            op_pos: pos,
            what: what.to_owned(),
            pids,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            nodes: Vec::new(),
            ops: 0,
            rebuild_nesting: 0,
            inert: BTreeSet::new(),
            key_work: std::cell::Cell::new(KEY_WORK_BUDGET),
        }
    }

    /// Runs to STOP and returns the pickled object; `self.pos` is then just past the STOP.
    pub(super) fn run(&mut self) -> VmResult<Value> {
        if self.pos >= self.data.len() {
            return Err(format!(
                "{}: the file ends where a pickle should start (truncated?)",
                self.what
            ));
        }
        loop {
            self.op_pos = self.pos;
            self.ops += 1;
            if self.ops.is_multiple_of(1 << 16) && crate::cancel::requested() {
                return Err(INTERRUPTED.into());
            }
            if self.step()? {
                return match self.stack.pop() {
                    Some(v) if self.marks.is_empty() => Ok(v),
                    _ => Err(self.err("STOP with an unbalanced stack")),
                };
            }
        }
    }

    pub(super) fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{} is damaged at byte {}: {msg}", self.what, self.op_pos)
    }

    // --- reading the stream -----------------------------------------------------------------

    pub(super) fn take(&mut self, n: usize) -> VmResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end.and_then(|e| self.data.get(self.pos..e).map(|s| (s, e))) {
            Some((s, e)) => {
                self.pos = e;
                Ok(s)
            }
            None => Err(self.err(format!(
                "needs {n} bytes but only {} remain (truncated?)",
                self.data.len().saturating_sub(self.pos)
            ))),
        }
    }

    pub(super) fn take_arr<const N: usize>(&mut self) -> VmResult<[u8; N]> {
        let s = self.take(N)?;
        s.try_into().map_err(|_| self.err("short read"))
    }

    pub(super) fn u8(&mut self) -> VmResult<u8> {
        Ok(self.take_arr::<1>()?[0])
    }

    pub(super) fn u32(&mut self) -> VmResult<u32> {
        Ok(u32::from_le_bytes(self.take_arr()?))
    }

    pub(super) fn u64(&mut self) -> VmResult<u64> {
        Ok(u64::from_le_bytes(self.take_arr()?))
    }

    pub(super) fn len_u64(&mut self) -> VmResult<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err(format!("length {n} is too large")))
    }

    /// One text argument, without its end of line.
    pub(super) fn line(&mut self) -> VmResult<&'a [u8]> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("a text argument has no end of line (truncated?)"))?;
        let line = rest.get(..n).unwrap_or_default();
        self.pos += n + 1;
        Ok(line.strip_suffix(b"\r").unwrap_or(line))
    }

    pub(super) fn line_str(&mut self) -> VmResult<&'a str> {
        let line = self.line()?;
        std::str::from_utf8(line).map_err(|_| self.err("a text argument is not UTF-8"))
    }

    pub(super) fn line_int(&mut self) -> VmResult<u64> {
        let s = self.line_str()?;
        s.trim()
            .parse()
            .map_err(|_| self.err(format!("{s:?} is not a memo index")))
    }

    // --- the stack --------------------------------------------------------------------------

    pub(super) fn frame_base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    pub(super) fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    pub(super) fn push_node(&mut self, n: Node) {
        self.nodes.push(n);
        self.stack.push(Value::Node(self.nodes.len() - 1));
    }

    pub(super) fn new_node(&mut self, n: Node) -> Value {
        self.nodes.push(n);
        Value::Node(self.nodes.len() - 1)
    }

    pub(super) fn pop(&mut self) -> VmResult<Value> {
        if self.stack.len() <= self.frame_base() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    pub(super) fn top(&self) -> VmResult<&Value> {
        if self.stack.len() <= self.frame_base() {
            return Err(self.err("stack underflow"));
        }
        self.stack.last().ok_or_else(|| self.err("stack underflow"))
    }

    pub(super) fn pop_mark(&mut self) -> VmResult<Vec<Value>> {
        let base = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK to pop to"))?;
        Ok(self.stack.split_off(base.min(self.stack.len())))
    }

    pub(super) fn pop_str(&mut self) -> VmResult<String> {
        match self.pop()? {
            Value::Str(s) => Ok(s.to_string()),
            other => Err(self.err(format!(
                "expected a string, found {}",
                describe_value(&self.nodes, &other)
            ))),
        }
    }

    // --- looking into values ----------------------------------------------------------------

    pub(super) fn node_mut(&mut self, v: &Value) -> Option<&mut Node> {
        match v {
            Value::Node(i) => self.nodes.get_mut(*i),
            _ => None,
        }
    }

    /// Items of a tuple, list or set.
    pub(super) fn seq_items(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Node(i) => match self.nodes.get(*i)? {
                Node::Tuple(items) | Node::List(items) | Node::Set(items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn tensor_of(&self, v: &Value) -> bool {
        matches!(v, Value::Node(i) if matches!(self.nodes.get(*i), Some(Node::Tensor(_) | Node::Opaque(_))))
    }

    pub(super) fn dict_get_str(&self, v: &Value, key: &str) -> Option<Value> {
        match v {
            Value::Node(i) => match self.nodes.get(*i)? {
                Node::Dict(d) => d
                    .items
                    .iter()
                    .find(|(k, _)| matches!(k, Value::Str(s) if &**s == key))
                    .map(|(_, v)| v.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The key as Python compares it. Each tuple node visited costs one unit of `key_work`: a
    /// tuple of shared tuples (T(k+1) = (Tk, Tk, Tk, Tk)) is 686 bytes of pickle for 4^15 nodes.
    pub(super) fn hkey(&self, v: &Value, depth: usize) -> VmResult<HKey> {
        let left = self.key_work.get();
        if left == 0 {
            return Err(self.err(format!(
                "dict keys need more than {KEY_WORK_BUDGET} steps to compare (tuples nested in shared tuples: a hash bomb); budget: key work"
            )));
        }
        self.key_work.set(left - 1);
        Ok(match v {
            Value::None => HKey::None,
            Value::Bool(b) => HKey::Int(*b as i64),
            Value::Int(i) => HKey::Int(*i),
            Value::BigInt(b) => HKey::Big(b.clone()),
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e18 {
                    HKey::Int(*f as i64)
                } else {
                    HKey::Float(f.to_bits())
                }
            }
            Value::Str(s) => HKey::Str(s.clone()),
            Value::Bytes(b) => HKey::Bytes(b.clone()),
            Value::Global(g) => HKey::Global(g.dotted()),
            Value::Node(i) => match self.nodes.get(*i) {
                Some(Node::Tuple(items)) if depth < 16 => HKey::Tuple(
                    items
                        .iter()
                        .map(|x| self.hkey(x, depth + 1))
                        .collect::<VmResult<_>>()?,
                ),
                _ => HKey::Node(*i),
            },
        })
    }

    pub(super) fn set_items(&mut self, target: &Value, pairs: Vec<(Value, Value)>) -> VmResult<()> {
        let keys: Vec<HKey> = pairs
            .iter()
            .map(|(k, _)| self.hkey(k, 0))
            .collect::<VmResult<_>>()?;
        let what = describe_value(&self.nodes, target);
        match self.node_mut(target) {
            Some(Node::Dict(d)) => {
                for (hk, (k, v)) in keys.into_iter().zip(pairs) {
                    match d.index.get(&hk) {
                        Some(&at) => {
                            if let Some(slot) = d.items.get_mut(at) {
                                slot.1 = v;
                            }
                        }
                        None => {
                            d.index.insert(hk, d.items.len());
                            d.items.push((k, v));
                        }
                    }
                }
                Ok(())
            }
            // A placeholder of a dict subclass keeps its items.
            Some(Node::Object(o)) => {
                o.items.extend(pairs);
                Ok(())
            }
            // Content of an object that is skipped anyway.
            Some(Node::Opaque(_)) => Ok(()),
            _ => Err(self.err(format!("SETITEM(S) on {what}, which is not a dict"))),
        }
    }

    pub(super) fn pairs(&self, items: Vec<Value>) -> VmResult<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    pub(super) fn memo_put(&mut self, id: u64) -> VmResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(id, v);
        Ok(())
    }

    pub(super) fn memo_get(&mut self, id: u64) -> VmResult<()> {
        let v = self
            .memo
            .get(&id)
            .cloned()
            .ok_or_else(|| self.err(format!("memo {id} was never stored")))?;
        self.push(v);
        Ok(())
    }

    pub(super) fn global(&mut self, module: &str, name: &str) -> VmResult<Value> {
        let known = match known_global(module, name) {
            Some(known) => known,
            None => {
                unknown_global(module, name).map_err(|e| self.err(e))?;
                self.inert.insert(format!("{module}.{name}"));
                Known::Inert
            }
        };
        Ok(Value::Global(Rc::new(Global {
            module: module.to_owned(),
            name: name.to_owned(),
            known,
        })))
    }

    // --- one opcode -------------------------------------------------------------------------

    /// Runs one opcode; `true` at STOP.
    pub(super) fn step(&mut self) -> VmResult<bool> {
        let op = self.u8()?;
        match op {
            // PROTO
            0x80 => {
                let v = self.u8()?;
                if v > 5 {
                    return Err(self.err(format!(
                        "pickle protocol {v} is newer than the protocols 0-5 diffai knows"
                    )));
                }
            }
            // FRAME: the data is already contiguous, the frame length is only a hint.
            0x95 => {
                self.take(8)?;
            }
            b'.' => return Ok(true),
            b'(' => self.marks.push(self.stack.len()),
            // POP: the top item, or the mark when the frame is empty.
            b'0' => {
                if self.stack.len() > self.frame_base() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v);
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            // INT (text; protocol 0 spells booleans 00 / 01)
            b'I' => {
                let s = self.line_str()?.trim();
                let v = match s {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => self.text_int(s)?,
                };
                self.push(v);
            }
            b'J' => {
                let v = i32::from_le_bytes(self.take_arr()?);
                self.push(Value::Int(v as i64));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.take_arr()?);
                self.push(Value::Int(v as i64));
            }
            // LONG (text)
            b'L' => {
                let s = self.line_str()?.trim();
                let v = self.text_int(s.strip_suffix('L').unwrap_or(s))?;
                self.push(v);
            }
            // LONG1, LONG4
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    self.u8()? as usize
                } else {
                    let n = i32::from_le_bytes(self.take_arr()?);
                    usize::try_from(n).map_err(|_| self.err("LONG4 with a negative length"))?
                };
                let bytes = self.take(n)?;
                self.push(long_value(bytes));
            }
            b'F' => {
                let s = self.line_str()?.trim();
                let f = s
                    .parse::<f64>()
                    .map_err(|_| self.err(format!("{s:?} is not a float")))?;
                self.push(Value::Float(f));
            }
            b'G' => {
                let f = f64::from_be_bytes(self.take_arr()?);
                self.push(Value::Float(f));
            }
            // STRING (text, quoted and escaped; Python 2 str)
            b'S' => {
                let line = self.line()?;
                let bytes = unquote_string(line)
                    .ok_or_else(|| self.err("STRING argument is not a quoted string"))?;
                self.push(Value::Str(String::from_utf8_lossy(&bytes).into()));
            }
            // BINSTRING, SHORT_BINSTRING (Python 2 str; torch.load decodes them as UTF-8)
            b'T' | b'U' => {
                let n = if op == b'T' {
                    let n = i32::from_le_bytes(self.take_arr()?);
                    usize::try_from(n).map_err(|_| self.err("BINSTRING with a negative length"))?
                } else {
                    self.u8()? as usize
                };
                let bytes = self.take(n)?;
                self.push(Value::Str(String::from_utf8_lossy(bytes).into()));
            }
            // UNICODE (text, raw-unicode-escape)
            b'V' => {
                let line = self.line()?;
                self.push(Value::Str(raw_unicode_escape(line).into()));
            }
            // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => self.u32()? as usize,
                    0x8c => self.u8()? as usize,
                    _ => self.len_u64()?,
                };
                let bytes = self.take(n)?;
                self.push(Value::Str(String::from_utf8_lossy(bytes).into()));
            }
            // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.u32()? as usize,
                    b'C' => self.u8()? as usize,
                    _ => self.len_u64()?,
                };
                let bytes = self.take(n)?;
                self.push(Value::Bytes(bytes.into()));
            }
            0x97 | 0x98 => {
                return Err(self.err("out-of-band buffers (pickle protocol 5) are not supported"))
            }
            b')' => self.push_node(Node::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.push_node(Node::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < self.frame_base() + n {
                    return Err(self.err("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_node(Node::Tuple(items));
            }
            b']' => self.push_node(Node::List(Vec::new())),
            b'l' => {
                let items = self.pop_mark()?;
                self.push_node(Node::List(items));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![self.pop()?]
                } else {
                    self.pop_mark()?
                };
                let target = self.top()?.clone();
                let what = describe_value(&self.nodes, &target);
                match self.node_mut(&target) {
                    Some(Node::List(list)) => list.extend(items),
                    Some(Node::Object(o)) => o.list.extend(items),
                    Some(Node::Opaque(_)) => {}
                    _ => return Err(self.err(format!("APPEND(S) to {what}, which is not a list"))),
                }
            }
            b'}' => self.push_node(Node::Dict(Box::default())),
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                let dict = self.new_node(Node::Dict(Box::default()));
                self.set_items(&dict, pairs)?;
                self.push(dict);
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?.clone();
                self.set_items(&target, vec![(k, v)])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                let target = self.top()?.clone();
                self.set_items(&target, pairs)?;
            }
            // EMPTY_SET, ADDITEMS, FROZENSET
            0x8f => self.push_node(Node::Set(Vec::new())),
            0x90 => {
                let items = self.pop_mark()?;
                let target = self.top()?.clone();
                let what = describe_value(&self.nodes, &target);
                match self.node_mut(&target) {
                    Some(Node::Set(set)) => set.extend(items),
                    _ => return Err(self.err(format!("ADDITEMS to {what}, which is not a set"))),
                }
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push_node(Node::Set(items));
            }
            // PUT, BINPUT, LONG_BINPUT, MEMOIZE
            b'p' => {
                let id = self.line_int()?;
                self.memo_put(id)?;
            }
            b'q' => {
                let id = self.u8()? as u64;
                self.memo_put(id)?;
            }
            b'r' => {
                let id = self.u32()? as u64;
                self.memo_put(id)?;
            }
            0x94 => {
                let id = self.memo.len() as u64;
                self.memo_put(id)?;
            }
            // GET, BINGET, LONG_BINGET
            b'g' => {
                let id = self.line_int()?;
                self.memo_get(id)?;
            }
            b'h' => {
                let id = self.u8()? as u64;
                self.memo_get(id)?;
            }
            b'j' => {
                let id = self.u32()? as u64;
                self.memo_get(id)?;
            }
            // GLOBAL, STACK_GLOBAL
            b'c' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let g = self.global(module, name)?;
                self.push(g);
            }
            0x93 => {
                let name = self.pop_str()?;
                let module = self.pop_str()?;
                let g = self.global(&module, &name)?;
                self.push(g);
            }
            0x82..=0x84 => {
                return Err(self.err("the copyreg extension registry (EXT1/2/4) is not supported"))
            }
            // REDUCE, NEWOBJ, NEWOBJ_EX
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.apply(&callable, &args)?;
                self.push(v);
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = self.apply(&cls, &args)?;
                self.push(v);
            }
            // INST, OBJ (protocols 0 and 1)
            b'i' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let cls = self.global(module, name)?;
                let items = self.pop_mark()?;
                let args = self.new_node(Node::Tuple(items));
                let v = self.apply(&cls, &args)?;
                self.push(v);
            }
            b'o' => {
                let mut items = self.pop_mark()?.into_iter();
                let cls = items
                    .next()
                    .ok_or_else(|| self.err("OBJ without a class"))?;
                let args = self.new_node(Node::Tuple(items.collect()));
                let v = self.apply(&cls, &args)?;
                self.push(v);
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?.clone();
                self.build(&target, &state)?;
            }
            // PERSID, BINPERSID
            b'P' => {
                let id = self.line()?;
                let pid = Value::Str(String::from_utf8_lossy(id).into());
                let v = self.persistent(&pid)?;
                self.push(v);
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = self.persistent(&pid)?;
                self.push(v);
            }
            other => return Err(self.err(format!("unknown pickle opcode 0x{other:02x}"))),
        }
        Ok(false)
    }

    fn text_int(&self, s: &str) -> VmResult<Value> {
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        match s.parse::<i128>() {
            Ok(i) => Ok(Value::BigInt(i.to_le_bytes().into())),
            Err(_) => Err(self.err(format!(
                "{:?} is not an integer diffai can read",
                s.chars().take(40).collect::<String>()
            ))),
        }
    }

    // --- interpreting calls -----------------------------------------------------------------

    /// REDUCE / NEWOBJ / INST / OBJ: interprets a call to an allowed global. Nothing is run.
    fn apply(&mut self, callable: &Value, args: &Value) -> VmResult<Value> {
        let g = match callable {
            Value::Global(g) => g.clone(),
            other => {
                return Err(self.err(format!(
                    "pickle calls {}, which is not a class or function",
                    describe_value(&self.nodes, other)
                )))
            }
        };
        let args: Vec<Value> = match args {
            Value::None => Vec::new(),
            other => self
                .seq_items(other)
                .ok_or_else(|| self.err(format!("arguments of {} are not a tuple", g.dotted())))?
                .to_vec(),
        };
        let opaque = |s: String| Node::Opaque(s);
        Ok(match g.known {
            Known::Inert => self.new_node(Node::Object(Box::new(Object {
                class: g.dotted(),
                args,
                ..Object::default()
            }))),
            Known::Reconstructor => {
                // _reconstructor(cls, base, state) / __newobj__(cls, *args): an instance of cls.
                let Some(cls) = args.first() else {
                    return Err(self.err(format!("{} without a class", g.dotted())));
                };
                let rest = if g.name == "_reconstructor" { Vec::new() } else { args[1..].to_vec() };
                let rest = self.new_node(Node::Tuple(rest));
                if self.rebuild_nesting >= MAX_REBUILD_NESTING {
                    return Err(self.err("too many nested copyreg reconstructions"));
                }
                self.rebuild_nesting += 1;
                let v = self.apply(&cls.clone(), &rest);
                self.rebuild_nesting -= 1;
                v?
            }
            Known::OrderedDict | Known::BuiltinDict | Known::DefaultDict | Known::AttributeDict | Known::Namespace => {
                let dict = self.new_node(Node::Dict(Box::new(Dict {
                    state_is_items: g.known == Known::Namespace,
                    ..Dict::default()
                })));
                // dict(mapping) / OrderedDict([(k, v), ...]); defaultdict's argument is its factory.
                if g.known != Known::DefaultDict {
                    if let Some(init) = args.first() {
                        let pairs = self.initial_pairs(init);
                        self.set_items(&dict, pairs)?;
                    }
                }
                dict
            }
            Known::BuiltinList | Known::BuiltinTuple | Known::BuiltinSet => {
                let items = args.first().and_then(|a| self.seq_items(a)).map(<[Value]>::to_vec).unwrap_or_default();
                self.new_node(match g.known {
                    Known::BuiltinList => Node::List(items),
                    Known::BuiltinTuple => Node::Tuple(items),
                    _ => Node::Set(items),
                })
            }
            Known::BuiltinBytes | Known::CodecsEncode => match args.first() {
                // _codecs.encode(text, 'latin1') is how protocol 2 writes bytes.
                Some(Value::Str(s)) => {
                    let latin1 = args.get(1).and_then(text_of).is_some_and(|e| e.starts_with("latin"));
                    let bytes: Vec<u8> =
                        if latin1 { s.chars().map(|c| c as u32 as u8).collect() } else { s.as_bytes().to_vec() };
                    Value::Bytes(bytes.into())
                }
                Some(Value::Bytes(b)) => Value::Bytes(b.clone()),
                _ => Value::Bytes(Rc::from(&[][..])),
            },
            Known::BuiltinType => self.new_node(opaque(format!("a {} object", g.dotted()))),
            Known::RebuildTensor | Known::RebuildTensorV2 | Known::RebuildTensorV3 => {
                self.rebuild_tensor(g.known, &args)?
            }
            Known::RebuildParameter => match args.first() {
                Some(data) if self.tensor_of(data) => data.clone(),
                _ => return Err(self.err(format!("{} without a tensor as its first argument", g.dotted()))),
            },
            Known::RebuildFromTypeV2 => {
                // (func, new_type, args, state): the tensor is func(*args); type and state are Python-side.
                let (Some(func), Some(inner)) = (args.first(), args.get(2)) else {
                    return Err(self.err("_rebuild_from_type_v2 with fewer than 3 arguments"));
                };
                if self.rebuild_nesting >= MAX_REBUILD_NESTING {
                    return Err(self.err("too many nested _rebuild_from_type_v2 calls"));
                }
                self.rebuild_nesting += 1;
                let v = self.apply(func, inner);
                self.rebuild_nesting -= 1;
                v?
            }
            Known::RebuildQTensor => self.rebuild_qtensor(&args)?,
            Known::RebuildOther if g.name == "_rebuild_sparse_tensor" => self.rebuild_sparse(&args)?,
            Known::RebuildOther => self.new_node(opaque(format!(
                "{} builds a sparse, nested, meta or device-specific tensor, which diffai does not read",
                g.dotted()
            ))),
            Known::TensorType => match args.first() {
                Some(data) if self.tensor_of(data) => data.clone(),
                _ => self.new_node(opaque(format!("a {} object without tensor data", g.dotted()))),
            },
            Known::Size => {
                let items = args.first().and_then(|a| self.seq_items(a)).map(<[Value]>::to_vec).unwrap_or_default();
                self.new_node(Node::Tuple(items))
            }
            Known::Device => {
                let kind = args.first().and_then(text_of).unwrap_or_else(|| "?".into());
                match args.get(1) {
                    Some(Value::Int(i)) => Value::Str(format!("{kind}:{i}").into()),
                    _ => Value::Str(kind.into()),
                }
            }
            Known::NumpyDType => {
                let code = args.first().and_then(text_of).unwrap_or_else(|| "?".into());
                self.new_node(opaque(format!("numpy dtype {code}")))
            }
            Known::NumpyScalar => {
                let dtype = args.first().map(|d| describe_value(&self.nodes, d)).unwrap_or_default();
                self.new_node(opaque(format!(
                    "a numpy scalar ({dtype}); diffai reads tensors and Python scalars, not numpy objects"
                )))
            }
            Known::NumpyReconstruct => self.new_node(opaque(
                "a numpy array; diffai reads the tensors of a checkpoint, not numpy arrays inside it".into(),
            )),
            // _get_layout("torch.sparse_coo"): the layout's name, which _rebuild_sparse_tensor reads.
            Known::TorchConstant if g.name == "_get_layout" => match args.first() {
                Some(Value::Str(s)) => Value::Str(s.clone()),
                _ => self.new_node(opaque(format!("a {} object", g.dotted()))),
            },
            Known::Storage(_)
            | Known::DType(_)
            | Known::ComplexDType(_)
            | Known::TorchConstant
            | Known::NumpyType => {
                self.new_node(opaque(format!("a {} object", g.dotted())))
            }
        })
    }

    /// Items for `dict(x)` / `OrderedDict(x)`: a dict's items or a sequence of pairs.
    fn initial_pairs(&self, init: &Value) -> Vec<(Value, Value)> {
        if let Value::Node(i) = init {
            if let Some(Node::Dict(d)) = self.nodes.get(*i) {
                return d.items.clone();
            }
        }
        self.seq_items(init)
            .unwrap_or_default()
            .iter()
            .filter_map(|pair| match self.seq_items(pair)? {
                [k, v] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// `_rebuild_tensor(storage, offset, size, stride)`, `_v2(..., requires_grad, hooks[, metadata])`,
    /// `_v3(..., requires_grad, hooks, dtype, metadata)`.
    fn rebuild_tensor(&mut self, which: Known, args: &[Value]) -> VmResult<Value> {
        let name = match which {
            Known::RebuildTensor => "_rebuild_tensor",
            Known::RebuildTensorV2 => "_rebuild_tensor_v2",
            _ => "_rebuild_tensor_v3",
        };
        let need = if which == Known::RebuildTensorV3 {
            7
        } else {
            4
        };
        if args.len() < need {
            return Err(self.err(format!(
                "{name} with {} arguments, expected at least {need}",
                args.len()
            )));
        }
        let storage = match args.first() {
            Some(Value::Node(i)) => match self.nodes.get(*i) {
                Some(Node::Storage(s)) => (**s).clone(),
                _ => return Err(self.err(format!("{name}: the first argument is not a storage"))),
            },
            _ => return Err(self.err(format!("{name}: the first argument is not a storage"))),
        };
        let offset = match args.get(1) {
            Some(Value::Int(i)) if *i >= 0 => *i as u64,
            _ => {
                return Err(self.err(format!(
                    "{name}: the storage offset is not a non-negative integer"
                )))
            }
        };
        let shape = self.ints(args.get(2), name, "size")?;
        let strides = self.ints(args.get(3), name, "stride")?;
        if shape.len() != strides.len() {
            return Err(self.err(format!(
                "{name}: {} sizes but {} strides",
                shape.len(),
                strides.len()
            )));
        }
        if let Some(d) = shape.iter().find(|&&d| d < 0) {
            return Err(self.err(format!("{name}: negative size {d}")));
        }
        if let Some(s) = strides.iter().find(|&&s| s < 0) {
            return Err(self.err(format!(
                "{name}: negative stride {s}, which PyTorch never writes"
            )));
        }
        let mut complex = false;
        let (dtype, dtype_name) = if which == Known::RebuildTensorV3 {
            match args.get(6) {
                Some(Value::Global(g)) => match g.known {
                    Known::DType(d) => (d, g.dotted()),
                    Known::ComplexDType(d) => {
                        complex = true;
                        (Some(d), g.dotted())
                    }
                    _ => return Err(self.err(format!("{name}: {} is not a dtype", g.dotted()))),
                },
                _ => {
                    return Err(self.err(format!("{name}: the dtype argument is not a torch dtype")))
                }
            }
        } else {
            match storage.kind {
                StorageKind::Typed(d) => (Some(d), String::new()),
                StorageKind::Untyped => (Some(DType::U8), String::new()),
                StorageKind::Complex(d) => {
                    complex = true;
                    (Some(d), String::new())
                }
                StorageKind::Quantized(_) => (None, String::new()),
            }
        };
        // Complex: (real, imaginary) as a trailing dimension of 2, as torch.view_as_real shows it.
        let (offset, shape, strides) = if complex {
            let twice = |x: u64| {
                x.checked_mul(2)
                    .ok_or_else(|| self.err(format!("{name}: offset or stride too large")))
            };
            let strides: Vec<i64> = strides
                .iter()
                .map(|&s| twice(s as u64).map(|s| s as i64))
                .chain([Ok(1)])
                .collect::<VmResult<_>>()?;
            (
                twice(offset)?,
                shape.into_iter().chain([2]).collect(),
                strides,
            )
        } else {
            (offset, shape, strides)
        };
        let Some(dtype) = dtype else {
            let what = if dtype_name.is_empty() {
                format!("stored as {}", storage.type_name)
            } else {
                format!("of dtype {dtype_name}")
            };
            return Ok(self.new_node(Node::Opaque(format!(
                "a tensor {what}, whose element type diffai does not read"
            ))));
        };
        let tensor = TensorRef {
            storage,
            dtype,
            offset,
            shape: shape.into_iter().map(|d| d as u64).collect(),
            strides: strides.into_iter().map(|s| s as u64).collect(),
            sparse: None,
            quant: None,
        };
        Ok(self.new_node(Node::Tensor(Box::new(tensor))))
    }

    pub(super) fn ints(&self, v: Option<&Value>, func: &str, what: &str) -> VmResult<Vec<i64>> {
        let items = v
            .and_then(|v| self.seq_items(v))
            .ok_or_else(|| self.err(format!("{func}: the {what} is not a tuple")))?;
        items
            .iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                _ => Err(self.err(format!("{func}: the {what} holds a non-integer"))),
            })
            .collect()
    }

    /// BUILD: sets an object's state. Only `argparse.Namespace` keeps it (its attributes are its
    /// content); for dicts it is instance attributes and for tensors Python-side state.
    fn build(&mut self, target: &Value, state: &Value) -> VmResult<()> {
        if let Some(Node::Object(o)) = self.node_mut(target) {
            o.state = Some(state.clone());
            return Ok(());
        }
        let is_namespace = matches!(target, Value::Node(i) if matches!(self.nodes.get(*i), Some(Node::Dict(d)) if d.state_is_items));
        if !is_namespace {
            return Ok(());
        }
        // The state is __dict__, or (__dict__, slots) for classes with slots.
        let dict = match state {
            Value::Node(i) => match self.nodes.get(*i) {
                Some(Node::Tuple(items)) => items.first().cloned(),
                _ => Some(state.clone()),
            },
            _ => None,
        };
        let pairs = match dict {
            Some(Value::Node(i)) => match self.nodes.get(i) {
                Some(Node::Dict(d)) => d.items.clone(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        self.set_items(target, pairs)
    }

    /// BINPERSID / PERSID: torch's storage references.
    fn persistent(&mut self, pid: &Value) -> VmResult<Value> {
        if self.pids == Pids::None {
            return Err(self.err("a persistent id where none is expected"));
        }
        let items = self
            .seq_items(pid)
            .ok_or_else(|| self.err("a persistent id that is not a tuple"))?
            .to_vec();
        let kind = items.first().and_then(text_of).unwrap_or_default();
        if kind == "module" {
            return Err(
                "the file holds a whole pickled nn.Module (with its source code); diffai reads state dicts: save model.state_dict() instead"
                    .into(),
            );
        }
        if kind != "storage" {
            return Err(self.err(format!("unknown persistent id type {kind:?}")));
        }
        let want = if self.pids == Pids::Zip { 5 } else { 6 };
        if items.len() != want {
            return Err(self.err(format!(
                "a storage persistent id with {} fields, expected {want}",
                items.len()
            )));
        }
        let (storage_kind, type_name) = match items.get(1) {
            Some(Value::Global(g)) => match g.known {
                Known::Storage(k) => (k, g.dotted()),
                _ => return Err(self.err(format!("{} is not a storage type", g.dotted()))),
            },
            _ => return Err(self.err("the storage type of a persistent id is not a class")),
        };
        let key = items
            .get(2)
            .and_then(text_of)
            .ok_or_else(|| self.err("a storage key that is not a string"))?;
        let numel = match items.get(4) {
            Some(Value::Int(n)) if *n >= 0 => *n as u64,
            _ => return Err(self.err("a storage size that is not a non-negative integer")),
        };
        let view = match items.get(5) {
            None | Some(Value::None) => None,
            Some(meta) => match self.seq_items(meta) {
                Some([_, Value::Int(offset), Value::Int(size)]) if *offset >= 0 && *size >= 0 => {
                    Some((*offset as u64, *size as u64))
                }
                _ => return Err(self.err("storage view metadata is not (key, offset, size)")),
            },
        };
        let s = StorageRef {
            key: key.into(),
            kind: storage_kind,
            type_name: type_name.into(),
            numel,
            view,
        };
        Ok(self.new_node(Node::Storage(Box::new(s))))
    }
}

/// LONG1 / LONG4 payload: little-endian two's complement.
pub(super) fn long_value(bytes: &[u8]) -> Value {
    let bytes = trim_le(bytes);
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
        buf[..bytes.len()].copy_from_slice(bytes);
        return Value::Int(i64::from_le_bytes(buf));
    }
    Value::BigInt(bytes.into())
}

/// The bytes of a protocol-0 STRING argument: `'...'` or `"..."` with Python escapes.
pub(super) fn unquote_string(line: &[u8]) -> Option<Vec<u8>> {
    let (&first, rest) = line.split_first()?;
    let (&last, inner) = rest.split_last()?;
    if first != last || !(first == b'\'' || first == b'"') {
        return None;
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&c) = inner.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            out.push(b'\\');
            break;
        };
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'x' => {
                let hex = inner
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Python's raw-unicode-escape: bytes are Latin-1 except `\uXXXX` and `\UXXXXXXXX`.
pub(super) fn raw_unicode_escape(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while let Some(&c) = line.get(i) {
        if c == b'\\' {
            let width = match line.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if width > 0 {
                let code = line
                    .get(i + 2..i + 2 + width)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32);
                if let Some(ch) = code {
                    out.push(ch);
                    i += 2 + width;
                    continue;
                }
            }
        }
        out.push(c as char);
        i += 1;
    }
    out
}
