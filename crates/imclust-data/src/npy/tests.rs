//! Unit tests of the .npy module. The fixtures under `tests/fixtures/` were written by
//! numpy 2.4 (`tests/fixtures/make_fixtures.py`).

use super::*;
use crate::fsutil::create_temp;
use std::io;
use std::path::PathBuf;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $name
        ))
        .as_slice()
    };
}

const F4_VALUES: [f32; 6] = [1.0, -2.5, 3.25, 0.1, 1e30, -0.0];

fn npy_reason(err: DataError) -> (PathBuf, String) {
    match err {
        DataError::Npy { path, reason } => (path, reason),
        other => panic!("expected DataError::Npy, got {other:?}"),
    }
}

fn matrix_err(name: &str, bytes: &[u8]) -> String {
    let err = read_matrix_f32_bytes(name, bytes).expect_err("should fail");
    let (path, reason) = npy_reason(err);
    assert_eq!(path, Path::new(name));
    reason
}

fn labels_err(name: &str, bytes: &[u8]) -> String {
    let err = read_labels_bytes(name, bytes).expect_err("should fail");
    let (path, reason) = npy_reason(err);
    assert_eq!(path, Path::new(name));
    reason
}

fn assert_bits_eq(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "element {i}: {g} != {w}");
    }
}

/// A v1.0 file with the given header dictionary text (padded like numpy) and data.
fn with_dict(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut text = dict.as_bytes().to_vec();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&u16::try_from(text.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

// ----- header parsing --------------------------------------------------------------------

#[test]
fn parses_numpy_headers_of_every_version() {
    for bytes in [
        fixture!("f4_2x3.npy"),
        fixture!("f4_v2_2x3.npy"),
        fixture!("f4_v3_2x3.npy"),
    ] {
        let h = parse_header(bytes).unwrap();
        assert_eq!(
            h,
            Header {
                descr: "<f4".into(),
                fortran_order: false,
                shape: vec![2, 3],
                data_offset: 128,
            }
        );
        assert_eq!(h.num_elements(), Some(6));
        assert_eq!(h.item_size(), Some(4));
        assert_eq!(h.data_len(), Some(24));
    }
    assert_eq!(&fixture!("f4_v2_2x3.npy")[6..8], &[2, 0]);
    assert_eq!(&fixture!("f4_v3_2x3.npy")[6..8], &[3, 0]);

    let h = parse_header(fixture!("u1_4.npy")).unwrap();
    assert_eq!((h.descr.as_str(), h.shape.as_slice()), ("|u1", &[4][..]));
    let h = parse_header(fixture!("f4_fortran_2x3.npy")).unwrap();
    assert!(h.fortran_order);
}

#[test]
fn parses_header_variants_numpy_accepts() {
    let cases: &[(&str, &str, bool, &[usize])] = &[
        // no trailing comma, other key order, double quotes
        (
            r#"{"shape": (2, 3), "fortran_order": False, "descr": "<f4"}"#,
            "<f4",
            false,
            &[2, 3],
        ),
        // Python 2 longs and unicode strings, tabs and newlines
        (
            "{u'descr':\tu'<i8',\n 'fortran_order': True, 'shape': (3L, 1L), }",
            "<i8",
            true,
            &[3, 1],
        ),
        // 0-d and 1-d shapes, a list for the shape
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': ()}",
            "<f4",
            false,
            &[],
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (7,)}",
            "<f4",
            false,
            &[7],
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': [7, 0]}",
            "<f4",
            false,
            &[7, 0],
        ),
        // a parenthesised string, escapes
        (
            "{'descr': ('<f4'), 'fortran_order': False, 'shape': (1,),}",
            "<f4",
            false,
            &[1],
        ),
        (
            r"{'descr': 'a\'b', 'fortran_order': False, 'shape': (1,)}",
            "a'b",
            false,
            &[1],
        ),
    ];
    for &(dict, descr, fortran_order, shape) in cases {
        let bytes = with_dict(dict, &[]);
        let h = parse_header(&bytes).unwrap_or_else(|e| panic!("{dict}: {e}"));
        assert_eq!(h.descr, descr, "{dict}");
        assert_eq!(h.fortran_order, fortran_order, "{dict}");
        assert_eq!(h.shape, shape, "{dict}");
        assert_eq!(h.data_offset, bytes.len(), "{dict}");
    }
}

