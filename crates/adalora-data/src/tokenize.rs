//! Tokenization over a Hugging Face `tokenizer.json` (WordPiece, byte-level BPE, Unigram, …).
//!
//! [`TextTokenizer`] switches off the file's own padding and truncation and does them itself:
//! text is encoded without special tokens, content tokens are truncated so that the whole
//! sequence fits `max_len`, then the file's post-processor adds the specials and token types
//! of its family, e.g.
//!
//! * BERT / DeBERTa-v3: `[CLS] a [SEP]`, pair `[CLS] a [SEP] b [SEP]` (types 0…0 1…1);
//! * RoBERTa: `<s> a </s>`, pair `<s> a </s></s> b </s>` (types all 0).
//!
//! Pair truncation is *longest-first*: one token at a time is removed from the end of the
//! longer sequence, from the second one when both are equally long (the rule of HF
//! transformers' `truncate_sequences(..., "longest_first")`). Special tokens are never removed.
//! (The Rust `tokenizers` crate's own longest-first rule differs from this in one case only:
//! when both sequences must be cut and the budget is odd, it may give the spare token to the
//! other sequence.)

use std::path::{Path, PathBuf};

use tokenizers::{Encoding, PostProcessor, Token, Tokenizer};

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

/// A tokenizer with its own truncation to `max_len` (specials included).
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    pad_id: u32,
    max_len: usize,
}

/// Padding tokens of the common families, tried in order when `tokenizer.json` sets none.
const PAD_TOKENS: [&str; 2] = ["[PAD]", "<pad>"];

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("pad_id", &self.pad_id)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl TextTokenizer {
    /// Load a `tokenizer.json`. It must name a padding token (its padding settings, or
    /// `[PAD]` / `<pad>` in the vocabulary); `max_len` (total length including specials) must
    /// leave room for one content token of each sentence of a pair.
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
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| PAD_TOKENS.iter().find_map(|t| tokenizer.token_to_id(t)))
            .ok_or_else(|| {
                err(format!(
                    "no padding token: neither padding settings nor {} in the vocabulary",
                    PAD_TOKENS.join(" / ")
                ))
            })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        let min_len = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true))
            + 2;
        if max_len < min_len {
            return Err(DataError::Config(format!(
                "max_len must be at least {min_len} (a pair with its special tokens needs room), got {max_len}"
            )));
        }
        Ok(TextTokenizer {
            tokenizer,
            path: path.to_path_buf(),
            pad_id,
            max_len,
        })
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

    /// Special tokens the post-processor adds to a single sentence or a pair.
    pub fn added_tokens(&self, pair: bool) -> usize {
        self.tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(pair))
    }

    /// Truncate content ids and let the post-processor add special tokens and token types.
    fn assemble(&self, mut a: Vec<u32>, b: Option<Vec<u32>>) -> Result<Encoded, DataError> {
        let budget = self.max_len - self.added_tokens(b.is_some());
        let b = match b {
            None => {
                a.truncate(budget);
                None
            }
            Some(mut b) => {
                truncate_longest_first(&mut a, &mut b, budget);
                Some(b)
            }
        };
        let encoding = |ids: Vec<u32>, type_id: u32| {
            let tokens = ids
                .into_iter()
                .map(|id| Token::new(id, String::new(), (0, 0)))
                .collect();
            Encoding::from_tokens(tokens, type_id)
        };
        let out = self
            .tokenizer
            .post_process(encoding(a, 0), b.map(|b| encoding(b, 1)), true)
            .map_err(|e| self.tok_err(e))?;
        Ok(Encoded {
            input_ids: out.get_ids().to_vec(),
            token_type_ids: out.get_type_ids().to_vec(),
        })
    }

    /// Encode a single sentence (`text_b == None`) or a pair.
    pub fn encode(&self, text_a: &str, text_b: Option<&str>) -> Result<Encoded, DataError> {
        let a = self.content_ids(text_a)?;
        let b = text_b.map(|t| self.content_ids(t)).transpose()?;
        self.assemble(a, b)
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
            items.push(self.assemble(a, b)?);
        }
        Ok(EncodedDataset {
            name: dataset.name.clone(),
            items,
            targets: dataset.examples.iter().map(|e| e.target).collect(),
        })
    }
}
