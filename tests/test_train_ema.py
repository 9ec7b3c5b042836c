"""The moving average of the weights (WeightEMA in fer_ray.train.loop); runs using it: test_train_plain/ray.py."""

import torch

from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.train.loop import WeightEMA, train_one_epoch
from tests.test_train_loop import _batches


def test_weight_average_follows_the_weights_at_its_warmed_up_rate():
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="cnn_attn", widths=(8, 16)))
    ema = WeightEMA(model, decay=0.99)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, _batches(n_per_class=4, batch=28), opt, torch.device("cpu"), aug_cfg=None, ema=ema)
    assert ema.updates == 1  # one step: 28 faces in one batch
    keep = 2 / 11  # the first update's warmed-up rate, min(0.99, (1 + 1) / (10 + 1))
    trained = model.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, keep * start[k] + (1 - keep) * trained[k])
        else:  # batch norm's step counter is copied, not averaged
            assert torch.equal(v, trained[k])
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    for _ in range(1000):
        ema.updates += 1
    assert ema.rate() == 0.99  # warm-up over: the configured decay
    again = WeightEMA(model, decay=0.99)
    again.load_state_dict(ema.state_dict())
    assert again.updates == ema.updates
    ours = ema.module.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in again.module.state_dict().items())