#[test]
fn rejects_malformed_headers() {
    let cases: &[(&str, &str)] = &[
        ("['descr']", "expected a dictionary, found a list"),
        (
            "{'descr': '<f4', 'shape': (1,)}",
            "key 'fortran_order' is missing",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "unexpected key 'extra'",
        ),
        (
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
            "key 'descr' appears twice",
        ),
        (
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "'fortran_order' is 0, not True or False",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1)}",
            "'shape' must hold non-negative integers, found (2, -1)",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,)}",
            "unsupported number at character",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': 3}",
            "'shape' is 3, not a tuple",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
            "unexpected end of header",
        ),
        (
            "{'descr': '<f4' 'fortran_order': False}",
            "expected ',' or '}' at character 16, found '\\''",
        ),
        (
            "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}",
            "expected ',' or '}' at character 17, found 'f'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}",
            "unknown name 'false'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999999999999999999,)}",
            "integer too large",
        ),
        ("{'descr': '<f4'} x", "expected end of header"),
        ("", "unexpected end of header"),
    ];
    for &(dict, want) in cases {
        let err = parse_header(&with_dict(dict, &[])).expect_err(dict);
        assert!(err.starts_with("malformed header ("), "{dict}: {err}");
        assert!(
            err.contains(want),
            "{dict}: {err}\n  does not contain: {want}"
        );
        assert!(
            err.ends_with("; the file is corrupt or was not written by numpy"),
            "{err}"
        );
    }

    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let err = parse_header(&with_dict(&deep, &[])).unwrap_err();
    assert!(err.contains("nested too deeply"), "{err}");

    let structured = "{'descr': [('a', '<f4'), ('b', '<i4', (2,))], 'fortran_order': False, \
                      'shape': (1,)}";
    assert_eq!(
        parse_header(&with_dict(structured, &[])).unwrap_err(),
        "structured (record) dtypes are not supported: descr is [('a', '<f4'), ('b', '<i4', \
         (2,))]; store a plain numeric array"
    );
}

#[test]
fn rejects_bad_magic_versions_and_truncated_headers() {
    let f4 = fixture!("f4_2x3.npy");

    let mut bad = f4.to_vec();
    bad[1] = b'X';
    assert_eq!(
        parse_header(&bad).unwrap_err(),
        r#"not a .npy file: it starts with "\x93XUMPY\x01\x00" instead of the magic bytes "\x93NUMPY""#
    );
    assert_eq!(
        matrix_err("x.csv", b"a,b\n1,2\n"),
        r#"not a .npy file: it starts with "a,b\x0a1,2\x0a" instead of the magic bytes "\x93NUMPY""#
    );
    assert_eq!(
        matrix_err("empty.npy", b""),
        "not a .npy file, or a truncated one: only 0 bytes, too short for a .npy header"
    );
    assert_eq!(
        parse_header(&f4[..9]).unwrap_err(),
        "not a .npy file, or a truncated one: only 9 bytes, too short for a .npy header"
    );

    let mut v4 = f4.to_vec();
    v4[6] = 4;
    assert_eq!(
        parse_header(&v4).unwrap_err(),
        "unsupported .npy format version 4.0 (this reader supports 1.0, 2.0 and 3.0)"
    );
    let mut v11 = f4.to_vec();
    v11[7] = 1;
    assert!(parse_header(&v11).unwrap_err().contains("version 1.1"));

    assert_eq!(
        parse_header(&f4[..100]).unwrap_err(),
        "truncated header: the header should be 118 bytes long, but only 90 bytes follow the \
         10-byte preamble; the file is incomplete or corrupt"
    );
    assert!(
        parse_header(&fixture!("f4_v2_2x3.npy")[..50])
            .unwrap_err()
            .starts_with("truncated header: the header should be 116 bytes long")
    );

    let mut bad_utf8 = fixture!("f4_v3_2x3.npy").to_vec();
    bad_utf8[20] = 0xff;
    assert_eq!(
        parse_header(&bad_utf8).unwrap_err(),
        "the header of this version 3.0 file is not valid UTF-8"
    );
}

