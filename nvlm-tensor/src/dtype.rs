//! Element types.

use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// bfloat16: the engine's GPU weight and activation type.
    BF16,
    /// IEEE half precision.
    F16,
    /// IEEE single precision: the CPU reference type.
    F32,
    /// 32-bit signed integer (token ids, positions, block tables).
    I32,
    /// 64-bit signed integer (as PyTorch stores token ids).
    I64,
    /// Bytes (image pixels, raw data).
    U8,
    /// fp8 e4m3 (reserved for quantised weights; no conversions yet).
    F8E4M3,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::BF16 | DType::F16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
            DType::U8 | DType::F8E4M3 => 1,
        }
    }

    /// True for the floating-point types.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::BF16 | DType::F16 | DType::F32 | DType::F8E4M3)
    }

    /// The safetensors spelling (`"BF16"`, `"F32"`, ...).
    pub const fn safetensors_name(self) -> &'static str {
        match self {
            DType::BF16 => "BF16",
            DType::F16 => "F16",
            DType::F32 => "F32",
            DType::I32 => "I32",
            DType::I64 => "I64",
            DType::U8 => "U8",
            DType::F8E4M3 => "F8_E4M3",
        }
    }

    /// Parses the safetensors spelling.
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        Some(match name {
            "BF16" => DType::BF16,
            "F16" => DType::F16,
            "F32" => DType::F32,
            "I32" => DType::I32,
            "I64" => DType::I64,
            "U8" => DType::U8,
            "F8_E4M3" => DType::F8E4M3,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.safetensors_name())
    }
}

/// A Rust type that is the element of some [`DType`].
pub trait Element: bytemuck::Pod + Copy + Send + Sync + 'static {
    /// The dtype this type stands for.
    const DTYPE: DType;
    /// Widens to f64 (exact for every element type).
    fn to_f64(self) -> f64;
    /// Narrows from f64 with the type's rounding (round-to-nearest-even for floats, saturating truncation for ints).
    fn from_f64(v: f64) -> Self;
}

macro_rules! float_element {
    ($t:ty, $d:expr, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
        }
    };
}

float_element!(f32, DType::F32, |x: f32| x as f64, |v: f64| v as f32);
float_element!(bf16, DType::BF16, |x: bf16| x.to_f64(), bf16::from_f64);
float_element!(f16, DType::F16, |x: f16| x.to_f64(), f16::from_f64);
float_element!(i32, DType::I32, |x: i32| x as f64, |v: f64| v as i32);
float_element!(i64, DType::I64, |x: i64| x as f64, |v: f64| v as i64);
float_element!(u8, DType::U8, |x: u8| x as f64, |v: f64| v as u8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names_round_trip() {
        for d in [
            DType::BF16,
            DType::F16,
            DType::F32,
            DType::I32,
            DType::I64,
            DType::U8,
            DType::F8E4M3,
        ] {
            assert_eq!(DType::from_safetensors_name(d.safetensors_name()), Some(d));
        }
        assert_eq!(DType::BF16.size_in_bytes(), 2);
        assert_eq!(DType::I64.size_in_bytes(), 8);
        assert_eq!(DType::from_safetensors_name("F64"), None);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to the even mantissa, 1.0.
        assert_eq!(bf16::from_f64(1.0 + 2f64.powi(-8)).to_f64(), 1.0);
        // 1 + 3*2^-8 lies between 1 + 2^-7 and 1 + 2^-6: ties go to even, 1 + 2^-6.
        assert_eq!(
            bf16::from_f64(1.0 + 3.0 * 2f64.powi(-8)).to_f64(),
            1.0 + 2f64.powi(-6)
        );
    }
}
