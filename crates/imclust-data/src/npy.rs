//! Reading and writing NumPy `.npy` files (format versions 1.0, 2.0 and 3.0).
//!
//! The core works on bytes in memory ([`read_matrix_f32_bytes`], [`read_labels_bytes`],
//! [`encode_f32`], ...), so that arrays can come from or go to object storage as well as
//! files; the path functions ([`read_matrix_f32`], [`read_labels`], [`write_f32`], ...) are
//! thin wrappers that read a whole file at once, or write one atomically.
//!
//! Only what imclust needs is supported: reading 2-D little-endian `float32`/`float16`
//! matrices in C order and 1-D integer label arrays, and writing C-order `float32`,
//! `float16`, `int32` and `int64` arrays. Everything else is rejected with an error that
//! names the file, the dtype and the shape, and says how to convert the array with numpy.
//!
//! The headers written are byte-for-byte those `numpy.save` writes (version 1.0 unless the
//! header needs 2.0, the spare space numpy leaves for growing the first axis, and padding
//! so that the data starts at a multiple of 64 bytes).

use std::fmt::{self, Write as _};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use crate::error::{DataError, Result};
use crate::fsutil::write_atomic_with;

/// The six bytes every `.npy` file starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The data section of a file written here starts at a multiple of this many bytes.
const ARRAY_ALIGN: usize = 64;
/// numpy leaves room in the header for the growth axis to reach this many digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Nesting limit of the header parser, far above anything numpy writes.
const MAX_DEPTH: usize = 32;
/// Elements converted per batch when writing or converting float16.
const BATCH: usize = 16 * 1024;

/// The parsed header of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The dtype descriptor, e.g. `<f4`, `|u1`, `>i8`.
    pub descr: String,
    /// `true` when the data is stored column-major.
    pub fortran_order: bool,
    /// The array's shape; empty for a 0-d array.
    pub shape: Vec<usize>,
    /// Offset in bytes of the first data byte from the start of the file.
    pub data_offset: usize,
}

impl Header {
    /// The number of elements, or `None` if it overflows `usize`.
    pub fn num_elements(&self) -> Option<usize> {
        num_elements(&self.shape)
    }

    /// The size in bytes of one element for plain numeric dtypes (`b`, `i`, `u`, `f`, `c`
    /// kinds), `None` for anything else.
    pub fn item_size(&self) -> Option<usize> {
        item_size(&self.descr)
    }

    /// The expected length of the data section in bytes, when it is known and fits `usize`.
    pub fn data_len(&self) -> Option<usize> {
        self.num_elements()?.checked_mul(self.item_size()?)
    }
}

/// A dense row-major `rows` x `cols` matrix of `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i`. Panics if `i >= rows`.
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.rows, "row {i} out of range for {} rows", self.rows);
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// Reads a 2-D little-endian `float32` (`<f4`) or `float16` (`<f2`, converted to `f32`)
/// array in C order. Anything else is an error naming the file, the dtype and the shape.
pub fn read_matrix_f32(path: &Path) -> Result<Matrix> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    matrix_from_bytes(path, &bytes)
}

/// [`read_matrix_f32`] for the bytes of a `.npy` file; `name` (a file name, object key or
/// URL) is only used in error messages.
pub fn read_matrix_f32_bytes(name: &str, bytes: &[u8]) -> Result<Matrix> {
    matrix_from_bytes(Path::new(name), bytes)
}

/// Reads integer labels: a 1-D array, or a 2-D array of shape `(n, 1)`, of dtype `<i8`,
/// `<i4`, `<i2`, `i1`, `<u8`, `<u4`, `<u2` or `u1` (little-endian). `uint64` values above
/// `i64::MAX` are an error.
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    labels_from_bytes(path, &bytes)
}

/// [`read_labels`] for the bytes of a `.npy` file; `name` is only used in error messages.
pub fn read_labels_bytes(name: &str, bytes: &[u8]) -> Result<Vec<i64>> {
    labels_from_bytes(Path::new(name), bytes)
}

/// Raw 8-bit pixels: `N x H x W` (grayscale) or `N x H x W x C` (C = 1 or 3), C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Pixels {
    /// The `i`-th image, `H x W x C` bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.height * self.width * self.channels;
        &self.data[i * n..(i + 1) * n]
    }
}

