"""Converting BatchNorm for W > 1 keeps the state_dict, timm's BN+activation, and refuses unknown subclasses.
(The cross-process statistics themselves are checked by the torchrun test in test_distributed.py.)"""

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from semiseg.engine.sync_batchnorm import CrossProcessBatchNorm, convert_to_sync_batchnorm
from semiseg.errors import SemisegError


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), BatchNormAct2d(4, act_layer=nn.ReLU))
    net(torch.randn(4, 3, 8, 8))  # non-trivial running statistics
    return net


def test_converted_net_has_same_state_and_output_in_one_process():
    net = _net()
    converted = convert_to_sync_batchnorm(_net(), torch.device("cpu"))
    assert [type(m) for m in converted if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [CrossProcessBatchNorm] * 2
    assert converted.state_dict().keys() == net.state_dict().keys()
    x = torch.randn(2, 3, 8, 8)
    for mode in (True, False):
        net.train(mode), converted.train(mode)
        out, ref = converted(x), net(x)
        torch.testing.assert_close(out, ref)
        assert (out >= 0).all()  # the ReLU of BatchNormAct2d survived the conversion
    for key, value in net.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[key], value)


def test_unknown_batchnorm_subclass_is_refused():
    class ScaledBatchNorm(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(SemisegError, match="ScaledBatchNorm is a subclass with its own forward"):
        convert_to_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), ScaledBatchNorm(4)), torch.device("cpu"))
