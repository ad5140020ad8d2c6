//! Text side of a dual-encoder bundle: tokenizers and prompt templates.
//!
//! Two tokenizers are supported, chosen by the bundle's `tokenizer` key
//! ([`TextTokenizer::from_spec`]):
//! - `"clip-bpe"`: OpenAI CLIP's byte-level BPE (vocabulary of 49,408 tokens, built into the
//!   `instant-clip-tokenizer` crate), as used by OpenAI CLIP and most OpenCLIP models;
//! - a path to a Hugging Face `tokenizer.json` (SigLIP, LiT, multilingual CLIPs, ...), relative
//!   to the bundle directory, with the special tokens its post-processor adds.
//!
//! [`prompts`] turns templates such as `"a photo of a {}."` and class names into the prompts
//! whose text embeddings are averaged into a class seed (see `imclust_core::fusion`).

use std::path::Path;

use ndarray::Array2;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, PostProcessor as _, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::error::{EmbedError, Result};

/// A handful of OpenAI's 80 ImageNet prompt-ensemble templates, from the CLIP repository's
/// notebook <https://github.com/openai/CLIP/blob/main/notebooks/Prompt_Engineering_for_ImageNet.ipynb>
/// (section "Prompt templates"). Each holds exactly one `{}`, replaced by the class name.
pub const CLIP_IMAGENET_TEMPLATES_SHORT: &[&str] = &[
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "itap of a {}.",
    "a rendering of a {}.",
];

pub use crate::bundle::CLIP_BPE;

/// A text tokenizer producing fixed-length `input_ids` and `attention_mask` rows.
// One per bundle, built once and never moved in a loop: the size difference of the variants
// costs nothing, and boxing would only obscure matching on them.
#[allow(clippy::large_enum_variant)]
pub enum TextTokenizer {
    /// OpenAI CLIP's BPE: `<start_of_text>` (49406), the tokens, `<end_of_text>` (49407), zero
    /// padding.
    ClipBpe(instant_clip_tokenizer::Tokenizer),
    /// A Hugging Face `tokenizer.json`, with its own normaliser, pre-tokeniser, model and
    /// post-processor (special tokens).
    HuggingFace(tokenizers::Tokenizer),
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextTokenizer::ClipBpe(_) => f.write_str("TextTokenizer::ClipBpe"),
            TextTokenizer::HuggingFace(_) => f.write_str("TextTokenizer::HuggingFace"),
        }
    }
}

impl TextTokenizer {
    /// The tokenizer a bundle names: `"clip-bpe"`, or the path of a `tokenizer.json` (relative
    /// paths are taken from `bundle_dir`).
    pub fn from_spec(kind: &str, bundle_dir: &Path) -> Result<Self> {
        if kind == CLIP_BPE {
            return Ok(TextTokenizer::ClipBpe(instant_clip_tokenizer::Tokenizer::new()));
        }
        if kind.is_empty() {
            return Err(EmbedError::Text(format!(
                "the tokenizer is empty: use \"{CLIP_BPE}\" or the path of a tokenizer.json"
            )));
        }
        let path = bundle_dir.join(kind);
        if !path.is_file() {
            return Err(EmbedError::Text(format!(
                "tokenizer '{kind}': no such file {} (use \"{CLIP_BPE}\" or the path of a \
                 tokenizer.json, relative to the bundle directory)",
                path.display()
            )));
        }
        let json = std::fs::read_to_string(&path).map_err(|e| EmbedError::io(&path, e))?;
        let tokenizer: tokenizers::Tokenizer = json.parse().map_err(|e| {
            EmbedError::Text(format!(
                "tokenizer '{}' is not a valid Hugging Face tokenizer.json: {e}",
                path.display()
            ))
        })?;
        Ok(TextTokenizer::HuggingFace(tokenizer))
    }

    /// Prepares for [`encode_batch`](Self::encode_batch) calls with this context length: a
    /// `tokenizer.json` tokenizer is set to truncate and pad to it once, instead of a configured
    /// copy being made on every call. Fails when the length leaves no room for text.
    pub fn set_context_length(&mut self, context_length: usize) -> Result<()> {
        match self {
            TextTokenizer::ClipBpe(_) => check_clip_context(context_length),
            TextTokenizer::HuggingFace(t) => hf_configure(t, context_length),
        }
    }

