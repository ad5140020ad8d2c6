//! Minimal ONNX edits at the protobuf wire level (no `onnx.proto`, no code generation).
//!
//! Only the handful of fields needed are read; everything else is copied byte for byte:
//! `ModelProto.ir_version = 1`, `ModelProto.graph = 7`; `GraphProto.node = 1`,
//! `GraphProto.output = 12`; `NodeProto.output = 2`; `ValueInfoProto.name = 1`.
//!
//! [`add_output`] exposes an intermediate tensor (for example the pooled features of an image
//! classifier) as a graph output. The appended `ValueInfoProto` carries only the name: ONNX
//! Runtime (checked with 1.31) infers its type and shape from the producing node.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{EmbedError, Result};

const MODEL_IR_VERSION: u64 = 1;
const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const GRAPH_OUTPUT: u64 = 12;
const NODE_OUTPUT: u64 = 2;
const VALUE_INFO_NAME: u64 = 1;

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// One field of a protobuf message as it sits in the buffer.
#[derive(Debug, Clone)]
struct Field {
    number: u64,
    wire: u8,
    /// The varint value for `WIRE_VARINT`, otherwise 0.
    varint: u64,
    /// The payload's byte range for `WIRE_LEN`.
    payload: Range<usize>,
    /// The whole field (key, length, payload).
    span: Range<usize>,
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Splits a message into its fields; `None` when the bytes are not a well-formed message
/// (groups, deprecated and unused by ONNX, count as malformed).
fn parse_fields(buf: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return None;
        }
        let mut field = Field { number, wire, varint: 0, payload: 0..0, span: 0..0 };
        match wire {
            WIRE_VARINT => field.varint = read_varint(buf, &mut pos)?,
            WIRE_I64 => pos = pos.checked_add(8).filter(|&p| p <= buf.len())?,
            WIRE_I32 => pos = pos.checked_add(4).filter(|&p| p <= buf.len())?,
            WIRE_LEN => {
                let len = usize::try_from(read_varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|&e| e <= buf.len())?;
                field.payload = pos..end;
                pos = end;
            }
            _ => return None,
        }
        field.span = start..pos;
        fields.push(field);
    }
    Some(fields)
}

fn strings(buf: &[u8], fields: &[Field], number: u64) -> Vec<String> {
    fields
        .iter()
        .filter(|f| f.number == number && f.wire == WIRE_LEN)
        .map(|f| String::from_utf8_lossy(&buf[f.payload.clone()]).into_owned())
        .collect()
}

/// The parts of a model that the edits need.
struct ModelView<'a> {
    bytes: &'a [u8],
    graph_field: Field,
    graph_fields: Vec<Field>,
}

impl<'a> ModelView<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        const NOT_ONNX: &str = "not a valid ONNX model (the bytes are not an ONNX ModelProto)";
        let fields = parse_fields(bytes).ok_or(NOT_ONNX)?;
        if !fields.iter().any(|f| f.number == MODEL_IR_VERSION && f.wire == WIRE_VARINT) {
            return Err(format!("{NOT_ONNX}: it has no ir_version"));
        }
        let mut graphs = fields.iter().filter(|f| f.number == MODEL_GRAPH && f.wire == WIRE_LEN);
        let graph_field = graphs.next().ok_or_else(|| format!("{NOT_ONNX}: it has no graph"))?.clone();
        if graphs.next().is_some() {
            return Err("the model's graph is split over several protobuf fields; re-save it with onnx.save".into());
        }
        let graph_fields = parse_fields(&bytes[graph_field.payload.clone()]).ok_or_else(|| format!("{NOT_ONNX}: its graph is malformed"))?;
        Ok(ModelView { bytes, graph_field, graph_fields })
    }

    fn graph(&self) -> &'a [u8] {
        &self.bytes[self.graph_field.payload.clone()]
    }

    fn output_names(&self) -> Vec<String> {
        let graph = self.graph();
        self.graph_fields
            .iter()
            .filter(|f| f.number == GRAPH_OUTPUT && f.wire == WIRE_LEN)
            .filter_map(|f| {
                let vi = &graph[f.payload.clone()];
                parse_fields(vi).and_then(|fs| strings(vi, &fs, VALUE_INFO_NAME).into_iter().next())
            })
            .collect()
    }

    /// Every tensor name produced by a node of the main graph.
    fn node_outputs(&self) -> Result<Vec<String>, String> {
        let graph = self.graph();
        let mut names = Vec::new();
        for f in self.graph_fields.iter().filter(|f| f.number == GRAPH_NODE && f.wire == WIRE_LEN) {
            let node = &graph[f.payload.clone()];
            let fields = parse_fields(node).ok_or("not a valid ONNX model: a node of its graph is malformed")?;
            names.extend(strings(node, &fields, NODE_OUTPUT));
        }
        Ok(names)
    }
}

