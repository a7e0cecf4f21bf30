use super::*;

fn run(data: &[u8]) -> VmResult<(Vm<'_>, Value)> {
    let mut vm = Vm::new(data, 0, "test", Pids::Zip);
    let v = vm.run()?;
    Ok((vm, v))
}

fn flat(data: &[u8]) -> VmResult<Flat> {
    let (vm, v) = run(data)?;
    flatten(&vm.nodes, &v, vm.ops)
}

#[test]
fn setitems_keep_order_and_memo_shares_mutation() {
    // d = {} (memo 0, filled after BINPUT by SETITEMS b, a); root = [d, d] (second from memo)
    let mut data = vec![
        0x80, 2, b']', b'(', b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'b', b'K', 1,
    ];
    data.extend_from_slice(&[b'X', 1, 0, 0, 0, b'a', b'K', 2, b'u']);
    data.extend_from_slice(&[b'h', 0, b'e', b'.']);
    let f = flat(&data).unwrap();
    let names: Vec<_> = f.scalars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0.b", "0.a", "1.b", "1.a"]);
}

#[test]
fn python_pickles_of_every_protocol() {
    // pickle.dumps({'a': 1, 'b': [1.5, 'x', None, True, 2**70, -3], 'c': (2, 3), 'd': b'\x00\xff',
    //   'e': '\u00e9\u4e2d', 'f': OrderedDict([('k', 1)]), 7: 'seven', 'g': {3, 4}, 'a2': 'dup'}, protocol=N)
    let cases: [(&[u8], u8); 3] = [
    (b"(dp0\x0aVa\x0ap1\x0aI1\x0asVb\x0ap2\x0a(lp3\x0aF1.5\x0aaVx\x0ap4\x0aaNaI01\x0aaL1180591620717411303424L\x0aaI-3\x0aasVc\x0ap5\x0a(I2\x0aI3\x0atp6\x0asVd\x0ap7\x0ac_codecs\x0aencode\x0ap8\x0a(V\x5cu0000\xff\x0ap9\x0aVlatin1\x0ap10\x0atp11\x0aRp12\x0asVe\x0ap13\x0aV\xe9\x5cu4e2d\x0ap14\x0asVf\x0ap15\x0accollections\x0aOrderedDict\x0ap16\x0a(tRp17\x0aVk\x0ap18\x0aI1\x0assI7\x0aVseven\x0ap19\x0asVg\x0ap20\x0ac__builtin__\x0aset\x0ap21\x0a((lp22\x0aI3\x0aaI4\x0aatp23\x0aRp24\x0asVa2\x0ap25\x0aVdup\x0ap26\x0as.", 0),
    (b"}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G?\xf8\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x04NI01\x0aL1180591620717411303424L\x0aJ\xfd\xff\xff\xffeX\x01\x00\x00\x00cq\x05(K\x02K\x03tq\x06X\x01\x00\x00\x00dq\x07c_codecs\x0aencode\x0aq\x08(X\x03\x00\x00\x00\x00\xc3\xbfq\x09X\x06\x00\x00\x00latin1q\x0atq\x0bRq\x0cX\x01\x00\x00\x00eq\x0dX\x05\x00\x00\x00\xc3\xa9\xe4\xb8\xadq\x0eX\x01\x00\x00\x00fq\x0fccollections\x0aOrderedDict\x0aq\x10)Rq\x11X\x01\x00\x00\x00kq\x12K\x01sK\x07X\x05\x00\x00\x00sevenq\x13X\x01\x00\x00\x00gq\x14c__builtin__\x0aset\x0aq\x15(]q\x16(K\x03K\x04etq\x17Rq\x18X\x02\x00\x00\x00a2q\x19X\x03\x00\x00\x00dupq\x1au.", 1),
    (b"\x80\x05\x95\x9e\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K\x01\x8c\x01b\x94]\x94(G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x01x\x94N\x88\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@J\xfd\xff\xff\xffe\x8c\x01c\x94K\x02K\x03\x86\x94\x8c\x01d\x94C\x02\x00\xff\x94\x8c\x01e\x94\x8c\x05\xc3\xa9\xe4\xb8\xad\x94\x8c\x01f\x94\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01k\x94K\x01sK\x07\x8c\x05seven\x94\x8c\x01g\x94\x8f\x94(K\x03K\x04\x90\x8c\x02a2\x94\x8c\x03dup\x94u.", 5),
    ];
    for (data, proto) in cases {
        let f = flat(data).unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        let want = [
            ("a", Scalar::Int(1)),
            ("b.0", Scalar::Float(1.5)),
            ("b.1", Scalar::Str("x".into())),
            ("b.2", Scalar::None),
            ("b.3", Scalar::Bool(true)),
            ("b.5", Scalar::Int(-3)),
            ("c.0", Scalar::Int(2)),
            ("c.1", Scalar::Int(3)),
            ("e", Scalar::Str("\u{e9}\u{4e2d}".into())),
            ("f.k", Scalar::Int(1)),
            ("7", Scalar::Str("seven".into())),
            ("g.0", Scalar::Int(3)),
            ("g.1", Scalar::Int(4)),
            ("a2", Scalar::Str("dup".into())),
        ];
        let got: Vec<(&str, Scalar)> = f
            .scalars
            .iter()
            .map(|(n, s)| (n.as_str(), s.clone()))
            .collect();
        assert_eq!(got, want, "protocol {proto}");
        let skipped: Vec<(&str, &str)> = f
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                ("b.4", "an integer wider than 64 bits"),
                ("d", "a bytes value (2 bytes)")
            ],
            "protocol {proto}"
        );
    }
}