// ----- reading matrices ------------------------------------------------------------------

#[test]
fn reads_numpy_float32_matrices() {
    for bytes in [
        fixture!("f4_2x3.npy"),
        fixture!("f4_v2_2x3.npy"),
        fixture!("f4_v3_2x3.npy"),
    ] {
        let m = read_matrix_f32_bytes("f4.npy", bytes).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_bits_eq(&m.data, &F4_VALUES);
        assert_bits_eq(m.row(1), &F4_VALUES[3..]);
    }
    let empty = read_matrix_f32_bytes("e.npy", fixture!("f4_0x3.npy")).unwrap();
    assert_eq!(
        empty,
        Matrix {
            rows: 0,
            cols: 3,
            data: vec![]
        }
    );
}

#[test]
fn reads_numpy_float16_matrices_as_f32() {
    let m = read_matrix_f32_bytes("f2.npy", fixture!("f2_2x3.npy")).unwrap();
    assert_eq!((m.rows, m.cols), (2, 3));
    // float16 0.1 is 0x2e66 = 0.0999755859375; 2^-24 is the smallest subnormal.
    assert_bits_eq(
        &m.data,
        &[1.0, -2.5, 0.099_975_586, 65504.0, 2f32.powi(-24), -0.0],
    );
}

#[test]
fn converts_long_float16_runs() {
    // More than one conversion batch, every bit pattern.
    let bits: Vec<u16> = (0..=u16::MAX).chain(0..1000).collect();
    let data: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let bytes = encode(&[bits.len(), 1], "<f2", &data).unwrap();
    let m = read_matrix_f32_bytes("all.npy", &bytes).unwrap();
    for (&b, &x) in bits.iter().zip(&m.data) {
        let want = f16::from_bits(b).to_f32();
        assert!(
            want.to_bits() == x.to_bits() || (want.is_nan() && x.is_nan()),
            "{b:#06x}"
        );
    }
}

#[test]
fn matrix_errors_name_dtype_and_shape_and_say_what_to_do() {
    assert_eq!(
        matrix_err("f8.npy", fixture!("f8_3x4.npy")),
        "expected a 2-D float32 or float16 array in C order; got dtype '<f8' shape (3, 4): \
         convert with numpy `x.astype('float32')`"
    );
    assert_eq!(
        matrix_err("be.npy", fixture!("f4_big_endian_2x3.npy")),
        "expected a 2-D float32 or float16 array in C order; got dtype '>f4' shape (2, 3): \
         convert the big-endian data to little-endian with numpy `x.astype('<f4')`"
    );
    assert_eq!(
        matrix_err("fortran.npy", fixture!("f4_fortran_2x3.npy")),
        "expected a 2-D float32 or float16 array in C order; got dtype '<f4' shape (2, 3) in \
         Fortran order: save a C-order copy with numpy `np.ascontiguousarray(x)`"
    );
    assert_eq!(
        matrix_err("1d.npy", fixture!("f4_1d.npy")),
        "expected a 2-D float32 or float16 array in C order; got dtype '<f4' shape (3,): \
         reshape it to one row per item with numpy `x.reshape(n, -1)` (n = number of items)"
    );
    assert_eq!(
        matrix_err("3d.npy", fixture!("f4_3d.npy")),
        "expected a 2-D float32 or float16 array in C order; got dtype '<f4' shape (2, 2, 2): \
         flatten each item into one row with numpy `x.reshape(len(x), -1)`"
    );
    assert_eq!(
        matrix_err("labels.npy", fixture!("i4_2d_4x3.npy")),
        "expected a 2-D float32 or float16 array in C order; got dtype '<i4' shape (4, 3): \
         convert with numpy `x.astype('float32')`"
    );
    assert_eq!(
        matrix_err("f2_1d.npy", fixture!("f2_1d_3.npy")),
        "expected a 2-D float32 or float16 array in C order; got dtype '<f2' shape (3,): \
         reshape it to one row per item with numpy `x.reshape(n, -1)` (n = number of items)"
    );
    let both = with_dict(
        "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 2, 2), }",
        &[0; 64],
    );
    assert_eq!(
        matrix_err("both.npy", &both),
        "expected a 2-D float32 or float16 array in C order; got dtype '<i8' shape (2, 2, 2) \
         in Fortran order: convert with numpy `x.astype('float32')`; flatten each item into \
         one row with numpy `x.reshape(len(x), -1)`; save a C-order copy with numpy \
         `np.ascontiguousarray(x)`"
    );
}