/// Reads a `uint8` (`|u1`) image array of shape `(N, H, W)` or `(N, H, W, C)` with C = 1 or 3,
/// in C order (e.g. CIFAR, STL-10 or MNIST pixels saved by numpy).
pub fn read_pixels(path: &Path) -> Result<Pixels> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    read_pixels_bytes(path, &bytes)
}

/// [`read_pixels`] for a file already in memory; `path` names it in errors.
pub fn read_pixels_bytes(path: &Path, bytes: &[u8]) -> Result<Pixels> {
    let npy_err = |reason: String| DataError::npy(path, reason);
    let header = parse_header(bytes).map_err(npy_err)?;
    let shape = &header.shape;
    let ok_shape = match shape.len() {
        3 => true,
        4 => shape[3] == 1 || shape[3] == 3,
        _ => false,
    };
    if !matches!(header.descr.as_str(), "|u1" | "<u1") || header.fortran_order || !ok_shape {
        return Err(npy_err(format!(
            "expected uint8 pixels of shape (N, H, W) or (N, H, W, C) with C = 1 or 3 in C order; got dtype '{}' shape {}{}: convert with numpy `np.ascontiguousarray(x.astype('uint8'))`, channels last",
            header.descr,
            ShapeRepr(shape),
            if header.fortran_order { " (Fortran order)" } else { "" }
        )));
    }
    let data = data_section(&header, bytes).map_err(npy_err)?.to_vec();
    Ok(Pixels { count: shape[0], height: shape[1], width: shape[2], channels: shape.get(3).copied().unwrap_or(1), data })
}

/// Reads and parses only the header of a `.npy` file (a few hundred bytes, whatever the
/// size of the array), e.g. to learn its shape. The data section is not checked.
pub fn read_header(path: &Path) -> Result<Header> {
    let npy_err = |reason: String| DataError::npy(path, reason);
    let mut file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut buf = Vec::new();
    (&mut file)
        .take(12)
        .read_to_end(&mut buf)
        .map_err(|e| DataError::io(path, e))?;
    let (_, _, data_offset) = preamble(&buf).map_err(npy_err)?;
    let rest = (data_offset - buf.len().min(data_offset)) as u64;
    file.take(rest)
        .read_to_end(&mut buf)
        .map_err(|e| DataError::io(path, e))?;
    parse_header(&buf).map_err(npy_err)
}

fn matrix_from_bytes(path: &Path, bytes: &[u8]) -> Result<Matrix> {
    let npy_err = |reason: String| DataError::npy(path, reason);
    let header = parse_header(bytes).map_err(npy_err)?;
    let half = match header.descr.as_str() {
        "<f4" => false,
        "<f2" => true,
        _ => return Err(npy_err(matrix_complaint(&header))),
    };
    if header.fortran_order || header.shape.len() != 2 {
        return Err(npy_err(matrix_complaint(&header)));
    }
    let data = data_section(&header, bytes).map_err(npy_err)?;
    let (rows, cols) = (header.shape[0], header.shape[1]);
    let data = if half {
        f16_le_to_f32(data)
    } else {
        let (chunks, rest) = data.as_chunks::<4>();
        debug_assert!(rest.is_empty());
        chunks.iter().map(|&c| f32::from_le_bytes(c)).collect()
    };
    Ok(Matrix { rows, cols, data })
}

/// What is wrong with a header for [`read_matrix_f32`], and how to fix it.
fn matrix_complaint(h: &Header) -> String {
    let mut hints = Vec::new();
    match h.descr.as_str() {
        "<f4" | "<f2" => {}
        ">f4" | ">f2" => hints.push(format!(
            "convert the big-endian data to little-endian with numpy `x.astype('<{}')`",
            &h.descr[1..]
        )),
        _ => hints.push("convert with numpy `x.astype('float32')`".to_string()),
    }
    match h.shape.len() {
        2 => {}
        0 | 1 => hints.push(
            "reshape it to one row per item with numpy `x.reshape(n, -1)` (n = number of items)"
                .to_string(),
        ),
        _ => hints
            .push("flatten each item into one row with numpy `x.reshape(len(x), -1)`".to_string()),
    }
    if h.fortran_order {
        hints.push("save a C-order copy with numpy `np.ascontiguousarray(x)`".to_string());
    }
    format!(
        "expected a 2-D float32 or float16 array in C order; got dtype '{}' shape {}{}: {}",
        h.descr,
        ShapeRepr(&h.shape),
        if h.fortran_order {
            " in Fortran order"
        } else {
            ""
        },
        hints.join("; ")
    )
}