    /// Token ids and attention mask (`texts.len() x context_length`, int64, as ONNX text towers
    /// take them). Rows are padded to `context_length`; longer texts are truncated, keeping the
    /// closing special token last (OpenAI CLIP's `tokenize(..., truncate=True)`). The mask is 1
    /// on real tokens (special ones included) and 0 on padding.
    pub fn encode_batch(&self, texts: &[String], context_length: usize) -> Result<(Array2<i64>, Array2<i64>)> {
        match self {
            TextTokenizer::ClipBpe(t) => clip_encode_batch(t, texts, context_length),
            TextTokenizer::HuggingFace(t) => hf_encode_batch(t, texts, context_length),
        }
    }
}

fn check_clip_context(context_length: usize) -> Result<()> {
    if context_length < 2 {
        return Err(EmbedError::Text(format!(
            "context length {context_length} is too short for CLIP BPE: it needs at least 2 \
             (start and end of text)"
        )));
    }
    Ok(())
}

/// CLIP BPE. OpenAI's tokenizer also runs `ftfy.fix_text` and `html.unescape` on the text
/// first; this one does not (prompts built from templates and plain class names are unaffected),
/// and it recognises `<start_of_text>`/`<end_of_text>` in the text as the special tokens.
fn clip_encode_batch(
    t: &instant_clip_tokenizer::Tokenizer,
    texts: &[String],
    context_length: usize,
) -> Result<(Array2<i64>, Array2<i64>)> {
    check_clip_context(context_length)?;
    let mut ids = Array2::<i64>::zeros((texts.len(), context_length));
    let mut mask = Array2::<i64>::zeros((texts.len(), context_length));
    let mut tokens = Vec::with_capacity(context_length);
    for (i, text) in texts.iter().enumerate() {
        tokens.clear();
        tokens.push(t.start_of_text());
        t.encode(text, &mut tokens);
        // OpenAI: tokens[:context_length], then the last one replaced by end-of-text.
        tokens.truncate(context_length - 1);
        tokens.push(t.end_of_text());
        for (j, tok) in tokens.iter().enumerate() {
            ids[[i, j]] = i64::from(tok.to_u16());
            mask[[i, j]] = 1;
        }
    }
    Ok((ids, mask))
}

/// The truncation and padding that make a Hugging Face tokenizer produce exactly
/// `context_length` tokens. The file's own padding settings (pad id, token, side) and truncation
/// side are kept when it has them; otherwise padding is on the right with id 0 and truncation
/// removes text tokens from the right. The special tokens are never truncated away.
fn hf_settings(t: &tokenizers::Tokenizer, context_length: usize) -> Result<(TruncationParams, PaddingParams)> {
    let n_special = t.get_post_processor().map_or(0, |p| p.added_tokens(false));
    if context_length <= n_special {
        return Err(EmbedError::Text(format!(
            "context length {context_length} leaves no room for text: the tokenizer adds \
             {n_special} special tokens"
        )));
    }
    let truncation = TruncationParams {
        direction: t.get_truncation().map_or(TruncationDirection::Right, |p| p.direction),
        max_length: context_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    };
    let padding = match t.get_padding() {
        Some(p) => PaddingParams { strategy: PaddingStrategy::Fixed(context_length), pad_to_multiple_of: None, ..p.clone() },
        None => PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: 0,
            pad_type_id: 0,
            pad_token: String::new(),
        },
    };
    Ok((truncation, padding))
}

/// Whether `t` already truncates and pads to exactly `context_length` (the parameter types have
/// no `PartialEq`).
fn hf_is_configured(t: &tokenizers::Tokenizer, context_length: usize) -> bool {
    let truncated = t.get_truncation().is_some_and(|p| {
        p.max_length == context_length && p.stride == 0 && p.strategy == TruncationStrategy::LongestFirst
    });
    let padded = t.get_padding().is_some_and(|p| {
        matches!(p.strategy, PaddingStrategy::Fixed(n) if n == context_length) && p.pad_to_multiple_of.is_none()
    });
    truncated && padded
}

fn hf_configure(t: &mut tokenizers::Tokenizer, context_length: usize) -> Result<()> {
    let (truncation, padding) = hf_settings(t, context_length)?;
    t.with_truncation(Some(truncation))
        .map_err(|e| EmbedError::Text(format!("cannot truncate to {context_length} tokens: {e}")))?;
    t.with_padding(Some(padding));
    Ok(())
}

