"""RRN (docs/methods/rrn.md): region discriminator, region acceptance, gradient separation, the objective."""

import pytest
import torch

from semiseg.components.losses import masked_ce
from semiseg.components.region_acceptance import accepted_pixels, region_index, regions_to_pixels
from semiseg.components.region_discriminator import (RegionDiscriminator, minmax_per_sample, real_input,
                                                     region_grid)
from semiseg.errors import SemisegError
from semiseg.methods.interface import StepContext
from test_methods import NUM_CLASSES, fake_batch, make, tiny_cfg

SELECTING = StepContext(5, 10, 2)  # epoch 2: the local selection loss is on
WARMING = StepContext(1, 10, 2)  # epoch 0: it is off


def test_region_index_is_floor_of_row_times_grid_over_height():
    assert region_index(7, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]  # 3·r // 7
    assert region_index(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert region_index(800, 3).bincount().tolist() == [267, 267, 266]  # 800 is not divisible by 3
    assert region_index(2, 3).tolist() == [0, 1]  # fewer pixels than cells: region 2 has none


def test_regions_to_pixels_and_acceptance_by_hand():
    cells = torch.tensor([[[0.1, 0.9], [0.7, 0.2]]])  # 1 x 2 x 2 scores
    pixels = regions_to_pixels(cells, 3, 5)  # rows 0,0,1; columns 0,0,0,1,1
    expected = torch.tensor([[[0.1, 0.1, 0.1, 0.9, 0.9], [0.1, 0.1, 0.1, 0.9, 0.9], [0.7, 0.7, 0.7, 0.2, 0.2]]])
    assert torch.equal(pixels, expected)
    logits = torch.logit(cells)
    valid = torch.ones(1, 3, 5, dtype=torch.bool)
    valid[0, 0, 4] = False
    accepted = accepted_pixels(logits, 0.6, valid)
    hand = torch.tensor([[[0, 0, 0, 1, 0], [0, 0, 0, 1, 1], [1, 1, 1, 0, 0]]], dtype=torch.bool)
    assert torch.equal(accepted, hand)


@pytest.mark.parametrize("crop", [192, 512, 800])
def test_discriminator_scores_a_grid_at_any_crop(crop):
    d = RegionDiscriminator(NUM_CLASSES + 3)
    scores, phi = d(torch.rand(1, NUM_CLASSES + 3, crop, crop))
    assert scores.shape == (1, 3, 3) and phi.shape == (1, 512)
    image_level = RegionDiscriminator(NUM_CLASSES + 3, region="image")
    assert image_level(torch.rand(1, NUM_CLASSES + 3, crop, crop))[0].shape == (1, 1, 1)


def test_tile_size_sets_the_grid_per_side():
    assert region_grid(800, 800, 3, None) == (3, 3)
    assert region_grid(800, 512, 3, 160) == (5, 3)  # round(800/160), round(512/160) = 5, 3
    assert region_grid(100, 100, 3, 400) == (1, 1)
    d = RegionDiscriminator(4, tile=160)
    assert d(torch.rand(2, 4, 800, 512))[0].shape == (2, 5, 3)


def test_released_top_left_pooling_reads_only_the_top_left_cells():
    d = RegionDiscriminator(4, region="image", compat_topleft_pool=True).eval()
    x = torch.rand(1, 4, 512, 512)
    changed = x.clone()
    changed[:, :, 400:, 400:] = 0  # outside the top-left 20 x 20 cells of the 32 x 32 map (and their receptive field)
    assert torch.equal(d(x)[0], d(changed)[0])
    with pytest.raises(SemisegError, match="compat_topleft_pool"):
        d(torch.rand(1, 4, 192, 192))
    with pytest.raises(SemisegError, match="region: image"):
        RegionDiscriminator(4, region="tile", compat_topleft_pool=True)


def test_real_input_ignore_is_all_zero_and_normalisation_is_per_sample():
    labels = torch.tensor([[[0, 2], [255, 1]]])
    images = torch.randn(1, 3, 2, 2)
    real = real_input(labels, images, 3)
    assert real[0, :3, 1, 0].tolist() == [0.0, 0.0, 0.0]  # the ignore pixel
    assert real[0, :3, 0, 1].tolist() == [0.0, 0.0, 1.0]
    a, b = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4) * 10 + 5
    together = minmax_per_sample(torch.cat([a, b]))
    assert torch.allclose(together[0], minmax_per_sample(a)[0])  # sample 1 does not move sample 0
    assert together.amin(dim=(1, 2, 3)).tolist() == [0.0, 0.0] and together.amax(dim=(1, 2, 3)).tolist() == [1.0, 1.0]


def _discriminator_params(method):
    return [p for d in (method.discriminator1, method.discriminator2) for p in d.parameters()]


def _segmentor_params(method):
    return [p for net in (method.model, method.model2) for p in net.parameters()]