/// Integer dtypes accepted as labels.
#[derive(Clone, Copy)]
enum IntKind {
    I1,
    I2,
    I4,
    I8,
    U1,
    U2,
    U4,
    U8,
}

impl IntKind {
    fn from_descr(descr: &str) -> Option<IntKind> {
        Some(match descr {
            "|i1" | "<i1" => IntKind::I1,
            "<i2" => IntKind::I2,
            "<i4" => IntKind::I4,
            "<i8" => IntKind::I8,
            "|u1" | "<u1" => IntKind::U1,
            "<u2" => IntKind::U2,
            "<u4" => IntKind::U4,
            "<u8" => IntKind::U8,
            _ => return None,
        })
    }
}

fn labels_from_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<i64>> {
    let npy_err = |reason: String| DataError::npy(path, reason);
    let header = parse_header(bytes).map_err(npy_err)?;
    let kind = IntKind::from_descr(&header.descr);
    let shape_ok = matches!(header.shape.as_slice(), [_] | [_, 1]);
    // For the accepted shapes C and Fortran order lay the data out the same way.
    let Some(kind) = kind.filter(|_| shape_ok) else {
        return Err(npy_err(labels_complaint(&header, kind.is_some())));
    };
    let data = data_section(&header, bytes).map_err(npy_err)?;
    Ok(match kind {
        IntKind::I1 => data.iter().map(|&b| i64::from(b as i8)).collect(),
        IntKind::U1 => data.iter().map(|&b| i64::from(b)).collect(),
        IntKind::I2 => le_map(data, |c| i64::from(i16::from_le_bytes(c))),
        IntKind::U2 => le_map(data, |c| i64::from(u16::from_le_bytes(c))),
        IntKind::I4 => le_map(data, |c| i64::from(i32::from_le_bytes(c))),
        IntKind::U4 => le_map(data, |c| i64::from(u32::from_le_bytes(c))),
        IntKind::I8 => le_map(data, i64::from_le_bytes),
        IntKind::U8 => {
            let (chunks, _) = data.as_chunks::<8>();
            let mut out = Vec::with_capacity(chunks.len());
            for (i, &c) in chunks.iter().enumerate() {
                let v = u64::from_le_bytes(c);
                let v = i64::try_from(v).map_err(|_| {
                    npy_err(format!(
                        "label {v} at index {i} does not fit in a signed 64-bit integer \
                         (at most {}): labels must be small non-negative integers",
                        i64::MAX
                    ))
                })?;
                out.push(v);
            }
            out
        }
    })
}

/// What is wrong with a header for [`read_labels`], and how to fix it.
fn labels_complaint(h: &Header, dtype_ok: bool) -> String {
    let mut hints = Vec::new();
    if !dtype_ok {
        let d = h.descr.as_bytes();
        let big_endian_int = d.len() >= 2 && d[0] == b'>' && matches!(d[1], b'i' | b'u');
        hints.push(if big_endian_int {
            "convert the big-endian data to little-endian with numpy `x.astype('<i8')`"
        } else {
            "convert with numpy `x.astype('int64')`"
        });
    }
    match h.shape.as_slice() {
        [_] | [_, 1] => {}
        [_, _] => hints.push("pass one label per item, e.g. one column with numpy `x[:, 0]`"),
        _ => hints.push("pass one label per item, a 1-D array"),
    }
    format!(
        "expected a 1-D integer array of labels (or shape (n, 1)); got dtype '{}' shape {}: {}",
        h.descr,
        ShapeRepr(&h.shape),
        hints.join("; ")
    )
}

fn le_map<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> i64) -> Vec<i64> {
    let (chunks, rest) = data.as_chunks::<N>();
    debug_assert!(rest.is_empty());
    chunks.iter().map(|&c| f(c)).collect()
}