/// True when `bytes` parse as an ONNX `ModelProto` with an `ir_version` and a graph.
pub fn is_onnx_model(bytes: &[u8]) -> bool {
    ModelView::parse(bytes).is_ok()
}

/// The names of the graph's outputs, in order.
pub fn output_names(model_bytes: &[u8]) -> Result<Vec<String>> {
    let view = ModelView::parse(model_bytes).map_err(in_memory)?;
    Ok(view.output_names())
}

/// Returns the model with `tensor_name` appended to the graph's outputs. The tensor must be
/// produced by a node of the main graph. A tensor that already is an output leaves the model
/// unchanged.
pub fn add_output(model_bytes: &[u8], tensor_name: &str) -> Result<Vec<u8>> {
    add_output_inner(model_bytes, tensor_name).map_err(in_memory)
}

/// [`add_output`] on a file; errors name the file.
pub fn add_output_to_file(path: &Path, tensor_name: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| EmbedError::io(path, e))?;
    add_output_inner(&bytes, tensor_name).map_err(|reason| EmbedError::Model { path: path.to_path_buf(), reason })
}

fn in_memory(reason: String) -> EmbedError {
    EmbedError::Model { path: PathBuf::from("<in-memory model>"), reason }
}

fn add_output_inner(model_bytes: &[u8], tensor_name: &str) -> Result<Vec<u8>, String> {
    let view = ModelView::parse(model_bytes)?;
    if view.output_names().iter().any(|n| n == tensor_name) {
        return Ok(model_bytes.to_vec());
    }
    let produced = view.node_outputs()?;
    if !produced.iter().any(|n| n == tensor_name) {
        let mut close: Vec<&str> = produced.iter().map(String::as_str).filter(|n| n.contains(tensor_name) || tensor_name.contains(n)).take(5).collect();
        if close.is_empty() {
            close = produced.iter().rev().take(5).map(String::as_str).collect();
        }
        return Err(format!(
            "no node produces a tensor named '{tensor_name}' ({} tensors produced in the graph, e.g. {}); \
             list them with: python -c \"import onnx; print([o for n in onnx.load('MODEL').graph.node for o in n.output])\"",
            produced.len(),
            close.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
        ));
    }

    // ValueInfoProto { name }
    let mut value_info = Vec::with_capacity(tensor_name.len() + 4);
    put_len_field(&mut value_info, VALUE_INFO_NAME, tensor_name.as_bytes());
    // GraphProto with one more output, appended after its existing fields.
    let mut graph = view.graph().to_vec();
    put_len_field(&mut graph, GRAPH_OUTPUT, &value_info);
    // ModelProto with the graph field replaced in place.
    let span = view.graph_field.span.clone();
    let mut out = Vec::with_capacity(model_bytes.len() + value_info.len() + 16);
    out.extend_from_slice(&model_bytes[..span.start]);
    put_len_field(&mut out, MODEL_GRAPH, &graph);
    out.extend_from_slice(&model_bytes[span.end..]);
    Ok(out)
}

fn put_len_field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    write_varint(out, (number << 3) | u64::from(WIRE_LEN));
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Tiny ONNX models written by hand, for tests of this crate.
#[cfg(test)]
pub(crate) mod testmodel {
    use super::{WIRE_VARINT, put_len_field, write_varint};

    /// ONNX `TensorProto.DataType`.
    pub const FLOAT: i64 = 1;
    pub const INT64: i64 = 7;

    fn put_varint_field(out: &mut Vec<u8>, number: u64, value: i64) {
        write_varint(out, (number << 3) | u64::from(WIRE_VARINT));
        write_varint(out, value as u64);
    }

    /// A dimension: `Some(n)` fixed, `None` symbolic ("batch" first, then "d1", "d2", ...).
    pub fn value_info(name: &str, elem_type: i64, dims: &[Option<i64>]) -> Vec<u8> {
        let mut shape = Vec::new();
        for (i, d) in dims.iter().enumerate() {
            let mut dim = Vec::new();
            match d {
                Some(n) => put_varint_field(&mut dim, 1, *n),
                None if i == 0 => put_len_field(&mut dim, 2, b"batch"),
                None => put_len_field(&mut dim, 2, format!("d{i}").as_bytes()),
            }
            put_len_field(&mut shape, 1, &dim);
        }
        let mut tensor = Vec::new();
        put_varint_field(&mut tensor, 1, elem_type);
        put_len_field(&mut tensor, 2, &shape);
        let mut ty = Vec::new();
        put_len_field(&mut ty, 1, &tensor);
        let mut vi = Vec::new();
        put_len_field(&mut vi, 1, name.as_bytes());
        put_len_field(&mut vi, 2, &ty);
        vi
    }

