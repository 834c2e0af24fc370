//! The pickle interpreter.

use super::value::{Arena, Id, Value};

/// Module prefixes whose globals may appear. Anything else (`os`, `subprocess`, `builtins.eval`, ...) is refused
/// with an error naming it. Accepted globals are only recorded, never resolved or called.
pub const ALLOWED_MODULE_PREFIXES: &[&str] = &[
    "torch",
    "megatron",
    "collections.OrderedDict",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.slice",
    "builtins.complex",
    "_codecs.encode",
    "_io.BytesIO",
    "argparse.Namespace",
    "pathlib.PosixPath",
    "pathlib.PurePosixPath",
    "pathlib.WindowsPath",
    "pathlib.PureWindowsPath",
    "numpy.dtype",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "transformer_engine",
    "enum",
    "copyreg._reconstructor",
    "builtins.object",
];

fn allowed(module: &str, name: &str) -> bool {
    let full = format!("{module}.{name}");
    ALLOWED_MODULE_PREFIXES
        .iter()
        .any(|p| full == *p || full.starts_with(&format!("{p}.")) || module == *p)
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    arena: Arena,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<u64, Id>,
    mark_id: Id,
}

type Step<T> = std::result::Result<T, String>;

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or("truncated pickle")?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Step<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn line(&mut self) -> Step<String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle (no newline)")?;
        self.pos += end + 1;
        String::from_utf8(rest[..end].to_vec()).map_err(|_| "non-UTF-8 text in GLOBAL".to_string())
    }

    fn pop(&mut self) -> Step<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&self) -> Step<Id> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "empty stack".to_string())
    }

    fn pop_mark(&mut self) -> Step<Vec<Id>> {
        let mark = self.marks.pop().ok_or("MARK missing")?;
        Ok(self.stack.split_off(mark))
    }

    fn push(&mut self, value: Value) {
        let id = self.arena.push(value);
        self.stack.push(id);
    }

    fn string(&mut self, n: usize) -> Step<()> {
        let bytes = self.take(n)?;
        let s = String::from_utf8(bytes.to_vec()).map_err(|_| "invalid UTF-8 in a string".to_string())?;
        self.push(Value::Str(s));
        Ok(())
    }

    fn bytes(&mut self, n: usize) -> Step<()> {
        let bytes = self.take(n)?.to_vec();
        self.push(Value::Bytes(bytes));
        Ok(())
    }

    fn global(&mut self, module: String, name: String) -> Step<()> {
        if !allowed(&module, &name) {
            return Err(format!(
                "global `{module}.{name}` is not allowed (nothing in a checkpoint may run code)"
            ));
        }
        self.push(Value::Global { module, name });
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Step<()> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| format!("memo key {key} not set"))?;
        self.stack.push(id);
        Ok(())
    }

    fn memo_put(&mut self, key: u64) -> Step<()> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn set_items(&mut self, target: Id, items: Vec<Id>) -> Step<()> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of items".into());
        }
        let pairs: Vec<(Id, Id)> = items.chunks(2).map(|p| (p[0], p[1])).collect();
        match self.arena.get_mut(target) {
            Value::Dict(entries) => entries.extend(pairs),
            Value::Object { dict_items, .. } => dict_items.extend(pairs),
            _ => return Err("SETITEM(S) on a value that is not a dict".into()),
        }
        Ok(())
    }

    fn append_items(&mut self, target: Id, items: Vec<Id>) -> Step<()> {
        match self.arena.get_mut(target) {
            Value::List(list) | Value::Set(list) => list.extend(items),
            Value::Object { list_items, .. } => list_items.extend(items),
            _ => return Err("APPEND(S) on a value that is not a list".into()),
        }
        Ok(())
    }

    fn call(&mut self, callable: Id, args: Id) -> Step<()> {
        if !matches!(
            self.arena.get(callable),
            Value::Global { .. } | Value::Object { .. }
        ) {
            return Err("REDUCE/NEWOBJ on a value that is not a class or function".into());
        }
        if !matches!(self.arena.get(args), Value::Tuple(_)) {
            return Err("REDUCE/NEWOBJ arguments are not a tuple".into());
        }
        self.push(Value::Object {
            callable,
            args,
            state: None,
            dict_items: Vec::new(),
            list_items: Vec::new(),
        });
        Ok(())
    }

    fn run(&mut self) -> Step<Id> {
        loop {
            // Every value costs at least one input byte, which bounds the arena and stack by the input length.
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} is newer than 5"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                }
                b'.' => return self.pop(),
                b'(' => {
                    self.marks.push(self.stack.len());
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Value::Int(v as i64));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.push(long_value(bytes));
                }
                0x8b => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.push(long_value(bytes));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.push(Value::Float(v));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    self.string(n)?;
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    self.string(n)?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.le()?) as usize;
                    self.string(n)?;
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?;
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    self.bytes(n)?;
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(self.le()?) as usize;
                    self.bytes(n)?;
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items));
                }
                b']' => self.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items));
                }
                b'}' => self.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let id = self.arena.push(Value::Dict(Vec::new()));
                    self.set_items(id, items)?;
                    self.stack.push(id);
                }
                0x8f => self.push(Value::Set(Vec::new())),
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::Set(items));
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.append_items(target, items)?;
                }
                b'a' => {
                    let item = self.pop()?;
                    let target = self.top()?;
                    self.append_items(target, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.append_items(target, items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let target = self.top()?;
                    self.set_items(target, vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.set_items(target, items)?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                b'h' => {
                    let key = self.u8()? as u64;
                    self.memo_get(key)?;
                }
                b'j' => {
                    let key = u32::from_le_bytes(self.le()?) as u64;
                    self.memo_get(key)?;
                }
                b'q' => {
                    let key = self.u8()? as u64;
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = u32::from_le_bytes(self.le()?) as u64;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.arena.str(module), self.arena.str(name)) else {
                        return Err("STACK_GLOBAL needs two strings".into());
                    };
                    let (module, name) = (module.to_string(), name.to_string());
                    self.global(module, name)?;
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.call(callable, args)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.call(cls, args)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    match self.arena.get_mut(target) {
                        Value::Object { state: slot, .. } => *slot = Some(state),
                        _ => return Err("BUILD on a value that is not an object".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::PersistentId(pid));
                }
                other => {
                    return Err(format!(
                        "opcode 0x{other:02x} is not supported (protocol 0/1 text or unknown)"
                    ))
                }
            }
        }
    }
}