fn f16_le_to_f32(data: &[u8]) -> Vec<f32> {
    let (chunks, rest) = data.as_chunks::<2>();
    debug_assert!(rest.is_empty());
    let mut out = vec![0f32; chunks.len()];
    let mut bits = vec![0u16; BATCH.min(chunks.len())];
    for (src, dst) in chunks.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
        let bits = &mut bits[..src.len()];
        for (b, &c) in bits.iter_mut().zip(src) {
            *b = u16::from_le_bytes(c);
        }
        bits.reinterpret_cast::<f16>().convert_to_f32_slice(dst);
    }
    out
}

/// The data section of `bytes`, checked to be exactly as long as the header's dtype and
/// shape require. The dtype must be one with a known item size.
fn data_section<'a>(h: &Header, bytes: &'a [u8]) -> std::result::Result<&'a [u8], String> {
    let item = h
        .item_size()
        .ok_or_else(|| format!("unsupported dtype '{}'", h.descr))?;
    let expected = h.data_len().ok_or_else(|| {
        format!(
            "shape {} of dtype '{}' is too large to address",
            ShapeRepr(&h.shape),
            h.descr
        )
    })?;
    let actual = bytes.len() - h.data_offset;
    let expected_total = h.data_offset.saturating_add(expected);
    let what = |found: &str| {
        format!(
            "shape {} of dtype '{}' ({item} bytes each) needs {expected} data bytes after the \
             {}-byte header ({expected_total} bytes in all), but {found}",
            ShapeRepr(&h.shape),
            h.descr,
            h.data_offset,
        )
    };
    if actual < expected {
        Err(format!(
            "truncated data: {}; the file is incomplete, copy or write it again",
            what(&format!(
                "only {actual} are present ({} bytes in all)",
                bytes.len()
            ))
        ))
    } else if actual > expected {
        Err(format!(
            "trailing bytes after the array: {}; the file is corrupt or is not a single .npy \
             array",
            what(&format!(
                "{actual} are present ({} bytes in all, {} too many)",
                bytes.len(),
                actual - expected
            ))
        ))
    } else {
        Ok(&bytes[h.data_offset..])
    }
}

// ---------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------

/// Parses the header of a `.npy` file from its first bytes (at least up to the end of
/// the header; the data section is not looked at). Errors say what is wrong.
pub fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    let (version, start, data_offset) = preamble(bytes)?;
    if bytes.len() < data_offset {
        return Err(format!(
            "truncated header: the header should be {} bytes long, but only {} bytes follow \
             the {start}-byte preamble; the file is incomplete or corrupt",
            data_offset - start,
            bytes.len() - start
        ));
    }
    let raw = &bytes[start..data_offset];
    let text: String = if version == 3 {
        String::from_utf8(raw.to_vec())
            .map_err(|_| "the header of this version 3.0 file is not valid UTF-8".to_string())?
    } else {
        raw.iter().map(|&b| char::from(b)).collect() // latin-1
    };
    let chars: Vec<char> = text.chars().collect();
    let malformed = |why: String| {
        format!(
            "malformed header ({why}) in {}; the file is corrupt or was not written by numpy",
            Excerpt(&text)
        )
    };
    let mut parser = Parser { s: &chars, i: 0 };
    let value = parser.document().map_err(malformed)?;
    let Value::Dict(items) = value else {
        return Err(malformed(format!(
            "expected a dictionary, found {}",
            value.type_name()
        )));
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, val) in items {
        let Value::Str(key) = key else {
            return Err(malformed(format!("non-string key {key}")));
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => return Err(malformed(format!("unexpected key '{key}'"))),
        };
        if slot.replace(val).is_some() {
            return Err(malformed(format!("key '{key}' appears twice")));
        }
    }
    let missing = |k: &str| malformed(format!("key '{k}' is missing"));
    let descr = match descr.ok_or_else(|| missing("descr"))? {
        Value::Str(s) => s,
        v @ (Value::List(_) | Value::Tuple(_)) => {
            return Err(format!(
                "structured (record) dtypes are not supported: descr is {v}; store a plain \
                 numeric array"
            ));
        }
        v => return Err(malformed(format!("'descr' is {v}, not a string"))),
    };
    let fortran_order = match fortran.ok_or_else(|| missing("fortran_order"))? {
        Value::Bool(b) => b,
        v => {
            return Err(malformed(format!(
                "'fortran_order' is {v}, not True or False"
            )));
        }
    };
    let shape = match shape.ok_or_else(|| missing("shape"))? {
        Value::Tuple(dims) | Value::List(dims) => dims
            .iter()
            .map(|d| match d {
                Value::Int(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                malformed(format!(
                    "'shape' must hold non-negative integers, found {}",
                    Value::Tuple(dims.clone())
                ))
            })?,
        v => return Err(malformed(format!("'shape' is {v}, not a tuple"))),
    };
    Ok(Header {
        descr,
        fortran_order,
        shape,
        data_offset,
    })
}