def test_segmentation_and_discriminator_losses_train_only_their_own_networks():
    method = make("rrn")
    method.train()
    batch = fake_batch(method)
    generator, discriminator = method.updates(tiny_cfg("rrn").train)
    loss, logs = generator.loss(batch, SELECTING)
    loss.backward()
    assert all(p.grad is None for p in _discriminator_params(method))
    assert all(p.requires_grad for p in _discriminator_params(method))  # unfrozen again
    assert all(p.grad is not None for p in _segmentor_params(method))
    method.zero_grad(set_to_none=True)
    loss_d, _ = discriminator.loss(batch, SELECTING)
    loss_d.backward()
    assert all(p.grad is None for p in _segmentor_params(method))
    assert all(p.grad is not None for p in _discriminator_params(method))


def test_local_selection_loss_by_hand_and_off_in_the_first_epoch():
    method = make("rrn")
    method.train()
    method.params.tau = 0.0  # every region accepted: A_k = Bx_k = the valid pixels
    batch = fake_batch(method)
    _, logs = method.training_step(batch, WARMING)
    assert logs["loss_st"] == 0 and logs["accepted_own"] == 1 and logs["accepted_cross"] == 1
    method._pending.clear()
    _, logs = method.training_step(batch, SELECTING)
    unlabeled = batch["unlabeled"]
    with torch.no_grad():
        x_m, _, _, valid = method.cutmix_inputs(unlabeled["image_w"], unlabeled["valid"], unlabeled["box"][:, 0])
        ones = torch.ones_like(valid, dtype=torch.float)
        hand = sum(2 * masked_ce(z, z.argmax(dim=1), ones, valid) for z in (method.model(x_m), method.model2(x_m)))
    assert torch.allclose(logs["loss_st"], hand, atol=1e-5)
    method.params.tau = 1.0  # nothing accepted
    _, logs = method.training_step(batch, SELECTING)
    assert logs["loss_st"] == 0 and logs["accepted_own"] == 0


def test_discriminator_loss_is_half_the_bce_sum_per_branch():
    method = make("rrn")
    method.eval()  # no dropout: the discriminator's forwards are repeatable
    batch = fake_batch(method)
    with torch.no_grad():
        method.training_step(batch, SELECTING)
        fake1, fake2, real = method._pending[0]
        loss_d, _ = method.discriminator_step(batch, SELECTING)
        bce = torch.nn.functional.binary_cross_entropy
        hand = 0.0
        for fake, d in ((fake1, method.discriminator1), (fake2, method.discriminator2)):
            s_fake, s_real = d(fake)[0].sigmoid(), d(real)[0].sigmoid()
            hand += 0.5 * (bce(s_fake, torch.zeros_like(s_fake)) + bce(s_real, torch.ones_like(s_real)))
    assert torch.allclose(loss_d, hand, atol=1e-5)
    assert not method._pending


def test_one_adam_over_both_discriminators_equals_one_adam_each():
    torch.manual_seed(0)
    d1, d2 = RegionDiscriminator(4), RegionDiscriminator(4)
    e1, e2 = RegionDiscriminator(4), RegionDiscriminator(4)
    e1.load_state_dict(d1.state_dict())
    e2.load_state_dict(d2.state_dict())
    joint = torch.optim.Adam([*d1.parameters(), *d2.parameters()], lr=1e-3, betas=(0.9, 0.99))
    apart = [torch.optim.Adam(e.parameters(), lr=1e-3, betas=(0.9, 0.99)) for e in (e1, e2)]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in d1.parameters()] + [torch.randn_like(p) for p in d2.parameters()]
        for p, g in zip([*d1.parameters(), *d2.parameters()], grads):
            p.grad = g.clone()
        for p, g in zip([*e1.parameters(), *e2.parameters()], grads):
            p.grad = g.clone()
        joint.step()
        for opt in apart:
            opt.step()
    for p, q in zip([*d1.parameters(), *d2.parameters()], [*e1.parameters(), *e2.parameters()]):
        assert torch.equal(p, q)


def test_inference_averages_the_branches():
    method = make("rrn")
    method.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        z1, z2 = method.model(x), method.model2(x)
        assert torch.allclose(method.predict(x), (z1 + z2) / 2)
        method.params.vote = "probs"
        assert torch.allclose(method.predict(x).exp(), (z1.softmax(1) + z2.softmax(1)) / 2, atol=1e-6)


def test_rrn_needs_cutmix():
    with pytest.raises(SemisegError, match="method.cutmix"):
        make_params = type(make("rrn").params)
        make_params(cutmix=False)


def test_explain_panels_leave_the_state_alone():
    method = make("rrn")
    method.train()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    panels = method.explain(fake_batch(method), SELECTING)
    assert [p.kind for p in panels] == ["image", "labels", "labels"] + ["scalar_map"] * 4
    assert panels[3].extras["threshold"] == 0.6 and panels[3].data.shape == (32, 32)
    assert method.discriminator1.training
    for key, value in method.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_adaptive_image_score_sees_the_bottom_right_quadrant():
    d = RegionDiscriminator(4, region="image").eval()  # the release's top-left pooling would miss this change
    x = torch.rand(1, 4, 512, 512)
    changed = x.clone()
    changed[:, :, 256:, 256:] = 1 - changed[:, :, 256:, 256:]
    with torch.no_grad():
        assert not torch.equal(d(x)[0], d(changed)[0])
