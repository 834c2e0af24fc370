//! Element types as PyTorch stores them.

use nvlm_tensor::DType;

/// A stored element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredDType {
    /// float64
    F64,
    /// float32
    F32,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// int32
    I32,
    /// int16
    I16,
    /// int8
    I8,
    /// uint8
    U8,
    /// bool (one byte)
    Bool,
    /// uint16
    U16,
    /// uint32
    U32,
    /// uint64
    U64,
    /// float8_e4m3fn
    F8E4M3,
    /// float8_e5m2
    F8E5M2,
}

impl StoredDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        use StoredDType::*;
        match self {
            F64 | I64 | U64 => 8,
            F32 | I32 | U32 => 4,
            F16 | BF16 | I16 | U16 => 2,
            I8 | U8 | Bool | F8E4M3 | F8E5M2 => 1,
        }
    }

    /// From a torch dtype name (`bfloat16`, `float32`, ...).
    pub fn from_torch_name(name: &str) -> Option<Self> {
        use StoredDType::*;
        Some(match name {
            "float64" | "double" => F64,
            "float32" | "float" => F32,
            "float16" | "half" => F16,
            "bfloat16" => BF16,
            "int64" | "long" => I64,
            "int32" | "int" => I32,
            "int16" | "short" => I16,
            "int8" => I8,
            "uint8" => U8,
            "bool" => Bool,
            "uint16" => U16,
            "uint32" => U32,
            "uint64" => U64,
            "float8_e4m3fn" => F8E4M3,
            "float8_e5m2" => F8E5M2,
            _ => return None,
        })
    }

    /// From a typed storage class name (`BFloat16Storage`, ...).
    pub fn from_storage_class(name: &str) -> Option<Self> {
        use StoredDType::*;
        Some(match name {
            "DoubleStorage" => F64,
            "FloatStorage" => F32,
            "HalfStorage" => F16,
            "BFloat16Storage" => BF16,
            "LongStorage" => I64,
            "IntStorage" => I32,
            "ShortStorage" => I16,
            "CharStorage" => I8,
            "ByteStorage" => U8,
            "BoolStorage" => Bool,
            _ => return None,
        })
    }

    /// From a zarr v2 dtype string (`<f4`, `bfloat16`, ...).
    pub fn from_zarr(name: &str) -> Option<Self> {
        use StoredDType::*;
        Some(match name {
            "bfloat16" => BF16,
            "<f8" => F64,
            "<f4" => F32,
            "<f2" => F16,
            "<i8" => I64,
            "<i4" => I32,
            "<i2" => I16,
            "|i1" => I8,
            "|u1" => U8,
            "|b1" => Bool,
            "<u2" => U16,
            "<u4" => U32,
            "<u8" => U64,
            _ => return None,
        })
    }

    /// The safetensors spelling.
    pub fn safetensors_name(self) -> &'static str {
        use StoredDType::*;
        match self {
            F64 => "F64",
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            I64 => "I64",
            I32 => "I32",
            I16 => "I16",
            I8 => "I8",
            U8 => "U8",
            Bool => "BOOL",
            U16 => "U16",
            U32 => "U32",
            U64 => "U64",
            F8E4M3 => "F8_E4M3",
            F8E5M2 => "F8_E5M2",
        }
    }

    /// From the safetensors spelling.
    pub fn from_safetensors_name(name: &str) -> Option<Self> {
        use StoredDType::*;
        [
            F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool, U16, U32, U64, F8E4M3, F8E5M2,
        ]
        .into_iter()
        .find(|d| d.safetensors_name() == name)
    }

    /// The engine's dtype, when it has one.
    pub fn engine(self) -> Option<DType> {
        use StoredDType::*;
        Some(match self {
            F32 => DType::F32,
            F16 => DType::F16,
            BF16 => DType::BF16,
            I64 => DType::I64,
            I32 => DType::I32,
            U8 => DType::U8,
            F8E4M3 => DType::F8E4M3,
            _ => return None,
        })
    }
}

impl std::fmt::Display for StoredDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.safetensors_name())
    }
}