#[test]
fn matrix_data_length_must_match_shape_exactly() {
    let f4 = fixture!("f4_2x3.npy");
    assert_eq!(f4.len(), 152);
    assert_eq!(
        matrix_err("t.npy", &f4[..148]),
        "truncated data: shape (2, 3) of dtype '<f4' (4 bytes each) needs 24 data bytes after \
         the 128-byte header (152 bytes in all), but only 20 are present (148 bytes in all); \
         the file is incomplete, copy or write it again"
    );
    assert!(matrix_err("t.npy", &f4[..128]).contains("but only 0 are present"));
    let mut long = f4.to_vec();
    long.extend_from_slice(b"garbage!");
    assert_eq!(
        matrix_err("g.npy", &long),
        "trailing bytes after the array: shape (2, 3) of dtype '<f4' (4 bytes each) needs 24 \
         data bytes after the 128-byte header (152 bytes in all), but 32 are present (160 \
         bytes in all, 8 too many); the file is corrupt or is not a single .npy array"
    );
    let f2 = fixture!("f2_2x3.npy");
    assert!(
        matrix_err("t2.npy", &f2[..f2.len() - 1])
            .contains("(2 bytes each) needs 12 data bytes after the 128-byte header")
    );
    let huge = with_dict(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 2)}",
        &[],
    );
    assert_eq!(
        matrix_err("huge.npy", &huge),
        "shape (18446744073709551615, 2) of dtype '<f4' is too large to address"
    );
}

// ----- reading labels --------------------------------------------------------------------

#[test]
fn reads_numpy_integer_labels() {
    let cases: &[(&str, &[u8], &[i64])] = &[
        ("i8_5.npy", fixture!("i8_5.npy"), &[0, 1, -1, 1 << 40, 7]),
        (
            "i4_4.npy",
            fixture!("i4_4.npy"),
            &[3, 2, -1, i64::from(i32::MAX)],
        ),
        ("i2_3.npy", fixture!("i2_3.npy"), &[-32768, 0, 32767]),
        ("u1_4.npy", fixture!("u1_4.npy"), &[0, 1, 255, 7]),
        ("u2_3.npy", fixture!("u2_3.npy"), &[0, 65535, 9]),
        (
            "u4_3.npy",
            fixture!("u4_3.npy"),
            &[0, i64::from(u32::MAX), 9],
        ),
        ("u8_3.npy", fixture!("u8_3.npy"), &[0, i64::MAX, 9]),
        ("i8_3x1.npy", fixture!("i8_3x1.npy"), &[4, 5, 6]),
    ];
    for &(name, bytes, want) in cases {
        assert_eq!(read_labels_bytes(name, bytes).unwrap(), want, "{name}");
    }
    let i1 = with_dict(
        "{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }",
        &[0x80, 0, 0x7f],
    );
    assert_eq!(read_labels_bytes("i1.npy", &i1).unwrap(), [-128, 0, 127]);
    // For shape (n,) and (n, 1) Fortran order is the same layout.
    let fortran = with_dict(
        "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 1), }",
        &[1, 0, 0, 0, 2, 0, 0, 0],
    );
    assert_eq!(read_labels_bytes("f.npy", &fortran).unwrap(), [1, 2]);
    let empty = encode_i64(&[0], &[]).unwrap();
    assert_eq!(
        read_labels_bytes("e.npy", &empty).unwrap(),
        Vec::<i64>::new()
    );
}

