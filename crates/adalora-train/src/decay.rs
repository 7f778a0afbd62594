//! AdamW with Hugging Face's parameter groups: by default biases and LayerNorm weights get no
//! weight decay (`Trainer.get_decay_parameter_names`). burn's AdamW applies one decay to every
//! parameter, so two AdamW instances share each step, one per group. The record is one map
//! keyed by parameter id — the same format a single AdamW writes.

use std::collections::HashSet;

use adalora_core::AdapterHost;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdamW, AdamWConfig, GradientsParams, LearningRate, MultiGradientsParams, Optimizer,
};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

type Adam<M, B> = OptimizerAdaptor<AdamW, M, B>;

/// AdamW whose weight decay skips the parameters in `exempt`.
#[derive(Clone)]
pub struct GroupedAdamW<M: AutodiffModule<B>, B: AutodiffBackend> {
    decayed: Adam<M, B>,
    exempt: Adam<M, B>,
    exempt_ids: HashSet<ParamId>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> GroupedAdamW<M, B> {
    /// `config` carries the decay of the decayed group; `exempt_ids` are stepped without it.
    pub fn new(config: &AdamWConfig, exempt_ids: HashSet<ParamId>) -> Self {
        GroupedAdamW {
            decayed: config.init(),
            exempt: config.clone().with_weight_decay(0.0).init(),
            exempt_ids,
        }
    }

    /// Move the exempt group's gradients out of `grads`. Exempt parameters are vectors.
    fn split(&self, grads: &mut GradientsParams) -> GradientsParams {
        let mut exempt = GradientsParams::new();
        for &id in &self.exempt_ids {
            if let Some(g) = grads.remove::<B::InnerBackend, 1>(id) {
                exempt.register(id, g);
            }
        }
        exempt
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Optimizer<M, B> for GroupedAdamW<M, B> {
    type Record = <Adam<M, B> as Optimizer<M, B>>::Record;

    fn step(&mut self, lr: LearningRate, module: M, mut grads: GradientsParams) -> M {
        let exempt = self.split(&mut grads);
        let module = self.decayed.step(lr, module, grads);
        self.exempt.step(lr, module, exempt)
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, mut grads: MultiGradientsParams) -> M {
        let mut exempt = MultiGradientsParams::default();
        for (g, device) in grads.grads.iter_mut() {
            exempt.grads.push((self.split(g), *device));
        }
        let module = self.decayed.step_multi(lr, module, grads);
        self.exempt.step_multi(lr, module, exempt)
    }

    fn to_record(&self) -> Self::Record {
        let mut record = self.decayed.to_record();
        record.extend(self.exempt.to_record());
        record
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        let (exempt, decayed): (Self::Record, Self::Record) = record
            .into_iter()
            .partition(|(id, _)| self.exempt_ids.contains(id));
        self.decayed = self.decayed.load_record(decayed);
        self.exempt = self.exempt.load_record(exempt);
        self
    }
}

/// Hugging Face's no-decay group: biases and LayerNorm weights, i.e. the vector parameters,
/// except AdaLoRA's λ (PEFT's `lora_E` is decayed like the other adapter weights).
pub fn bias_and_norm_ids<B: AutodiffBackend, M: Module<B> + AdapterHost<B>>(
    model: &M,
) -> HashSet<ParamId> {
    struct Vectors(HashSet<ParamId>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Vectors {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if D == 1 {
                self.0.insert(param.id);
            }
        }
    }
    let mut vectors = Vectors(HashSet::new());
    model.visit(&mut vectors);
    for adapter in model.svd_adapters() {
        vectors.0.remove(&adapter.lora_e.id);
    }
    vectors.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use adalora_core::to_f32_vec;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};

    type AB = Autodiff<NdArray<f32>>;

    /// One AdamW step on a linear layer whose gradients are zero: only decay moves weights.
    fn step(exempt: HashSet<ParamId>, layer: Linear<AB>) -> Linear<AB> {
        let config = AdamWConfig::new().with_weight_decay(0.5);
        let mut optim = GroupedAdamW::<Linear<AB>, AB>::new(&config, exempt);
        let x = Tensor::<AB, 2>::zeros([1, 3], &Default::default());
        let loss = layer.forward(x).sum().mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        optim.step(0.1, layer, grads)
    }

    #[test]
    fn exempt_parameters_are_not_decayed_and_the_others_are() {
        let device = Default::default();
        let mut layer = LinearConfig::new(3, 2).init::<AB>(&device);
        layer.bias = layer.bias.map(|b| b.map(|t| t.ones_like().require_grad()));
        let bias_id = layer.bias.as_ref().unwrap().id;
        let weight = to_f32_vec(layer.weight.val());

        let decayed = step(HashSet::new(), layer.clone());
        let exempt = step(HashSet::from([bias_id]), layer);
        // AdamW: θ ← θ − lr·wd·θ with zero gradient.
        let close = |v: Vec<f32>, want: f32| v.iter().all(|x| (x - want).abs() < 1e-6);
        assert!(close(to_f32_vec(decayed.bias.unwrap().val()), 0.95));
        assert!(close(to_f32_vec(exempt.bias.unwrap().val()), 1.0));
        let expected: Vec<f32> = weight.iter().map(|w| w * 0.95).collect();
        for got in [
            to_f32_vec(decayed.weight.val()),
            to_f32_vec(exempt.weight.val()),
        ] {
            assert!(
                got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6),
                "{got:?}"
            );
        }
    }

    #[test]
    fn the_no_decay_group_is_biases_and_layer_norms_but_not_lambda() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/model/tiny-bert");
        let device = Default::default();
        let (model, _) =
            adalora_model::loader::load_for_classification::<AB>(&dir, 3, 0, &device).unwrap();
        let adalora_model::AnyClassifier::Bert(model) = model else {
            panic!("tiny-bert is a BERT")
        };
        let method = adalora_core::MethodConfig::adalora(adalora_core::AdaLoraConfig {
            init_r: 2,
            target_r: 1,
            ..Default::default()
        });
        let target = adalora_model::TargetSpec::new("query".parse().unwrap());
        let (model, _) = adalora_model::apply_method(model, &method, &target, &device).unwrap();
        let ids = bias_and_norm_ids(&model);
        let embeddings = &model.bert.embeddings.layer_norm;
        assert!(ids.contains(&embeddings.gamma.id));
        assert!(ids.contains(&model.classifier.bias.as_ref().unwrap().id));
        assert!(!ids.contains(&model.classifier.weight.id));
        for adapter in model.svd_adapters() {
            assert!(
                !ids.contains(&adapter.lora_e.id),
                "λ is decayed, as in PEFT"
            );
        }
    }
}
