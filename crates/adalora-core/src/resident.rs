//! 4-bit codes kept on the device, for GPU backends.
//!
//! By default a quantized base is dequantized on the host (a tight table lookup, the fast
//! choice on CPU backends) and the f32 weight is uploaded for each matmul. On a GPU that upload
//! and the host loop dominate the quantized step, so [`DeviceCodes`], once switched on, uploads
//! the packed codes once per device (eight 4-bit indices per 32-bit int, plus the f32 absmax
//! constants) and each forward unpacks and scales them there with tensor ops: a shift, a mask,
//! a table lookup and a multiply. The values are those of the host path bit for bit
//! (`code[index] · absmax` in f32 either way).

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use crate::quant::QuantizedMatrix;

/// Whether a quantized layer dequantizes on the device, and its uploaded codes per backend
/// and device. Shared by clones of the layer (a model and its `valid()` twin upload once each).
#[derive(Clone, Default)]
pub struct DeviceCodes(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    enabled: bool,
    /// One [`Uploaded`] per (backend type, device) seen, type-erased so the layer's record and
    /// generics stay as they are.
    uploaded: Vec<Box<dyn Any + Send>>,
    /// Uploads done so far (see [`DeviceCodes::uploads`]).
    uploads: usize,
}

impl fmt::Debug for DeviceCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceCodes(enabled: {})", self.enabled())
    }
}

impl DeviceCodes {
    /// Dequantize on the device from now on (4-bit kinds; int8 stays on the host).
    pub fn enable(&self) {
        self.lock().enabled = true;
    }

    pub fn enabled(&self) -> bool {
        self.lock().enabled
    }

    /// Whether `q` has a device path: the 4-bit kinds, whose 16-value code the card looks up.
    pub fn applies_to(q: &QuantizedMatrix) -> bool {
        q.config.kind.code().is_some()
    }

    /// How many times codes were uploaded: the cache is only observable this way, so tests can
    /// check that repeated forwards reuse the codes (one upload per backend and device).
    pub fn uploads(&self) -> usize {
        self.lock().uploads
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a flag and a cache; a panic elsewhere cannot leave it inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// deq(q(W0)) in burn layout `[d_in, d_out]` computed on `device`, or `None` when the
    /// device path is off or the kind has no 4-bit code.
    pub fn dequantize<B: Backend>(
        &self,
        q: &QuantizedMatrix,
        device: &B::Device,
    ) -> Option<Tensor<B, 2>> {
        let code = q.config.kind.code()?;
        let uploaded = {
            let mut state = self.lock();
            if !state.enabled {
                return None;
            }
            let found = state
                .uploaded
                .iter()
                .filter_map(|u| u.downcast_ref::<Uploaded<B>>())
                .find(|u| &u.device == device)
                .cloned();
            match found {
                Some(u) => u,
                None => {
                    let u = Uploaded::new(q, code, device);
                    state.uploaded.push(Box::new(u.clone()));
                    state.uploads += 1;
                    u
                }
            }
        };
        Some(uploaded.dequantize(q))
    }
}

/// One layer's codes on one device.
#[derive(Clone)]
struct Uploaded<B: Backend> {
    device: B::Device,
    /// `[words, 1]`: four code bytes per int, first byte in the high bits.
    packed: Tensor<B, 2, Int>,
    /// `[1, 8]`: the right shift that brings each of a word's eight nibbles down, first first.
    shifts: Tensor<B, 2, Int>,
    /// The 16 code values.
    table: Tensor<B, 1>,
    /// `[blocks, 1]`: each block's absmax (double quantization already undone).
    absmax: Tensor<B, 2>,
}

impl<B: Backend> Uploaded<B> {
    fn new(q: &QuantizedMatrix, code: &[f32; 16], device: &B::Device) -> Self {
        let words: Vec<i32> = q
            .codes
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                i32::from_be_bytes(b)
            })
            .collect();
        let n_words = words.len();
        let absmax = q.scales.absmax();
        let blocks = absmax.len();
        Uploaded {
            device: device.clone(),
            packed: Tensor::from_data(TensorData::new(words, [n_words, 1]), device),
            shifts: Tensor::from_data(
                TensorData::new(vec![28i32, 24, 20, 16, 12, 8, 4, 0], [1, 8]),
                device,
            ),
            table: Tensor::from_data(TensorData::new(code.to_vec(), [16]), device),
            absmax: Tensor::from_data(TensorData::new(absmax, [blocks, 1]), device),
        }
    }

    fn dequantize(&self, q: &QuantizedMatrix) -> Tensor<B, 2> {
        let [words, _] = self.packed.dims();
        let values = q.rows * q.cols;
        let block = q.config.block_size;
        // Arithmetic shifts sign-extend a word whose top bit is set; the mask keeps 4 bits.
        let indices = self
            .packed
            .clone()
            .expand([words, 8])
            .bitwise_right_shift(self.shifts.clone().expand([words, 8]))
            .bitwise_and_scalar(0xf.elem())
            .reshape([words * 8])
            .slice(0..values);
        let scaled = self
            .table
            .clone()
            .select(0, indices)
            .reshape([values / block, block])
            .mul(self.absmax.clone());
        scaled.reshape([q.rows, q.cols]).transpose()
    }
}