/// A Hugging Face tokenizer, truncated and padded to exactly `context_length` (see
/// [`hf_settings`]). Unless [`TextTokenizer::set_context_length`] configured it already, a
/// configured copy is made for the call.
fn hf_encode_batch(
    t: &tokenizers::Tokenizer,
    texts: &[String],
    context_length: usize,
) -> Result<(Array2<i64>, Array2<i64>)> {
    let configured;
    let tok = if hf_is_configured(t, context_length) {
        t
    } else {
        let mut c = t.clone();
        hf_configure(&mut c, context_length)?;
        configured = c;
        &configured
    };
    let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encodings = tok
        .encode_batch(inputs, true)
        .map_err(|e| EmbedError::Text(format!("tokenizing {} texts: {e}", texts.len())))?;
    let mut ids = Array2::<i64>::zeros((texts.len(), context_length));
    let mut mask = Array2::<i64>::zeros((texts.len(), context_length));
    for (i, enc) in encodings.iter().enumerate() {
        let (e_ids, e_mask) = (enc.get_ids(), enc.get_attention_mask());
        if e_ids.len() != context_length || e_mask.len() != context_length {
            return Err(EmbedError::Text(format!(
                "text {i} ('{}') came out as {} tokens, not the context length {context_length}",
                texts[i],
                e_ids.len()
            )));
        }
        for j in 0..context_length {
            ids[[i, j]] = i64::from(e_ids[j]);
            mask[[i, j]] = i64::from(e_mask[j]);
        }
    }
    Ok((ids, mask))
}

