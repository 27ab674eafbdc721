"""In-domain self-supervised pretraining (the optional `pretrain` stage; docs/pretraining.md).

SimCLR (Chen et al. 2020): two augmented views of every training image, a ResNet backbone and
a small projection head, the NT-Xent loss pulling each image's two views together and pushing
the other 2N - 2 views of the batch away. Labels are never read. The backbone (without the
head) is written as a plain state dict that `model.weights` loads (skindx.models.weights).

Modules: `config` (PretrainConfig, the `pretrain` section), `simclr` (encoder, projection
head, NT-Xent), `views` (the two-view batch pipeline, on skindx.training.augment), `stage`
(run_pretrain: data, loop, MLflow, outputs). This file imports none of them, so that the stage
script can write its "off" marker without importing torch.
"""
