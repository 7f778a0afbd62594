//! BERT-style tokenization over a Hugging Face `tokenizer.json`.
//!
//! [`TextTokenizer`] switches off the file's own padding and truncation and does them itself:
//! text is encoded without special tokens, content tokens are truncated so that the whole
//! sequence fits `max_len`, then specials are added:
//!
//! * single sentence: `[CLS] a [SEP]`, `token_type_ids` all 0;
//! * pair: `[CLS] a [SEP] b [SEP]`, `token_type_ids` 0 for `[CLS] a [SEP]` and 1 for `b [SEP]`.
//!
//! Pair truncation is *longest-first*: one token at a time is removed from the end of the
//! longer sequence, from the second one when both are equally long (the rule of HF
//! transformers' `truncate_sequences(..., "longest_first")`). Special tokens are never removed.
//! (The Rust `tokenizers` crate's own longest-first rule differs from this in one case only:
//! when both sequences must be cut and the budget is odd, it may give the spare token to the
//! other sequence.)

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::{DataError, Dataset, Target};

/// One tokenized example, without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// A tokenized split, kept in memory: `items[i]` encodes example `i`, whose target is
/// `targets[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedDataset {
    pub name: String,
    pub items: Vec<Encoded>,
    pub targets: Vec<Target>,
}

impl EncodedDataset {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Truncate a sentence pair's content tokens to at most `max_tokens` in total, longest-first:
/// repeatedly drop the last token of the longer sequence (of `b` when equally long).
pub fn truncate_longest_first(a: &mut Vec<u32>, b: &mut Vec<u32>, max_tokens: usize) {
    while a.len() + b.len() > max_tokens {
        if a.len() > b.len() {
            a.pop();
        } else {
            b.pop();
        }
    }
}

/// A BERT-style tokenizer with its own truncation to `max_len` (specials included).
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    cls_id: u32,
    sep_id: u32,
    pad_id: u32,
    max_len: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("cls_id", &self.cls_id)
            .field("sep_id", &self.sep_id)
            .field("pad_id", &self.pad_id)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl TextTokenizer {
    /// Load a `tokenizer.json`. Its `[CLS]`, `[SEP]` and `[PAD]` tokens must be in the
    /// vocabulary; `max_len` (total length including specials) must be at least 3.
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self, DataError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(DataError::MissingFile {
                what: "tokenizer".into(),
                path: path.to_path_buf(),
                hint: None,
            });
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_tokenizer(tokenizer, path, max_len)
    }

    /// Wrap an already loaded tokenizer (`path` is only used in messages).
    pub fn from_tokenizer(
        mut tokenizer: Tokenizer,
        path: &Path,
        max_len: usize,
    ) -> Result<Self, DataError> {
        let err = |message: String| DataError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        if max_len < 3 {
            return Err(DataError::Config(format!(
                "max_len must be at least 3 ([CLS] a [SEP] b [SEP] needs room), got {max_len}"
            )));
        }
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        let id = |tok: &str| {
            tokenizer
                .token_to_id(tok)
                .ok_or_else(|| err(format!("special token {tok} is not in the vocabulary")))
        };
        let (cls_id, sep_id, pad_id) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        Ok(TextTokenizer {
            tokenizer,
            path: path.to_path_buf(),
            cls_id,
            sep_id,
            pad_id,
            max_len,
        })
    }

    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }

    pub fn sep_id(&self) -> u32 {
        self.sep_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Maximum sequence length, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The wrapped tokenizer (padding and truncation switched off).
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn tok_err(&self, e: impl std::fmt::Display) -> DataError {
        DataError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Token ids of `text` without special tokens and without truncation.
    pub fn content_ids(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| self.tok_err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Truncate content ids and add special tokens.
    fn assemble(&self, mut a: Vec<u32>, b: Option<Vec<u32>>) -> Encoded {
        match b {
            None => {
                a.truncate(self.max_len - 2);
                let mut input_ids = Vec::with_capacity(a.len() + 2);
                input_ids.push(self.cls_id);
                input_ids.extend_from_slice(&a);
                input_ids.push(self.sep_id);
                let token_type_ids = vec![0; input_ids.len()];
                Encoded {
                    input_ids,
                    token_type_ids,
                }
            }
            Some(mut b) => {
                truncate_longest_first(&mut a, &mut b, self.max_len - 3);
                let first = a.len() + 2;
                let mut input_ids = Vec::with_capacity(a.len() + b.len() + 3);
                input_ids.push(self.cls_id);
                input_ids.extend_from_slice(&a);
                input_ids.push(self.sep_id);
                input_ids.extend_from_slice(&b);
                input_ids.push(self.sep_id);
                let mut token_type_ids = vec![0; input_ids.len()];
                token_type_ids[first..].fill(1);
                Encoded {
                    input_ids,
                    token_type_ids,
                }
            }
        }
    }

    /// Encode a single sentence (`text_b == None`) or a pair.
    pub fn encode(&self, text_a: &str, text_b: Option<&str>) -> Result<Encoded, DataError> {
        let a = self.content_ids(text_a)?;
        let b = text_b.map(|t| self.content_ids(t)).transpose()?;
        Ok(self.assemble(a, b))
    }

    /// Tokenize a whole split once (batched, in parallel).
    pub fn encode_dataset(&self, dataset: &Dataset) -> Result<EncodedDataset, DataError> {
        let texts_a: Vec<&str> = dataset.examples.iter().map(|e| e.text_a.as_str()).collect();
        let texts_b: Vec<&str> = dataset
            .examples
            .iter()
            .filter_map(|e| e.text_b.as_deref())
            .collect();
        let ids = |texts: Vec<&str>| -> Result<Vec<Vec<u32>>, DataError> {
            let encs = self
                .tokenizer
                .encode_batch(texts, false)
                .map_err(|e| self.tok_err(e))?;
            Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
        };
        let ids_a = ids(texts_a)?;
        let mut ids_b = ids(texts_b)?.into_iter();
        let mut items = Vec::with_capacity(ids_a.len());
        for (ex, a) in dataset.examples.iter().zip(ids_a) {
            let b = match ex.text_b {
                Some(_) => Some(ids_b.next().ok_or_else(|| {
                    self.tok_err("internal error: fewer second sentences than expected")
                })?),
                None => None,
            };
            items.push(self.assemble(a, b));
        }
        Ok(EncodedDataset {
            name: dataset.name.clone(),
            items,
            targets: dataset.examples.iter().map(|e| e.target).collect(),
        })
    }
}