/// The prompts of each class: `result[c][t]` is template `t` with its `{}` replaced by class
/// name `c`. Every template must contain exactly one `{}`; there must be at least one template,
/// and class names must not be blank.
pub fn prompts(templates: &[String], class_names: &[String]) -> Result<Vec<Vec<String>>> {
    if templates.is_empty() {
        return Err(EmbedError::Text("no prompt templates: give at least one, such as \"a photo of a {}.\"".into()));
    }
    for t in templates {
        let holes = t.matches("{}").count();
        if holes != 1 {
            return Err(EmbedError::Text(format!(
                "prompt template '{t}' has {holes} '{{}}' placeholders: it needs exactly one, \
                 where the class name goes (e.g. \"a photo of a {{}}.\")"
            )));
        }
    }
    class_names
        .iter()
        .enumerate()
        .map(|(c, name)| {
            if name.trim().is_empty() {
                return Err(EmbedError::Text(format!("class name {c} is blank")));
            }
            Ok(templates.iter().map(|t| t.replacen("{}", name, 1)).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOT: i64 = 49406;
    const EOT: i64 = 49407;

    fn clip() -> TextTokenizer {
        TextTokenizer::from_spec("clip-bpe", Path::new(".")).unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn text_clip_bpe_acceptance_case() {
        let (ids, mask) = clip().encode_batch(&strings(&["A person riding a motorcycle"]), 77).unwrap();
        assert_eq!(ids.dim(), (1, 77));
        let mut want = vec![0i64; 77];
        want[..7].copy_from_slice(&[49406, 320, 2533, 6765, 320, 10297, 49407]);
        assert_eq!(ids.row(0).to_vec(), want);
        let want_mask: Vec<i64> = (0..77).map(|j| i64::from(j < 7)).collect();
        assert_eq!(mask.row(0).to_vec(), want_mask);
    }

    #[test]
    fn text_clip_bpe_batch_rows_are_independent() {
        let texts = strings(&["Hi", "How are you?", ""]);
        let (ids, mask) = clip().encode_batch(&texts, 5).unwrap();
        assert_eq!(ids.row(0).to_vec(), [SOT, 1883, EOT, 0, 0]);
        assert_eq!(ids.row(1).to_vec(), [SOT, 829, 631, 592, EOT]);
        assert_eq!(ids.row(2).to_vec(), [SOT, EOT, 0, 0, 0]);
        assert_eq!(mask.row(0).to_vec(), [1, 1, 1, 0, 0]);
        assert_eq!(mask.row(1).to_vec(), [1, 1, 1, 1, 1]);
        assert_eq!(mask.row(2).to_vec(), [1, 1, 0, 0, 0]);
    }

    #[test]
    fn text_clip_bpe_truncation_keeps_end_of_text_last() {
        let t = clip();
        let long = vec!["word"; 200].join(" ");
        let (ids, mask) = t.encode_batch(std::slice::from_ref(&long), 77).unwrap();
        assert_eq!(ids[[0, 0]], SOT);
        assert_eq!(ids[[0, 76]], EOT);
        assert!(mask.iter().all(|&m| m == 1));
        // The kept tokens are the text's first 75.
        let (full, _) = t.encode_batch(&[long], 300).unwrap();
        assert_eq!(ids.row(0).slice(ndarray::s![..76]), full.row(0).slice(ndarray::s![..76]));
        // Exactly filling the context: no truncation.
        let (ids, mask) = t.encode_batch(&strings(&["How are you?"]), 5).unwrap();
        assert_eq!(ids.row(0).to_vec(), [SOT, 829, 631, 592, EOT]);
        assert!(mask.iter().all(|&m| m == 1));
        let (ids, _) = t.encode_batch(&strings(&["How are you?"]), 4).unwrap();
        assert_eq!(ids.row(0).to_vec(), [SOT, 829, 631, EOT]);
    }

    #[test]
    fn text_clip_bpe_is_case_insensitive_and_empty_batch_is_empty() {
        let t = clip();
        let (a, _) = t.encode_batch(&strings(&["A RED Car"]), 77).unwrap();
        let (b, _) = t.encode_batch(&strings(&["a red car"]), 77).unwrap();
        assert_eq!(a, b);
        let (ids, mask) = t.encode_batch(&[], 77).unwrap();
        assert_eq!((ids.dim(), mask.dim()), ((0, 77), (0, 77)));
        assert!(matches!(t.encode_batch(&strings(&["x"]), 1), Err(EmbedError::Text(_))));
    }

    /// A tiny WordLevel tokenizer.json with a BERT-style `[CLS] $A [SEP]` post-processor.
    fn word_level_json(padding: &str) -> String {
        format!(
            r#"{{
  "version": "1.0",
  "truncation": null,
  "padding": {padding},
  "added_tokens": [
    {{"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
    {{"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
    {{"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
    {{"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}
  ],
  "normalizer": {{"type": "Lowercase"}},
  "pre_tokenizer": {{"type": "Whitespace"}},
  "post_processor": {{
    "type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
    "pair": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 1}}}}],
    "special_tokens": {{
      "[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}},
      "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}
    }}
  }},
  "decoder": null,
  "model": {{
    "type": "WordLevel",
    "vocab": {{"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "photo": 5, "of": 6, "cat": 7, "dog": 8, ".": 9}},
    "unk_token": "[UNK]"
  }}
}}"#
        )
    }

    fn hf(padding: &str) -> (tempfile::TempDir, TextTokenizer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), word_level_json(padding)).unwrap();
        let t = TextTokenizer::from_spec("tokenizer.json", dir.path()).unwrap();
        assert!(matches!(t, TextTokenizer::HuggingFace(_)));
        (dir, t)
    }

    #[test]
    fn text_tokenizer_json_ids_padding_and_mask() {
        let (_dir, t) = hf("null");
        let texts = strings(&["A photo of a cat.", "dog", "a zebra"]);
        let (ids, mask) = t.encode_batch(&texts, 10).unwrap();
        assert_eq!(ids.dim(), (3, 10));
        assert_eq!(ids.row(0).to_vec(), [2, 4, 5, 6, 4, 7, 9, 3, 0, 0]);
        assert_eq!(mask.row(0).to_vec(), [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(ids.row(1).to_vec(), [2, 8, 3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(mask.row(1).to_vec(), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ids.row(2).to_vec(), [2, 4, 1, 3, 0, 0, 0, 0, 0, 0]);
        // Truncation keeps [SEP] last; a second call with another length reconfigures.
        let (ids, mask) = t.encode_batch(&texts, 5).unwrap();
        assert_eq!(ids.row(0).to_vec(), [2, 4, 5, 6, 3]);
        assert_eq!(mask.row(0).to_vec(), [1, 1, 1, 1, 1]);
        assert_eq!(ids.row(1).to_vec(), [2, 8, 3, 0, 0]);
        // No room for text.
        assert!(matches!(t.encode_batch(&texts, 2), Err(EmbedError::Text(_))));
    }

    #[test]
    fn text_tokenizer_json_set_context_length_configures_in_place() {
        let (_dir, mut t) = hf("null");
        assert!(matches!(t.set_context_length(2), Err(EmbedError::Text(_))));
        t.set_context_length(4).unwrap();
        let TextTokenizer::HuggingFace(inner) = &t else { unreachable!() };
        assert!(hf_is_configured(inner, 4));
        let (ids, mask) = t.encode_batch(&strings(&["a photo of a dog", "dog"]), 4).unwrap();
        assert_eq!(ids.row(0).to_vec(), [2, 4, 5, 3]);
        assert_eq!(ids.row(1).to_vec(), [2, 8, 3, 0]);
        assert_eq!(mask.row(1).to_vec(), [1, 1, 1, 0]);
        // Another length still works (on a copy).
        let (ids, _) = t.encode_batch(&strings(&["dog"]), 6).unwrap();
        assert_eq!(ids.row(0).to_vec(), [2, 8, 3, 0, 0, 0]);
        let mut c = clip();
        assert!(c.set_context_length(1).is_err());
        c.set_context_length(77).unwrap();
    }

    #[test]
    fn text_tokenizer_json_keeps_its_own_pad_token_and_side() {
        let padding = r#"{"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": null,
                          "pad_id": 1, "pad_type_id": 0, "pad_token": "[UNK]"}"#;
        let (_dir, t) = hf(padding);
        let (ids, mask) = t.encode_batch(&strings(&["dog"]), 6).unwrap();
        assert_eq!(ids.row(0).to_vec(), [1, 1, 1, 2, 8, 3]);
        assert_eq!(mask.row(0).to_vec(), [0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn text_tokenizer_spec_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = TextTokenizer::from_spec("missing.json", dir.path()).unwrap_err().to_string();
        assert!(e.contains("missing.json") && e.contains("clip-bpe"), "{e}");
        std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
        let e = TextTokenizer::from_spec("bad.json", dir.path()).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("tokenizer.json"), "{e}");
        assert!(TextTokenizer::from_spec("", dir.path()).is_err());
    }

    #[test]
    fn text_prompts_format_each_class() {
        let p = prompts(&strings(&["a photo of a {}.", "itap of a {}."]), &strings(&["cat", "red car"])).unwrap();
        assert_eq!(
            p,
            vec![
                strings(&["a photo of a cat.", "itap of a cat."]),
                strings(&["a photo of a red car.", "itap of a red car."]),
            ]
        );
        // Braces in a class name are kept literally.
        let p = prompts(&strings(&["{}!"]), &strings(&["{}"])).unwrap();
        assert_eq!(p, vec![strings(&["{}!"])]);
        assert!(prompts(&strings(&["{}"]), &[]).unwrap().is_empty());
    }

    #[test]
    fn text_prompt_template_errors_name_the_template() {
        for bad in ["a photo of a cat", "{} and {}", "a photo of a {0}"] {
            let e = prompts(&strings(&["a photo of a {}.", bad]), &strings(&["cat"])).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
        assert!(prompts(&[], &strings(&["cat"])).is_err());
        let e = prompts(&strings(&["a {}"]), &strings(&["cat", " "])).unwrap_err().to_string();
        assert!(e.contains("class name 1"), "{e}");
    }

    #[test]
    fn text_short_templates_each_have_one_placeholder() {
        let t: Vec<String> = CLIP_IMAGENET_TEMPLATES_SHORT.iter().map(|s| s.to_string()).collect();
        let p = prompts(&t, &strings(&["dog"])).unwrap();
        assert_eq!(p[0][0], "a photo of a dog.");
        assert_eq!(p[0].len(), CLIP_IMAGENET_TEMPLATES_SHORT.len());
    }

    /// The CLIP BPE ids that scripts/make_toy_dual_encoder.py hard-codes for its colour words
    /// and its prompt "a photo of a {} thing.". "cyan" is two tokens ("cy", "an</w>").
    #[test]
    fn text_clip_bpe_ids_of_the_toy_fixture() {
        let t = clip();
        let words = [
            ("red", vec![736]),
            ("green", vec![1901]),
            ("blue", vec![1746]),
            ("yellow", vec![4481]),
            ("cyan", vec![1470, 550]),
            ("magenta", vec![38091]),
        ];
        for (word, want) in words {
            let (ids, _) = t.encode_batch(&strings(&[word]), 77).unwrap();
            let mut row = vec![SOT];
            row.extend(&want);
            row.push(EOT);
            assert_eq!(ids.row(0).slice(ndarray::s![..row.len()]).to_vec(), row, "{word}");
            assert_eq!(ids[[0, row.len()]], 0, "{word}");
        }
        let (ids, _) = t.encode_batch(&strings(&["a photo of a red thing."]), 77).unwrap();
        assert_eq!(ids.row(0).slice(ndarray::s![..10]).to_vec(), [SOT, 320, 1125, 539, 320, 736, 946, 269, EOT, 0]);
    }
}