/// Checks the magic, version and header length field; returns (major version, offset of
/// the header text, offset of the data). Does not check that the header is all there.
fn preamble(bytes: &[u8]) -> std::result::Result<(u8, usize, usize), String> {
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(format!(
            "not a .npy file: it starts with {} instead of the magic bytes \"\\x93NUMPY\"",
            Escaped(&bytes[..bytes.len().min(8)])
        ));
    }
    let too_short = || {
        format!(
            "not a .npy file, or a truncated one: only {} bytes, too short for a .npy header",
            bytes.len()
        )
    };
    if bytes.len() < 8 {
        return Err(too_short());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let len_size = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(format!(
                "unsupported .npy format version {major}.{minor} (this reader supports 1.0, \
                 2.0 and 3.0)"
            ));
        }
    };
    let start = 8 + len_size;
    if bytes.len() < start {
        return Err(too_short());
    }
    let header_len = if len_size == 2 {
        usize::from(u16::from_le_bytes([bytes[8], bytes[9]]))
    } else {
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        usize::try_from(len).map_err(|_| format!("header length {len} is too large"))?
    };
    let data_offset = start
        .checked_add(header_len)
        .ok_or_else(|| format!("header length {header_len} is too large"))?;
    Ok((major, start, data_offset))
}

/// A Python literal, as far as `.npy` headers use them.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::None => "None",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dictionary",
        }
    }
}