#[test]
fn duplicate_keys_behave_like_python() {
    // DICT with 'x': 1, 'y': 2, 'x': 3  ->  {'x': 3, 'y': 2}
    let data = b"(X\x01\x00\x00\x00xK\x01X\x01\x00\x00\x00yK\x02X\x01\x00\x00\x00xK\x03d.";
    let f = flat(data).unwrap();
    assert_eq!(
        f.scalars,
        [
            ("x".to_string(), Scalar::Int(3)),
            ("y".to_string(), Scalar::Int(2))
        ]
    );
}

#[test]
fn refuses_unknown_callables() {
    let data = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00hi\x85R.";
    let e = run(data).err().unwrap();
    assert!(
        e.contains("posix.system") && e.contains("does not run"),
        "{e}"
    );
    let data = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
    let e = run(data).err().unwrap();
    assert!(e.contains("builtins.eval"), "{e}");
}

/// Classes outside the allowlist become inert placeholders, but a name that runs code or reaches
/// what does is still refused, whatever module it is put in.
#[test]
fn placeholders_never_reach_dangerous_callables() {
    for (module, name) in [
        ("builtins", "getattr"),
        ("__builtin__", "eval"),
        ("os", "system"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("subprocess", "check_output"),
        ("functools", "partial"),
        ("operator", "attrgetter"),
        ("importlib", "import_module"),
        ("runpy", "run_path"),
        ("torch", "load"),
        ("torch.hub", "load"),
        ("torch._C", "_jit_pass"),
        ("torch.storage", "_load_from_bytes"),
        ("torch.serialization", "load"),
        ("numpy.testing._private.utils", "runstring"),
        ("numpy", "load"),
        ("__main__", "system"),
        ("mypkg", "eval"),
        ("mypkg", "Outer.__init__"),
        ("mypkg.tools", "exec"),
        ("types", "FunctionType"),
        ("pickle", "loads"),
        ("__torch__.Net", "Net"),
    ] {
        let mut data = b"\x80\x02c".to_vec();
        data.extend(format!("{module}\n{name}\n").as_bytes());
        data.extend(b")R.");
        let e = run(&data)
            .err()
            .unwrap_or_else(|| panic!("{module}.{name} accepted"));
        assert!(e.contains(&format!("{module}.{name}")), "{e}");
    }
    // An inert class called with a tensor-free argument, BUILD state and SETITEMS.
    let data =
        b"\x80\x02c__main__\nNet\nq\x00)\x81}X\x01\x00\x00\x00kK\x07sbX\x01\x00\x00\x00xK\x01s.";
    let (vm, v) = run(data).unwrap();
    assert_eq!(vm.inert.iter().collect::<Vec<_>>(), ["__main__.Net"]);
    let f = flatten(&vm.nodes, &v, vm.ops).unwrap();
    assert_eq!(
        f.scalars,
        vec![
            ("k".to_string(), Scalar::Int(7)),
            ("x".to_string(), Scalar::Int(1))
        ]
    );
}

#[test]
fn deep_nesting_and_cycles_do_not_crash() {
    let n = 200_000;
    let mut data = vec![0x80, 2];
    data.extend(std::iter::repeat_n(b']', n));
    data.extend(std::iter::repeat_n(b'a', n - 1));
    data.push(b'.');
    let e = flat(&data).err().unwrap();
    assert!(e.contains("nested deeper"), "{e}");

    // l = []; l.append(l)
    let data = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.'];
    let f = flat(&data).unwrap();
    assert_eq!(f.skipped.len(), 1);
    assert!(f.skipped[0].reason.contains("cycle"));
}

#[test]
fn shared_references_cannot_explode() {
    // x0 = [0]; x(k+1) = [xk, xk] repeated 60 times: 2^60 leaves.
    let mut data = vec![0x80, 2, b']', b'K', 0, b'a', b'q', 0];
    for k in 0..60u8 {
        data.extend_from_slice(&[b'h', k, b'h', k, 0x86, b'q', k + 1, b'0']);
    }
    data.extend_from_slice(&[b'h', 60, b'.']);
    let e = flat(&data).err().unwrap();
    assert!(e.contains("expand"), "{e}");
}

#[test]
fn values_stay_small() {
    // Hostile pickles can make one node per byte; keep the per-byte amplification low.
    assert!(
        std::mem::size_of::<Node>() <= 32,
        "{}",
        std::mem::size_of::<Node>()
    );
    assert!(
        std::mem::size_of::<Value>() <= 24,
        "{}",
        std::mem::size_of::<Value>()
    );
}

#[test]
fn longs_and_magic() {
    assert!(matches!(long_value(&[0xff]), Value::Int(-1)));
    assert!(matches!(
        long_value(&[0x00, 0x80, 0x00]),
        Value::Int(0x8000)
    ));
    assert!(matches!(long_value(&[]), Value::Int(0)));
    match long_value(&LEGACY_MAGIC) {
        Value::BigInt(b) => assert_eq!(&*b, &LEGACY_MAGIC),
        other => panic!("{other:?}"),
    }
}

#[test]
fn damaged_pickles_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pytorch");
    let Ok(file) = std::fs::read(dir.join("checkpoint.pt")) else {
        return;
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(&file[..])).unwrap();
    let mut pkl = Vec::new();
    archive
        .by_name("checkpoint/data.pkl")
        .unwrap()
        .read_to_end(&mut pkl)
        .unwrap();
    assert!(flat(&pkl).is_ok());
    for cut in 0..pkl.len() {
        assert!(flat(&pkl[..cut]).is_err());
    }
    for i in 0..pkl.len() {
        for bit in [0x01u8, 0x10, 0x80] {
            let mut p = pkl.clone();
            p[i] ^= bit;
            let _ = flat(&p);
        }
    }
}

