//! Deterministic parameter ids and the trainable-parameter checkpoint.
//!
//! burn draws a random `ParamId` for every parameter; optimizer state is keyed by it. Renumbering
//! the ids in the module's (structural) visit order makes them identical every time the same
//! model is built, so a resumed run's optimizer state attaches to the right tensors.

use std::collections::BTreeMap;
use std::path::Path;

use adalora_model::loader::{write_safetensors, HfTensor};
use anyhow::{bail, Context};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;

struct Renumber(u64);

impl<B: Backend> ModuleMapper<B> for Renumber {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        self.0 += 1;
        Param::from_mapped_value(ParamId::from(self.0), tensor, mapper)
    }
}

/// Give every float parameter the id 1, 2, 3, … in visit order.
pub fn renumber_params<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut Renumber(0))
}

struct CollectTrainable(Vec<HfTensor>);

impl<B: Backend> ModuleVisitor<B> for CollectTrainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        if t.is_require_grad() {
            self.0.push(HfTensor {
                name: format!("param.{}", param.id.val()),
                shape: t.dims().to_vec(),
                data: adalora_core::to_f32_vec(t),
            });
        }
    }
}

/// Write every trainable parameter (adapters, head; everything for full fine-tuning).
pub fn save_trainable<B: Backend, M: Module<B>>(module: &M, path: &Path) -> anyhow::Result<usize> {
    let mut c = CollectTrainable(Vec::new());
    module.visit(&mut c);
    write_safetensors(&c.0, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(c.0.len())
}

struct LoadTrainable {
    tensors: BTreeMap<u64, (Vec<usize>, Vec<f32>)>,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for LoadTrainable {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some((shape, data)) = self.tensors.remove(&id.val()) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        if shape != tensor.dims().to_vec() {
            self.problems.push(format!(
                "param.{}: checkpoint shape {shape:?}, model shape {:?}",
                id.val(),
                tensor.dims()
            ));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let device = tensor.device();
        let require_grad = tensor.is_require_grad();
        let mut value = Tensor::<B, D>::from_data(TensorData::new(data, shape), &device);
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Load a [`save_trainable`] file into a model built the same way. Every stored tensor must find
/// its parameter with the same shape, or the checkpoint belongs to another model/config.
pub fn load_trainable<B: Backend, M: Module<B>>(module: M, path: &Path) -> anyhow::Result<M> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let id: u64 = name
            .strip_prefix("param.")
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: unexpected tensor {name}", path.display()))?;
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(id, (view.shape().to_vec(), data));
    }
    let mut loader = LoadTrainable {
        tensors,
        problems: Vec::new(),
    };
    let module = module.map(&mut loader);
    if !loader.problems.is_empty() || !loader.tensors.is_empty() {
        let unmatched: Vec<String> = loader
            .tensors
            .keys()
            .map(|k| format!("param.{k}"))
            .collect();
        bail!(
            "checkpoint {} does not fit this model (was it trained with another model or \
             configuration?): {}{}",
            path.display(),
            loader.problems.join("; "),
            if unmatched.is_empty() {
                String::new()
            } else {
                format!(" unmatched tensors: {}", unmatched.join(", "))
            }
        );
    }
    Ok(module)
}