#[test]
fn label_errors_name_dtype_and_shape_and_say_what_to_do() {
    assert_eq!(
        labels_err("big.npy", fixture!("u8_too_big.npy")),
        "label 9223372036854775808 at index 1 does not fit in a signed 64-bit integer (at most \
         9223372036854775807): labels must be small non-negative integers"
    );
    assert_eq!(
        labels_err("f.npy", fixture!("f4_labels_3.npy")),
        "expected a 1-D integer array of labels (or shape (n, 1)); got dtype '<f4' shape (3,): \
         convert with numpy `x.astype('int64')`"
    );
    assert_eq!(
        labels_err("be.npy", fixture!("i8_big_endian_3.npy")),
        "expected a 1-D integer array of labels (or shape (n, 1)); got dtype '>i8' shape (3,): \
         convert the big-endian data to little-endian with numpy `x.astype('<i8')`"
    );
    assert_eq!(
        labels_err("2x2.npy", fixture!("i8_2x2.npy")),
        "expected a 1-D integer array of labels (or shape (n, 1)); got dtype '<i8' shape (2, 2): \
         pass one label per item, e.g. one column with numpy `x[:, 0]`"
    );
    assert_eq!(
        labels_err("3d.npy", fixture!("f4_3d.npy")),
        "expected a 1-D integer array of labels (or shape (n, 1)); got dtype '<f4' shape (2, 2, \
         2): convert with numpy `x.astype('int64')`; pass one label per item, a 1-D array"
    );
    let i8 = fixture!("i8_5.npy");
    assert_eq!(
        labels_err("t.npy", &i8[..i8.len() - 3]),
        "truncated data: shape (5,) of dtype '<i8' (8 bytes each) needs 40 data bytes after the \
         128-byte header (168 bytes in all), but only 37 are present (165 bytes in all); the \
         file is incomplete, copy or write it again"
    );
    assert!(labels_err("m.npy", b"\x93NUMPZ").starts_with("not a .npy file"));
}

// ----- encoding --------------------------------------------------------------------------

#[test]
fn encodes_byte_for_byte_like_numpy_save() {
    assert_eq!(
        encode_f32(&[2, 3], &F4_VALUES).unwrap(),
        fixture!("f4_2x3.npy")
    );
    assert_eq!(
        encode_f16(&[2, 3], &[1.0, -2.5, 0.1, 65504.0, 2f32.powi(-24), -0.0]).unwrap(),
        fixture!("f2_2x3.npy")
    );
    assert_eq!(
        encode_i64(&[5], &[0, 1, -1, 1 << 40, 7]).unwrap(),
        fixture!("i8_5.npy")
    );
    assert_eq!(
        encode_i64(&[3, 1], &[4, 5, 6]).unwrap(),
        fixture!("i8_3x1.npy")
    );
    assert_eq!(
        encode_i32(&[4], &[3, 2, -1, i32::MAX]).unwrap(),
        fixture!("i4_4.npy")
    );
    assert_eq!(encode_f32(&[0, 3], &[]).unwrap(), fixture!("f4_0x3.npy"));
    assert_eq!(
        encode(&[4], "|u1", &[0, 1, 255, 7]).unwrap(),
        fixture!("u1_4.npy")
    );
    let f4 = fixture!("f4_2x3.npy");
    assert_eq!(encode(&[2, 3], "<f4", &f4[128..]).unwrap(), f4);
}

#[test]
fn header_is_padded_to_64_bytes_and_grows_to_version_2_only_when_needed() {
    for ndim in 0..40 {
        for first in [0, 1, 7, 123_456_789, usize::MAX] {
            let shape: Vec<usize> = (0..ndim).map(|i| if i == 0 { first } else { 3 }).collect();
            let h = encode_header(&shape, "<f4");
            assert_eq!(h.len() % 64, 0, "{shape:?}");
            assert_eq!(&h[6..8], &[1, 0]);
            assert_eq!(h.last(), Some(&b'\n'));
            let parsed = parse_header(&h).unwrap();
            assert_eq!(parsed.shape, shape);
            assert_eq!(parsed.data_offset, h.len());
        }
    }
    // A header over 65535 bytes needs version 2.0.
    let shape = vec![1; 30_000];
    let h = encode_header(&shape, "<f4");
    assert_eq!(&h[6..8], &[2, 0]);
    assert_eq!(h.len() % 64, 0);
    let parsed = parse_header(&h).unwrap();
    assert_eq!((parsed.shape, parsed.data_offset), (shape, h.len()));
    // Not latin-1: version 3.0 (UTF-8).
    let h = encode_header(&[1], "<\u{20ac}4");
    assert_eq!(&h[6..8], &[3, 0]);
    assert_eq!(parse_header(&h).unwrap().descr, "<\u{20ac}4");
    // Quotes and backslashes in descr survive.
    let h = encode_header(&[1], r"a'\b");
    assert_eq!(parse_header(&h).unwrap().descr, r"a'\b");
}