/// A dict key of tuples nested in shared tuples (T0 = (1,), T(k+1) = (Tk, Tk, Tk, Tk)): 15
/// levels are 4^15 nodes to hash. Refused by the key-work budget, at once.
#[test]
fn key_hash_bomb_is_refused_by_budget() {
    const LEVELS: u8 = 15;
    let mut data = b"\x80\x02}K\x01\x85q\x000".to_vec();
    for level in 1..=LEVELS {
        data.push(b'(');
        for _ in 0..4 {
            data.extend([b'h', level - 1]);
        }
        data.extend([b't', b'q', level, b'0']);
    }
    data.extend([b'h', LEVELS]);
    data.extend(b"K\x00s.");
    let started = std::time::Instant::now();
    let e = run(&data).err().unwrap();
    assert!(e.contains("budget: key work"), "{e}");
    assert!(started.elapsed().as_secs() < 5);
    // A key that hashes fine but prints as 4^8 leaves: not a name component, a named skip.
    let mut data = b"\x80\x02}K\x01\x85q\x000".to_vec();
    for level in 1..=LEVELS.min(9) {
        data.push(b'(');
        for _ in 0..4 {
            data.extend([b'h', level - 1]);
        }
        data.extend([b't', b'q', level, b'0']);
    }
    data.extend([b'h', LEVELS.min(9)]);
    data.extend(b"K\x00s.");
    let f = flat(&data).unwrap();
    assert!(f.skipped[0].reason.contains("cannot be part of a name"));
    assert!(f.skipped[0].reason.len() < 200);
}

/// One long string memoized once and used as the key of many dicts: names are bounded by
/// length and in total, not only by the number of entries.
#[test]
fn name_amplification_is_refused_by_budget() {
    let long = |n: usize| {
        let mut d = b"X".to_vec();
        d.extend((n as u32).to_le_bytes());
        d.extend(std::iter::repeat_n(b'k', n));
        d
    };
    // A 1 MiB key cannot be a name component: a named skip with a short reason.
    let mut data = b"\x80\x02}".to_vec();
    data.extend(long(1 << 20));
    data.extend(b"K\x01s.");
    let f = flat(&data).unwrap();
    assert!(f.skipped[0].reason.contains("cannot be part of a name"));
    assert!(f.skipped[0].name.len() + f.skipped[0].reason.len() < 200);
    // A 60 KiB key shared by 20,000 dicts in a list: 1.2 GB of names from a 100 KB pickle.
    let mut data = b"\x80\x02]q\x00(".to_vec();
    data.extend(b"}");
    data.extend(long(60 << 10));
    data.extend(b"q\x01K\x01s");
    for _ in 1..20_000 {
        data.extend(b"}h\x01K\x01s");
    }
    data.extend(b"e.");
    let started = std::time::Instant::now();
    let e = flat(&data).err().unwrap();
    assert!(e.contains("budget: name bytes"), "{e}");
    assert!(started.elapsed().as_secs() < 5);
    // Two nested 40 KiB keys: a name of 80 KiB.
    let mut data = b"\x80\x02}".to_vec();
    data.extend(long(40 << 10));
    data.extend(b"}");
    data.extend(long(40 << 10));
    data.extend(b"K\x01ss.");
    let e = flat(&data).err().unwrap();
    assert!(e.contains("budget: name length") && e.len() < 300, "{e}");
    assert!(started.elapsed().as_secs() < 5);
}

/// The nesting error names the entry by its last characters, not a thousand of them.
#[test]
fn deep_nesting_error_is_short() {
    let n = 600;
    let mut data = vec![0x80, 2];
    data.extend(std::iter::repeat_n(b']', n));
    data.extend(std::iter::repeat_n(b'a', n - 1));
    data.push(b'.');
    let e = flat(&data).err().unwrap();
    assert!(e.contains("nested deeper") && e.len() < 200, "{e}");
}