fn long_value(bytes: Vec<u8>) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut buf = if negative { [0xFF; 8] } else { [0; 8] };
        buf[..bytes.len()].copy_from_slice(&bytes);
        return Value::Int(i64::from_le_bytes(buf));
    }
    Value::BigInt(bytes)
}

/// Interprets a pickle: the arena of values and the id of the top-level one. Errors are plain messages; callers
/// add the file name.
pub fn load(data: &[u8]) -> Result<(Arena, Id), String> {
    let mut vm = Vm {
        data,
        pos: 0,
        arena: Arena::default(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: std::collections::HashMap::new(),
        mark_id: 0,
    };
    vm.mark_id = vm.arena.push(Value::Mark);
    let root = vm.run()?;
    Ok((vm.arena, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_code_execution_globals() {
        // pickle.dumps(os.system) at protocol 2 refers to posix.system; a classic exploit uses os.system + REDUCE.
        let exploit = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";
        let err = load(exploit).unwrap_err();
        assert!(err.contains("os.system"), "{err}");
        let eval = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.";
        assert!(load(eval).unwrap_err().contains("builtins.eval"));
    }

    #[test]
    fn reads_basic_values_and_memo_identity() {
        // pickle.dumps({'a': [1, 2], 'b': (3.5, 'x')}, protocol=2) followed by a memo reference, hand-assembled:
        // [ ]  q0  then APPEND 1, BINGET 0, TUPLE2 -> (list, list) sharing one list.
        let data = b"\x80\x02]q\x00K\x01ah\x00\x86q\x01.";
        let (arena, root) = load(data).unwrap();
        let items = arena.items(root).unwrap();
        assert_eq!(items[0], items[1], "memo keeps identity");
        assert_eq!(arena.items(items[0]).unwrap().len(), 1);
        assert!(load(b"\x80\x02K").is_err(), "truncated");
        assert!(load(b"\x80\x02.").is_err(), "stop on an empty stack");
    }
}
