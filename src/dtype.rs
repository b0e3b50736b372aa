//! Element types of weights, spelled the way safetensors spells them.

use std::fmt;

/// The element types a Keras weight can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// Boolean, one byte (0 or 1).
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// IEEE half precision.
    F16,
    /// bfloat16 (the high half of a float32).
    BF16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// IEEE single precision.
    F32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 64-bit integer.
    I64,
    /// IEEE double precision.
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The name in a safetensors header (`F32`, `BF16`, ...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::U16 => "U16",
            Dtype::I16 => "I16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::U32 => "U32",
            Dtype::I32 => "I32",
            Dtype::F32 => "F32",
            Dtype::U64 => "U64",
            Dtype::I64 => "I64",
            Dtype::F64 => "F64",
        }
    }

    /// The name numpy and Keras use (`float32`, `bfloat16`, ...).
    pub fn numpy_name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::U16 => "uint16",
            Dtype::I16 => "int16",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::F32 => "float32",
            Dtype::U64 => "uint64",
            Dtype::I64 => "int64",
            Dtype::F64 => "float64",
        }
    }

    /// The `safetensors` crate's name for the type.
    pub fn to_safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as S;
        match self {
            Dtype::Bool => S::BOOL,
            Dtype::U8 => S::U8,
            Dtype::I8 => S::I8,
            Dtype::U16 => S::U16,
            Dtype::I16 => S::I16,
            Dtype::F16 => S::F16,
            Dtype::BF16 => S::BF16,
            Dtype::U32 => S::U32,
            Dtype::I32 => S::I32,
            Dtype::F32 => S::F32,
            Dtype::U64 => S::U64,
            Dtype::I64 => S::I64,
            Dtype::F64 => S::F64,
        }
    }

    /// The reverse of [`Dtype::to_safetensors`]; `None` for types Keras never stores.
    pub fn from_safetensors(dtype: safetensors::Dtype) -> Option<Dtype> {
        use safetensors::Dtype as S;
        Some(match dtype {
            S::BOOL => Dtype::Bool,
            S::U8 => Dtype::U8,
            S::I8 => Dtype::I8,
            S::U16 => Dtype::U16,
            S::I16 => Dtype::I16,
            S::F16 => Dtype::F16,
            S::BF16 => Dtype::BF16,
            S::U32 => Dtype::U32,
            S::I32 => Dtype::I32,
            S::F32 => Dtype::F32,
            S::U64 => Dtype::U64,
            S::I64 => Dtype::I64,
            S::F64 => Dtype::F64,
            _ => return None,
        })
    }

    /// Parses a numpy / Keras dtype name, as found in a model config.
    pub fn from_numpy_name(name: &str) -> Option<Dtype> {
        ALL.iter().copied().find(|d| d.numpy_name() == name)
    }
}

const ALL: [Dtype; 13] = [
    Dtype::Bool,
    Dtype::U8,
    Dtype::I8,
    Dtype::U16,
    Dtype::I16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::U32,
    Dtype::I32,
    Dtype::F32,
    Dtype::U64,
    Dtype::I64,
    Dtype::F64,
];

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.safetensors_name())
    }
}
