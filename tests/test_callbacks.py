"""The Lightning callback, with a real ``Trainer`` (skipped where the optional extra
``lightning`` is not installed; ``make test`` installs it)."""

import math

import pytest
import torch
from torch import nn

pl = pytest.importorskip(
    "lightning.pytorch",
    reason="the optional extra is not installed: pip install exploding-gradients[lightning]")

from exploding_gradients.callbacks import SpikeMonitor  # noqa: E402


class Regression(pl.LightningModule):
    """A small ReLU MLP on a teacher task; ``spike_at`` batches get inputs x100."""

    def __init__(self, lr: float = 1e-2, spike_at=(), optimizer: str = "adam"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                                 nn.Linear(16, 1))
        self.lr, self.spike_at, self.optimizer = lr, set(spike_at), optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        if batch_idx in self.spike_at:
            x = 100 * x
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        if self.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader(n: int = 640, batch: int = 16):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen)
    y = torch.sin(x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def fit(model, callback, tmp_path, logger=False, **trainer):
    torch.manual_seed(0)
    kwargs = dict(max_steps=40, accelerator="cpu", logger=logger, enable_progress_bar=False,
                  enable_checkpointing=False, enable_model_summary=False,
                  default_root_dir=tmp_path)
    t = pl.Trainer(callbacks=[callback], **{**kwargs, **trainer})
    t.fit(model, loader())
    return t


def test_callback_logs_the_norm_before_clipping_and_what_clipping_did(tmp_path):
    callback = SpikeMonitor(log_every=10)
    trainer = fit(Regression(spike_at={30}), callback, tmp_path, gradient_clip_val=1.0)
    assert callback.steps == 40
    metrics = trainer.callback_metrics
    assert {"monitor/grad_norm", "monitor/clip_fraction", "monitor/skip_fraction"} <= set(metrics)
    assert 0 < callback.clipped <= 40 and callback.skipped == 0
    assert metrics["monitor/clip_fraction"] == pytest.approx(callback.clipped / 40)
    assert 30 in {i for i in callback.detector.spikes}  # the x100 batch is a spike
    table = callback.table()
    assert sorted(table.step.unique()) == [0, 10, 20, 30]
    assert set(table.name) == {"net.0", "net.2", "net.4"}
    assert (table.update_ratio > 0).all() and (table.moment2 > 0).all()


def test_callback_skips_the_spike_with_olmo_cores_rule(tmp_path):
    """A z-score skip (window 20, judged from step 20) drops the x100 batch's update:
    the weights and Adam's moments are exactly those of the step before."""
    callback = SpikeMonitor(log_every=100, skip="zscore", skip_window=20)
    model = Regression(spike_at={30})
    fit(model, callback, tmp_path, max_steps=30)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    callback = SpikeMonitor(log_every=100, skip="zscore", skip_window=20)
    model = Regression(spike_at={30})
    fit(model, callback, tmp_path, max_steps=31)
    assert callback.skipped == 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_callback_clips_with_zclip_and_writes_histograms_to_a_tensorboard_writer(tmp_path):
    class Writer:
        def __init__(self):
            self.histograms, self.images = set(), {}

        def add_histogram(self, tag, values, step):
            self.histograms.add(tag)

        def add_image(self, tag, image, step):
            self.images[tag] = image.shape

    class Logger(pl.loggers.Logger):
        def __init__(self):
            super().__init__()
            self._writer, self.metrics = Writer(), []

        name, version = "fake", 0

        @property
        def experiment(self):
            return self._writer

        def log_metrics(self, metrics, step=None):
            self.metrics.append(metrics)

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    logger = Logger()
    callback = SpikeMonitor(log_every=10, detail=True, clip="zclip", clip_threshold=2.5)
    fit(Regression(spike_at={35}), callback, tmp_path, logger=logger, log_every_n_steps=1)
    assert callback.clipped >= 1  # at least the x100 batch, after ZClip's 25-step warmup
    writer = logger.experiment
    assert "monitor/activations/net.0" in writer.histograms
    assert writer.images["monitor/grad_norm_by_layer"][1:] == (3 * 4, 4 * 4)
    assert any("monitor/grad_norm" in m for m in logger.metrics)
    table = callback.table()
    assert table.act_q99.notna().all() and not math.isnan(table.dead_fraction.iloc[0])


def test_callback_refuses_the_rules_the_trainer_already_has():
    with pytest.raises(ValueError, match="gradient_clip_val"):
        SpikeMonitor(clip="norm")