/// Python-like repr, for error messages.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{v}")?;
            }
            Ok(())
        }
        match self {
            Value::Str(s) => write!(f, "'{}'", s.escape_debug()),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::None => f.write_str("None"),
            Value::Tuple(items) => {
                f.write_char('(')?;
                seq(f, items)?;
                f.write_str(if items.len() == 1 { ",)" } else { ")" })
            }
            Value::List(items) => {
                f.write_char('[')?;
                seq(f, items)?;
                f.write_char(']')
            }
            Value::Dict(items) => {
                f.write_char('{')?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

/// A recursive-descent parser for the Python literals found in `.npy` headers: strings
/// (optionally `u`/`b`/`r`-prefixed), integers (optionally with Python 2's `L` suffix),
/// `True`, `False`, `None`, tuples, lists and dictionaries.
struct Parser<'a> {
    s: &'a [char],
    i: usize,
}

type PResult<T> = std::result::Result<T, String>;

impl Parser<'_> {
    fn document(&mut self) -> PResult<Value> {
        let v = self.value(0)?;
        self.skip_ws();
        match self.peek() {
            None => Ok(v),
            Some(c) => Err(self.unexpected(c, "end of header")),
        }
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(
            self.peek(),
            Some(' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
        ) {
            self.i += 1;
        }
    }

    fn unexpected(&self, c: char, wanted: &str) -> String {
        format!("expected {wanted} at character {}, found {c:?}", self.i)
    }

    fn value(&mut self, depth: usize) -> PResult<Value> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".to_string());
        }
        self.skip_ws();
        let Some(c) = self.peek() else {
            return Err("unexpected end of header".to_string());
        };
        match c {
            '\'' | '"' => self.string().map(Value::Str),
            '(' => self.sequence(')', depth).map(|(mut items, comma)| {
                if items.len() == 1 && !comma {
                    items.pop().expect("one item") // a parenthesised value, not a tuple
                } else {
                    Value::Tuple(items)
                }
            }),
            '[' => self
                .sequence(']', depth)
                .map(|(items, _)| Value::List(items)),
            '{' => self.dict(depth),
            '0'..='9' | '-' | '+' => self.int(),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.i += 1;
                }
                let word: String = self.s[start..self.i].iter().collect();
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::None),
                    "u" | "U" | "b" | "B" | "r" | "R"
                        if matches!(self.peek(), Some('\'' | '"')) =>
                    {
                        self.string().map(Value::Str)
                    }
                    _ => Err(format!("unknown name '{word}' at character {start}")),
                }
            }
            c => Err(self.unexpected(c, "a value")),
        }
    }

    fn string(&mut self) -> PResult<String> {
        let start = self.i;
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(format!("unterminated string starting at character {start}"));
            };
            self.i += 1;
            match c {
                c if c == quote => return Ok(out),
                '\n' => return Err(format!("unterminated string starting at character {start}")),
                '\\' => {
                    let Some(e) = self.peek() else { continue };
                    self.i += 1;
                    match e {
                        '\\' | '\'' | '"' => out.push(e),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        _ => {
                            out.push('\\');
                            out.push(e);
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    /// Items up to `close`, and whether a comma followed the last one.
    fn sequence(&mut self, close: char, depth: usize) -> PResult<(Vec<Value>, bool)> {
        self.i += 1; // the opening bracket
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok((items, comma));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.i += 1;
                    comma = true;
                }
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok((items, false));
                }
                Some(c) => return Err(self.unexpected(c, &format!("',' or '{close}'"))),
                None => return Err("unexpected end of header".to_string()),
            }
        }
    }

    fn dict(&mut self, depth: usize) -> PResult<Value> {
        self.i += 1; // '{'
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some('}') {
                self.i += 1;
                return Ok(Value::Dict(items));
            }
            let key = self.value(depth + 1)?;
            self.skip_ws();
            match self.peek() {
                Some(':') => self.i += 1,
                Some(c) => return Err(self.unexpected(c, "':'")),
                None => return Err("unexpected end of header".to_string()),
            }
            let val = self.value(depth + 1)?;
            items.push((key, val));
            self.skip_ws();
            match self.peek() {
                Some(',') => self.i += 1,
                Some('}') => {
                    self.i += 1;
                    return Ok(Value::Dict(items));
                }
                Some(c) => return Err(self.unexpected(c, "',' or '}'")),
                None => return Err("unexpected end of header".to_string()),
            }
        }
    }

    fn int(&mut self) -> PResult<Value> {
        let start = self.i;
        let negative = match self.peek() {
            Some('-') => {
                self.i += 1;
                true
            }
            Some('+') => {
                self.i += 1;
                false
            }
            _ => false,
        };
        let mut n: i128 = 0;
        let mut digits = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(i128::from(d)))
                .ok_or_else(|| format!("integer too large at character {start}"))?;
            digits += 1;
            self.i += 1;
        }
        if digits == 0 {
            return Err(format!("expected digits at character {}", self.i));
        }
        if matches!(self.peek(), Some('L' | 'l')) {
            self.i += 1; // Python 2 long
        }
        if self.peek().is_some_and(|c| c.is_alphanumeric() || c == '.') {
            return Err(format!("unsupported number at character {start}"));
        }
        Ok(Value::Int(if negative { -n } else { n }))
    }
}

// ---------------------------------------------------------------------------------------
// Encoding and writing
// ---------------------------------------------------------------------------------------