    /// A node with integer attributes.
    pub fn node(op: &str, inputs: &[&str], outputs: &[&str], int_attrs: &[(&str, i64)]) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            put_len_field(&mut n, 1, i.as_bytes());
        }
        for o in outputs {
            put_len_field(&mut n, 2, o.as_bytes());
        }
        put_len_field(&mut n, 4, op.as_bytes());
        for (name, value) in int_attrs {
            let mut a = Vec::new();
            put_len_field(&mut a, 1, name.as_bytes());
            put_varint_field(&mut a, 3, *value);
            put_varint_field(&mut a, 20, 2); // AttributeType.INT
            put_len_field(&mut n, 5, &a);
        }
        n
    }

    /// A model (IR 8, opset 17) from nodes, inputs and outputs (encoded `ValueInfoProto`s).
    pub fn model(nodes: &[Vec<u8>], inputs: &[Vec<u8>], outputs: &[Vec<u8>]) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in nodes {
            put_len_field(&mut graph, 1, n);
        }
        put_len_field(&mut graph, 2, b"test");
        for i in inputs {
            put_len_field(&mut graph, 11, i);
        }
        for o in outputs {
            put_len_field(&mut graph, 12, o);
        }
        let mut opset = Vec::new();
        put_len_field(&mut opset, 1, b"");
        put_varint_field(&mut opset, 2, 17);
        let mut m = Vec::new();
        put_varint_field(&mut m, 1, 8);
        put_len_field(&mut m, 8, &opset);
        put_len_field(&mut m, 7, &graph);
        m
    }

    /// x [batch, 4] -> Relu -> "hidden" -> Neg -> "y" (only "y" is an output).
    pub fn relu_neg() -> Vec<u8> {
        model(
            &[node("Relu", &["x"], &["hidden"], &[]), node("Neg", &["hidden"], &["y"], &[])],
            &[value_info("x", FLOAT, &[None, Some(4)])],
            &[value_info("y", FLOAT, &[None, Some(4)])],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{self, RuntimeConfig};
    use ndarray::array;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut b = Vec::new();
            write_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(read_varint(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn add_output_appends_a_named_output_that_onnx_runtime_runs() {
        let model = testmodel::relu_neg();
        assert_eq!(output_names(&model).unwrap(), ["y"]);
        let edited = add_output(&model, "hidden").unwrap();
        assert_eq!(output_names(&edited).unwrap(), ["y", "hidden"]);
        // Idempotent: an existing output leaves the bytes unchanged.
        assert_eq!(add_output(&edited, "hidden").unwrap(), edited);

        let cfg = RuntimeConfig::default();
        let mut session = runtime::session(&edited[..], &cfg).unwrap();
        let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        assert_eq!(names, ["y", "hidden"]);
        let x = array![[-1.0f32, 2.0, -3.0, 4.0]];
        let out = session.run(ort::inputs!["x" => ort::value::TensorRef::from_array_view(x.view()).unwrap()]).unwrap();
        let hidden = out["hidden"].try_extract_array::<f32>().unwrap();
        let y = out["y"].try_extract_array::<f32>().unwrap();
        assert_eq!(hidden.iter().copied().collect::<Vec<_>>(), [0.0, 2.0, 0.0, 4.0]);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), [-0.0, -2.0, -0.0, -4.0]);
    }

    #[test]
    fn add_output_refuses_a_tensor_no_node_produces() {
        let err = add_output(&testmodel::relu_neg(), "pooled").unwrap_err().to_string();
        assert!(err.contains("no node produces a tensor named 'pooled'"), "{err}");
        assert!(err.contains("'hidden'"), "{err}");
    }

    #[test]
    fn non_onnx_bytes_are_refused() {
        for bytes in [&b""[..], b"hello, this is text", &[0xff, 0xff, 0xff]] {
            assert!(!is_onnx_model(bytes));
            let err = add_output(bytes, "x").unwrap_err().to_string();
            assert!(err.contains("not a valid ONNX model"), "{err}");
        }
        assert!(is_onnx_model(&testmodel::relu_neg()));
    }
}