#[test]
fn encode_checks_lengths() {
    assert_eq!(
        encode_f32(&[2, 3], &[1.0; 5]).unwrap_err(),
        "cannot write: shape (2, 3) has 6 elements but 5 values were given"
    );
    assert_eq!(
        encode_i32(&[usize::MAX, 2], &[]).unwrap_err(),
        "cannot write: shape (18446744073709551615, 2) is too large"
    );
    assert_eq!(
        encode(&[2], "<f4", &[0; 7]).unwrap_err(),
        "shape (2,) of dtype '<f4' needs 8 data bytes, got 7"
    );
    assert_eq!(
        encode(&[2], "<U4", &[0; 32]).unwrap_err(),
        "unsupported dtype '<U4'"
    );
    // A 0-d array holds one element.
    let scalar = encode_i64(&[], &[42]).unwrap();
    assert_eq!(parse_header(&scalar).unwrap().shape, Vec::<usize>::new());
}

// ----- files -----------------------------------------------------------------------------

fn no_temp_files_left(dir: &Path) {
    let leftovers: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn writers_round_trip_through_files() {
    let dir = tempfile::tempdir().unwrap();

    let x: Vec<f32> = (0..35).map(|i| i as f32 * 0.37 - 5.0).collect();
    let p = dir.path().join("x.npy");
    write_f32(&p, &[7, 5], &x).unwrap();
    let m = read_matrix_f32(&p).unwrap();
    assert_eq!((m.rows, m.cols), (7, 5));
    assert_bits_eq(&m.data, &x);
    assert_eq!(read_header(&p).unwrap().shape, [7, 5]);

    let p = dir.path().join("h.npy");
    write_f16(&p, &[7, 5], &x).unwrap();
    let m = read_matrix_f32(&p).unwrap();
    assert_eq!((m.rows, m.cols), (7, 5));
    let want: Vec<f32> = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_bits_eq(&m.data, &want);
    assert_eq!(read_header(&p).unwrap().descr, "<f2");

    let p = dir.path().join("l32.npy");
    let labels: Vec<i32> = vec![0, 3, -2, i32::MIN, i32::MAX];
    write_i32(&p, &[5], &labels).unwrap();
    let want: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    assert_eq!(read_labels(&p).unwrap(), want);

    let p = dir.path().join("l64.npy");
    let labels = vec![i64::MIN, -1, 0, 1, i64::MAX, 17];
    write_i64(&p, &[6, 1], &labels).unwrap();
    assert_eq!(read_labels(&p).unwrap(), labels);
    assert_eq!(fs::read(&p).unwrap(), encode_i64(&[6, 1], &labels).unwrap());

    // Large enough for several write batches.
    let big: Vec<f32> = (0..100_003).map(|i| (i as f32).sin()).collect();
    let p = dir.path().join("big.npy");
    write_f32(&p, &[100_003, 1], &big).unwrap();
    assert_bits_eq(&read_matrix_f32(&p).unwrap().data, &big);
    assert_eq!(
        fs::read(&p).unwrap(),
        encode_f32(&[100_003, 1], &big).unwrap()
    );
    write_f16(&p, &[1, 100_003], &big).unwrap();
    assert_eq!(
        fs::read(&p).unwrap(),
        encode_f16(&[1, 100_003], &big).unwrap()
    );

    no_temp_files_left(dir.path());
}

#[test]
fn writing_replaces_the_target_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.npy");
    fs::write(&p, b"old contents").unwrap();
    write_f32(&p, &[1, 2], &[1.0, 2.0]).unwrap();
    assert_eq!(read_matrix_f32(&p).unwrap().data, [1.0, 2.0]);
    write_f32(&p, &[1, 1], &[3.0]).unwrap();
    assert_eq!(read_matrix_f32(&p).unwrap().data, [3.0]);
    no_temp_files_left(dir.path());

    // The temporary file is hidden, in the same directory, and unique.
    let (t1, f1) = create_temp(dir.path(), "c.npy".as_ref()).unwrap();
    let (t2, _f2) = create_temp(dir.path(), "c.npy".as_ref()).unwrap();
    drop(f1);
    assert_ne!(t1, t2);
    assert_eq!(t1.parent(), Some(dir.path()));
    let name = t1.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(".c.npy.") && name.ends_with(".tmp"),
        "{name}"
    );
}