/// Encodes a C-order `.npy` header for `shape` and `descr` exactly as `numpy.save` does:
/// format version 1.0 unless the header is too long for it (then 2.0, or 3.0 if `descr`
/// is not latin-1), padded with spaces and a final newline so that the data starts at a
/// multiple of 64 bytes.
pub fn encode_header(shape: &[usize], descr: &str) -> Vec<u8> {
    let mut dict = String::from("{'descr': '");
    for c in descr.chars() {
        if matches!(c, '\\' | '\'') {
            dict.push('\\');
        }
        dict.push(c);
    }
    let _ = write!(
        dict,
        "', 'fortran_order': False, 'shape': {}, }}",
        ShapeRepr(shape)
    );
    // numpy leaves room for the first axis to grow to GROWTH_AXIS_MAX_DIGITS digits.
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        dict.extend(std::iter::repeat_n(
            ' ',
            GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
        ));
    }
    let latin1 = dict.chars().all(|c| u32::from(c) < 256);
    let text: Vec<u8> = if latin1 {
        dict.chars().map(|c| c as u8).collect() // checked above: each fits a byte
    } else {
        dict.into_bytes()
    };
    let hlen = text.len() + 1; // + '\n'
    let padded_len = |len_size: usize| {
        let pad = ARRAY_ALIGN - (MAGIC.len() + 2 + len_size + hlen) % ARRAY_ALIGN;
        hlen + pad
    };
    let (major, len_field): (u8, Vec<u8>) = match u16::try_from(padded_len(2)) {
        Ok(len) if latin1 => (1, len.to_le_bytes().to_vec()),
        _ => {
            let len = u32::try_from(padded_len(4)).expect(".npy header longer than 4 GiB");
            (if latin1 { 2 } else { 3 }, len.to_le_bytes().to_vec())
        }
    };
    let header_len = padded_len(len_field.len());
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + len_field.len() + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    out.extend_from_slice(&len_field);
    out.extend_from_slice(&text);
    out.resize(out.len() + header_len - hlen, b' ');
    out.push(b'\n');
    debug_assert_eq!(out.len() % ARRAY_ALIGN, 0);
    out
}

/// A complete `.npy` file: [`encode_header`] followed by `data_bytes`, which must hold
/// exactly the elements of `shape` for the plain numeric dtype `descr` (e.g. `<f4`).
pub fn encode(
    shape: &[usize],
    descr: &str,
    data_bytes: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let item = item_size(descr).ok_or_else(|| format!("unsupported dtype '{descr}'"))?;
    let expected = num_elements(shape)
        .and_then(|n| n.checked_mul(item))
        .ok_or_else(|| format!("shape {} is too large", ShapeRepr(shape)))?;
    if data_bytes.len() != expected {
        return Err(format!(
            "shape {} of dtype '{descr}' needs {expected} data bytes, got {}",
            ShapeRepr(shape),
            data_bytes.len()
        ));
    }
    let mut out = encode_header(shape, descr);
    out.extend_from_slice(data_bytes);
    Ok(out)
}

/// A `.npy` file (`<f4`) of `data` with `shape`, in memory.
pub fn encode_f32(shape: &[usize], data: &[f32]) -> std::result::Result<Vec<u8>, String> {
    encode_with::<F4>(shape, data)
}

/// A `.npy` file (`<f2`) of `data` converted to float16 (round to nearest even), in memory.
pub fn encode_f16(shape: &[usize], data: &[f32]) -> std::result::Result<Vec<u8>, String> {
    encode_with::<F2>(shape, data)
}

/// A `.npy` file (`<i4`) of `data` with `shape`, in memory.
pub fn encode_i32(shape: &[usize], data: &[i32]) -> std::result::Result<Vec<u8>, String> {
    encode_with::<I4>(shape, data)
}

/// A `.npy` file (`<i8`) of `data` with `shape`, in memory.
pub fn encode_i64(shape: &[usize], data: &[i64]) -> std::result::Result<Vec<u8>, String> {
    encode_with::<I8>(shape, data)
}

/// Writes `data` (row-major, `shape`) as a `<f4` `.npy` file, atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_with::<F4>(path, shape, data)
}

/// Writes `data` (row-major, `shape`) converted to float16 as a `<f2` `.npy` file,
/// atomically. Values beyond the float16 range become infinite.
pub fn write_f16(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_with::<F2>(path, shape, data)
}

/// Writes `data` (row-major, `shape`) as a `<i4` `.npy` file, atomically.
pub fn write_i32(path: &Path, shape: &[usize], data: &[i32]) -> Result<()> {
    write_with::<I4>(path, shape, data)
}

/// Writes `data` (row-major, `shape`) as a `<i8` `.npy` file, atomically.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    write_with::<I8>(path, shape, data)
}

/// How elements of one dtype are written.
trait Codec {
    type Item: Copy;
    const DESCR: &'static str;
    /// Appends the little-endian encoding of `src` to `dst`.
    fn put(src: &[Self::Item], dst: &mut Vec<u8>);
}

