//! Pickle values, stored in an arena so that memoised objects keep their identity (a `BUILD` or `APPEND` on an
//! object is seen through every reference to it).

/// Index of a value in an [`Arena`].
pub type Id = usize;

/// One unpickled value. Containers hold ids of other values.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A larger integer, as little-endian two's-complement bytes (LONG1/LONG4).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// bytes / bytearray.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict, keys in insertion order (keys may be any value, e.g. DCP's `MetadataIndex` objects).
    Dict(Vec<(Id, Id)>),
    /// A set or frozenset.
    Set(Vec<Id>),
    /// A global reference `module.name` (never resolved to code).
    Global {
        /// Module path.
        module: String,
        /// Attribute name.
        name: String,
    },
    /// The recorded result of calling `callable(*args)` (REDUCE) or `cls.__new__(cls, *args)` (NEWOBJ), with the
    /// state a later `BUILD` gave it, and items that `SETITEMS`/`APPENDS` added to it (e.g. an `OrderedDict`).
    Object {
        /// The callable or class (a `Global` id).
        callable: Id,
        /// The argument tuple.
        args: Id,
        /// The `BUILD` state, if any.
        state: Option<Id>,
        /// Items set on it as a mapping.
        dict_items: Vec<(Id, Id)>,
        /// Items appended to it as a list.
        list_items: Vec<Id>,
    },
    /// A persistent id (`BINPERSID`), e.g. a torch storage reference tuple.
    PersistentId(Id),
    /// The MARK sentinel (only on the stack).
    Mark,
}

/// All values of one pickle.
#[derive(Debug, Default)]
pub struct Arena {
    values: Vec<Value>,
}

impl Arena {
    /// Stores `value`, returning its id.
    pub fn push(&mut self, value: Value) -> Id {
        self.values.push(value);
        self.values.len() - 1
    }

    /// The value `id`.
    pub fn get(&self, id: Id) -> &Value {
        &self.values[id]
    }

    /// The value `id`, mutably.
    pub fn get_mut(&mut self, id: Id) -> &mut Value {
        &mut self.values[id]
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    // ------------------------------------------------------------------ typed views (None when the shape differs)

    /// An int.
    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(v) => Some(*v),
            Value::Bool(b) => Some(*b as i64),
            Value::BigInt(bytes) if bytes.len() <= 8 => {
                let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
                let mut buf = if negative { [0xFF; 8] } else { [0; 8] };
                buf[..bytes.len()].copy_from_slice(bytes);
                Some(i64::from_le_bytes(buf))
            }
            _ => None,
        }
    }

    /// A str.
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn items(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(items) | Value::List(items) | Value::Set(items) => Some(items),
            _ => None,
        }
    }

    /// `module.name` of a global, or of the callable of an object.
    pub fn class_name(&self, id: Id) -> Option<String> {
        match self.get(id) {
            Value::Global { module, name } => Some(format!("{module}.{name}")),
            Value::Object { callable, .. } => self.class_name(*callable),
            _ => None,
        }
    }

    /// The last component of [`Arena::class_name`] (tolerant of module moves between versions).
    pub fn short_class(&self, id: Id) -> Option<String> {
        self.class_name(id)
            .map(|n| n.rsplit('.').next().unwrap_or_default().to_string())
    }

    /// The args tuple items of an object.
    pub fn object_args(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Object { args, .. } => self.items(*args),
            _ => None,
        }
    }

    /// The BUILD state of an object.
    pub fn object_state(&self, id: Id) -> Option<Id> {
        match self.get(id) {
            Value::Object { state, .. } => *state,
            _ => None,
        }
    }

    /// The entries of a dict, or the items an object received as a mapping (`OrderedDict`).
    pub fn dict_entries(&self, id: Id) -> Option<&[(Id, Id)]> {
        match self.get(id) {
            Value::Dict(entries) => Some(entries),
            Value::Object { dict_items, .. } => Some(dict_items),
            _ => None,
        }
    }

    /// `dict[key]` for a str key.
    pub fn dict_get(&self, id: Id, key: &str) -> Option<Id> {
        self.dict_entries(id)?
            .iter()
            .find(|(k, _)| self.str(*k) == Some(key))
            .map(|&(_, v)| v)
    }

    /// An attribute of an object built from a dict state (`obj.__dict__[key]`).
    pub fn attr(&self, id: Id, key: &str) -> Option<Id> {
        self.dict_get(self.object_state(id)?, key)
    }

    /// A `torch.Size((d0, d1, ...))` or a plain tuple of ints.
    pub fn shape(&self, id: Id) -> Option<Vec<u64>> {
        let items = match self.get(id) {
            Value::Object { .. } => self.items(*self.object_args(id)?.first()?)?,
            _ => self.items(id)?,
        };
        items
            .iter()
            .map(|&d| self.int(d).and_then(|v| u64::try_from(v).ok()))
            .collect()
    }
}