#[test]
fn write_errors_name_the_file_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no_such_dir").join("x.npy");
    let err = write_f32(&p, &[1], &[1.0]).unwrap_err();
    let DataError::Io { path, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &p);
    assert_eq!(source.kind(), io::ErrorKind::NotFound);
    assert_eq!(err.to_string(), format!("I/O error on '{}'", p.display()));

    // Renaming over a directory fails; the temporary file is removed.
    let d = dir.path().join("a_dir.npy");
    fs::create_dir(&d).unwrap();
    let err = write_i64(&d, &[1], &[1]).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path, .. } if path == &d),
        "{err:?}"
    );
    no_temp_files_left(dir.path());

    let p = dir.path().join("y.npy");
    let err = write_i32(&p, &[2, 2], &[1, 2, 3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "npy file '{}': cannot write: shape (2, 2) has 4 elements but 3 values were given",
            p.display()
        )
    );
    assert!(!p.exists());
    no_temp_files_left(dir.path());
}

#[test]
fn read_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.npy");
    for err in [
        read_matrix_f32(&missing).unwrap_err(),
        read_labels(&missing).map(|_| ()).unwrap_err(),
        read_header(&missing).map(|_| ()).unwrap_err(),
    ] {
        assert!(
            matches!(&err, DataError::Io { path, source } if path == &missing
                && source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("I/O error on '{}'", missing.display())
        );
    }

    let p = dir.path().join("f8.npy");
    fs::write(&p, fixture!("f8_3x4.npy")).unwrap();
    let err = read_matrix_f32(&p).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "npy file '{}': expected a 2-D float32 or float16 array in C order; got dtype '<f8' \
             shape (3, 4): convert with numpy `x.astype('float32')`",
            p.display()
        )
    );
    assert_eq!(read_header(&p).unwrap().shape, [3, 4]);

    let p = dir.path().join("short.npy");
    fs::write(&p, &fixture!("f4_2x3.npy")[..60]).unwrap();
    let err = read_header(&p).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("npy file '{}': truncated header", p.display())),
        "{err}"
    );
    fs::write(&p, b"\x93NUMPY").unwrap();
    assert!(
        read_header(&p)
            .unwrap_err()
            .to_string()
            .contains("only 6 bytes")
    );
    let err = read_labels(&p).unwrap_err();
    assert!(err.to_string().contains("only 6 bytes"), "{err}");
}

#[test]
fn pixels_round_trip_and_shape_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("px.npy");
    // A (2, 2, 3, 3) uint8 array, written as numpy would (header '|u1').
    let data: Vec<u8> = (0..36).collect();
    let mut bytes = encode_header(&[2, 2, 3, 3], "|u1");
    bytes.extend(&data);
    fs::write(&p, &bytes).unwrap();
    let px = read_pixels(&p).unwrap();
    assert_eq!((px.count, px.height, px.width, px.channels), (2, 2, 3, 3));
    assert_eq!(px.image(1), &data[18..]);
    // Grayscale (N, H, W).
    let mut bytes = encode_header(&[3, 2, 2], "|u1");
    bytes.extend([7u8; 12]);
    fs::write(&p, &bytes).unwrap();
    let px = read_pixels(&p).unwrap();
    assert_eq!((px.count, px.channels), (3, 1));
    // float pixels and 2 channels are refused, naming file, dtype and shape.
    write_f32(&p, &[1, 2, 2], &[0.0; 4]).unwrap();
    let err = read_pixels(&p).unwrap_err().to_string();
    assert!(err.contains("px.npy") && err.contains("'<f4'") && err.contains("(1, 2, 2)"), "{err}");
    let mut bytes = encode_header(&[1, 2, 2, 2], "|u1");
    bytes.extend([0u8; 8]);
    fs::write(&p, &bytes).unwrap();
    assert!(read_pixels(&p).unwrap_err().to_string().contains("C = 1 or 3"));
}