struct F4;
struct F2;
struct I4;
struct I8;

impl Codec for F4 {
    type Item = f32;
    const DESCR: &'static str = "<f4";
    fn put(src: &[f32], dst: &mut Vec<u8>) {
        dst.extend(src.iter().flat_map(|x| x.to_le_bytes()));
    }
}

impl Codec for F2 {
    type Item = f32;
    const DESCR: &'static str = "<f2";
    fn put(src: &[f32], dst: &mut Vec<u8>) {
        for chunk in src.chunks(BATCH) {
            let mut halves = vec![f16::ZERO; chunk.len()];
            halves.convert_from_f32_slice(chunk);
            dst.extend(halves.iter().flat_map(|h| h.to_le_bytes()));
        }
    }
}

impl Codec for I4 {
    type Item = i32;
    const DESCR: &'static str = "<i4";
    fn put(src: &[i32], dst: &mut Vec<u8>) {
        dst.extend(src.iter().flat_map(|x| x.to_le_bytes()));
    }
}

impl Codec for I8 {
    type Item = i64;
    const DESCR: &'static str = "<i8";
    fn put(src: &[i64], dst: &mut Vec<u8>) {
        dst.extend(src.iter().flat_map(|x| x.to_le_bytes()));
    }
}

fn check_len(shape: &[usize], len: usize) -> std::result::Result<(), String> {
    match num_elements(shape) {
        Some(n) if n == len => Ok(()),
        Some(n) => Err(format!(
            "cannot write: shape {} has {n} elements but {len} values were given",
            ShapeRepr(shape)
        )),
        None => Err(format!(
            "cannot write: shape {} is too large",
            ShapeRepr(shape)
        )),
    }
}

fn encode_with<C: Codec>(
    shape: &[usize],
    data: &[C::Item],
) -> std::result::Result<Vec<u8>, String> {
    check_len(shape, data.len())?;
    let mut out = encode_header(shape, C::DESCR);
    C::put(data, &mut out);
    Ok(out)
}

fn write_with<C: Codec>(path: &Path, shape: &[usize], data: &[C::Item]) -> Result<()> {
    check_len(shape, data.len()).map_err(|reason| DataError::npy(path, reason))?;
    write_atomic_with(path, |w| {
        w.write_all(&encode_header(shape, C::DESCR))?;
        let mut buf = Vec::with_capacity(BATCH * 8);
        for chunk in data.chunks(BATCH) {
            buf.clear();
            C::put(chunk, &mut buf);
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

fn num_elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Item size of plain numeric dtypes such as `<f4`, `|u1`, `>i8`, `<c16`, `|b1`.
fn item_size(descr: &str) -> Option<usize> {
    let b = descr.as_bytes();
    if b.len() < 3 || !matches!(b[0], b'<' | b'>' | b'|' | b'=') {
        return None;
    }
    if !matches!(b[1], b'b' | b'i' | b'u' | b'f' | b'c') {
        return None;
    }
    if !b[2..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    descr[2..].parse().ok().filter(|&n: &usize| n > 0)
}

/// A shape as Python writes a tuple: `()`, `(3,)`, `(3, 4)`.
struct ShapeRepr<'a>(&'a [usize]);

impl fmt::Display for ShapeRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("()"),
            [d] => write!(f, "({d},)"),
            [first, rest @ ..] => {
                write!(f, "({first}")?;
                for d in rest {
                    write!(f, ", {d}")?;
                }
                f.write_char(')')
            }
        }
    }
}

/// The start of a header text, quoted, for error messages.
struct Excerpt<'a>(&'a str);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 200;
        let text = self.0.trim_end();
        match text.char_indices().nth(MAX) {
            Some((cut, _)) => write!(f, "{:?}...", &text[..cut]),
            None => write!(f, "{text:?}"),
        }
    }
}

/// Bytes as a Python-like byte string body: printable ASCII as is, the rest `\xNN`.
struct Escaped<'a>(&'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for &b in self.0 {
            match b {
                b'"' | b'\\' => write!(f, "\\{}", char::from(b))?,
                0x20..=0x7e => f.write_char(char::from(b))?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests;
